"""The one pipeline: validate -> tokenize -> (finetune -> evaluate) per candidate -> select the winner
-> promotion gate against the champion -> register -> deploy (only if promoted).

The run parameters are the fields of ``bertops.config``'s groups, flat (the Kubeflow UI shows
them as one form), so the CLI, the compiled YAML and the run form all start from the same
values. The pipeline's signature is built from those fields and each step takes the parameters
named like its inputs: a new setting is one dataclass field and one component input.
"""

import inspect
from typing import Any, NamedTuple

from kfp import dsl, kubernetes

from bertops import cluster, triggers
from bertops.config import parameter_help, profile
from components.candidates.component import plan_candidates, select_winner
from components.deploy.component import deploy
from components.evaluate.component import evaluate
from components.finetune.component import finetune
from components.gate.component import promotion_gate
from components.register.component import register
from components.tokenize.component import tokenize
from components.validate.component import validate
from pipelines.compile import DEFAULT_PARALLELISM

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


# Run parameters that are not settings of a config group.
# trigger: why the run started (bertops.triggers), recorded in the registered version's lineage.
EXTRA_PARAMETERS: dict[str, Any] = {"git_commit": "unknown", "trigger": triggers.MANUAL}
EXTRA_HELP = {
    "git_commit": "commit of the pipeline's code, recorded with the registered version and the endpoint "
    "(bertops compile and submit fill it in from their checkout; -dirty: with uncommitted changes)",
    "trigger": "why the run started: manual, schedule (a recurring run) or drift (the drift monitor); "
    "recorded in the registered version's lineage",
}
PIPELINE_DESCRIPTION = (
    "Validate, tokenize, fine-tune candidates, evaluate, pick the winner, register it; "
    "promote and deploy it if it beats the champion."
)


def build_pipeline(
    workspace_pvc: str = "",
    finetune_retries: int = 0,
    target: str = "local",
    parallelism: int = DEFAULT_PARALLELISM,
    git_commit: str = "unknown",
) -> Any:
    """The pipeline, with the options that are fixed at compile time.

    ``workspace_pvc``: a ReadWriteMany PVC mounted at /workspace in every finetune pod; it holds
    the checkpoints a restarted pod resumes from (``checkpoint_dir`` then defaults to
    /workspace/checkpoints) and the data a TrainJob/PyTorchJob shares with the pipeline.
    ``finetune_retries``: how often a failed finetune task (a preempted node) is started again.
    ``target``: whose defaults the run parameters get (``bertops.config.profile``).
    ``parallelism``: most candidates fine-tuned at once (0: no limit). ``git_commit``: the default
    of the ``git_commit`` run parameter, so a run started from the uploaded YAML knows its code.
    """
    defaults = profile(target).to_arguments() | EXTRA_PARAMETERS | {"git_commit": git_commit}
    if workspace_pvc:
        defaults["checkpoint_dir"] = f"{WORKSPACE_MOUNT}/checkpoints"
    names = list(defaults)

    def training_pipeline(*args: Any) -> PipelineOutputs:
        # KFP calls the pipeline with its parameters in signature order.
        params = dict(zip(names, args, strict=True)) | {"workspace_pvc": workspace_pvc}
        return pipeline_body(params, finetune_retries, parallelism)

    training_pipeline.__signature__ = pipeline_signature(defaults)  # type: ignore[attr-defined]
    training_pipeline.__name__ = "training_pipeline"
    training_pipeline.__doc__ = parameter_docstring(names)
    return dsl.pipeline(name=PIPELINE_NAME, description=PIPELINE_DESCRIPTION)(training_pipeline)


def local_parallelism(requested: int = 0) -> int:
    """Candidates a local run fine-tunes at once: ``requested``, else one per CPU this process may use
    (affinity and cgroup quota; kfp.local itself runs at most two loop iterations at a time), so a
    one-core machine trains them in turn."""
    from bertops.cpu import available_cpus

    return requested if requested > 0 else available_cpus()


def parameter_docstring(names: list[str]) -> str:
    """A Google-style docstring whose ``Args:`` are the config's help texts: KFP parses it into the
    description of each run parameter, which the Kubeflow UI shows on the run form."""
    help_texts = parameter_help() | EXTRA_HELP
    lines = [f"    {name}: {' '.join(help_texts[name].split())}" for name in names]
    return "\n".join([PIPELINE_DESCRIPTION, "", "Args:", *lines])


def pipeline_signature(defaults: dict[str, Any]) -> inspect.Signature:
    """One keyword parameter per run parameter, typed by its default (JSON settings decoded: list, dict)."""
    return inspect.Signature(
        [
            inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=value, annotation=type(value))
            for name, value in defaults.items()
        ],
        return_annotation=PipelineOutputs,
    )


def call(component: Any, params: dict[str, Any], **given: Any) -> Any:
    """A task of ``component``: each of its inputs named like a run parameter gets it, ``given`` the rest."""
    inputs = component.component_spec.inputs or {}
    return component(**{name: params[name] for name in inputs if name in params and name not in given}, **given)


