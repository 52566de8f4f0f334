"""The Kubeflow Trainer's job objects for a fine-tuning run: pure functions from settings to manifests.

- a ``TrainJob`` (``trainer.kubeflow.org/v1alpha1``, Kubeflow Trainer v2.2+) on the cluster's
  ``torch-distributed`` runtime, whose torch policy sets the ``PET_*`` variables torchrun reads;
- a ``PyTorchJob`` (``kubeflow.org/v1``) where the older training operator is installed.

Either way every node runs ``torchrun -m components.finetune`` from the project image, so the
job runs the same loop with DistributedDataParallel, and mounts the workspace volume it shares
with the pipeline's pod. The objects are built from typed models: the Kubernetes client's for
pod parts, the ``kubeflow-trainer-api`` models for the TrainJob and the ``kubeflow-training``
SDK's for the PyTorchJob. No CRD schema of either ships in a Python package, so tests check
them structurally, by round trip through the models, and with kubernetes-validate on the pod.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bertops.config import GPU_NODE_SELECTOR, GPU_RESOURCE, GPU_TOLERATIONS
from bertops.env import ENV_DEFAULTS
from bertops.errors import BertopsError
from bertops.images import CUDA_IMAGE
from bertops.k8s import to_manifest
from components.finetune.config import LoopConfig

TRAINJOB = "TrainJob"
PYTORCHJOB = "PyTorchJob"
# (group, version, plural) of each kind, and the condition types that end a job.
API = {TRAINJOB: ("trainer.kubeflow.org", "v1alpha1", "trainjobs"), PYTORCHJOB: ("kubeflow.org", "v1", "pytorchjobs")}
SUCCEEDED = {TRAINJOB: "Complete", PYTORCHJOB: "Succeeded"}
FAILED = "Failed"
# The torch-distributed runtime's replicated job and container, which runtime patches target.
TRAINER_NODE = "node"
# The training operator finds the training container of a PyTorchJob by this name.
PYTORCH_CONTAINER = "pytorch"
PATCH_MANAGER = "bertops.io/finetune"
PART_OF_LABEL = {"app.kubernetes.io/part-of": "bertops"}


@dataclass
class TrainJobConfig:
    """Where and how a cluster fine-tuning job runs. Placement defaults are the serving GPU nodes'."""

    kind: str = TRAINJOB
    namespace: str = "bertops"
    image: str = CUDA_IMAGE
    # ClusterTrainingRuntime of a TrainJob ("torch-distributed" ships with Kubeflow Trainer).
    runtime: str = "torch-distributed"
    num_nodes: int = 1
    gpus_per_node: int = 1
    cpu_per_node: str = "4"
    memory_per_node: str = "16Gi"
    node_selector: dict[str, str] = field(default_factory=lambda: dict(GPU_NODE_SELECTOR))
    tolerations: list[dict[str, str]] = field(default_factory=lambda: [dict(t) for t in GPU_TOLERATIONS])
    # A ReadWriteMany PVC mounted both in the pipeline's finetune pod and in the job's pods.
    workspace_pvc: str = "bertops-workspace"
    workspace_mount: str = "/workspace"
    # DataLoader workers pass batches through /dev/shm, which containers cap at 64 MiB.
    shm_size: str = "2Gi"
    # Pod restarts the PyTorchJob allows; each one resumes from the newest checkpoint.
    backoff_limit: int = 3
    active_deadline_seconds: int = 0
    # The process defaults every entry point applies, set for torchrun and its workers too.
    env: dict[str, str] = field(default_factory=lambda: {**ENV_DEFAULTS, "PYTHONUNBUFFERED": "1"})


def job_name(run_name: str) -> str:
    """A DNS-1035 name for the job of pipeline run ``run_name``: readable prefix, stable hash suffix.

    Short enough (at most 40 characters) for the names the Trainer and JobSet derive from it.
    """
    digest = hashlib.sha256(run_name.encode()).hexdigest()[:8]
    readable = re.sub(r"[^a-z0-9-]+", "-", run_name.lower()).strip("-")[:24].strip("-")
    return f"ft-{readable}-{digest}" if readable else f"ft-{digest}"


LAUNCHERS = ("local", TRAINJOB, PYTORCHJOB)


def check_launcher(launcher: str, run_name: str, workspace_pvc: str) -> None:
    """Raise ``BertopsError`` unless the finetune step can start ``launcher`` with what it was given."""
    if launcher not in LAUNCHERS:
        raise BertopsError(f"launcher must be one of {', '.join(LAUNCHERS)}, got {launcher!r}")
    if launcher == "local":
        return
    if not run_name:
        raise BertopsError(f"launcher {launcher} needs run_name (the pipeline run's name)")
    if not workspace_pvc:
        raise BertopsError(
            f"launcher {launcher} needs a workspace volume: compile the pipeline with --workspace-pvc NAME"
        )


