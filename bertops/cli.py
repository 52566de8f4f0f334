"""The ``bertops`` command: run the pipeline locally, compile it, manage data and endpoints."""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import time
from pathlib import Path

from bertops import config as cfg
from bertops.cluster import PIPELINE_SERVICE_ACCOUNT, PROFILE_NAMESPACE
from bertops.env import configure_process
from bertops.errors import BertopsError
from pipelines.compile import DEFAULT_FINETUNE_RETRIES

log = logging.getLogger("bertops")

SAMPLE_TEXT = "The central bank raised interest rates again as inflation stayed well above its target."


def _git_commit(root: Path) -> str:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


def _absolute(config: cfg.PipelineConfig) -> cfg.PipelineConfig:
    """Resolve relative paths now: the pipeline's tasks run in other processes."""
    return config.replace(
        data_path=str(Path(config.data.data_path).resolve()), state_dir=str(Path(config.registry.state_dir).resolve())
    )


def cmd_run(args: argparse.Namespace) -> None:
    config = _absolute(cfg.from_namespace(args))
    if args.runner == "docker" and config.serve.deploy_target == "local":
        # A server started inside a step's container would die with it.
        config = config.replace(deploy_target="docker")
    # A flag that makes no sense (or malformed JSON) fails here, before any work, state or slow import.
    cfg.validate_settings(config)

    from bertops import dvc_data, endpoints
    from bertops.registry import open_client, version_metrics
    from pipelines.run_local import run_local

    root = Path.cwd()
    started = time.perf_counter()
    default_data = Path(config.data.data_path) == root / "data" and (root / "data.dvc").is_file()
    if default_data and not config.data.data_remote and not dvc_data.is_clean(root):
        log.info("data: %s", dvc_data.pull(root))
    log.info("running the pipeline on the embedded runtime (kfp.local, %s runner)", args.runner)
    result = run_local(config, git_commit=_git_commit(root), verbose=args.verbose, runner=args.runner)
    name, state = config.registry.model_name, config.registry.state_dir
    client = open_client(config.registry.tracking_uri, state)
    metrics = version_metrics(client, name, result.version)
    version = client.get_model_version(name, result.version)
    promoted = version.tags.get("promoted") == "true"
    if promoted and config.serve.deploy_target == "docker":
        from components.deploy.deploy_docker import deploy_docker

        log.info("serving version %s from the serving image", result.version)
        deploy_docker(name, result.version, state, config.registry.tracking_uri)
    minutes = (time.perf_counter() - started) / 60
    lines = [
        "",
        "bertops run: summary",
        f"  data version      {result.data_version}",
        f"  validation        {result.validation}",
        f"  winner            candidate {result.winner!r} of {len(config.to_arguments()['candidates'])}",
        f"  test accuracy     {metrics['test_accuracy']:.4f} (macro F1 {metrics['test_macro_f1']:.4f}, "
        f"ECE {metrics['test_ece']:.4f}, {metrics['batch_latency_ms']:.0f} ms per batch of 32)",
        f"  registered        {name} version {result.version} ({config.registry.tracking_uri or 'local registry in ' + state})",
        f"  promotion         {'champion' if promoted else 'not promoted'}: {version.tags.get('gate_reason', '')}",
    ]
    endpoint = next((e for e in endpoints.list_endpoints(state) if e.name == config.registry.model_name), None)
    if endpoint is not None and endpoint.model_version == result.version:
        label, probs = _predict_v1(endpoint, SAMPLE_TEXT)
        lines += [
            f"  endpoint          {endpoint.url} (V1 {endpoint.v1_predict_url}, V2 {endpoint.v2_infer_url})",
            f"  prediction        {SAMPLE_TEXT!r} -> {label} ({probs[label]:.2f})",
        ]
    else:
        lines.append("  endpoint          not redeployed (the winner did not pass the promotion gate)")
    lines.append(f"  wall time         {minutes:.1f} min (full log: {result.log_file})")
    print("\n".join(lines))


def _predict_v1(endpoint: object, text: str) -> tuple[str, dict[str, float]]:
    import requests

    from bertops.endpoints import Endpoint

    assert isinstance(endpoint, Endpoint)
    try:
        response = requests.post(endpoint.v1_predict_url, json={"instances": [text]}, timeout=60)
    except requests.RequestException as exc:
        raise BertopsError(f"endpoint {endpoint.name!r} at {endpoint.url} does not answer: {exc}") from exc
    if response.status_code != 200:
        raise BertopsError(f"endpoint {endpoint.name!r} answered {response.status_code}: {response.text[:200]}")
    prediction = response.json()["predictions"][0]
    return prediction["label"], prediction["probabilities"]


def cmd_compile(args: argparse.Namespace) -> None:
    from pipelines.compile import compile_pipeline

    path = compile_pipeline(Path(args.output), args.workspace_pvc, args.finetune_retries, args.target)
    print(f"compiled pipeline: {path} (upload it in the Kubeflow UI or submit it with `kfp run create`)")


