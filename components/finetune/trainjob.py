"""Hand fine-tuning to the Kubeflow Trainer for multi-GPU and multi-node runs.

The finetune step can run the loop itself (one pod, one GPU) or submit it as a job:

- a ``TrainJob`` (``trainer.kubeflow.org/v1alpha1``, Kubeflow Trainer v2.2+) on the cluster's
  ``torch-distributed`` runtime, whose torch policy sets the ``PET_*`` variables torchrun reads;
- a ``PyTorchJob`` (``kubeflow.org/v1``) where the older training operator is installed.

Either way every node runs ``torchrun -m components.finetune`` from the project image, so the
job runs the same loop with DistributedDataParallel. The job's pods and the pipeline's pod share
a workspace volume (a ReadWriteMany PVC): the step copies the tokenized data there, the job
writes checkpoints and the model there, and the step copies the model back into its output
artifact. A job restarted after a pod loss resumes from its newest checkpoint, and a retried
pipeline task finds the job it submitted before (same name) instead of starting another one;
if that job failed, the retry deletes it and submits a fresh one (resuming from the checkpoint).

This module makes the Kubernetes calls (submit, wait, copy back); ``job_spec`` builds the objects.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bertops.artifacts import TRAINING_FILE
from bertops.errors import BertopsError
from bertops.k8s import api_error, wait_until
from components.finetune.config import LoopConfig
from components.finetune.finetune import TrainResult
from components.finetune.job_spec import (
    API,
    FAILED,
    SUCCEEDED,
    TrainJobConfig,
    check_job_config,
    job_manifest,
    job_name,
    workspace,
)

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

log = logging.getLogger(__name__)

# Where Kubernetes tells a pod its own namespace.
POD_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def job_namespace(default: str, namespace_file: Path = POD_NAMESPACE_FILE) -> str:
    """The namespace of the pod this runs in (the job must share its workspace PVC), else ``default``."""
    try:
        return namespace_file.read_text(encoding="utf-8").strip() or default
    except OSError:
        return default


def failure(job: dict[str, Any]) -> str:
    """The operator's reason when ``job`` failed (its ``Failed`` condition is True), else ''."""
    failed: dict[str, Any] = next(
        (c for c in (job.get("status") or {}).get("conditions") or [] if c.get("type") == FAILED), {}
    )
    if failed.get("status") != "True":
        return ""
    return ": ".join(filter(None, (failed.get("reason"), failed.get("message")))) or "no reason given"


def finished(job: dict[str, Any]) -> bool:
    """True once the job succeeded; ``BertopsError`` with the operator's reason once it failed."""
    reason = failure(job)
    if reason:
        raise BertopsError(
            f"{job['kind']} {job['metadata']['name']} failed ({reason}); a retry of the step deletes it and "
            "submits a fresh one"
        )
    conditions = {c.get("type"): c for c in (job.get("status") or {}).get("conditions") or []}
    return bool(conditions.get(SUCCEEDED[job["kind"]], {}).get("status") == "True")


def delete_job(api: ApiClient, kind: str, namespace: str, name: str, timeout: float, poll_interval: float) -> None:
    """Delete the job and its pods, and return once the API server no longer has it (a name to reuse)."""
    from kubernetes.client import CustomObjectsApi
    from kubernetes.client.exceptions import ApiException

    group, version, plural = API[kind]
    objects = CustomObjectsApi(api)
    try:
        # Foreground: the job goes only after its pods, so the fresh one does not queue behind them for GPUs.
        objects.delete_namespaced_custom_object(
            group, version, namespace, plural, name, propagation_policy="Foreground"
        )
    except ApiException as exc:
        if exc.status == 404:
            return
        raise BertopsError(f"cannot delete the failed {kind} {namespace}/{name}: {api_error(exc)}") from exc

    def gone() -> tuple[bool | None, str]:
        try:
            objects.get_namespaced_custom_object(group, version, namespace, plural, name)
        except ApiException as exc:
            if exc.status == 404:
                return True, ""
        return None, "still there"

    wait_until(
        gone,
        timeout,
        poll_interval,
        lambda _: BertopsError(f"the failed {kind} {namespace}/{name} was not gone {timeout:g}s after its deletion"),
    )