def check_job_config(config: TrainJobConfig) -> None:
    """Raise ``BertopsError`` for settings no cluster would run."""
    if config.kind not in API:
        raise BertopsError(f"job kind must be {TRAINJOB} or {PYTORCHJOB}, got {config.kind!r}")
    if config.num_nodes < 1 or config.gpus_per_node < 0:
        raise BertopsError(
            f"a job needs at least one node and no negative GPU count (num_nodes={config.num_nodes}, "
            f"gpus_per_node={config.gpus_per_node})"
        )
    if not config.workspace_pvc:
        raise BertopsError("a cluster fine-tuning job needs workspace_pvc: the volume it shares with the pipeline")


def workspace(config: TrainJobConfig, name: str) -> Path:
    """This job's directory on the shared volume (as mounted in every pod)."""
    return Path(config.workspace_mount) / name


def trainer_command(finetune: LoopConfig, job_dir: Path) -> list[str]:
    """``torchrun -m components.finetune`` with every setting as a flag; torchrun reads the rest from ``PET_*``."""
    args = ["torchrun", "--module", "components.finetune"]
    args += ["--tokenized", str(job_dir / "tokenized"), "--out", str(job_dir / "model")]
    settings = dataclasses.asdict(finetune) | {"checkpoint_dir": str(job_dir / "checkpoints")}
    for name, value in settings.items():
        args += ["--" + name.replace("_", "-"), str(value).lower() if isinstance(value, bool) else str(value)]
    return args


def _pod_parts(config: TrainJobConfig) -> dict[str, Any]:
    """The Kubernetes client objects both job kinds put in their pods."""
    from kubernetes.client import (
        V1EmptyDirVolumeSource,
        V1EnvVar,
        V1PersistentVolumeClaimVolumeSource,
        V1ResourceRequirements,
        V1Toleration,
        V1Volume,
        V1VolumeMount,
    )

    requests: dict[str, Any] = {"cpu": config.cpu_per_node, "memory": config.memory_per_node}
    limits: dict[str, Any] = {"memory": config.memory_per_node}
    if config.gpus_per_node:
        # Extended resources must be requested and limited alike.
        requests[GPU_RESOURCE] = limits[GPU_RESOURCE] = str(config.gpus_per_node)
    return {
        "resources": V1ResourceRequirements(requests=requests, limits=limits),
        "env": [V1EnvVar(name=k, value=v) for k, v in config.env.items()],
        "volumes": [
            V1Volume(
                name="workspace",
                persistent_volume_claim=V1PersistentVolumeClaimVolumeSource(claim_name=config.workspace_pvc),
            ),
            V1Volume(name="dshm", empty_dir=V1EmptyDirVolumeSource(medium="Memory", size_limit=config.shm_size)),
        ],
        "volume_mounts": [
            V1VolumeMount(name="workspace", mount_path=config.workspace_mount),
            V1VolumeMount(name="dshm", mount_path="/dev/shm"),
        ],
        "tolerations": [
            V1Toleration(key=t.get("key"), operator=t.get("operator"), value=t.get("value"), effect=t.get("effect"))
            for t in config.tolerations
        ],
    }