def run_arguments(args: argparse.Namespace) -> dict[str, object]:
    """The pipeline parameters given on the command line, as a run takes them (JSON settings decoded)."""
    given = {name: getattr(args, name) for name in cfg.parameter_names() if getattr(args, name, None) is not None}
    return {k: v for k, v in cfg.PipelineConfig().replace(**given).to_arguments().items() if k in given}


def cmd_submit(args: argparse.Namespace) -> None:
    from pipelines.compile import compile_pipeline
    from pipelines.submit import submit

    # The run's steps run in pods: refuse what cannot work there before compiling or submitting.
    given = {name: getattr(args, name) for name in cfg.parameter_names() if getattr(args, name, None) is not None}
    run = cfg.profile(args.target).replace(**given)
    cfg.validate_settings(run)
    cfg.check_run_settings(
        pod=True,
        finetune_gpus=run.placement.finetune_gpus,
        launcher=run.placement.launcher,
        workspace_pvc=args.workspace_pvc,
        deploy_target=run.serve.deploy_target,
        tracking_uri=run.registry.tracking_uri,
        state_dir=run.registry.state_dir,
    )
    package = compile_pipeline(Path(args.output), args.workspace_pvc, args.finetune_retries, args.target)
    arguments = {**run_arguments(args), "git_commit": _git_commit(Path.cwd())}
    run_id = submit(
        args.host, package, arguments, args.experiment, args.run_name, args.service_account, run.serve.namespace
    )
    print(f"submitted {package} to {args.host}: run {run_id} in experiment {args.experiment!r}")


def cmd_data(args: argparse.Namespace) -> None:
    from bertops import dvc_data

    root = Path.cwd()
    if args.action == "pull" and args.remote:
        dvc_data.pull_from_remote(root / "data", args.remote)
        print(f"data: pulled from DVC remote {args.remote!r}")
    elif args.action == "pull":
        print(f"data: {dvc_data.pull(root)}")
    elif args.action == "push":
        print(dvc_data.push(root, args.remote) or "pushed")
    else:
        print(dvc_data.status(root))


def cmd_validate(args: argparse.Namespace) -> None:
    from bertops.dvc_data import data_version
    from components.validate.validate import ValidationFailed, validate_dataset

    config = cfg.from_namespace(args)
    data_path, out = Path(args.path), Path(args.out)
    profile = Path(config.registry.state_dir) / "validation" / "reference_profile.json"
    try:
        report = validate_dataset(
            data_path,
            out,
            data_version(data_path),
            config.data.text_column,
            config.data.label_column,
            config.validation,
            profile,
            update_reference=args.update_reference,
        )
    except ValidationFailed as exc:
        raise BertopsError(f"{exc} (report: {out / 'report.html'})") from exc
    print(f"{data_path}: {report.summary()}; report: {out / 'report.html'}, summary: {out / 'report.json'}")


def cmd_predict(args: argparse.Namespace) -> None:
    from bertops import endpoints

    endpoint = endpoints.get(args.endpoint, args.state_dir)
    for text in args.text:
        label, probs = _predict_v1(endpoint, text)
        print(f"{label}\t{probs[label]:.3f}\t{text[:80]}")


def cmd_models(args: argparse.Namespace) -> None:
    from bertops import endpoints, models

    name, state, uri = args.model_name, args.state_dir, args.tracking_uri
    if args.action == "list":
        rows = models.list_versions(name, state, uri)
        print(f"{'VERSION':<8} {'CHAMPION':<9} {'TEST ACC':<9} {'DATA':<44} COMMIT")
        for row in rows:
            accuracy = f"{row.test_accuracy:.4f}" if row.test_accuracy is not None else "-"
            champion = "yes" if row.champion else ""
            print(f"{row.version:<8} {champion:<9} {accuracy:<9} {row.data_version:<44} {row.git_commit[:12]}")
        return
    if args.action in ("show", "promote") and not args.version:
        raise BertopsError(f"models {args.action} needs a VERSION (see `bertops models list`)")
    if args.action == "show":
        print(models.show_version(name, args.version, state, uri))
        return
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
        version = target
    else:
        version = models.rollback(name, state, uri)
    print(f"{name}: champion is now version {version}")
    # A local endpoint of this model follows the champion, in a container if it runs in one.
    current = next((e for e in endpoints.list_endpoints(state) if e.name == name), None)
    if args.deploy_target == "local" and current is not None:
        if current.container:
            from components.deploy.deploy_docker import deploy_docker

            served = deploy_docker(name, version, state, uri)
        else:
            from components.deploy.deploy import deploy_local

            served = deploy_local(name, version, state, uri)
        print(f"endpoint {name} now serves version {version} at {served.url}")


