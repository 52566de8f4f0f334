"""Which registered version scores, and where its files are on this machine."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bertops.errors import BertopsError
from bertops.registry import CHAMPION_ALIAS, open_client

if TYPE_CHECKING:
    from mlflow import MlflowClient


@dataclass(frozen=True)
class RegisteredModel:
    """A registry version resolved to a model directory."""

    name: str
    version: str
    directory: Path


def _versions(client: MlflowClient, name: str) -> str:
    found = sorted((int(v.version) for v in client.search_model_versions(f"name='{name}'")), reverse=True)
    return ", ".join(map(str, found)) or "none"


def resolve_version(client: MlflowClient, name: str, version: str) -> str:
    """The version number that ``version`` names: a number, an alias, or '' for the champion."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        raise BertopsError(f"no registered model named {name!r} in the registry") from exc
    wanted = version or CHAMPION_ALIAS
    try:
        if wanted.isdigit():
            return str(client.get_model_version(name, wanted).version)
        return str(client.get_model_version_by_alias(name, wanted).version)
    except MlflowException as exc:
        what = "no champion yet" if wanted == CHAMPION_ALIAS else f"no version or alias {wanted!r}"
        raise BertopsError(f"{name} has {what} (versions: {_versions(client, name)}); give one with --version") from exc


def fetch_model(name: str, version: str, state_dir: str, tracking_uri: str, scratch: Path) -> RegisteredModel:
    """The model files of ``name`` at ``version`` ('' : the champion): in place when the artifact
    store is local, else downloaded into ``scratch``."""
    from urllib.parse import unquote, urlparse

    import mlflow

    client = open_client(tracking_uri, state_dir)
    number = resolve_version(client, name, version)
    uri = client.get_model_version_download_uri(name, number)
    parsed = urlparse(uri)
    local = Path(unquote(parsed.path)) if parsed.scheme in ("", "file") else None
    if local is None or not (local / "config.json").is_file():
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(scratch)))
    if not (local / "config.json").is_file():
        raise BertopsError(f"{name} version {number}: no model files (config.json) at {uri}")
    return RegisteredModel(name, number, local)
