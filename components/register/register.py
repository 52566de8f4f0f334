"""Register a fine-tuned model in MLflow with its metrics, parameters and lineage.

Registration is ordered so that a crash at any point leaves no half-registered version:
the run and its artifacts are written first, and the model version (with all its tags) is
created last, in one registry transaction. A crash before that leaves at most a run marked
FAILED, which no version points to.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bertops.artifacts import CURVES_FILE, require_saved_model, training_record
from bertops.registry import experiment_id, open_client, set_champion

log = logging.getLogger(__name__)


@dataclass
class Submission:
    """What registration records about one model: its files, scores, settings and origin.

    ``lineage`` holds at least ``data_version``, ``git_commit``, ``base_model`` and
    ``pipeline_run``; ``decisions`` (title -> Markdown: candidate selection, promotion gate) go
    into the model card; ``tags`` are extra version tags; ``files`` (name -> local file) are
    logged beside the model as run artifacts, e.g. the evaluation.
    """

    model_dir: Path
    model_name: str
    metrics: dict[str, float]
    params: dict[str, Any]
    lineage: dict[str, str]
    decisions: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)


@dataclass
class RegisteredVersion:
    """A model version as the registry holds it."""

    name: str
    version: str
    run_id: str
    source: str
    champion: bool
    card: str


def model_card(
    name: str,
    metrics: dict[str, float],
    params: dict[str, Any],
    lineage: dict[str, str],
    decisions: dict[str, str] | None = None,
) -> str:
    """A Markdown model card: what the model is, how it was trained, how well it did, and why it was chosen."""
    metric_rows = "\n".join(f"| {k} | {v:.4f} |" for k, v in sorted(metrics.items()))
    param_rows = "\n".join(f"| {k} | {v} |" for k, v in sorted(params.items()))
    lineage_rows = "\n".join(f"| {k} | `{v}` |" for k, v in sorted(lineage.items()))
    decision_text = "".join(f"\n## {title}\n{text}\n" for title, text in (decisions or {}).items())
    return f"""# Model card: {name}

A BERT-style sequence classifier fine-tuned by the bertops pipeline.

## Evaluation (held-out test split)
| metric | value |
|---|---|
{metric_rows}

## Training parameters
| parameter | value |
|---|---|
{param_rows}

## Lineage
| what | value |
|---|---|
{lineage_rows}
{decision_text}
## Intended use and limits
Classification of text like the training data (see the lineage's data version) into the labels
above. Texts are truncated to the training sequence length (`max_length`); quality on text unlike
the training data is not measured.
"""


def training_curves(model_dir: Path) -> list[Any]:
    """The fine-tuning history as MLflow metrics with their steps (empty if there is none).

    Logged as step series (``train_loss``, ``val_loss``, ``val_accuracy``, ``learning_rate``),
    MLflow draws the curves itself beside ``curves.png``.
    """
    from mlflow.entities import Metric

    return [
        Metric(f"training.{key}", float(value), 0, int(entry["step"]))
        for entry in training_record(model_dir).get("history", [])
        for key, value in entry.items()
        if key not in ("step", "epoch") and math.isfinite(float(value))
    ]


def _log_run(client: Any, submission: Submission, card: str, state_dir: str) -> Any:
    """Log the run with everything the version will point at; a failure marks it FAILED."""
    from mlflow.entities import Metric, Param, RunTag

    curves = training_curves(submission.model_dir)
    run_name = f"{submission.model_name}-{submission.lineage.get('pipeline_run', '')}"
    run = client.create_run(experiment_id(client, state_dir), tags={"mlflow.runName": run_name})
    run_id = run.info.run_id
    try:
        client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), 0, 0) for k, v in submission.metrics.items()],
            params=[Param(k, str(v)) for k, v in submission.params.items()],
            tags=[RunTag(k, str(v)) for k, v in submission.lineage.items()],
        )
        # log_batch takes at most 1,000 metrics a call.
        for start in range(0, len(curves), 1000):
            client.log_batch(run_id, metrics=curves[start : start + 1000])
        if (submission.model_dir / CURVES_FILE).is_file():
            client.log_artifact(run_id, str(submission.model_dir / CURVES_FILE), "training")
        for name, path in submission.files.items():
            client.log_text(run_id, path.read_text(encoding="utf-8"), name)
        client.log_artifacts(run_id, str(submission.model_dir), "model")
        client.log_text(run_id, card, "model_card.md")
        client.set_terminated(run_id, "FINISHED")
    except Exception:
        client.set_terminated(run_id, "FAILED")
        raise
    return run


def register_model(
    submission: Submission, promote: bool, state_dir: str = ".bertops", tracking_uri: str = ""
) -> RegisteredVersion:
    """Log a run with the model's files, then create a registry version pointing at them.

    When ``promote`` is true the ``champion`` alias moves to the new version, after the version
    is complete.
    """
    from mlflow.exceptions import MlflowException

    require_saved_model(submission.model_dir)
    name, metrics = submission.model_name, submission.metrics
    client = open_client(tracking_uri, state_dir)
    card = model_card(name, metrics, submission.params, submission.lineage, submission.decisions)
    run = _log_run(client, submission, card, state_dir)
    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    source = f"{run.info.artifact_uri}/model"
    tags = {
        **submission.lineage,
        **submission.tags,
        "promoted": str(promote).lower(),
        **{f"metric.{k}": f"{v:.6f}" for k, v in metrics.items()},
    }
    version = client.create_model_version(name, source=source, run_id=run.info.run_id, tags=tags, description=card)
    if promote:
        set_champion(client, name, str(version.version))
    log.info("registered %s version %s%s", name, version.version, " as champion" if promote else "")
    return RegisteredVersion(name, str(version.version), run.info.run_id, source, promote, card)
