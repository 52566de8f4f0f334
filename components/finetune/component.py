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
    eval_every: int = 0,
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
    (the run's record and per-evaluation history) and ``curves.png``.

    ``pod_gpus`` is the GPU count this task's pod asked for (as the string the KFP driver reads
    it as). In a Kubernetes pod a count above 0 makes ``local`` training require CUDA: a broken
    driver fails the task instead of training on the CPU while holding the GPU. Local runners
    ignore the request, so there the device stays ``auto``.
    """
    import shutil
    from pathlib import Path

    from bertops.config import in_pod
    from bertops.step import step
    from components.finetune.finetune import FinetuneConfig, checkpoint_location, train
    from components.finetune.job_spec import TrainJobConfig, check_launcher
    from components.finetune.trainjob import job_namespace, train_on_cluster

    with step("finetune"):
        check_launcher(launcher, run_name, workspace_pvc)
        # One run's candidates train at once: each needs its own checkpoints and its own job.
        task_key = "/".join(part for part in (run_name, candidate_id) if part)
        if checkpoint_dir:
            checkpoint_dir = str(Path(checkpoint_dir) / (task_key or "run"))
        config = FinetuneConfig(
            base_model=base_model,
            batch_size=batch_size,
            grad_accumulation=grad_accumulation,
            epochs=epochs,
            max_steps=max_steps,
            learning_rate=learning_rate,
            warmup_ratio=warmup_ratio,
            weight_decay=weight_decay,
            seed=seed,
            precision=precision,
            checkpoint_dir=checkpoint_dir,
            checkpoint_every=checkpoint_every,
            eval_every=eval_every,
            patience=patience,
            device="cuda" if launcher == "local" and in_pod() and int(pod_gpus or "0") > 0 else "auto",
        )
        out = Path(model.path)
        if launcher == "local":
            result = train(Path(tokenized.path), out, config)
            if not checkpoint_dir:
                # Beside a per-run artifact nothing can resume from them later: free the space.
                shutil.rmtree(checkpoint_location(out, config), ignore_errors=True)
        else:
            from bertops.k8s import load_api_client

            job = TrainJobConfig(
                kind=launcher,
                namespace=job_namespace(namespace),
                num_nodes=num_nodes,
                gpus_per_node=gpus_per_node,
                workspace_pvc=workspace_pvc,
            )
            result = train_on_cluster(Path(tokenized.path), out, config, job, task_key, load_api_client())
        model.metadata.update({"base_model": base_model, "framework": "transformers"})
        for name in (
            "final_train_loss",
            "validation_accuracy",
            "samples_per_second",
            "tokens_per_second",
            "train_seconds",
        ):
            metrics.log_metric(name, float(getattr(result, name)))
        for name in ("steps", "best_step", "resumed_from_step", "world_size", "effective_batch_size"):
            metrics.log_metric(name, float(getattr(result, name)))
        metrics.log_metric("stopped_early", float(result.stopped_early))
