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
import shutil
import tempfile
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bertops.artifacts import CURVES_FILE, require_saved_model, training_record
from bertops.champion_lock import champion_changed, current_champion
from bertops.drift import PROFILE_FILE
from bertops.evaluation import SERVING_FILE, ModelEvaluation, confusion_matrix_png
from bertops.registry import experiment_id, open_client, set_champion
from bertops.state_lock import state_lock
from bertops.tracking import (
    PARENT_TAG,
    RUN_NAME_TAG,
    curve_metrics,
    dataset_input,
    fail_pipeline_run,
    finish_pipeline_run,
    typed_params,
)
from serving.mlflow_model import write_mlflow_files

log = logging.getLogger(__name__)

# The model card's section on the promotion gate, and the version tag with the gate's reason.
GATE_DECISION = "Promotion gate"
GATE_REASON_TAG = "gate_reason"
# The run's artifact folder with the model: what the server loads, and an MLflow model.
MODEL_ARTIFACT = "model"


@dataclass
class Submission:
    """What registration records about one model: its files, scores, settings and origin.

    ``lineage`` holds at least ``data_version``, ``git_commit``, ``base_model`` and
    ``pipeline_run``; ``decisions`` (title -> Markdown: candidate selection, promotion gate) go
    into the model card; ``tags`` are extra version tags; ``files`` (name -> local file) are
    logged beside the model as run artifacts, e.g. the evaluation. ``run_id`` is the candidate's run
    (logged to while it trained; '' or gone: a new run), ``parent_run_id`` the pipeline's run, ended
    once the version exists; ``data_source`` (where the data came from) logs the data as the run's
    input, its digest the lineage's ``data_version``. ``serving`` (the evaluation's
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
    run_id: str = ""
    parent_run_id: str = ""
    data_source: str = ""
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
    param_rows = "\n".join(f"| {k} | {v} |" for k, v in sorted(typed_params(params).items()))
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


def lineage(
    data_version: str, git_commit: str, pipeline_run: str, model_metadata: dict[str, Any], trigger: str
) -> dict[str, str]:
    """Where a pipeline's model came from: data, code, base model, run, why the run started, and candidate."""
    return {
        "data_version": data_version,
        "git_commit": git_commit,
        "base_model": str(model_metadata.get("base_model", "")),
        "pipeline_run": pipeline_run,
        "trigger": trigger,
        "candidate": str(model_metadata.get("candidate", "")),
    }


def decisions(selection: dict[str, Any], gate: dict[str, Any], promote: bool) -> tuple[dict[str, str], dict[str, str]]:
    """The model card's decision sections and the version's reason tags, from the selection's
    record (the winner evaluation's metadata) and the gate's decision."""
    sections = {
        "Candidate selection": f"{selection.get('reason', '')}\n\n{selection.get('table', '')}",
        GATE_DECISION: f"{'Promoted' if promote else 'Not promoted'}: {gate['reason']}",
    }
    return sections, {"selection_reason": str(selection.get("reason", "")), GATE_REASON_TAG: str(gate["reason"])}


def scored(scores: ModelEvaluation, model_dir: Path) -> dict[str, float]:
    """The version's metrics: the evaluation's, plus the training record's numbers as ``train_*``."""
    metrics = scores.flat()
    training = training_record(model_dir)
    metrics.update({f"train_{k}": float(v) for k, v in training.items() if isinstance(v, int | float)})
    return metrics


def run_files(
    scores: ModelEvaluation, evaluation: Path, validation_report: Path, dataset: Path, scratch: Path
) -> dict[str, Path]:
    """The files a pipeline's registered version has beside it in its run: the evaluation (JSON and
    the test split's confusion matrix, drawn into ``scratch``), the validation report, and the validated
    ``dataset``'s reference profile (the drift monitor's reference) where it has one."""
    confusion_matrix_png(scores.test, scratch / "confusion_matrix.png")
    files = {
        "evaluation.json": evaluation,
        "evaluation/confusion_matrix.png": scratch / "confusion_matrix.png",
        "validation/report.html": validation_report,
    }
    if (dataset / PROFILE_FILE).is_file():
        files[PROFILE_FILE] = dataset / PROFILE_FILE
    return files


def _new_run(client: Any, submission: Submission, state_dir: str) -> str:
    """A run of its own for a model that has none (trained outside a pipeline run, or untracked while it trained)."""
    tags = {RUN_NAME_TAG: f"{submission.model_name}-{submission.lineage.get('pipeline_run', '')}"}
    if submission.parent_run_id:
        tags[PARENT_TAG] = submission.parent_run_id
    return str(client.create_run(experiment_id(client, state_dir), tags=tags).info.run_id)


def _model_run(client: Any, submission: Submission, state_dir: str) -> str:
    """The run the version will point at: the candidate's own run when it has one, else a new one."""
    from mlflow.exceptions import MlflowException

    if submission.run_id:
        try:
            return str(client.get_run(submission.run_id).info.run_id)
        except MlflowException as exc:
            log.warning("candidate run %s is gone (%s): registering from a new run", submission.run_id, exc)
    return _new_run(client, submission, state_dir)


