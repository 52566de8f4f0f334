"""The one pipeline: validate -> tokenize -> (finetune -> evaluate) per candidate -> select the winner
-> promotion gate against the champion -> register -> deploy (only if promoted).

Parameter defaults come from ``bertops.config`` so the CLI, the compiled YAML and the Kubeflow
UI's run form all start from the same values.
"""

from typing import Any, NamedTuple

from kfp import dsl, kubernetes

from bertops.config import (
    DataConfig,
    GateConfig,
    PlacementConfig,
    RegistryConfig,
    ServeConfig,
    TrainConfig,
    ValidationConfig,
    decode_json,
)
from components.candidates.component import plan_candidates, select_winner
from components.deploy.component import deploy
from components.evaluate.component import evaluate
from components.finetune.component import finetune
from components.gate.component import promotion_gate
from components.register.component import register
from components.tokenize.component import tokenize
from components.validate.component import validate

PIPELINE_NAME = "bertops-text-classifier"
# Kubernetes Secret with the S3 (or MinIO) credentials of the DVC remote.
DVC_SECRET = "bertops-dvc-s3"
# Kubernetes Secret with the credentials of the MLflow artifact store (S3/MinIO), for register.
ARTIFACT_SECRET = "bertops-s3"
# Where a pipeline compiled with a workspace volume mounts it in the finetune pods.
WORKSPACE_MOUNT = "/workspace"
_D, _V, _T, _P = DataConfig(), ValidationConfig(), TrainConfig(), PlacementConfig()
_G, _R, _S = GateConfig(), RegistryConfig(), ServeConfig()
_CANDIDATES: list = decode_json("candidates", _T.candidates, list)
_NODE_SELECTOR: dict = decode_json("finetune_node_selector", _P.finetune_node_selector, dict)
_TOLERATIONS: list = decode_json("finetune_tolerations", _P.finetune_tolerations, list)


class PipelineOutputs(NamedTuple):
    """What a finished run returns: lineage, the validation verdict, the winner, the registered version."""

    data_version: str
    validation: str
    winner: str
    version: str


