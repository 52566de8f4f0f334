"""The MLflow runs of one pipeline run: a parent run for the pipeline, a child run per candidate.

plan-candidates (the first step) starts the parent run; each finetune task starts its
candidate's child run and logs the training curves while it trains; register logs the winner's
model into the winner's run and ends the parent, so the parent lasts as long as the pipeline.
Outside register, tracking is best effort: a tracking server that does not answer costs a
warning (after a short retry), never the training.
"""

from __future__ import annotations

import logging
import math
import os
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, get_type_hints

from bertops.registry import experiment_id, open_client

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

PIPELINE_RUN_TAG = "bertops.pipeline_run"
CANDIDATE_TAG = "bertops.candidate"
# The run's name as ``bertops run`` knows it (its checkpoint name), which the KFP job name is not.
RUN_NAME_OF_PIPELINE_TAG = "bertops.run_name"
PARENT_TAG = "mlflow.parentRunId"
RUN_NAME_TAG = "mlflow.runName"
# The training curves' metric names: ``training.<history key>`` at the history entry's step.
CURVE_PREFIX = "training."
# Best-effort calls give up after this: a tracking server that does not answer must not hold up training.
QUICK_RETRY_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}


@contextmanager
def quick_retries() -> Iterator[None]:
    """MLflow's HTTP calls inside retry once with a 10 s timeout (its defaults retry for minutes)."""
    saved = {name: os.environ.get(name) for name in QUICK_RETRY_ENV}
    os.environ.update(QUICK_RETRY_ENV)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def typed_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` with the whole-number floats of integer settings as ints (``epochs 1``, not ``1.0``).

    Values that crossed a KFP artifact's metadata arrive as floats; the config says which settings are ints.
    """
    from bertops.config import TrainConfig

    hints = get_type_hints(TrainConfig)
    return {
        name: int(value) if hints.get(name) is int and isinstance(value, float) and value.is_integer() else value
        for name, value in params.items()
    }


def curve_metrics(history: list[dict[str, Any]], timestamp: int = 0) -> list[Any]:
    """The training history as MLflow metrics (``training.train_loss`` ... at each entry's step)."""
    from mlflow.entities import Metric

    return [
        Metric(f"{CURVE_PREFIX}{key}", float(value), timestamp, int(entry["step"]))
        for entry in history
        for key, value in entry.items()
        if key not in ("step", "epoch") and math.isfinite(float(value))
    ]


def start_pipeline_run(pipeline_run: str, state_dir: str, tracking_uri: str, run_name: str = "") -> str:
    """Start the pipeline's parent run; its id, or '' (with a warning) when the tracking server does not answer.

    ``run_name``: the name the caller knows the run by (``fail_unfinished_runs`` finds it by that).
    """
    tags = {RUN_NAME_TAG: pipeline_run, PIPELINE_RUN_TAG: pipeline_run}
    if run_name:
        tags[RUN_NAME_OF_PIPELINE_TAG] = run_name
    try:
        with quick_retries():
            client = open_client(tracking_uri, state_dir)
            run = client.create_run(experiment_id(client, state_dir), tags=tags)
    except Exception as exc:  # noqa: BLE001 - tracking is best effort; register reports a real failure
        log.warning("MLflow: no pipeline run recorded (%s); the run goes on", exc)
        return ""
    return str(run.info.run_id)


@dataclass
class CandidateRun:
    """A candidate's child run, logged to while it trains; every call is best effort.

    After the first failure it stops logging (one warning): training never waits on tracking again.
    """

    client: MlflowClient | None
    run_id: str

    def _call(self, what: str, method: str, *args: Any, **kwargs: Any) -> None:
        if self.client is None:
            return
        try:
            with quick_retries():
                getattr(self.client, method)(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - tracking is best effort
            log.warning(
                "MLflow: could not log %s to run %s (%s); training goes on without tracking", what, self.run_id, exc
            )
            self.client = None

    def log_evaluation(self, entry: dict[str, Any]) -> None:
        """One point of each training curve (an evaluation of the history)."""
        now = int(time.time() * 1000)
        self._call("training metrics", "log_batch", self.run_id, metrics=curve_metrics([entry], now))

    def log_result(self, values: Mapping[str, float]) -> None:
        """The finished training's figures (throughput, steps, final loss), prefixed ``training.``."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(f"{CURVE_PREFIX}{k}", float(v), now, 0) for k, v in values.items() if math.isfinite(float(v))]
        self._call("the training's result", "log_batch", self.run_id, metrics=metrics)

    def end(self, failed: bool = False) -> None:
        """Mark the run FINISHED (or FAILED)."""
        self._call("the run's end", "set_terminated", self.run_id, "FAILED" if failed else "FINISHED")


def start_candidate_run(
    parent_run_id: str, candidate_id: str, params: Mapping[str, Any], state_dir: str, tracking_uri: str
) -> CandidateRun:
    """Start ``candidate_id``'s run below the pipeline's run ``parent_run_id`` with its settings as parameters.

    Without a parent (none was recorded) or a tracking server that answers, a run that logs nothing.
    """
    from mlflow.entities import Param

    if not parent_run_id:
        return CandidateRun(None, "")
    try:
        with quick_retries():
            client = open_client(tracking_uri, state_dir)
            parent = client.get_run(parent_run_id)
            pipeline_run = parent.data.tags.get(PIPELINE_RUN_TAG, "")
            tags = {RUN_NAME_TAG: candidate_id, PARENT_TAG: parent_run_id, CANDIDATE_TAG: candidate_id}
            tags[PIPELINE_RUN_TAG] = pipeline_run
            run = client.create_run(parent.info.experiment_id, tags=tags)
            typed = typed_params(params)
            client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in sorted(typed.items())])
    except Exception as exc:  # noqa: BLE001 - tracking is best effort
        log.warning("MLflow: no run for candidate %s (%s); training goes on without tracking", candidate_id, exc)
        return CandidateRun(None, "")
    return CandidateRun(client, str(run.info.run_id))


def dataset_input(data_version: str, source: str, name: str, context: str = "training") -> Any:
    """The data as an MLflow dataset input: its DVC md5 as the digest (``md5:<hex>[.dir]`` -> ``<hex>``)."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    digest = data_version.removeprefix("md5:").removesuffix(".dir")
    with warnings.catch_warnings():
        # A local path matches two of MLflow's local source types, which it warns about; either is right.
        warnings.simplefilter("ignore", UserWarning)
        # Dataset is no ABC, so MetaDataset (MLflow's dataset of metadata only) leaves the optional ``profile`` out.
        dataset = MetaDataset(resolve_dataset_source(source), name=name, digest=digest)  # type: ignore[abstract]
    return DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)])


def finish_pipeline_run(
    client: MlflowClient, parent_run_id: str, model_run_id: str, version: str, submission: Any
) -> None:
    """End the pipeline's run once its model is registered: it links to the winner's run and the
    version, and records the data as its input. Best effort: the version exists already."""
    from mlflow.entities import RunTag

    tags = {
        **submission.lineage,
        "winner_run_id": model_run_id,
        "registered_version": f"{submission.model_name}/{version}",
    }
    try:
        with quick_retries():
            client.log_batch(parent_run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
            if submission.data_source:
                data = dataset_input(tags.get("data_version", ""), submission.data_source, submission.model_name)
                client.log_inputs(parent_run_id, datasets=[data])
            client.set_terminated(parent_run_id, "FINISHED")
    except Exception as exc:  # noqa: BLE001 - the version is registered; the parent run is a record
        log.warning("MLflow: could not end the pipeline's run %s (%s)", parent_run_id, exc)


def fail_pipeline_run(parent_run_id: str, state_dir: str, tracking_uri: str) -> None:
    """Mark the pipeline's run FAILED (a step failed); best effort."""
    if not parent_run_id:
        return
    try:
        with quick_retries():
            open_client(tracking_uri, state_dir).set_terminated(parent_run_id, "FAILED")
    except Exception as exc:  # noqa: BLE001 - the step's own failure is what gets reported
        log.warning("MLflow: could not mark the pipeline's run %s failed (%s)", parent_run_id, exc)


def fail_unfinished_runs(run_name: str, state_dir: str, tracking_uri: str) -> None:
    """Mark the MLflow runs of the pipeline run ``run_name`` that are still RUNNING as FAILED: a step
    failed before register could end them. Best effort."""
    if not run_name:
        return
    try:
        with quick_retries():
            client = open_client(tracking_uri, state_dir)
            query = f"tags.`{RUN_NAME_OF_PIPELINE_TAG}` = '{run_name}' and attributes.status = 'RUNNING'"
            for run in client.search_runs([experiment_id(client, state_dir)], query):
                client.set_terminated(run.info.run_id, "FAILED")
    except Exception as exc:  # noqa: BLE001 - the step's own failure is what gets reported
        log.warning("MLflow: could not mark the runs of %s failed (%s)", run_name, exc)