def train_job(name: str, command: list[str], config: TrainJobConfig) -> Any:
    """The ``TrainJob`` running ``command`` on ``num_nodes`` nodes of ``gpus_per_node`` GPUs each."""
    from kubeflow_trainer_api import models as m
    from kubernetes.client import ApiClient

    serialize = ApiClient().sanitize_for_serialization
    parts = {key: serialize(value) for key, value in _pod_parts(config).items()}
    pod_spec = m.TrainerV1alpha1PodSpecPatch(
        node_selector=dict(config.node_selector) or None,
        tolerations=[m.IoK8sApiCoreV1Toleration.from_dict(t) for t in parts["tolerations"]] or None,
        volumes=[m.IoK8sApiCoreV1Volume.from_dict(v) for v in parts["volumes"]],
        containers=[
            m.TrainerV1alpha1ContainerPatch(
                name=TRAINER_NODE,
                volume_mounts=[m.IoK8sApiCoreV1VolumeMount.from_dict(v) for v in parts["volume_mounts"]],
            )
        ],
    )
    # Placement and volumes go in through a runtime patch (Trainer v2.2 replaced podTemplateOverrides).
    patch = m.TrainerV1alpha1RuntimePatch(
        manager=PATCH_MANAGER,
        training_runtime_spec=m.TrainerV1alpha1TrainingRuntimeSpecPatch(
            template=m.TrainerV1alpha1JobSetTemplatePatch(
                spec=m.TrainerV1alpha1JobSetSpecPatch(
                    replicated_jobs=[
                        m.TrainerV1alpha1ReplicatedJobPatch(
                            name=TRAINER_NODE,
                            template=m.TrainerV1alpha1JobTemplatePatch(
                                spec=m.TrainerV1alpha1JobSpecPatch(
                                    template=m.TrainerV1alpha1PodTemplatePatch(spec=pod_spec)
                                )
                            ),
                        )
                    ]
                )
            )
        ),
    )
    group, version, _ = API[TRAINJOB]
    return m.TrainerV1alpha1TrainJob(
        api_version=f"{group}/{version}",
        kind=TRAINJOB,
        metadata=m.IoK8sApimachineryPkgApisMetaV1ObjectMeta(
            name=name, namespace=config.namespace, labels=dict(PART_OF_LABEL)
        ),
        spec=m.TrainerV1alpha1TrainJobSpec(
            runtime_ref=m.TrainerV1alpha1RuntimeRef(name=config.runtime),
            runtime_patches=[patch],
            trainer=m.TrainerV1alpha1Trainer(
                image=config.image,
                command=command,
                env=[m.IoK8sApiCoreV1EnvVar.from_dict(e) for e in parts["env"]],
                num_nodes=config.num_nodes,
                # One process per GPU (torchrun's "auto" would do the same; explicit reads better).
                num_proc_per_node=config.gpus_per_node or 1,
                resources_per_node=m.IoK8sApiCoreV1ResourceRequirements.from_dict(parts["resources"]),
            ),
            active_deadline_seconds=config.active_deadline_seconds or None,
        ),
    )


def pytorch_job(name: str, command: list[str], config: TrainJobConfig) -> Any:
    """The ``PyTorchJob``: one Master and ``num_nodes - 1`` Workers, ``gpus_per_node`` processes each."""
    from kubeflow.training import (
        KubeflowOrgV1PyTorchJob,
        KubeflowOrgV1PyTorchJobSpec,
        KubeflowOrgV1ReplicaSpec,
        KubeflowOrgV1RunPolicy,
    )
    from kubernetes.client import V1Container, V1ObjectMeta, V1PodSpec, V1PodTemplateSpec

    parts = _pod_parts(config)
    template = V1PodTemplateSpec(
        metadata=V1ObjectMeta(labels=dict(PART_OF_LABEL)),
        spec=V1PodSpec(
            containers=[
                V1Container(
                    name=PYTORCH_CONTAINER,
                    image=config.image,
                    command=command,
                    env=parts["env"],
                    resources=parts["resources"],
                    volume_mounts=parts["volume_mounts"],
                )
            ],
            volumes=parts["volumes"],
            node_selector=dict(config.node_selector) or None,
            tolerations=parts["tolerations"] or None,
        ),
    )
    replicas = {"Master": KubeflowOrgV1ReplicaSpec(replicas=1, restart_policy="OnFailure", template=template)}
    if config.num_nodes > 1:
        replicas["Worker"] = KubeflowOrgV1ReplicaSpec(
            replicas=config.num_nodes - 1, restart_policy="OnFailure", template=template
        )
    group, version, _ = API[PYTORCHJOB]
    return KubeflowOrgV1PyTorchJob(
        api_version=f"{group}/{version}",
        kind=PYTORCHJOB,
        metadata=V1ObjectMeta(name=name, namespace=config.namespace, labels=dict(PART_OF_LABEL)),
        spec=KubeflowOrgV1PyTorchJobSpec(
            nproc_per_node=str(config.gpus_per_node or 1),
            pytorch_replica_specs=replicas,
            run_policy=KubeflowOrgV1RunPolicy(
                backoff_limit=config.backoff_limit,
                clean_pod_policy="None",
                active_deadline_seconds=config.active_deadline_seconds or None,
            ),
        ),
    )


def job_manifest(name: str, finetune: LoopConfig, config: TrainJobConfig) -> dict[str, Any]:
    """The JSON/YAML form of the job ``config.kind`` that runs ``finetune`` in ``name``'s workspace."""
    check_job_config(config)
    if config.gpus_per_node:
        # Pods given GPUs train on them or fail: "auto" would fall back to CPUs and gloo unnoticed.
        finetune = dataclasses.replace(finetune, device="cuda")
    command = trainer_command(finetune, workspace(config, name))
    if config.kind == TRAINJOB:
        return dict(train_job(name, command, config).to_dict())
    return to_manifest(pytorch_job(name, command, config))
