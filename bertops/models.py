"""Registry operations for people: ``bertops models list|show|promote|rollback``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from bertops.errors import BertopsError
from bertops.registry import (
    CHAMPION_ALIAS,
    champion_history,
    open_client,
    rollback_champion,
    set_champion,
    version_metrics,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

LINEAGE_TAGS = ("data_version", "git_commit", "pipeline_run", "base_model", "candidate", "promoted")


@dataclass
class VersionSummary:
    """One registered version as ``models list`` shows it."""

    version: str
    champion: bool
    aliases: list[str]
    test_accuracy: float | None
    data_version: str
    git_commit: str
    created: int


def _client(name: str, state_dir: str, tracking_uri: str) -> MlflowClient:
    from mlflow.exceptions import MlflowException

    client = open_client(tracking_uri, state_dir)
    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        raise BertopsError(f"no registered model named {name!r} in {tracking_uri or state_dir}") from exc
    return client


def _aliases(client: MlflowClient, name: str) -> dict[str, list[str]]:
    """Version -> its aliases (``search_model_versions`` leaves them out)."""
    from mlflow.exceptions import MlflowException

    by_version: dict[str, list[str]] = {}
    for alias, version in sorted((client.get_registered_model(name).aliases or {}).items()):
        by_version.setdefault(str(version), []).append(alias)
    try:
        champion = str(client.get_model_version_by_alias(name, CHAMPION_ALIAS).version)
    except MlflowException:
        return by_version
    if CHAMPION_ALIAS not in by_version.get(champion, []):
        by_version.setdefault(champion, []).insert(0, CHAMPION_ALIAS)
    return by_version


def list_versions(name: str, state_dir: str = ".bertops", tracking_uri: str = "") -> list[VersionSummary]:
    """Every version of ``name``, newest first."""
    client = _client(name, state_dir, tracking_uri)
    aliases = _aliases(client, name)
    versions = sorted(client.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version), reverse=True)
    out = []
    for v in versions:
        accuracy = v.tags.get("metric.test_accuracy")
        out.append(
            VersionSummary(
                version=str(v.version),
                champion=CHAMPION_ALIAS in aliases.get(str(v.version), []),
                aliases=aliases.get(str(v.version), []),
                test_accuracy=float(accuracy) if accuracy else None,
                data_version=v.tags.get("data_version", ""),
                git_commit=v.tags.get("git_commit", ""),
                created=int(v.creation_timestamp or 0),
            )
        )
    return out


def get_version(client: MlflowClient, name: str, version: str) -> ModelVersion:
    """Version ``version`` of ``name``: a number, or an alias such as ``champion`` (``BertopsError`` if none)."""
    from mlflow.exceptions import MlflowException

    try:
        if version.isdigit():
            return client.get_model_version(name, version)
        return client.get_model_version_by_alias(name, version)
    except MlflowException as exc:
        raise BertopsError(f"{name} has no version or alias {version!r} (see `bertops models list`)") from exc


def _rows(pairs: list[tuple[str, str]], width: int, indent: str) -> list[str]:
    """``name  value`` lines, the values aligned at ``width`` or, past a longer name, after it."""
    width = max([width, *(len(k) + 2 for k, _ in pairs)])
    return [f"{indent}{k:<{width}}{v}" for k, v in pairs]


def show_version(name: str, version: str, state_dir: str = ".bertops", tracking_uri: str = "") -> str:
    """The lineage of one version (a number or an alias): data md5, commit, run, base model, metrics,
    and why it was (not) promoted."""
    client = _client(name, state_dir, tracking_uri)
    v = get_version(client, name, version)
    aliases = _aliases(client, name).get(str(v.version), [])
    lines = [f"{name} version {v.version}{''.join(f'  [{a}]' for a in aliases)}"]
    pairs = [(tag, v.tags.get(tag, "")) for tag in LINEAGE_TAGS]
    pairs += [("mlflow run", str(v.run_id)), ("artifacts", str(v.source))]
    pairs += [("selection", v.tags.get("selection_reason", "")), ("gate", v.tags.get("gate_reason", ""))]
    lines += _rows(pairs, 16, "  ")
    # Versions registered before int8 existed have no serving.json: their servers run fp32.
    pairs = [
        (
            "serving",
            f"{v.tags.get('serving_variant', 'fp32')}  "
            f"{v.tags.get('serving_variant_reason', '(registered before the int8 variant)')}",
        )
    ]
    lines += _rows(pairs, 16, "  ")
    lines.append("  metrics")
    metrics = sorted(version_metrics(client, name, str(v.version)).items())
    lines += _rows([(k, f"{value:.4f}") for k, value in metrics], 28, "    ")
    return "\n".join(lines)


def require_version(name: str, version: str, state_dir: str = ".bertops", tracking_uri: str = "") -> MlflowClient:
    """The registry client, once ``version`` of ``name`` is known to exist (``BertopsError`` if not)."""
    from mlflow.exceptions import MlflowException

    client = _client(name, state_dir, tracking_uri)
    try:
        client.get_model_version(name, version)
    except MlflowException as exc:
        raise BertopsError(f"{name} has no version {version!r}") from exc
    return client


def promote(name: str, version: str, state_dir: str = ".bertops", tracking_uri: str = "") -> None:
    """Make ``version`` the champion by hand (recorded in the champion history)."""
    set_champion(require_version(name, version, state_dir, tracking_uri), name, version)


def rollback_target(name: str, state_dir: str = ".bertops", tracking_uri: str = "") -> str:
    """The version ``rollback`` would make the champion, without moving anything."""
    history = champion_history(_client(name, state_dir, tracking_uri), name)
    if len(history) < 2:
        raise BertopsError(f"{name}: no earlier champion to roll back to (history: {', '.join(history) or 'empty'})")
    return history[-2]


def rollback(name: str, state_dir: str = ".bertops", tracking_uri: str = "") -> str:
    """Give the champion alias back to the previous champion; returns its version."""
    return rollback_champion(_client(name, state_dir, tracking_uri), name)


def champion(name: str, state_dir: str = ".bertops", tracking_uri: str = "") -> str:
    """The current champion's version ('' if none)."""
    history = champion_history(_client(name, state_dir, tracking_uri), name)
    return history[-1] if history else ""
