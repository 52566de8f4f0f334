"""``bertops ui``: the MLflow UI (runs, curves, the model registry) on the project's registry."""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys

from bertops import config as cfg
from bertops.errors import BertopsError

DEFAULT_PORT = 5000


def server_command(tracking_uri: str, state_dir: str, host: str, port: int) -> list[str]:
    """``mlflow server`` on the registry that ``tracking_uri`` or ``state_dir`` names, one worker.

    One worker: a UI for one person needs no more, and each worker is a process that imports MLflow.
    """
    from bertops.registry import open_client, registry_dir, resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri, state_dir)
    if uri.startswith(("http://", "https://")):
        raise BertopsError(f"{uri} is a tracking server, with its UI: open it in a browser")
    if importlib.util.find_spec("flask") is None:
        raise BertopsError("the MLflow UI needs the full mlflow package: pip install -e '.[ui]' (make install does)")
    # Creates a fresh registry (owner-only, as the pipeline would) rather than leaving that to the server.
    open_client(tracking_uri, state_dir)
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri]
    command += ["--host", host, "--port", str(port), "--workers", "1"]
    if not tracking_uri:
        # Runs made from the UI keep their artifacts under the state directory too, not in ./mlartifacts.
        command += ["--default-artifact-root", (registry_dir(state_dir) / "artifacts").as_uri(), "--no-serve-artifacts"]
    return command


def cmd_ui(args: argparse.Namespace) -> None:
    """Print the UI's URL, then become the MLflow server (Ctrl-C stops it)."""
    from bertops.redact import redact_credentials
    from bertops.registry import resolve_tracking_uri

    command = server_command(args.tracking_uri, args.state_dir, args.host, args.port)
    registry = redact_credentials(resolve_tracking_uri(args.tracking_uri, args.state_dir))
    print(f"MLflow UI on http://{args.host}:{args.port}  (registry {registry}; Ctrl-C stops it)", flush=True)
    os.execv(command[0], command)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], state: argparse.ArgumentParser) -> None:
    """``ui``; ``state`` carries ``--state-dir``."""
    ui = sub.add_parser("ui", parents=[state], help="the MLflow UI on the registry: runs, curves, model versions")
    ui.add_argument("--tracking-uri", default=cfg.RegistryConfig.tracking_uri, help="MLflow backend store URI "
                    "(empty: sqlite under --state-dir)")  # fmt: skip
    ui.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    ui.add_argument("--port", type=int, default=DEFAULT_PORT, help="port to listen on")
    ui.set_defaults(func=cmd_ui)