def cmd_endpoints(args: argparse.Namespace) -> None:
    from bertops import endpoints

    if args.action == "delete":
        if not args.name:
            raise BertopsError("endpoints delete needs the endpoint NAME (see `bertops endpoints list`)")
        gone = endpoints.delete(args.name, args.state_dir)
        print(f"deleted endpoint {gone.name} ({gone.url})")
        return
    found = endpoints.list_endpoints(args.state_dir)
    if not found:
        print("no local endpoints")
        return
    print(f"{'NAME':<28} {'VERSION':<8} {'READY':<6} URL")
    for e in found:
        print(f"{e.name:<28} {e.model_version:<8} {'yes' if e.is_ready() else 'no':<6} {e.url}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bertops", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the whole pipeline on this machine (kfp.local) and deploy locally")
    run.add_argument(
        "--runner",
        choices=["subprocess", "docker"],
        default="subprocess",
        help="subprocess: every step in this Python environment (default); docker: every step in its "
        "container image (build them with `make images`), and the winner served from the serving image",
    )
    cfg.add_arguments(run)
    run.set_defaults(func=cmd_run)

    cluster = argparse.ArgumentParser(add_help=False)
    cluster.add_argument(
        "--workspace-pvc",
        default="",
        help="ReadWriteMany PVC mounted at /workspace in the finetune pods: checkpoints there survive a preempted "
        "node, and launcher=TrainJob/PyTorchJob shares data through it (default: none)",
    )
    cluster.add_argument(
        "--finetune-retries",
        type=int,
        default=DEFAULT_FINETUNE_RETRIES,
        help=f"restarts of a failed finetune task (default: {DEFAULT_FINETUNE_RETRIES})",
    )

    comp = sub.add_parser("compile", parents=[cluster], help="compile the pipeline to IR YAML for Kubeflow")
    comp.add_argument("-o", "--output", default="pipelines/compiled/bertops_pipeline.yaml")
    comp.add_argument(
        "--target",
        choices=cfg.TARGETS,
        default="local",
        help="defaults of the run parameters: local (this machine's paths and a local endpoint) or cluster "
        f"(the InferenceService in {PROFILE_NAMESPACE}, data from the S3 DVC remote, tracking_uri required)"
        " (default: local)",
    )
    comp.set_defaults(func=cmd_compile)

    sub_ = sub.add_parser(
        "submit", parents=[cluster], help="compile and submit a run to a Kubeflow Pipelines server (CI)"
    )
    sub_.add_argument(
        "--target",
        choices=cfg.TARGETS,
        default="cluster",
        help="defaults of the run parameters, as for compile (default: cluster: a submitted run runs in pods)",
    )
    sub_.add_argument("--host", required=True, help="KFP API endpoint, e.g. https://kubeflow.example.com/pipeline")
    sub_.add_argument("--experiment", default="bertops")
    sub_.add_argument("--run-name", default=None)
    sub_.add_argument(
        "--service-account",
        default=PIPELINE_SERVICE_ACCOUNT,
        help="service account of the run's pods, KFP's driver and launcher included "
        f"(default: {PIPELINE_SERVICE_ACCOUNT}, a Kubeflow profile's; pipeline-runner on standalone KFP)",
    )
    sub_.add_argument("-o", "--output", default="pipelines/compiled/bertops_pipeline.yaml")
    cfg.add_arguments(sub_)
    sub_.set_defaults(func=cmd_submit)

    data = sub.add_parser("data", help="DVC-versioned default data: pull, status, push")
    data.add_argument("action", choices=["pull", "status", "push"])
    data.add_argument("--remote", default="", help="DVC remote (default: the local remote; 's3' for S3/MinIO)")
    data.set_defaults(func=cmd_data)

    val = sub.add_parser("validate", help="validate a data directory with the pipeline's expectation suite")
    val.add_argument("path", help="a directory with train/validation/test files, or one .jsonl/.csv/.parquet file")
    val.add_argument("--out", default=".bertops/validation/last", help="where the report and validated splits go")
    val.add_argument("--update-reference", action="store_true", help="make this data the drift reference if it passes")
    cfg.add_arguments(val, groups=(cfg.DataConfig, cfg.ValidationConfig, cfg.RegistryConfig))
    val.set_defaults(func=cmd_validate)

    state = argparse.ArgumentParser(add_help=False)
    state.add_argument("--state-dir", default=cfg.RegistryConfig.state_dir)

    pred = sub.add_parser("predict", parents=[state], help="classify text with a local endpoint")
    pred.add_argument("text", nargs="+")
    pred.add_argument("--endpoint", default=cfg.RegistryConfig.model_name, help="endpoint name")
    pred.set_defaults(func=cmd_predict)

    mods = sub.add_parser("models", parents=[state], help="registered versions: list, show, promote, rollback")
    mods.add_argument("action", choices=["list", "show", "promote", "rollback"])
    mods.add_argument("version", nargs="?", help="version for show and promote")
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

    ends = sub.add_parser("endpoints", parents=[state], help="list or delete local endpoints")
    ends.add_argument("action", choices=["list", "delete"])
    ends.add_argument("name", nargs="?")
    ends.set_defaults(func=cmd_endpoints)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``bertops`` console command."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(name)s %(message)s"
    )
    configure_process()
    try:
        args.func(args)
    except BertopsError as exc:
        print(f"bertops: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bertops: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
