"""The one pipeline: validate -> tokenize -> (finetune -> evaluate) per candidate -> select the winner
-> promotion gate against the champion -> register -> deploy (only if promoted).

Parameter defaults come from ``bertops.config`` so the CLI, the compiled YAML and the Kubeflow
UI's run form all start from the same values.
"""

from typing import Any, NamedTuple

from kfp import dsl, kubernetes

from bertops import cluster
from bertops.config import profile
from components.candidates.component import plan_candidates, select_winner
from components.deploy.component import deploy
from components.evaluate.component import evaluate
from components.finetune.component import finetune
from components.gate.component import promotion_gate
from components.register.component import register
from components.tokenize.component import tokenize
from components.validate.component import validate

PIPELINE_NAME = "bertops-text-classifier"
# Where a pipeline compiled with a workspace volume mounts it in the finetune pods.
WORKSPACE_MOUNT = "/workspace"
# Shared memory of the finetune pod (the TrainJob pods' size, TrainJobConfig.shm_size).
SHM_SIZE = "2Gi"


def use_secret(task: Any, secret: cluster.SecretSpec) -> None:
    """Give ``task`` the keys of ``secret`` as environment variables. Optional, so runs that do not
    need it (no S3 remote, an artifact store without credentials) need no Secret at all."""
    kubernetes.use_secret_as_env(
        task, secret_name=secret.name, secret_key_to_env={k: k for k in secret.keys}, optional=True
    )


class PipelineOutputs(NamedTuple):
    """What a finished run returns: lineage, the validation verdict, the winner, the registered version."""

    data_version: str
    validation: str
    winner: str
    version: str


