"""KFP component: fine-tune on a GPU node (CPU when none is there), or hand the run to the Kubeflow Trainer."""

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Metrics, Model, Output

from bertops.images import CUDA_IMAGE


@dsl.component(base_image=CUDA_IMAGE, install_kfp_package=False)
def finetune(
    tokenized: Input[Dataset],
    base_model: str,
    batch_size: int,
    epochs: int,
    max_steps: int,
    learning_rate: float,
    warmup_ratio: float,
    weight_decay: float,
    seed: int,
    namespace: str,
    model: Output[Model],
    metrics: Output[Metrics],
    curves: Output[HTML],
    grad_accumulation: int = 1,
    precision: str = "auto",
    checkpoint_every: int = 500,
    checkpoint_dir: str = "",
    eval_every: int = 20,
    patience: int = 0,
    launcher: str = "local",
    num_nodes: int = 1,
    gpus_per_node: int = 1,
    workspace_pvc: str = "",
    run_name: str = "",
    checkpoint_name: str = "",
    candidate_id: str = "",
    pod_gpus: str = "0",  # a string, as the KFP driver reads it
    mlflow_run: str = "",
    state_dir: str = ".bertops",
    tracking_uri: str = "",
    quantize: str = "int8",  # int8: also export model.int8.onnx beside model.onnx
    cpu_sharing: int = 1,  # candidates training side by side on one machine (pods ignore it)
) -> None:
    """Fine-tune ``base_model`` and publish the model directory, its training metrics and its curves page.

    ``launcher``: ``local`` (this pod trains), ``TrainJob`` or ``PyTorchJob`` (``num_nodes`` x ``gpus_per_node`` GPUs
    sharing ``workspace_pvc`` at /workspace, in this pod's namespace, else ``namespace``). Checkpoints go to
    ``checkpoint_dir``/(``checkpoint_name`` or ``run_name``)/``candidate_id``, where a restarted pod or a run of the
    same checkpoint name resumes. ``pod_gpus`` above 0 in a pod makes ``local`` training need CUDA. ``mlflow_run``:
    the pipeline's MLflow run, parent of the candidate's, logged to as it trains."""
    from pathlib import Path

    from bertops.config import FinetuneConfig, fields_of
    from bertops.step import step
    from components.finetune.launch import cluster_job, finetune_step, publish, start_tracking

    # The parameters named like FinetuneConfig's fields are its values: none is copied by hand.
    settings = FinetuneConfig(**fields_of(FinetuneConfig, locals()))
    with step("finetune", tag=candidate_id):
        tracked = start_tracking(mlflow_run, candidate_id, settings, launcher, state_dir, tracking_uri)
        result = finetune_step(
            Path(tokenized.path), Path(model.path), settings, launcher,
            cluster_job(namespace, num_nodes, gpus_per_node, workspace_pvc), checkpoint_name or run_name,
            candidate_id, pod_gpus, tracked, quantize, cpu_sharing,
        )  # fmt: skip
        # The run ids travel with the model: register logs into the winner's run and ends its parent.
        runs = {"mlflow_run_id": tracked.run_id, "mlflow_parent_run_id": mlflow_run}
        model.metadata.update({"base_model": base_model, "framework": "transformers", **runs})
        publish(result, settings, candidate_id, metrics, Path(model.path), Path(curves.path))
