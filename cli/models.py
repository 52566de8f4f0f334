"""``bertops models``: list, show, promote and roll back registered versions."""

from __future__ import annotations

import argparse

from bertops import config as cfg
from bertops.cluster import PROFILE_NAMESPACE
from bertops.errors import BertopsError


def _print_versions(name: str, state: str, uri: str) -> None:
    from bertops import models

    rows = models.list_versions(name, state, uri)
    data_width = max([len("DATA"), *(len(row.data_version) for row in rows)])
    print(f"{'VERSION':<8} {'ALIASES':<16} {'TEST ACC':<9} {'DATA':<{data_width}} COMMIT")
    for row in rows:
        accuracy = f"{row.test_accuracy:.4f}" if row.test_accuracy is not None else "-"
        aliases = ",".join(row.aliases) or "-"
        print(
            f"{row.version:<8} {aliases:<16} {accuracy:<9} {row.data_version:<{data_width}} {row.git_commit[:12] or '-'}"
        )


def _change_champion(args: argparse.Namespace) -> str:
    """Promote ``args.version`` or roll back; with ``--deploy-target cluster`` the InferenceService first."""
    from bertops import models

    name, state, uri = args.model_name, args.state_dir, args.tracking_uri
    if args.action == "promote":
        models.require_version(name, args.version, state, uri)
    target = args.version if args.action == "promote" else models.rollback_target(name, state, uri)
    if args.deploy_target == "cluster":
        # The InferenceService switches first: a redeploy that fails is undone by the deploy step,
        # and then the champion stays where it was too, so the registry says what serves.
        from components.deploy.deploy_cluster import redeploy_registered_version

        isvc = redeploy_registered_version(name, target, args.namespace, state, uri)
        print(f"InferenceService {isvc.namespace}/{name} now serves version {target} at {isvc.url}")
    if args.action == "promote":
        models.promote(name, target, state, uri)
        return target
    return models.rollback(name, state, uri)


def _follow_locally(name: str, version: str, state: str, uri: str) -> None:
    """A local endpoint of this model follows the champion, in a container if it runs in one."""
    from bertops import endpoints

    current = next((e for e in endpoints.list_endpoints(state) if e.name == name), None)
    if current is None:
        return
    if current.container:
        from components.deploy.deploy_docker import deploy_docker

        served = deploy_docker(name, version, state, uri)
    else:
        from components.deploy.deploy import deploy_local

        served = deploy_local(name, version, state, uri)
    same = (
        " (same URL; the new server took the port over as soon as the old one let go of it, "
        "refusing connections only in that moment)"
        if served.url == current.url
        else ""
    )
    print(f"endpoint {name} now serves version {version} at {served.url}{same}")


def cmd_models(args: argparse.Namespace) -> None:
    """List or show versions, or move the champion (and the endpoint that follows it)."""
    from bertops import models

    name, state, uri = args.model_name, args.state_dir, args.tracking_uri
    if args.action == "list":
        _print_versions(name, state, uri)
        return
    if args.action in ("show", "promote") and not args.version:
        raise BertopsError(f"models {args.action} needs a VERSION (see `bertops models list`)")
    if args.action == "show":
        print(models.show_version(name, args.version, state, uri))
        return
    from bertops.champion_lock import champion_lock

    # One critical section, as a run's register and deploy: the champion and what serves it change together.
    with champion_lock(name, state, f"models {args.action} {name}", args.deploy_target, args.namespace):
        version = _change_champion(args)
        print(f"{name}: champion is now version {version}")
        if args.deploy_target == "local":
            _follow_locally(name, version, state, uri)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], state: argparse.ArgumentParser) -> None:
    """``models``; ``state`` carries ``--state-dir``."""
    mods = sub.add_parser("models", parents=[state], help="registered versions: list, show, promote, rollback")
    mods.add_argument("action", choices=["list", "show", "promote", "rollback"])
    mods.add_argument("version", nargs="?", help="version for show (a number or an alias, e.g. champion) and promote")
    mods.add_argument("--model-name", default=cfg.RegistryConfig.model_name)
    mods.add_argument("--tracking-uri", default="", help="MLflow tracking URI (empty: sqlite under --state-dir)")
    mods.add_argument(
        "--deploy-target",
        choices=["local", "cluster"],
        default="local",
        help="promote/rollback: the endpoint that follows the champion: 'local' (a running local endpoint, "
        "if any) or 'cluster' (the model's InferenceService, redeployed with its live settings)",
    )
    mods.add_argument(
        "--namespace", default=PROFILE_NAMESPACE, help="namespace of the InferenceService (--deploy-target cluster)"
    )
    mods.set_defaults(func=cmd_models)