def build_pipeline(workspace_pvc: str = "", finetune_retries: int = 0, target: str = "local") -> Any:
    """The pipeline, with the options that are fixed at compile time.

    ``workspace_pvc``: a ReadWriteMany PVC mounted at /workspace in every finetune pod; it holds
    the checkpoints a restarted pod resumes from (``checkpoint_dir`` then defaults to
    /workspace/checkpoints) and the data a TrainJob/PyTorchJob shares with the pipeline.
    ``finetune_retries``: how often a failed finetune task (a preempted node) is started again.
    ``target``: whose defaults the run parameters get (``bertops.config.profile``).
    """
    d = profile(target).to_arguments()
    if workspace_pvc:
        d["checkpoint_dir"] = f"{WORKSPACE_MOUNT}/checkpoints"

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Validate, tokenize, fine-tune candidates, evaluate, pick the winner, register it; "
        "promote and deploy it if it beats the champion.",
    )
    def training_pipeline(
        data_path: str = d["data_path"],
        data_remote: str = d["data_remote"],
        text_column: str = d["text_column"],
        label_column: str = d["label_column"],
        max_train_samples: int = d["max_train_samples"],
        max_eval_samples: int = d["max_eval_samples"],
        labels: str = d["labels"],
        min_text_chars: int = d["min_text_chars"],
        max_text_chars: int = d["max_text_chars"],
        min_train_rows: int = d["min_train_rows"],
        min_eval_rows: int = d["min_eval_rows"],
        max_rows: int = d["max_rows"],
        min_class_share: float = d["min_class_share"],
        max_class_share: float = d["max_class_share"],
        max_label_drift: float = d["max_label_drift"],
        max_length_drift: float = d["max_length_drift"],
        base_model: str = d["base_model"],
        max_length: int = d["max_length"],
        batch_size: int = d["batch_size"],
        epochs: int = d["epochs"],
        max_steps: int = d["max_steps"],
        learning_rate: float = d["learning_rate"],
        warmup_ratio: float = d["warmup_ratio"],
        weight_decay: float = d["weight_decay"],
        seed: int = d["seed"],
        candidates: list = d["candidates"],
        grad_accumulation: int = d["grad_accumulation"],
        precision: str = d["precision"],
        eval_every: int = d["eval_every"],
        patience: int = d["patience"],
        checkpoint_every: int = d["checkpoint_every"],
        checkpoint_dir: str = d["checkpoint_dir"],
        launcher: str = d["launcher"],
        train_nodes: int = d["train_nodes"],
        train_gpus_per_node: int = d["train_gpus_per_node"],
        finetune_gpus: int = d["finetune_gpus"],
        finetune_accelerator: str = d["finetune_accelerator"],
        finetune_node_selector: dict = d["finetune_node_selector"],
        finetune_tolerations: list = d["finetune_tolerations"],
        selection_metric: str = d["selection_metric"],
        promotion_metric: str = d["promotion_metric"],
        promotion_margin: float = d["promotion_margin"],
        min_accuracy: float = d["min_accuracy"],
        min_macro_f1: float = d["min_macro_f1"],
        model_name: str = d["model_name"],
        state_dir: str = d["state_dir"],
        tracking_uri: str = d["tracking_uri"],
        serve_port: int = d["serve_port"],
        deploy_target: str = d["deploy_target"],
        namespace: str = d["namespace"],
        canary_traffic_percent: int = d["canary_traffic_percent"],
        deployment_mode: str = d["deployment_mode"],
        serving_gpus: int = d["serving_gpus"],
        serving_resources: dict = d["serving_resources"],
        git_commit: str = "unknown",
    ) -> PipelineOutputs:
        validated = validate(
            data_path=data_path,
            data_remote=data_remote,
            text_column=text_column,
            label_column=label_column,
            labels=labels,
            min_text_chars=min_text_chars,
            max_text_chars=max_text_chars,
            min_train_rows=min_train_rows,
            min_eval_rows=min_eval_rows,
            max_rows=max_rows,
            min_class_share=min_class_share,
            max_class_share=max_class_share,
            max_label_drift=max_label_drift,
            max_length_drift=max_length_drift,
            state_dir=state_dir,
            # The first task refuses settings that cannot work before any other work is done.
            finetune_gpus=finetune_gpus,
            launcher=launcher,
            workspace_pvc=workspace_pvc,
            deploy_target=deploy_target,
            tracking_uri=tracking_uri,
        )
        # Pulling from an S3 DVC remote in a pod. The local runner ignores Kubernetes settings.
        use_secret(validated, cluster.DVC_SECRET)
        tokenized = tokenize(
            dataset=validated.outputs["dataset"],
            base_model=base_model,
            max_length=max_length,
            max_train_samples=max_train_samples,
            max_eval_samples=max_eval_samples,
            seed=seed,
        )
        planned = plan_candidates(
            candidates=candidates,
            base_model=base_model,
            learning_rate=learning_rate,
            batch_size=batch_size,
            epochs=epochs,
            max_steps=max_steps,
        )
        with dsl.ParallelFor(planned.output) as candidate:
            trained = finetune(
                tokenized=tokenized.outputs["tokenized"],
                base_model=candidate.base_model,
                batch_size=candidate.batch_size,
                epochs=candidate.epochs,
                max_steps=candidate.max_steps,
                learning_rate=candidate.learning_rate,
                warmup_ratio=warmup_ratio,
                weight_decay=weight_decay,
                seed=seed,
                grad_accumulation=grad_accumulation,
                precision=precision,
                checkpoint_every=checkpoint_every,
                checkpoint_dir=checkpoint_dir,
                eval_every=eval_every,
                patience=patience,
                launcher=launcher,
                num_nodes=train_nodes,
                gpus_per_node=train_gpus_per_node,
                workspace_pvc=workspace_pvc,
                namespace=namespace,
                run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
                candidate_id=candidate.id,
                # Above 0 the task must train on CUDA (a pod whose GPU does not work fails, loudly).
                pod_gpus=validated.outputs["finetune_gpus"],
            )
            # Fine-tuning is the GPU step, placed by run parameters. The local runner ignores these
            # (resources with a warning, Kubernetes settings silently); on a cluster they put the
            # pod on a GPU node. The KFP driver reads a runtime accelerator count as a string, so
            # the count is validate's string output, not the int parameter. kfp 2.17's
            # set_accelerator_* do not register their inputs with the loop (set_container_image
            # does): without register_pipeline_channels the loop's DAG would not declare them.
            gpu_count = validated.outputs["finetune_gpus"]
            trained.set_accelerator_type(finetune_accelerator).set_accelerator_limit(gpu_count)
            trained.register_pipeline_channels([finetune_accelerator, gpu_count])
            kubernetes.add_node_selector_json(trained, finetune_node_selector)
            kubernetes.add_toleration_json(trained, finetune_tolerations)
            # DataLoader workers hand batches over through /dev/shm, which a container caps at
            # 64 MiB: a memory-backed volume there, as the TrainJob pods get.
            kubernetes.empty_dir_mount(
                trained, volume_name="dshm", mount_path="/dev/shm", medium="Memory", size_limit=SHM_SIZE
            )
            if workspace_pvc:
                kubernetes.mount_pvc(trained, pvc_name=workspace_pvc, mount_path=WORKSPACE_MOUNT)
            if finetune_retries:
                # A preempted spot GPU node fails the task; the retry resumes from the checkpoints.
                trained.set_retry(num_retries=finetune_retries, backoff_duration="60s", backoff_factor=2.0)
            evaluated = evaluate(model=trained.outputs["model"], tokenized=tokenized.outputs["tokenized"])
        selected = select_winner(
            candidates=planned.output,
            models=dsl.Collected(trained.outputs["model"]),
            evaluations=dsl.Collected(evaluated.outputs["evaluation"]),
            selection_metric=selection_metric,
        )
        gate = promotion_gate(
            winner_evaluation=selected.outputs["winner_evaluation"],
            tokenized=tokenized.outputs["tokenized"],
            model_name=model_name,
            state_dir=state_dir,
            tracking_uri=tracking_uri,
            promotion_metric=promotion_metric,
            promotion_margin=promotion_margin,
            min_accuracy=min_accuracy,
            min_macro_f1=min_macro_f1,
        )
        gate.set_caching_options(False)
        # The gate downloads the champion from the registry's artifact store.
        use_secret(gate, cluster.ARTIFACT_SECRET)
        registered = register(
            model=selected.outputs["winner"],
            evaluation=selected.outputs["winner_evaluation"],
            decision=gate.outputs["decision"],
            data_version=validated.outputs["data_version"],
            promote=gate.outputs["Output"],
            max_length=max_length,
            model_name=model_name,
            state_dir=state_dir,
            tracking_uri=tracking_uri,
            git_commit=git_commit,
            pipeline_run=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
        )
        registered.set_caching_options(False)
        # With a tracking server that does not proxy artifacts, MLflow writes the model to S3 itself.
        use_secret(registered, cluster.ARTIFACT_SECRET)
        with dsl.If(gate.outputs["Output"] == True, name="promoted"):  # noqa: E712 - KFP condition syntax
            deployed = deploy(
                model_name=model_name,
                version=registered.outputs["Output"],
                state_dir=state_dir,
                tracking_uri=tracking_uri,
                serve_port=serve_port,
                deploy_target=deploy_target,
                namespace=namespace,
                canary_traffic_percent=canary_traffic_percent,
                deployment_mode=deployment_mode,
                serving_gpus=serving_gpus,
                serving_resources=serving_resources,
                pipeline_run=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
                git_commit=git_commit,
            )
            deployed.set_caching_options(False)
        return PipelineOutputs(
            validated.outputs["data_version"],
            validated.outputs["summary"],
            selected.outputs["Output"],
            registered.outputs["Output"],
        )

    return training_pipeline


# The pipeline as `bertops compile` builds it by default: no volume, no retries.
training_pipeline = build_pipeline()