def submit(
    api: ApiClient, manifest: dict[str, Any], timeout: float = 600.0, poll_interval: float = 5.0
) -> dict[str, Any]:
    """Create the job. When one of that name exists (a retried pipeline task) use it as it is,
    unless it failed: then delete it and create a fresh one, which resumes from the newest
    checkpoint on the workspace volume."""
    from kubernetes.client import CustomObjectsApi
    from kubernetes.client.exceptions import ApiException

    kind = manifest["kind"]
    group, version, plural = API[kind]
    namespace, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
    objects = CustomObjectsApi(api)

    def create() -> dict[str, Any] | None:
        try:
            return dict(objects.create_namespaced_custom_object(group, version, namespace, plural, manifest))
        except ApiException as exc:
            if exc.status != 409:
                raise BertopsError(f"{kind} {namespace}/{name} was refused: {api_error(exc)}") from exc
        return None

    created = create()
    if created is not None:
        return created
    existing = dict(objects.get_namespaced_custom_object(group, version, namespace, plural, name))
    reason = failure(existing)
    if not reason:
        log.info("%s %s/%s exists already (a retried step): waiting for it", kind, namespace, name)
        return existing
    log.info("%s %s/%s failed before (%s): deleting it to submit a fresh one", kind, namespace, name, reason)
    delete_job(api, kind, namespace, name, timeout, poll_interval)
    created = create()
    if created is None:
        raise BertopsError(f"{kind} {namespace}/{name} was created again by someone else while it was replaced")
    return created


def wait_finished(
    api: ApiClient, kind: str, namespace: str, name: str, timeout: float, poll_interval: float = 30.0
) -> dict[str, Any]:
    """Poll the job until it succeeds; ``BertopsError`` when it fails or ``timeout`` seconds pass."""
    from kubernetes.client import CustomObjectsApi
    from kubernetes.client.exceptions import ApiException

    group, version, plural = API[kind]
    objects = CustomObjectsApi(api)

    def done() -> tuple[dict[str, Any] | None, str]:
        try:
            job = dict(objects.get_namespaced_custom_object(group, version, namespace, plural, name))
        except ApiException as exc:
            if exc.status == 404:
                raise BertopsError(f"{kind} {namespace}/{name} was deleted while training") from exc
            return None, "the API server did not answer"  # busy: ask again until the deadline
        return (job if finished(job) else None), "not finished"

    return wait_until(
        done,
        timeout,
        poll_interval,
        lambda _: BertopsError(f"{kind} {namespace}/{name} did not finish in {timeout:g}s"),
    )


def train_on_cluster(
    tokenized_dir: Path,
    out_dir: Path,
    finetune: LoopConfig,
    job: TrainJobConfig,
    run_name: str,
    api: ApiClient,
    timeout: float = 24 * 3600,
    poll_interval: float = 30.0,
) -> TrainResult:
    """Run the loop as a TrainJob/PyTorchJob and bring its model back to ``out_dir``.

    The caller's pod must have ``job.workspace_pvc`` mounted at ``job.workspace_mount``.
    """
    check_job_config(job)
    name = job_name(run_name)
    job_dir = workspace(job, name)
    if not job_dir.parent.is_dir():
        raise BertopsError(
            f"{job.workspace_mount} is not mounted: mount PVC {job.workspace_pvc!r} in the finetune step"
        )
    shutil.copytree(tokenized_dir, job_dir / "tokenized", dirs_exist_ok=True)
    manifest = job_manifest(name, finetune, job)
    submit(api, manifest, poll_interval=poll_interval)
    log.info(
        "submitted %s %s/%s (%d node(s) x %d GPU(s))", job.kind, job.namespace, name, job.num_nodes, job.gpus_per_node
    )
    wait_finished(api, job.kind, job.namespace, name, timeout, poll_interval)
    model_dir = job_dir / "model"
    if not (model_dir / TRAINING_FILE).is_file():
        raise BertopsError(f"{job.kind} {name} finished but left no model in {model_dir}")
    shutil.copytree(model_dir, out_dir, dirs_exist_ok=True)
    return TrainResult(**json.loads((out_dir / TRAINING_FILE).read_text(encoding="utf-8")))