def pipeline_body(p: dict[str, Any], finetune_retries: int, parallelism: int) -> PipelineOutputs:
    """The steps and how their outputs feed each other; ``p`` maps each run parameter to its channel."""
    validated = call(validate, p).set_display_name("Validate data")
    # Pulling from an S3 DVC remote in a pod. The local runner ignores Kubernetes settings.
    use_secret(validated, cluster.DVC_SECRET)
    tokenized = call(tokenize, p, dataset=validated.outputs["dataset"]).set_display_name("Tokenize")
    planned = call(plan_candidates, p, pipeline_run=dsl.PIPELINE_JOB_NAME_PLACEHOLDER, parallelism=parallelism)
    planned.set_display_name("Plan candidates")
    # Each run gets its own MLflow run, which a cached plan would share.
    planned.set_caching_options(False)
    with dsl.ParallelFor(planned.output, name="candidates", parallelism=parallelism) as candidate:
        trained = finetune_task(p, candidate, validated, tokenized, finetune_retries)
        trained.set_display_name("Fine-tune")
        evaluated = call(evaluate, p, model=trained.outputs["model"], tokenized=tokenized.outputs["tokenized"])
        evaluated.set_display_name("Evaluate")
    selected = call(
        select_winner,
        p,
        candidates=planned.output,
        models=dsl.Collected(trained.outputs["model"]),
        evaluations=dsl.Collected(evaluated.outputs["evaluation"]),
        tokenized=tokenized.outputs["tokenized"],
    ).set_display_name("Select the winner")
    gate = call(
        promotion_gate,
        p,
        winner_evaluation=selected.outputs["winner_evaluation"],
        tokenized=tokenized.outputs["tokenized"],
    )
    gate.set_caching_options(False).set_display_name("Promotion gate")
    # The gate downloads the champion from the registry's artifact store.
    use_secret(gate, cluster.ARTIFACT_SECRET)
    registered = call(
        register,
        p,
        model=selected.outputs["winner"],
        evaluation=selected.outputs["winner_evaluation"],
        decision=gate.outputs["decision"],
        dataset=validated.outputs["dataset"],
        data_version=validated.outputs["data_version"],
        promote=gate.outputs["Output"],
        pipeline_run=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
        validation_report=validated.outputs["report"],
    )
    registered.set_caching_options(False).set_display_name("Register")
    # With a tracking server that does not proxy artifacts, MLflow writes the model to S3 itself.
    use_secret(registered, cluster.ARTIFACT_SECRET)
    with dsl.If(gate.outputs["Output"] == True, name="promoted"):  # noqa: E712 - KFP condition syntax
        deployed = call(deploy, p, version=registered.outputs["Output"], pipeline_run=dsl.PIPELINE_JOB_NAME_PLACEHOLDER)
        deployed.set_caching_options(False).set_display_name("Deploy")
    return PipelineOutputs(
        validated.outputs["data_version"],
        validated.outputs["summary"],
        selected.outputs["Output"],
        registered.outputs["Output"],
    )


def finetune_task(p: dict[str, Any], candidate: Any, validated: Any, tokenized: Any, finetune_retries: int) -> Any:
    """One candidate's finetune task, placed on a GPU node by the run parameters."""
    trained = call(
        finetune,
        p,
        tokenized=tokenized.outputs["tokenized"],
        # What a candidate may set comes from the candidate, the rest from the run parameters.
        base_model=candidate.base_model,
        batch_size=candidate.batch_size,
        epochs=candidate.epochs,
        max_steps=candidate.max_steps,
        learning_rate=candidate.learning_rate,
        num_nodes=p["train_nodes"],
        gpus_per_node=p["train_gpus_per_node"],
        run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
        candidate_id=candidate.id,
        cpu_sharing=candidate.cpu_sharing,
        mlflow_run=candidate.mlflow_run,
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
    trained.set_accelerator_type(p["finetune_accelerator"]).set_accelerator_limit(gpu_count)
    trained.register_pipeline_channels([p["finetune_accelerator"], gpu_count])
    kubernetes.add_node_selector_json(trained, p["finetune_node_selector"])
    kubernetes.add_toleration_json(trained, p["finetune_tolerations"])
    # DataLoader workers hand batches over through /dev/shm, which a container caps at
    # 64 MiB: a memory-backed volume there, as the TrainJob pods get.
    kubernetes.empty_dir_mount(trained, volume_name="dshm", mount_path="/dev/shm", medium="Memory", size_limit=SHM_SIZE)
    if p["workspace_pvc"]:
        kubernetes.mount_pvc(trained, pvc_name=p["workspace_pvc"], mount_path=WORKSPACE_MOUNT)
    if finetune_retries:
        # A preempted spot GPU node fails the task; the retry resumes from the checkpoints.
        trained.set_retry(num_retries=finetune_retries, backoff_duration="60s", backoff_factor=2.0)
    return trained


# The pipeline as `bertops compile` builds it by default: no volume, no retries.
training_pipeline = build_pipeline()
