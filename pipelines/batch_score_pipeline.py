"""The batch-score pipeline: score a dataset with the champion (or a named version) into Parquet.

One step, ``components.batch_score``, whose run parameters are the fields of
``BatchScoreConfig``; ``bertops compile --pipeline batch-score`` writes its IR YAML, which the
Kubeflow UI uploads and ``kfp run create`` submits like the training pipeline.
"""

import dataclasses
from typing import Any

from kfp import dsl, kubernetes

from bertops import cluster
from bertops.config import CLUSTER_DATA_PATH, CLUSTER_STATE_DIR
from bertops.errors import BertopsError
from components.batch_score.component import batch_score
from components.batch_score.config import BatchScoreConfig
from pipelines.training_pipeline import WORKSPACE_MOUNT, call, pipeline_signature, use_secret

PIPELINE_NAME = "bertops-batch-score"
PIPELINE_DESCRIPTION = (
    "Score a dataset with the champion (or a named version) through the predictor the server runs: "
    "predictions as Parquet, a summary as JSON and Markdown."
)
# A pod lost to a preempted node is started again this often; with the workspace volume it resumes.
BATCH_SCORE_RETRIES = 2


def batch_profile(target: str = "local") -> BatchScoreConfig:
    """The run parameters' defaults: this machine's paths, or the project image's in a pod (test split
    pulled from the S3 DVC remote; ``tracking_uri`` left for the run to name, as for training)."""
    if target == "local":
        return BatchScoreConfig()
    if target == "cluster":
        return BatchScoreConfig(
            data_path=f"{CLUSTER_DATA_PATH}/test.jsonl", data_remote="s3", state_dir=CLUSTER_STATE_DIR
        )
    raise BertopsError(f"--target must be one of local, cluster, got {target!r}")


def build_batch_pipeline(workspace_pvc: str = "", target: str = "local") -> Any:
    """The batch-score pipeline. ``workspace_pvc``: a ReadWriteMany PVC mounted at /workspace,
    where the chunks of an unfinished run wait for the task's retry (``resume_dir``)."""
    defaults = dataclasses.asdict(batch_profile(target))
    if workspace_pvc:
        defaults["resume_dir"] = f"{WORKSPACE_MOUNT}/batch-score"
    names = list(defaults)

    def batch_score_pipeline(*args: Any) -> str:
        # KFP calls the pipeline with its parameters in signature order.
        params = dict(zip(names, args, strict=True))
        task = call(batch_score, params, pipeline_run=dsl.PIPELINE_JOB_NAME_PLACEHOLDER)
        # The same parameters score with another version once the champion moves.
        task.set_caching_options(False)
        # Pulling the data from the S3 DVC remote, downloading the model from the artifact store.
        use_secret(task, cluster.DVC_SECRET)
        use_secret(task, cluster.ARTIFACT_SECRET)
        if workspace_pvc:
            kubernetes.mount_pvc(task, pvc_name=workspace_pvc, mount_path=WORKSPACE_MOUNT)
            task.set_retry(num_retries=BATCH_SCORE_RETRIES, backoff_duration="60s", backoff_factor=2.0)
        return task.outputs["Output"]

    batch_score_pipeline.__signature__ = pipeline_signature(defaults).replace(return_annotation=str)  # type: ignore[attr-defined]
    return dsl.pipeline(name=PIPELINE_NAME, description=PIPELINE_DESCRIPTION)(batch_score_pipeline)