def build_pipeline(workspace_pvc: str = "", finetune_retries: int = 0, gpu_request: bool = True) -> Any:
    """The pipeline, with the cluster options that are fixed at compile time.

    ``workspace_pvc``: a ReadWriteMany PVC mounted at /workspace in every finetune pod; it holds
    the checkpoints a restarted pod resumes from (``checkpoint_dir`` then defaults to
    /workspace/checkpoints) and the data a TrainJob/PyTorchJob shares with the pipeline.
    ``finetune_retries``: how often a failed finetune task (a preempted node) is started again.
    ``gpu_request``: False for the local runner only. kfp.local 2.17 cannot resolve a GPU request
    taken from run parameters inside a ParallelFor ("Parent pipeline input argument ... not
    found") and would ignore it anyway; the parameters stay, so the run form is the same.
    """
    checkpoint_default = f"{WORKSPACE_MOUNT}/checkpoints" if workspace_pvc else _T.checkpoint_dir

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Validate, tokenize, fine-tune candidates, evaluate, pick the winner, register it; "
        "promote and deploy it if it beats the champion.",
    )
    def training_pipeline(
        data_path: str = _D.data_path,
        data_remote: str = _D.data_remote,
        text_column: str = _D.text_column,
        label_column: str = _D.label_column,
        max_train_samples: int = _D.max_train_samples,
        max_eval_samples: int = _D.max_eval_samples,
        labels: str = _V.labels,
        min_text_chars: int = _V.min_text_chars,
        max_text_chars: int = _V.max_text_chars,
        min_train_rows: int = _V.min_train_rows,
        min_eval_rows: int = _V.min_eval_rows,
        max_rows: int = _V.max_rows,
        min_class_share: float = _V.min_class_share,
        max_class_share: float = _V.max_class_share,
        max_label_drift: float = _V.max_label_drift,
        max_length_drift: float = _V.max_length_drift,
        base_model: str = _T.base_model,
        max_length: int = _T.max_length,
        batch_size: int = _T.batch_size,
        epochs: int = _T.epochs,
        max_steps: int = _T.max_steps,
        learning_rate: float = _T.learning_rate,
        warmup_ratio: float = _T.warmup_ratio,
        weight_decay: float = _T.weight_decay,
        seed: int = _T.seed,
        candidates: list = _CANDIDATES,
        grad_accumulation: int = _T.grad_accumulation,
        precision: str = _T.precision,
        eval_every: int = _T.eval_every,
        patience: int = _T.patience,
        checkpoint_every: int = _T.checkpoint_every,
        checkpoint_dir: str = checkpoint_default,
        launcher: str = _P.launcher,
        train_nodes: int = _P.train_nodes,
        train_gpus_per_node: int = _P.train_gpus_per_node,
        finetune_gpus: int = _P.finetune_gpus,
        finetune_accelerator: str = _P.finetune_accelerator,
        finetune_node_selector: dict = _NODE_SELECTOR,
        finetune_tolerations: list = _TOLERATIONS,
        selection_metric: str = _G.selection_metric,
        promotion_metric: str = _G.promotion_metric,
        promotion_margin: float = _G.promotion_margin,
        min_accuracy: float = _G.min_accuracy,
        min_macro_f1: float = _G.min_macro_f1,
        model_name: str = _R.model_name,
        state_dir: str = _R.state_dir,
        tracking_uri: str = _R.tracking_uri,
        serve_port: int = _S.serve_port,
        deploy_target: str = _S.deploy_target,
        namespace: str = _S.namespace,
        canary_traffic_percent: int = _S.canary_traffic_percent,
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
        )
        # Pulling from an S3 DVC remote in a pod: credentials come from this Secret (optional, so
        # runs without a remote need none). The local runner ignores Kubernetes settings.
        kubernetes.use_secret_as_env(
            validated,
            secret_name=DVC_SECRET,
            secret_key_to_env={k: k for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL")},
            optional=True,
        )
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
            )
            # Fine-tuning is the GPU step, placed by run parameters. The local runner ignores these
            # (resources with a warning, Kubernetes settings silently); on a cluster they put the
            # pod on a GPU node.
            if gpu_request:
                trained.set_accelerator_type(finetune_accelerator).set_accelerator_limit(finetune_gpus)
            kubernetes.add_node_selector_json(trained, finetune_node_selector)
            kubernetes.add_toleration_json(trained, finetune_tolerations)
            if workspace_pvc:
                kubernetes.mount_pvc(trained, pvc_name=workspace_pvc, mount_path=WORKSPACE_MOUNT)
            if finetune_retries:
                # A preempted spot GPU node fails the task; the retry resumes from the checkpoints.
                trained.set_retry(num_retries=finetune_retries, backoff_duration="60s", backoff_factor=2.0)
            evaluated = evaluate(
                model=trained.outputs["model"], tokenized=tokenized.outputs["tokenized"], max_length=max_length
            )
        selected = select_winner(
            candidates=planned.output,
            models=dsl.Collected(trained.outputs["model"]),
            evaluations=dsl.Collected(evaluated.outputs["evaluation"]),
            selection_metric=selection_metric,
        )
        gate = promotion_gate(
            winner_evaluation=selected.outputs["winner_evaluation"],
            tokenized=tokenized.outputs["tokenized"],
            max_length=max_length,
            model_name=model_name,
            state_dir=state_dir,
            tracking_uri=tracking_uri,
            promotion_metric=promotion_metric,
            promotion_margin=promotion_margin,
            min_accuracy=min_accuracy,
            min_macro_f1=min_macro_f1,
        )
        gate.set_caching_options(False)
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
        kubernetes.use_secret_as_env(
            registered,
            secret_name=ARTIFACT_SECRET,
            secret_key_to_env={k: k for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_S3_ENDPOINT_URL")},
            optional=True,
        )
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
