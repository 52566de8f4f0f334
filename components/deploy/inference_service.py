"""The KServe objects that serve a registered model on a cluster: a ServingRuntime and an InferenceService.

Built with the ``kserve`` SDK's typed models and serialized by the Kubernetes client, so field
names and nesting come from the published API types rather than hand-written dictionaries.
The CRD schema leaves some of the admission webhook's rules out (name format, canary range,
replica bounds, scale metric per deployment mode, storage URI scheme); ``check_webhook_rules``
applies them here so a bad setting fails before it reaches a cluster, with one clear line.

The same rules and builders are the reference for ``manifests/`` and ``helm/``: the tests
render both and compare them with what these functions produce.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from bertops.config import GPU_NODE_SELECTOR, GPU_RESOURCE, GPU_TOLERATIONS
from bertops.errors import BertopsError
from bertops.images import CPU_IMAGE, CUDA_IMAGE
from bertops.k8s import to_manifest

# Where KServe's storage initializer puts the files behind ``storageUri``.
MODEL_MOUNT = "/mnt/models"
SERVING_PORT = 8080
# KServe fills ``{{.Name}}`` in runtime args with the InferenceService's name, so one runtime
# serves every endpoint under its own /v1/models/NAME and /v2/models/NAME paths.
RUNTIME_MODEL_NAME = "{{.Name}}"
# The registry version an InferenceService serves, a label the deploy step sets (deploy_cluster).
MODEL_VERSION_LABEL = "bertops.io/model-version"
# KServe runs runtime args as Go templates over the InferenceService's metadata (its
# pkg/controller/v1beta1/inferenceservice/utils/placeholder.go, ``ReplacePlaceholders``), so the
# server learns the version served from that label; a missing label gives "" (index of a map), a
# server that knows no version. Backquotes: older KServe parsed the template out of the container's
# JSON, where double quotes arrive escaped.
RUNTIME_MODEL_VERSION = f"{{{{index .Labels `{MODEL_VERSION_LABEL}`}}}}"

DEPLOYMENT_MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
SERVERLESS = "Serverless"
KNATIVE = "Knative"
STANDARD = "Standard"
# Each mode under its legacy name and its KServe >= 0.16 name. KServe's mutating webhook rewrites
# the legacy names (Serverless -> Knative, RawDeployment -> Standard) in the annotation and reports
# the new one in status.deploymentMode (kserve/kserve pkg/constants/constants.go ParseDeploymentMode).
KNATIVE_MODES = (SERVERLESS, KNATIVE)
RAW_MODES = ("RawDeployment", STANDARD)
DEPLOYMENT_MODES = KNATIVE_MODES + RAW_MODES
# Knative's pod autoscaler scales on request load; the HPA of the raw modes on resources.
SCALE_METRICS = {**dict.fromkeys(KNATIVE_MODES, ("concurrency", "rps")), **dict.fromkeys(RAW_MODES, ("cpu", "memory"))}
# What the autoscaler aims at per replica: 8 requests in flight, or 80 % CPU.
SCALE_TARGETS = {"concurrency": 8, "cpu": 80}
# The schemes KServe's storage initializer can download (its webhook refuses the rest).
STORAGE_SCHEMES = ("gs://", "s3://", "pvc://", "https://", "http://", "hdfs://", "webhdfs://", "oci://", "hf://")
# DNS-1035 label: what KServe's webhook requires of an InferenceService name (it becomes a host name).
DNS_1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
PART_OF_LABEL = {"app.kubernetes.io/part-of": "bertops"}
# A Kubernetes label value (apimachinery validation.IsValidLabelValue): at most 63 characters.
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
# A Kubernetes resource quantity (apimachinery resource.Quantity), e.g. 500m, 2, 4Gi, 1e3.
QUANTITY = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+|[KMGTPE]i|[mkMGTPE])?$")


def canonical_mode(mode: str) -> str:
    """The KServe >= 0.16 name of a deployment mode (``Knative`` or ``Standard``); unknown names unchanged."""
    if mode in KNATIVE_MODES:
        return KNATIVE
    return STANDARD if mode in RAW_MODES else mode


@dataclass
class ClusterDeployConfig:
    """Where and how an InferenceService runs. The defaults target one NVIDIA GPU per replica."""

    namespace: str = "bertops"
    runtime: str = "bertops-text-classifier"
    model_format: str = "bertops-text-classifier"
    image: str = CUDA_IMAGE
    gpus: int = 1
    cpu_request: str = "1"
    cpu_limit: str = "4"
    memory_request: str = "4Gi"
    memory_limit: str = "8Gi"
    node_selector: dict[str, str] = field(default_factory=lambda: dict(GPU_NODE_SELECTOR))
    tolerations: list[dict[str, str]] = field(default_factory=lambda: [dict(t) for t in GPU_TOLERATIONS])
    min_replicas: int = 1
    max_replicas: int = 3
    scale_metric: str = "concurrency"
    scale_target: int = 8
    # Holds the storage credentials (a Secret listed on it, with KServe's s3-* annotations).
    service_account: str = "bertops-serving"
    # Share of traffic for a new revision while the previous one keeps the rest (Serverless only).
    canary_traffic_percent: int | None = None
    deployment_mode: str = SERVERLESS
    # KServe's logger sends every request and response here (the bertops inference sink); "" for none.
    logger_url: str = ""


def cpu_config(**overrides: Any) -> ClusterDeployConfig:
    """The CPU variant: the CPU image, no GPU, no GPU node selector or tolerations."""
    settings: dict[str, Any] = {"image": CPU_IMAGE, "gpus": 0, "node_selector": {}, "tolerations": []}
    return ClusterDeployConfig(**{**settings, **overrides})


# A namespace name (DNS-1123 label).
DNS_1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
RESOURCE_KINDS = ("requests", "limits")
RESOURCE_NAMES = ("cpu", "memory")


def _resource_settings(serving_resources: Any) -> dict[str, str]:
    """``serving_resources`` ({"requests": {"cpu", "memory"}, "limits": {...}}) as config fields, checked."""
    where = "serving_resources"
    if not isinstance(serving_resources, dict) or set(serving_resources) - set(RESOURCE_KINDS):
        raise BertopsError(
            f'{where} must be a JSON object with "requests" and/or "limits", got {json.dumps(serving_resources)}'
        )
    settings: dict[str, str] = {}
    for kind in RESOURCE_KINDS:
        given = serving_resources.get(kind) or {}
        if not isinstance(given, dict):
            raise BertopsError(f"{where}.{kind} must be a JSON object of cpu and memory, got {json.dumps(given)}")
        for resource, value in given.items():
            if resource == GPU_RESOURCE:
                raise BertopsError(f"{where}.{kind} cannot hold {GPU_RESOURCE}: set the GPU count with serving_gpus")
            if resource not in RESOURCE_NAMES:
                raise BertopsError(f"{where}.{kind} takes cpu and memory, not {resource!r}")
            quantity = str(value)
            if isinstance(value, bool) or not QUANTITY.match(quantity) or quantity.startswith("-"):
                raise BertopsError(
                    f"{where}.{kind}.{resource} {value!r} is not a Kubernetes quantity (e.g. 500m, 2, 4Gi)"
                )
            settings[f"{resource}_{kind.removesuffix('s')}"] = quantity
    return settings


def cluster_deploy_config(
    namespace: str,
    deployment_mode: str,
    serving_gpus: int,
    serving_resources: dict[str, Any],
    canary_traffic_percent: int,
    inference_logger_url: str = "",
) -> ClusterDeployConfig:
    """The deploy step's run parameters as a ``ClusterDeployConfig``; a bad value fails with one line naming it.

    ``serving_gpus`` 0 serves from the CPU image with no GPU, GPU node selector or tolerations;
    more serves from the CUDA image with that many GPUs per replica. ``canary_traffic_percent``
    -1 rolls a new revision out at once. The autoscaler metric follows the mode: requests in
    flight for Knative, CPU for Standard. ``inference_logger_url`` (an http(s) URL, or "") is where
    KServe's logger sends the payloads.
    """
    from kubernetes.utils import parse_quantity

    if not isinstance(namespace, str) or not DNS_1123_LABEL.match(namespace) or len(namespace) > 63:
        raise BertopsError(
            f"namespace {namespace!r} is not a Kubernetes namespace name (lower-case letters, digits, '-')"
        )
    if deployment_mode not in DEPLOYMENT_MODES:
        raise BertopsError(f"deployment_mode must be one of {', '.join(DEPLOYMENT_MODES)}, got {deployment_mode!r}")
    if isinstance(serving_gpus, bool) or not isinstance(serving_gpus, int) or serving_gpus < 0:
        raise BertopsError(f"serving_gpus must be 0 (CPU image) or a number of GPUs, got {serving_gpus!r}")
    if isinstance(canary_traffic_percent, bool) or not isinstance(canary_traffic_percent, int):
        raise BertopsError(f"canary_traffic_percent must be -1 (none) or 0-100, got {canary_traffic_percent!r}")
    if canary_traffic_percent != -1 and not 0 <= canary_traffic_percent <= 100:
        raise BertopsError(f"canary_traffic_percent must be -1 (none) or 0-100, got {canary_traffic_percent}")
    if canary_traffic_percent != -1 and deployment_mode not in KNATIVE_MODES:
        raise BertopsError(
            f"canary_traffic_percent needs deployment_mode {SERVERLESS} or {KNATIVE} (KServe splits traffic "
            f"between Knative revisions), not {deployment_mode}: use -1"
        )
    if inference_logger_url and not inference_logger_url.startswith(("http://", "https://")):
        raise BertopsError(f"inference_logger_url must be an http:// or https:// URL, got {inference_logger_url!r}")
    resources = _resource_settings(serving_resources)
    defaults = ClusterDeployConfig()
    for resource in RESOURCE_NAMES:
        request = resources.get(f"{resource}_request", getattr(defaults, f"{resource}_request"))
        limit = resources.get(f"{resource}_limit", getattr(defaults, f"{resource}_limit"))
        if parse_quantity(request) > parse_quantity(limit):
            raise BertopsError(
                f"serving_resources: the {resource} request {request} is above its limit {limit} (Kubernetes refuses it)"
            )
    metric = SCALE_METRICS[deployment_mode][0]
    settings: dict[str, Any] = {
        "namespace": namespace,
        "deployment_mode": deployment_mode,
        "scale_metric": metric,
        "scale_target": SCALE_TARGETS[metric],
        "canary_traffic_percent": None if canary_traffic_percent == -1 else canary_traffic_percent,
        "logger_url": inference_logger_url,
        **resources,
    }
    if serving_gpus == 0:
        return cpu_config(**settings)
    return ClusterDeployConfig(image=CUDA_IMAGE, gpus=serving_gpus, **settings)


def serving_runtime(config: ClusterDeployConfig) -> Any:
    """The ``ServingRuntime`` that runs ``serving.server`` from the project image on port 8080."""
    from kserve import (
        V1alpha1ServingRuntime,
        V1alpha1ServingRuntimeSpec,
        V1alpha1SupportedModelFormat,
        constants,
    )
    from kubernetes.client import (
        V1Capabilities,
        V1Container,
        V1ContainerPort,
        V1EmptyDirVolumeSource,
        V1EnvVar,
        V1ObjectMeta,
        V1SecurityContext,
        V1Volume,
        V1VolumeMount,
    )

    container = V1Container(
        name="kserve-container",
        image=config.image,
        command=["python", "-m", "serving.server"],
        args=[
            "--host=0.0.0.0",
            f"--http-port={SERVING_PORT}",
            f"--model-dir={MODEL_MOUNT}",
            f"--model-name={RUNTIME_MODEL_NAME}",
            f"--model-version={RUNTIME_MODEL_VERSION}",
        ],
        ports=[V1ContainerPort(container_port=SERVING_PORT, name="http1", protocol="TCP")],
        # The root filesystem is read-only; caches (tokenizers, torch) go to the /tmp volume.
        env=[V1EnvVar(name="XDG_CACHE_HOME", value="/tmp/cache")],
        volume_mounts=[V1VolumeMount(name="tmp", mount_path="/tmp")],
        security_context=V1SecurityContext(
            allow_privilege_escalation=False,
            read_only_root_filesystem=True,
            run_as_non_root=True,
            capabilities=V1Capabilities(drop=["ALL"]),
        ),
    )
    return V1alpha1ServingRuntime(
        api_version=f"{constants.KSERVE_GROUP}/{constants.KSERVE_V1ALPHA1_VERSION}",
        kind="ServingRuntime",
        metadata=V1ObjectMeta(name=config.runtime, namespace=config.namespace, labels=dict(PART_OF_LABEL)),
        spec=V1alpha1ServingRuntimeSpec(
            supported_model_formats=[
                V1alpha1SupportedModelFormat(name=config.model_format, version="1", auto_select=True)
            ],
            protocol_versions=["v1", "v2"],
            containers=[container],
            volumes=[V1Volume(name="tmp", empty_dir=V1EmptyDirVolumeSource())],
        ),
    )


def predictor_spec(storage_uri: str, config: ClusterDeployConfig) -> Any:
    """The predictor of the InferenceService: model, runtime, resources, placement, scaling, security."""
    from kserve import V1beta1LoggerSpec, V1beta1ModelFormat, V1beta1ModelSpec, V1beta1PredictorSpec
    from kubernetes.client import V1PodSecurityContext, V1ResourceRequirements, V1SeccompProfile, V1Toleration

    requests: dict[str, Any] = {"cpu": config.cpu_request, "memory": config.memory_request}
    limits: dict[str, Any] = {"cpu": config.cpu_limit, "memory": config.memory_limit}
    if config.gpus:
        # Extended resources must be requested and limited alike; Kubernetes rejects anything else.
        requests[GPU_RESOURCE] = limits[GPU_RESOURCE] = config.gpus
    return V1beta1PredictorSpec(
        model=V1beta1ModelSpec(
            # The SDK defaults the container name to ''; leave it out: KServe names the container.
            name=None,
            model_format=V1beta1ModelFormat(name=config.model_format, version="1"),
            runtime=config.runtime,
            # KServe merges these container fields over the runtime's container, the predictor's
            # winning (MergeRuntimeContainers). The runtime's image is whatever its installer chose
            # (the chart: CUDA with gpu.enabled): naming the image here makes serving_gpus decide.
            image=config.image,
            storage_uri=storage_uri,
            resources=V1ResourceRequirements(requests=requests, limits=limits),
        ),
        service_account_name=config.service_account,
        node_selector=dict(config.node_selector) or None,
        tolerations=[
            V1Toleration(key=t.get("key"), operator=t.get("operator"), value=t.get("value"), effect=t.get("effect"))
            for t in config.tolerations
        ]
        or None,
        min_replicas=config.min_replicas,
        max_replicas=config.max_replicas,
        scale_metric=config.scale_metric,
        scale_target=config.scale_target,
        canary_traffic_percent=config.canary_traffic_percent,
        # Mode all: the sink pairs each request (the texts) with its response (the answers) by ce-id;
        # the version annotation rides along in each event's ce-annotations.
        logger=V1beta1LoggerSpec(mode="all", url=config.logger_url, metadata_annotations=[MODEL_VERSION_LABEL])
        if config.logger_url
        else None,
        security_context=V1PodSecurityContext(
            run_as_non_root=True, seccomp_profile=V1SeccompProfile(type="RuntimeDefault")
        ),
    )


def inference_service(
    name: str,
    storage_uri: str,
    config: ClusterDeployConfig,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> Any:
    """The ``InferenceService`` serving the model files at ``storage_uri`` with ``config.runtime``."""
    from kserve import V1beta1InferenceService, V1beta1InferenceServiceSpec, constants
    from kubernetes.client import V1ObjectMeta

    if config.logger_url and MODEL_VERSION_LABEL in (labels or {}):
        # KServe's logger forwards annotations, not labels (logger.metadataAnnotations).
        annotations = {**(annotations or {}), MODEL_VERSION_LABEL: (labels or {})[MODEL_VERSION_LABEL]}
    isvc = V1beta1InferenceService(
        api_version=f"{constants.KSERVE_GROUP}/{constants.KSERVE_V1BETA1_VERSION}",
        kind=constants.KSERVE_KIND_INFERENCESERVICE,
        metadata=V1ObjectMeta(
            name=name,
            namespace=config.namespace,
            labels={**PART_OF_LABEL, **(labels or {})},
            annotations={**(annotations or {}), DEPLOYMENT_MODE_ANNOTATION: config.deployment_mode},
        ),
        spec=V1beta1InferenceServiceSpec(predictor=predictor_spec(storage_uri, config)),
    )
    check_webhook_rules(to_manifest(isvc))
    return isvc


def check_webhook_rules(manifest: dict[str, Any]) -> None:
    """Raise ``BertopsError`` for an InferenceService that KServe's admission webhook would refuse.

    These are the webhook's rules that the CRD's schema does not carry; run the schema check
    as well for everything else.
    """
    name = manifest.get("metadata", {}).get("name", "")
    if not DNS_1035_LABEL.match(name) or len(name) > 63:
        raise BertopsError(
            f"InferenceService name {name!r} is invalid: use at most 63 lower-case letters, digits or '-', "
            "starting with a letter and ending with a letter or digit"
        )
    predictor = manifest.get("spec", {}).get("predictor", {})
    where = f"InferenceService {name!r}"
    if "model" not in predictor:
        raise BertopsError(f"{where}: spec.predictor.model is required")
    if predictor["model"].get("name"):
        raise BertopsError(f"{where}: spec.predictor.model.name is not allowed (KServe names the container)")
    mode = manifest["metadata"].get("annotations", {}).get(DEPLOYMENT_MODE_ANNOTATION, SERVERLESS)
    if mode not in SCALE_METRICS:
        raise BertopsError(f"{where}: deployment mode {mode!r} is not one of {', '.join(SCALE_METRICS)}")
    canary = predictor.get("canaryTrafficPercent")
    if canary is not None:
        if not 0 <= canary <= 100:
            raise BertopsError(f"{where}: canaryTrafficPercent must be between 0 and 100, got {canary}")
        if mode not in KNATIVE_MODES:
            raise BertopsError(
                f"{where}: canaryTrafficPercent needs the {SERVERLESS} (or {KNATIVE}) deployment mode, not {mode}"
            )
    min_replicas, max_replicas = predictor.get("minReplicas", 1), predictor.get("maxReplicas", 0)
    if min_replicas < 0 or max_replicas < 0:
        raise BertopsError(f"{where}: minReplicas and maxReplicas cannot be negative")
    if max_replicas and min_replicas > max_replicas:
        raise BertopsError(f"{where}: minReplicas ({min_replicas}) cannot be greater than maxReplicas ({max_replicas})")
    metric = predictor.get("scaleMetric", SCALE_METRICS[mode][0])
    if metric not in SCALE_METRICS[mode]:
        raise BertopsError(
            f"{where}: scaleMetric {metric!r} is not supported in {mode} mode (use {' or '.join(SCALE_METRICS[mode])})"
        )
    target = predictor.get("scaleTarget")
    if target is not None and (target < 1 or (metric == "cpu" and target > 100)):
        raise BertopsError(f"{where}: scaleTarget {target} is out of range for scaleMetric {metric!r}")
    storage_uri = predictor["model"].get("storageUri", "")
    if not storage_uri.startswith(STORAGE_SCHEMES):
        raise BertopsError(
            f"{where}: storageUri {storage_uri!r} is not one KServe can download "
            f"(use one of {', '.join(s.removesuffix('://') for s in STORAGE_SCHEMES)})"
        )
