"""The finetune step's work, apart from its KFP wrapper: train here or as a cluster job, then export to ONNX.

The component passes its parameters in and publishes what comes back; everything that decides
something happens here, where tests can call it directly.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from bertops.artifacts import write_training_record
from bertops.config import FinetuneConfig, in_pod
from bertops.k8s import load_api_client
from bertops.tracking import CandidateRun, start_candidate_run
from components.finetune.config import LoopConfig, checkpoint_location
from components.finetune.curves import write_curves_page
from components.finetune.finetune import TrainResult, train
from components.finetune.job_spec import TrainJobConfig, check_launcher
from components.finetune.trainjob import job_namespace, train_on_cluster

log = logging.getLogger(__name__)

# What the step logs as KFP metrics, from the run's record.
METRICS = (
    "final_train_loss",
    "validation_accuracy",
    "samples_per_second",
    "tokens_per_second",
    "train_seconds",
    "steps",
    "best_step",
    "resumed_from_step",
    "world_size",
    "effective_batch_size",
    "stopped_early",
)


def finetune_step(
    tokenized_dir: Path,
    out_dir: Path,
    settings: FinetuneConfig,
    launcher: str = "local",
    job: TrainJobConfig | None = None,
    run_name: str = "",
    candidate_id: str = "",
    pod_gpus: str = "0",
    tracked: CandidateRun | None = None,
    quantize: str = "int8",
    cpu_sharing: int = 1,
) -> TrainResult:
    """Fine-tune with ``settings`` into ``out_dir`` on ``launcher``, then add ``model.onnx`` beside the model
    (and ``model.int8.onnx`` when ``quantize`` is int8). On the CPU, local training takes its share of the
    CPUs with ``cpu_sharing`` candidates training side by side (``bertops.cpu.thread_share``).

    ``job`` says where a TrainJob/PyTorchJob runs (its kind is ``launcher``). Each run
    (``run_name``) and candidate (``candidate_id``) checkpoints in its own directory below
    ``settings.checkpoint_dir``; left empty, the checkpoints beside the model are removed once
    the model is saved. ``pod_gpus`` above 0 in a Kubernetes pod makes local training require CUDA.
    ``tracked``: the candidate's MLflow run, which gets the evaluations as they happen (when training
    here; a cluster job's come with its record, which register logs), the result, and its end.
    """
    tracked = tracked or CandidateRun(None, "")
    try:
        result = _train(
            tokenized_dir, out_dir, settings, launcher, job, run_name, candidate_id, pod_gpus, tracked, quantize,
            cpu_sharing,
        )  # fmt: skip
    except BaseException:
        tracked.end(failed=True)
        raise
    tracked.log_result({name: float(getattr(result, name)) for name in METRICS})
    tracked.end()
    return result


def _train(
    tokenized_dir: Path,
    out_dir: Path,
    settings: FinetuneConfig,
    launcher: str,
    job: TrainJobConfig | None,
    run_name: str,
    candidate_id: str,
    pod_gpus: str,
    tracked: CandidateRun,
    quantize: str,
    cpu_sharing: int,
) -> TrainResult:
    """``finetune_step``'s training and export."""
    check_launcher(launcher, run_name, job.workspace_pvc if job else "")
    # One run's candidates train at once: each needs its own checkpoints and its own job.
    task_key = "/".join(part for part in (run_name, candidate_id) if part)
    config = LoopConfig(
        **asdict(settings),
        device="cuda" if launcher == "local" and in_pod() and int(pod_gpus or "0") > 0 else "auto",
        cpu_sharing=max(1, cpu_sharing),
    )
    if settings.checkpoint_dir:
        config.checkpoint_dir = str(Path(settings.checkpoint_dir) / (task_key or "run"))
    if launcher == "local":
        result = train(tokenized_dir, out_dir, config, tracked.log_evaluation)
        if not settings.checkpoint_dir:
            # Beside a per-run artifact nothing can resume from them later: free the space.
            shutil.rmtree(checkpoint_location(out_dir, config), ignore_errors=True)
    else:
        assert job is not None  # check_launcher refused a job launcher without a workspace
        result = train_on_cluster(
            tokenized_dir, out_dir, config, replace(job, kind=launcher), task_key, load_api_client()
        )
    return export_onnx_beside(out_dir, result, quantize)


def start_tracking(
    mlflow_run: str, candidate_id: str, settings: FinetuneConfig, launcher: str, state_dir: str, tracking_uri: str
) -> CandidateRun:
    """The candidate's MLflow run below the pipeline's ``mlflow_run``, its settings as parameters (best effort)."""
    params = {**asdict(settings), "launcher": launcher}
    return start_candidate_run(mlflow_run, candidate_id or "candidate", params, state_dir, tracking_uri)


def publish(
    result: TrainResult, settings: FinetuneConfig, candidate_id: str, metrics: Any, model_dir: Path, curves: Path
) -> None:
    """Log the run's ``METRICS`` to the step's KFP ``metrics`` artifact and write its curves page to ``curves``."""
    for name in METRICS:
        metrics.log_metric(name, float(getattr(result, name)))
    if result.onnx_max_abs_diff is not None:
        metrics.log_metric("onnx_max_abs_diff", result.onnx_max_abs_diff)
    write_curves_page(curves, candidate_id, model_dir, asdict(result), asdict(settings))


def cluster_job(namespace: str, num_nodes: int, gpus_per_node: int, workspace_pvc: str) -> TrainJobConfig:
    """Where a TrainJob/PyTorchJob runs: this pod's namespace (where the workspace PVC is), else ``namespace``."""
    return TrainJobConfig(
        namespace=job_namespace(namespace),
        num_nodes=num_nodes,
        gpus_per_node=gpus_per_node,
        workspace_pvc=workspace_pvc,
    )


def export_onnx_beside(model_dir: Path, result: TrainResult, quantize: str = "int8") -> TrainResult:
    """Write ``model.onnx`` into ``model_dir`` when it matches PyTorch; the record gains its largest difference.

    A graph that fails its parity check is left out with a warning: the server then runs PyTorch.
    With ``quantize`` int8, ``model.int8.onnx`` follows it (``export_int8_beside``).
    """
    from serving.onnx_export import OnnxParityError, export_onnx

    try:
        export = export_onnx(model_dir)
    except OnnxParityError as exc:
        log.warning("no ONNX model beside %s: %s", model_dir, exc)
        return result
    result = replace(result, onnx_max_abs_diff=export.max_abs_diff)
    write_training_record(model_dir, asdict(result))
    log.info("exported %s (largest difference from PyTorch %.1e)", export.path, export.max_abs_diff)
    if quantize == "int8":
        export_int8_beside(model_dir)
    return result


def export_int8_beside(model_dir: Path) -> None:
    """Write ``model.int8.onnx`` beside ``model.onnx``; when quantization fails, warn and go on without it.

    int8 is an optional extra: without it the evaluate step scores and serves fp32, so no failure
    of the quantizer (whatever ONNX Runtime raises for a graph it cannot handle) fails the step.
    """
    from serving.onnx_export import export_int8

    try:
        export_int8(model_dir)
    except Exception as exc:  # noqa: BLE001 - whatever the quantizer raises, fp32 is still served
        log.warning("no int8 model beside %s (fp32 will be served): %s: %s", model_dir, type(exc).__name__, exc)
