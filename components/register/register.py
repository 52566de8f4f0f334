"""Register a fine-tuned model in MLflow with its metrics, parameters and lineage.

Registration is ordered so that a crash at any point leaves no half-registered version:
the run and its artifacts are written first, and the model version (with all its tags) is
created last, in one registry transaction. A crash before that leaves at most a run marked
FAILED, which no version points to. Moving the ``champion`` alias is a compare-and-set under the
model's lock (``bertops.champion_lock``): a run whose gate compared against a champion that another
run has replaced since registers its version without promoting it.
"""

from __future__ import annotations

import json
import logging
import math
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bertops.artifacts import CURVES_FILE, require_saved_model, training_record
from bertops.champion_lock import champion_changed, current_champion
from bertops.evaluation import SERVING_FILE
from bertops.registry import experiment_id, open_client, set_champion
from bertops.state_lock import state_lock

log = logging.getLogger(__name__)

# The model card's section on the promotion gate, and the version tag with the gate's reason.
GATE_DECISION = "Promotion gate"
GATE_REASON_TAG = "gate_reason"


@dataclass
class Submission:
    """What registration records about one model: its files, scores, settings and origin.

    ``lineage`` holds at least ``data_version``, ``git_commit``, ``base_model`` and
    ``pipeline_run``; ``decisions`` (title -> Markdown: candidate selection, promotion gate) go
    into the model card; ``tags`` are extra version tags; ``files`` (name -> local file) are
    logged beside the model as run artifacts, e.g. the evaluation; ``serving`` (the evaluation's
    ``serving_record``) becomes the model's ``serving.json`` and its ``serving_variant`` tags.
    """

    model_dir: Path
    model_name: str
    metrics: dict[str, float]
    params: dict[str, Any]
    lineage: dict[str, str]
    decisions: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    serving: dict[str, str] = field(default_factory=dict)


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
        if submission.serving:
            # Beside the model's files, not into the finetune step's directory: servers read it there.
            client.log_text(run_id, json.dumps(submission.serving), f"model/{SERVING_FILE}")
        client.log_text(run_id, card, "model_card.md")
        client.set_terminated(run_id, "FINISHED")
    except Exception:
        client.set_terminated(run_id, "FAILED")
        raise
    return run


def _refused(submission: Submission, reason: str) -> Submission:
    """``submission`` as a version that the gate passed but that may not be promoted, saying why."""
    gate = submission.decisions.get(GATE_DECISION, "")
    decisions = {**submission.decisions, GATE_DECISION: f"Not promoted: {reason}.\n\nThe gate said: {gate}"}
    tags = {**submission.tags, GATE_REASON_TAG: f"{reason} (gate: {submission.tags.get(GATE_REASON_TAG, '')})"}
    return replace(submission, decisions=decisions, tags=tags)


def serving_tags(serving: dict[str, str]) -> dict[str, str]:
    """The version tags that say which variant serves and why (none when ``serving`` is empty)."""
    return {"serving_variant": serving["variant"], "serving_variant_reason": serving["reason"]} if serving else {}


def _create_version(client: Any, submission: Submission, run: Any, promoted: bool, card: str) -> str:
    """Create the version with all its tags in one registry call; returns its number."""
    tags = {
        **submission.lineage,
        **submission.tags,
        "promoted": str(promoted).lower(),
        **serving_tags(submission.serving),
        **{f"metric.{k}": f"{v:.6f}" for k, v in submission.metrics.items()},
    }
    source = f"{run.info.artifact_uri}/model"
    version = client.create_model_version(
        submission.model_name, source=source, run_id=run.info.run_id, tags=tags, description=card
    )
    return str(version.version)


def register_model(
    submission: Submission,
    promote: bool,
    state_dir: str = ".bertops",
    tracking_uri: str = "",
    expected_champion: str | None = None,
    lock: AbstractContextManager[None] | None = None,
) -> RegisteredVersion:
    """Log a run with the model's files, then create a registry version pointing at them.

    When ``promote`` is true the ``champion`` alias moves to the new version, after the version
    is complete, under ``lock`` (default: the state directory's lock of the model). With
    ``expected_champion`` (the version the gate compared against, '' for none) the alias moves
    only if the champion is still that version; otherwise (another run promoted meanwhile) the
    version is registered as not promoted, and its gate reason and model card say why.
    """
    from mlflow.exceptions import MlflowException

    require_saved_model(submission.model_dir)
    name = submission.model_name
    client = open_client(tracking_uri, state_dir)
    card = model_card(name, submission.metrics, submission.params, submission.lineage, submission.decisions)
    run = _log_run(client, submission, card, state_dir)
    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    refusal = ""
    if not promote:
        lock = nullcontext()
    with lock or state_lock(state_dir, name, f"register {name}"):
        if promote and expected_champion is not None:
            refusal = champion_changed(expected_champion, current_champion(client, name))
        if refusal:
            submission = _refused(submission, refusal)
            card = model_card(name, submission.metrics, submission.params, submission.lineage, submission.decisions)
        version = _create_version(client, submission, run, promote and not refusal, card)
        if promote and not refusal:
            set_champion(client, name, version)
    if refusal:
        # The run's copy of the card says what the version's does.
        client.log_text(run.info.run_id, card, "model_card.md")
        log.warning("registered %s version %s, not promoted: %s", name, version, refusal)
    else:
        log.info("registered %s version %s%s", name, version, " as champion" if promote else "")
    source = f"{run.info.artifact_uri}/model"
    return RegisteredVersion(name, version, run.info.run_id, source, promote and not refusal, card)
