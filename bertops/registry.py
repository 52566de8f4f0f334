"""The MLflow model registry: where it lives and how to open it.

On one machine: sqlite plus a local artifact folder under the state directory. On a cluster:
a tracking server URI (``tracking_uri``) whose artifact store (S3/MinIO) KServe can read.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from bertops.env import apply_env_defaults
from bertops.errors import BertopsError
from bertops.private_state import private_dir, private_file

if TYPE_CHECKING:
    from mlflow import MlflowClient

EXPERIMENT = "bertops"
CHAMPION_ALIAS = "champion"


def registry_dir(state_dir: str | Path) -> Path:
    """Folder of the local registry (sqlite database and artifacts)."""
    return Path(state_dir).resolve() / "registry"


def resolve_tracking_uri(tracking_uri: str, state_dir: str | Path) -> str:
    """``tracking_uri`` if given, else the local sqlite registry under ``state_dir``."""
    if tracking_uri:
        return tracking_uri
    return f"sqlite:///{registry_dir(state_dir) / 'mlflow.db'}"


def open_client(tracking_uri: str, state_dir: str | Path) -> MlflowClient:
    """An ``MlflowClient`` for the tracking server and model registry (same URI)."""
    # The registry is opened by library callers too, not only by entry points that configured the process.
    apply_env_defaults()
    import mlflow
    from mlflow import MlflowClient

    uri = resolve_tracking_uri(tracking_uri, state_dir)
    if uri.startswith("sqlite:///"):
        private_dir(registry_dir(state_dir), state_dir)
        database = Path(uri.removeprefix("sqlite:///"))
        if database.parent.is_dir():
            # Created owner-only before sqlite opens it (sqlite gives its journals the same mode).
            private_file(database, state_dir)
    mlflow.set_tracking_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def experiment_id(client: MlflowClient, state_dir: str | Path) -> str:
    """The project's experiment, created on first use with artifacts under the state directory
    (MLflow would otherwise put them in ``./mlruns`` of whatever directory the step runs in)."""
    found = client.get_experiment_by_name(EXPERIMENT)
    if found is not None:
        return str(found.experiment_id)
    import mlflow

    local = mlflow.get_tracking_uri().startswith("sqlite:")
    location = (registry_dir(state_dir) / "artifacts").as_uri() if local else None
    return str(client.create_experiment(EXPERIMENT, artifact_location=location))


def version_metrics(client: MlflowClient, name: str, version: str) -> dict[str, float]:
    """The metrics recorded on a model version (its ``metric.*`` tags)."""
    tags = client.get_model_version(name, version).tags
    return {k.removeprefix("metric."): float(v) for k, v in tags.items() if k.startswith("metric.")}


CHAMPION_HISTORY_TAG = "bertops.champion_history"


def champion_history(client: MlflowClient, name: str) -> list[str]:
    """Versions that held the ``champion`` alias, oldest first (the last one holds it now)."""
    tags = client.get_registered_model(name).tags
    raw = tags.get(CHAMPION_HISTORY_TAG, "")
    return [v for v in raw.split(",") if v]


def set_champion(client: MlflowClient, name: str, version: str) -> None:
    """Move the ``champion`` alias to ``version`` and remember the move for ``rollback``.

    Promoting the champion again changes nothing: a second entry would make ``rollback`` go
    back to the same version.
    """
    client.set_registered_model_alias(name, CHAMPION_ALIAS, version)
    history = champion_history(client, name)
    if history and history[-1] == str(version):
        return
    client.set_registered_model_tag(name, CHAMPION_HISTORY_TAG, ",".join([*history, str(version)]))


def rollback_champion(client: MlflowClient, name: str) -> str:
    """Give the ``champion`` alias back to the version that held it before; returns that version."""
    history = champion_history(client, name)
    if len(history) < 2:
        raise BertopsError(f"{name}: no earlier champion to roll back to (history: {', '.join(history) or 'empty'})")
    previous = history[-2]
    client.set_registered_model_alias(name, CHAMPION_ALIAS, previous)
    client.set_registered_model_tag(name, CHAMPION_HISTORY_TAG, ",".join(history[:-1]))
    return previous


def model_files(model_name: str, version: str, state_dir: str = ".bertops", tracking_uri: str = "") -> Path:
    """The local directory holding a registered version's model files (local artifact store only)."""
    from urllib.parse import unquote, urlparse

    client = open_client(tracking_uri, state_dir)
    uri = client.get_model_version_download_uri(model_name, version)
    parsed = urlparse(uri)
    path = Path(unquote(parsed.path)) if parsed.scheme in ("", "file") else None
    if path is None or not (path / "config.json").is_file():
        raise BertopsError(f"{model_name} version {version}: model files not found locally at {uri}")
    return path