def _missing_curve_points(client: Any, run_id: str, model_dir: Path) -> list[Any]:
    """The training curves' points the run lacks (a candidate's run has those logged while it trained)."""
    points = curve_metrics(training_record(model_dir).get("history", []))
    logged = {(key, m.step) for key in {p.key for p in points} for m in client.get_metric_history(run_id, key)}
    return [p for p in points if (p.key, p.step) not in logged]


def _log_values(client: Any, run_id: str, submission: Submission) -> None:
    """Metrics, parameters (those the run does not have yet: they cannot change), lineage tags, the curves."""
    from mlflow.entities import Metric, Param, RunTag

    known = client.get_run(run_id).data.params
    params = {k: v for k, v in typed_params(submission.params).items() if k not in known}
    client.log_batch(
        run_id,
        metrics=[Metric(k, float(v), 0, 0) for k, v in submission.metrics.items()],
        params=[Param(k, str(v)) for k, v in params.items()],
        tags=[RunTag(k, str(v)) for k, v in submission.lineage.items()],
    )
    curves = _missing_curve_points(client, run_id, submission.model_dir)
    # log_batch takes at most 1,000 metrics a call.
    for start in range(0, len(curves), 1000):
        client.log_batch(run_id, metrics=curves[start : start + 1000])
    if submission.data_source:
        data = dataset_input(submission.lineage.get("data_version", ""), submission.data_source, submission.model_name)
        _log_dataset(client, run_id, data)


def _log_dataset(client: Any, run_id: str, data: Any) -> None:
    """Link the dataset to the run; two runs registering the same data at once must both succeed.

    MLflow's SQL store looks a dataset up by (experiment, name, digest) and inserts it when absent,
    in one transaction: two registers doing so at once both miss it, and the second insert fails
    its UNIQUE constraint (and is rolled back). Tried again, the lookup finds the first one's row.
    """
    from mlflow.exceptions import MlflowException

    try:
        client.log_inputs(run_id, datasets=[data])
    except MlflowException as exc:
        if "UNIQUE constraint failed: datasets" not in str(exc):
            raise
        client.log_inputs(run_id, datasets=[data])


def _log_files(client: Any, run_id: str, submission: Submission, card: str) -> None:
    """The curves figure, the submitted files, the model directory as an MLflow model, the card."""
    if (submission.model_dir / CURVES_FILE).is_file():
        client.log_artifact(run_id, str(submission.model_dir / CURVES_FILE), "training")
    with tempfile.TemporaryDirectory() as scratch:
        for name, path in submission.files.items():
            target = Path(scratch, "files", name)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
        if submission.files:
            client.log_artifacts(run_id, str(Path(scratch, "files")))
        client.log_artifacts(run_id, str(submission.model_dir), MODEL_ARTIFACT)
        # One folder, both: the files the model servers load and what makes it an MLflow model.
        write_mlflow_files(submission.model_dir, Path(scratch, "mlflow"))
        client.log_artifacts(run_id, str(Path(scratch, "mlflow")), MODEL_ARTIFACT)
    if submission.serving:
        # Beside the model's files, not into the finetune step's directory: servers read it there.
        client.log_text(run_id, json.dumps(submission.serving), f"{MODEL_ARTIFACT}/{SERVING_FILE}")
    client.log_text(run_id, card, "model_card.md")


def _log_run(client: Any, submission: Submission, card: str, state_dir: str) -> Any:
    """Log everything the version will point at into the model's run; a failure marks the run FAILED.

    A candidate's run keeps the end time its training gave it: its duration is the training's.
    """
    run_id = _model_run(client, submission, state_dir)
    try:
        _log_values(client, run_id, submission)
        _log_files(client, run_id, submission, card)
        if client.get_run(run_id).info.status != "FINISHED":
            client.set_terminated(run_id, "FINISHED")
    except Exception:
        client.set_terminated(run_id, "FAILED")
        raise
    return client.get_run(run_id)


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
    source = f"{run.info.artifact_uri}/{MODEL_ARTIFACT}"
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
    version is registered as not promoted, and its gate reason and model card say why. A failure
    marks the pipeline's run (``submission.parent_run_id``) FAILED.
    """
    try:
        return _register(submission, promote, state_dir, tracking_uri, expected_champion, lock)
    except Exception:
        fail_pipeline_run(submission.parent_run_id, state_dir, tracking_uri)
        raise


def _register(
    submission: Submission,
    promote: bool,
    state_dir: str,
    tracking_uri: str,
    expected_champion: str | None,
    lock: AbstractContextManager[None] | None,
) -> RegisteredVersion:
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
    if submission.parent_run_id:
        finish_pipeline_run(client, submission.parent_run_id, run.info.run_id, version, submission)
    source = f"{run.info.artifact_uri}/{MODEL_ARTIFACT}"
    return RegisteredVersion(name, version, run.info.run_id, source, promote and not refusal, card)
