"""The promotion gate: the run's winner against the registry's ``champion`` on the same test split.

The winner always gets registered; this decides whether the ``champion`` alias moves to it and
whether it is deployed. Both models are scored on the same rows here, so a champion trained on
older data or another base model is compared fairly.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from bertops.errors import BertopsError
from bertops.evaluation import ModelEvaluation, metric_direction
from bertops.registry import CHAMPION_ALIAS, open_client
from serving.scoring import evaluate_model

log = logging.getLogger(__name__)


@dataclass
class Decision:
    """Whether to promote, and why; recorded on the registered version."""

    promote: bool
    reason: str
    metric: str
    winner_value: float
    champion_version: str
    champion_value: float | None
    margin: float

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def decide(
    winner: ModelEvaluation,
    champion: ModelEvaluation | None,
    champion_version: str = "",
    metric: str = "test.accuracy",
    margin: float = 0.0,
    min_accuracy: float = 0.0,
    min_macro_f1: float = 0.0,
) -> Decision:
    """Promote when the thresholds pass and (no champion, or the winner beats it by more than ``margin``)."""
    value = winner.metric(metric)
    failures = []
    if winner.test.accuracy < min_accuracy:
        failures.append(f"test accuracy {winner.test.accuracy:.4f} < {min_accuracy}")
    if winner.test.macro_f1 < min_macro_f1:
        failures.append(f"test macro F1 {winner.test.macro_f1:.4f} < {min_macro_f1}")
    champion_value = champion.metric(metric) if champion is not None else None
    if failures:
        promote, reason = False, "below the absolute thresholds: " + "; ".join(failures)
    elif champion_value is None:
        promote, reason = True, f"no champion yet; {metric} {value:.4f} clears the thresholds"
    else:
        gain = (value - champion_value) * metric_direction(metric)
        promote = gain > margin
        verdict = "beats" if promote else "does not beat"
        reason = (
            f"{metric} {value:.4f} {verdict} champion v{champion_version} {champion_value:.4f} "
            f"by more than {margin} (difference {gain:+.4f})"
        )
    log.info("promotion gate: %s", reason)
    return Decision(promote, reason, metric, value, champion_version, champion_value, margin)


def evaluate_champion(
    model_name: str, tokenized_dir: Path, state_dir: str, tracking_uri: str
) -> tuple[str, ModelEvaluation] | None:
    """The current champion's version and its scores on this run's splits, as it is served; ``None`` if there is none."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = open_client(tracking_uri, state_dir)
    try:
        version = client.get_model_version_by_alias(model_name, CHAMPION_ALIAS)
    except MlflowException:
        return None
    with tempfile.TemporaryDirectory(prefix="bertops-champion-") as scratch:
        local = mlflow.artifacts.download_artifacts(artifact_uri=str(version.source), dst_path=scratch)
        try:
            scores = evaluate_model(Path(local), tokenized_dir)
        except BertopsError as exc:
            raise BertopsError(f"champion v{version.version} of {model_name!r} cannot be compared: {exc}") from exc
    return str(version.version), scores
