"""KFP component: fine-tune on a GPU node (CPU when none is there), or hand the run to the Kubeflow Trainer."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

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
    candidate_id: str = "",
    pod_gpus: str = "0",
) -> None:
    """Fine-tune ``base_model`` and publish the model directory and its training metrics.

    ``launcher`` is ``local`` (this pod trains), ``TrainJob`` or ``PyTorchJob`` (this pod submits
    a job of ``num_nodes`` x ``gpus_per_node`` GPUs, waits, and copies the model back; it needs
    ``workspace_pvc`` mounted at /workspace; the job runs in this pod's namespace, where that PVC
    is, or in ``namespace`` outside a pod). ``checkpoint_dir`` on a volume makes a restarted
    pod resume: each run (``run_name``) and candidate (``candidate_id``) checkpoints in its own
    directory below it. Left empty, checkpoints live beside the model only for the task's
    lifetime and are removed once it succeeds. The model directory holds ``training.json``
    (the run's record and per-evaluation history), ``curves.png`` and ``model.onnx`` where the
    export matches PyTorch.

    ``pod_gpus`` is the GPU count this task's pod asked for (as the string the KFP driver reads
    it as). In a Kubernetes pod a count above 0 makes ``local`` training require CUDA: a broken
    driver fails the task instead of training on the CPU while holding the GPU. Local runners
    ignore the request, so there the device stays ``auto``.
    """
    from pathlib import Path

    from bertops.config import FinetuneConfig, fields_of
    from bertops.step import step
    from components.finetune.launch import METRICS, cluster_job, finetune_step

    # The parameters named like FinetuneConfig's fields are its values: none is copied by hand.
    settings = FinetuneConfig(**fields_of(FinetuneConfig, locals()))
    with step("finetune"):
        result = finetune_step(
            Path(tokenized.path),
            Path(model.path),
            settings,
            launcher,
            cluster_job(namespace, num_nodes, gpus_per_node, workspace_pvc),
            run_name,
            candidate_id,
            pod_gpus,
        )
        model.metadata.update({"base_model": base_model, "framework": "transformers"})
        for name in METRICS:
            metrics.log_metric(name, float(getattr(result, name)))
        if result.onnx_max_abs_diff is not None:
            metrics.log_metric("onnx_max_abs_diff", result.onnx_max_abs_diff)
