"""The deploy step's cluster target: its KServe objects, the webhook's rules, server-side apply and rollback.

No API server runs here. The kubernetes client runs for real down to its HTTP transport, where
``RecordedTransport`` takes each request (method, path, query, headers, JSON body) and answers
with a recorded response of the API server's shape, in order. It decides nothing: the tests
assert on what the client sent, and every recorded InferenceService (status included) is
itself checked against KServe's CRD schema.
"""

from __future__ import annotations

import copy
import json
import re
import time
from typing import Any

import k8s_tools
import pytest
import urllib3
from support import RecordedTransport, Request, client_with

from bertops.cluster import PROFILE_NAMESPACE
from bertops.errors import BertopsError
from bertops.images import CPU_IMAGE, CUDA_IMAGE
from bertops.k8s import load_api_client, to_manifest
from components.deploy.deploy_cluster import (
    APPLY_PATCH,
    FIELD_MANAGER,
    deploy_cluster,
    deploy_registered_version,
    registered_storage_uri,
    restorable,
    version_metadata,
)
from components.deploy.inference_service import (
    DEPLOYMENT_MODE_ANNOTATION,
    RAW_MODES,
    ClusterDeployConfig,
    check_webhook_rules,
    cluster_deploy_config,
    cpu_config,
    inference_service,
    serving_runtime,
)

pytestmark = pytest.mark.cluster

NAME = "bbc-news-classifier"
NAMESPACE = "bertops"
STORAGE = "s3://mlflow/1/0a1b2c/artifacts/model"
PATH = f"/apis/serving.kserve.io/v1beta1/namespaces/{NAMESPACE}/inferenceservices/{NAME}"


@pytest.fixture(scope="module")
def crd_schemas(kserve_crd_schemas: dict[tuple[str, str], dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return kserve_crd_schemas


# --- the objects ---------------------------------------------------------------------------


@pytest.mark.parametrize("config", [ClusterDeployConfig(), cpu_config()], ids=["gpu", "cpu"])
def test_objects_pass_the_crd_schema(config: ClusterDeployConfig, crd_schemas: dict) -> None:
    for obj in (serving_runtime(config), inference_service(NAME, STORAGE, config)):
        manifest = to_manifest(obj)
        assert (manifest["apiVersion"], manifest["kind"]) in crd_schemas
        assert k8s_tools.schema_errors(manifest, crd_schemas) == []


def test_schema_check_rejects_a_misspelled_field(crd_schemas: dict) -> None:
    manifest = to_manifest(inference_service(NAME, STORAGE, ClusterDeployConfig()))
    manifest["spec"]["predictor"]["minReplica"] = 2
    manifest["spec"]["predictor"]["scaleMetric"] = "latency"
    errors = k8s_tools.schema_errors(manifest, crd_schemas)
    assert any("minReplica" in e for e in errors)
    assert any("latency" in e for e in errors)


def test_gpu_defaults_request_a_gpu_on_gpu_nodes() -> None:
    predictor = to_manifest(inference_service(NAME, STORAGE, ClusterDeployConfig()))["spec"]["predictor"]
    resources = predictor["model"]["resources"]
    assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"] == 1
    assert predictor["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert predictor["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert predictor["model"]["storageUri"] == STORAGE
    assert predictor["model"]["runtime"] == "bertops-text-classifier"
    assert predictor["serviceAccountName"] == "bertops-serving"
    assert (predictor["minReplicas"], predictor["maxReplicas"], predictor["scaleMetric"]) == (1, 3, "concurrency")
    assert "canaryTrafficPercent" not in predictor


def test_cpu_variant_asks_for_no_gpu() -> None:
    predictor = to_manifest(inference_service(NAME, STORAGE, cpu_config()))["spec"]["predictor"]
    assert "nvidia.com/gpu" not in json.dumps(predictor)
    assert "nodeSelector" not in predictor and "tolerations" not in predictor


def test_runtime_runs_the_project_server_from_the_images_py_image() -> None:
    (container,) = to_manifest(serving_runtime(ClusterDeployConfig()))["spec"]["containers"]
    assert container["image"] == CUDA_IMAGE
    assert container["command"] == ["python", "-m", "serving.server"]
    assert container["args"] == [
        "--host=0.0.0.0",
        "--http-port=8080",
        "--model-dir=/mnt/models",
        "--model-name={{.Name}}",
        "--model-version={{index .Labels `bertops.io/model-version`}}",
    ]
    assert container["securityContext"]["runAsNonRoot"] is True
    # The server's own parser takes these flags (KServe substitutes {{.Name}} before it runs).
    from serving.server import parse_args

    args = parse_args(kserve_fills(container["args"], {"name": NAME, "labels": {}}))
    assert (args.host, args.http_port, args.model_dir, args.model_name) == ("0.0.0.0", 8080, "/mnt/models", NAME)
    assert args.config.model_version == ""
    assert to_manifest(serving_runtime(cpu_config()))["spec"]["containers"][0]["image"] == CPU_IMAGE


def kserve_fills(args: list[str], metadata: dict[str, Any]) -> list[str]:
    """The runtime ``args`` after KServe's placeholder pass over an InferenceService's ``metadata``.

    kserve/kserve pkg/controller/v1beta1/inferenceservice/utils/placeholder.go runs each string
    as a Go text/template with the ObjectMeta as data; the two actions the runtime uses are
    ``{{.Name}}`` and ``{{index .Labels `KEY`}}`` (a missing key: the map's zero value, "").
    Anything else left in braces would reach the server unreplaced, so it fails here.
    """

    def action(match: re.Match[str]) -> str:
        if match[1] == ".Name":
            return str(metadata["name"])
        label = re.fullmatch(r"index \.Labels `([^`]+)`", match[1])
        assert label, f"unexpected template action {match[0]}"
        return str(metadata.get("labels", {}).get(label[1], ""))

    filled = [re.sub(r"\{\{(.*?)\}\}", action, arg) for arg in args]
    assert not any("{{" in arg for arg in filled)
    return filled


def test_the_server_serves_the_version_of_its_inference_service_label() -> None:
    """The deploy step's version label reaches ``--model-version`` (a rollback's: see its test)."""
    from serving.server import parse_args

    runtime = to_manifest(serving_runtime(ClusterDeployConfig()))
    labels, _ = version_metadata(NAME, "7")
    isvc = to_manifest(inference_service(NAME, STORAGE, ClusterDeployConfig(), labels))
    check_webhook_rules(isvc)
    args = parse_args(kserve_fills(container_kserve_runs(runtime, isvc)["args"], isvc["metadata"]))
    assert (args.model_name, args.config.model_version) == (NAME, "7")


RESOURCES = {"requests": {"cpu": "1", "memory": "4Gi"}, "limits": {"cpu": "4", "memory": "8Gi"}}
# The patchMergeKey of each list of a container (k8s.io/api core/v1 types.go): strategic merge
# patches merge these lists element by element on that key and replace every other list.
MERGE_KEYS = {"env": "name", "ports": "containerPort", "volumeMounts": "mountPath", "volumeDevices": "devicePath"}


def strategic_merge(base: Any, overlay: Any, merge_key: str | None = None) -> Any:
    """A strategic merge patch of ``overlay`` onto ``base`` for the field kinds a container has."""
    if isinstance(base, dict) and isinstance(overlay, dict):
        merged = dict(base)
        for key, value in overlay.items():
            merged[key] = strategic_merge(base[key], value, MERGE_KEYS.get(key)) if key in base else value
        return merged
    if isinstance(base, list) and isinstance(overlay, list) and merge_key:
        by_key = {item[merge_key]: item for item in base}
        for item in overlay:
            by_key[item[merge_key]] = strategic_merge(by_key.get(item[merge_key], {}), item)
        return list(by_key.values())
    return overlay


def container_kserve_runs(runtime: dict[str, Any], isvc: dict[str, Any]) -> dict[str, Any]:
    """The kserve-container that KServe makes of a ServingRuntime and an InferenceService's predictor.

    kserve/kserve pkg/controller/v1beta1/inferenceservice/utils/utils.go ``MergeRuntimeContainers``:
    the predictor's container fields (the corev1.Container inlined in ``spec.predictor.model``)
    are merged over the runtime's container with a strategic merge patch
    (pkg/utils/container_merge.go ``MergeContainerWithPatch``), args concatenated, runtime's first.
    """
    from kubernetes.client import V1Container

    (runtime_container,) = runtime["spec"]["containers"]
    model = isvc["spec"]["predictor"]["model"]
    isvc_container = {k: v for k, v in model.items() if k in V1Container.attribute_map.values()}
    merged = strategic_merge(runtime_container, isvc_container)
    merged["args"] = runtime_container.get("args", []) + isvc_container.get("args", [])
    return dict(merged)


@pytest.mark.parametrize(
    ("gpus", "image", "gpu_limit"),
    [(0, CPU_IMAGE, None), (1, CUDA_IMAGE, 1), (2, CUDA_IMAGE, 2)],
    ids=["cpu", "1", "2"],
)
@pytest.mark.parametrize("runtime_image", ["cuda", "cpu"])
def test_serving_gpus_decide_the_image_that_runs(
    gpus: int, image: str, gpu_limit: int | None, runtime_image: str
) -> None:
    """serving_gpus decides the image whichever image the installed runtime names (the chart: CUDA with a GPU)."""
    config = cluster_deploy_config(PROFILE_NAMESPACE, "Serverless", gpus, RESOURCES, -1)
    runtime = to_manifest(serving_runtime(ClusterDeployConfig() if runtime_image == "cuda" else cpu_config()))
    isvc = to_manifest(inference_service(NAME, STORAGE, config))
    container = container_kserve_runs(runtime, isvc)
    assert container["image"] == image
    assert container["resources"]["limits"].get("nvidia.com/gpu") == gpu_limit
    assert container["resources"]["requests"] == {
        "cpu": "1",
        "memory": "4Gi",
        **({"nvidia.com/gpu": gpus} if gpus else {}),
    }
    assert container["args"] == runtime["spec"]["containers"][0]["args"]
    predictor = isvc["spec"]["predictor"]
    if gpus:
        assert predictor["nodeSelector"] == {"nvidia.com/gpu.present": "true"} and predictor["tolerations"]
    else:
        assert "nodeSelector" not in predictor and "tolerations" not in predictor
        assert "nvidia.com/gpu" not in json.dumps(isvc)
    assert isvc["metadata"]["namespace"] == PROFILE_NAMESPACE


@pytest.mark.parametrize(
    ("mode", "metric", "target"),
    [
        ("Serverless", "concurrency", 8),
        ("Knative", "concurrency", 8),
        ("RawDeployment", "cpu", 80),
        ("Standard", "cpu", 80),
    ],
)
def test_the_run_parameters_choose_mode_resources_and_canary(
    mode: str, metric: str, target: int, crd_schemas: dict
) -> None:
    resources = {"requests": {"cpu": "500m", "memory": "2Gi"}, "limits": {"cpu": 2, "memory": "3Gi"}}
    canary = 10 if mode in ("Serverless", "Knative") else -1
    config = cluster_deploy_config("team-a", mode, 1, resources, canary)
    manifest = to_manifest(inference_service(NAME, STORAGE, config))
    assert k8s_tools.schema_errors(manifest, crd_schemas) == []
    predictor = manifest["spec"]["predictor"]
    assert manifest["metadata"]["annotations"][DEPLOYMENT_MODE_ANNOTATION] == mode
    assert (predictor["scaleMetric"], predictor["scaleTarget"]) == (metric, target)
    assert predictor["model"]["resources"] == {
        "requests": {"cpu": "500m", "memory": "2Gi", "nvidia.com/gpu": 1},
        "limits": {"cpu": "2", "memory": "3Gi", "nvidia.com/gpu": 1},
    }
    assert predictor.get("canaryTrafficPercent") == (10 if canary == 10 else None)
    # Only the parts given change; the rest keep the defaults.
    partial = cluster_deploy_config("team-a", mode, 0, {"limits": {"memory": "16Gi"}}, -1)
    assert (partial.cpu_request, partial.cpu_limit, partial.memory_request, partial.memory_limit) == (
        "1",
        "4",
        "4Gi",
        "16Gi",
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("Team_A", "Serverless", 1, RESOURCES, -1), "namespace 'Team_A' is not a Kubernetes namespace name"),
        (
            ("ns", "Serverles", 1, RESOURCES, -1),
            "deployment_mode must be one of Serverless, Knative, RawDeployment, Standard",
        ),
        (("ns", "Serverless", -1, RESOURCES, -1), "serving_gpus must be 0 (CPU image) or a number of GPUs, got -1"),
        (("ns", "Serverless", 1, RESOURCES, 120), "canary_traffic_percent must be -1 (none) or 0-100, got 120"),
        (("ns", "Standard", 1, RESOURCES, 20), "canary_traffic_percent needs deployment_mode Serverless or Knative"),
        (("ns", "Serverless", 1, {"request": {}}, -1), 'serving_resources must be a JSON object with "requests"'),
        (("ns", "Serverless", 1, {"limits": {"nvidia.com/gpu": 1}}, -1), "set the GPU count with serving_gpus"),
        (
            ("ns", "Serverless", 1, {"limits": {"gpu": 1}}, -1),
            "serving_resources.limits takes cpu and memory, not 'gpu'",
        ),
        (
            ("ns", "Serverless", 1, {"limits": {"memory": "8 GB"}}, -1),
            "serving_resources.limits.memory '8 GB' is not a Kubernetes quantity",
        ),
        (("ns", "Serverless", 1, {"requests": {"cpu": "8"}}, -1), "the cpu request 8 is above its limit 4"),
    ],
)
def test_bad_run_parameters_fail_with_one_line_naming_them(args: tuple[Any, ...], message: str) -> None:
    with pytest.raises(BertopsError, match=re.escape(message)) as caught:
        cluster_deploy_config(*args)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("name", "overrides", "message"),
    [
        ("Bert_Classifier", {}, "name 'Bert_Classifier' is invalid"),
        ("1classifier", {}, "name '1classifier' is invalid"),
        ("a" * 64, {}, "is invalid"),
        (NAME, {"canary_traffic_percent": 101}, "canaryTrafficPercent must be between 0 and 100, got 101"),
        (NAME, {"canary_traffic_percent": -1}, "canaryTrafficPercent must be between 0 and 100, got -1"),
        (
            NAME,
            {
                "canary_traffic_percent": 10,
                "deployment_mode": "RawDeployment",
                "scale_metric": "cpu",
                "scale_target": 80,
            },
            "needs the Serverless",
        ),
        (NAME, {"min_replicas": 4, "max_replicas": 2}, "minReplicas (4) cannot be greater than maxReplicas (2)"),
        (NAME, {"min_replicas": -1}, "cannot be negative"),
        (NAME, {"scale_metric": "cpu"}, "scaleMetric 'cpu' is not supported in Serverless mode"),
        (NAME, {"deployment_mode": "Standard"}, "scaleMetric 'concurrency' is not supported in Standard mode"),
        (
            NAME,
            {"deployment_mode": "RawDeployment", "scale_metric": "cpu", "scale_target": 150},
            "scaleTarget 150 is out of range",
        ),
        (NAME, {"deployment_mode": "ModelMesh"}, "deployment mode 'ModelMesh' is not one of"),
    ],
)
def test_webhook_rules_fail_with_one_clear_line(name: str, overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(BertopsError, match=message.replace("(", r"\(").replace(")", r"\)")) as caught:
        inference_service(name, STORAGE, ClusterDeployConfig(**overrides))
    assert "\n" not in str(caught.value)


def test_webhook_rules_accept_the_edges() -> None:
    for config in (
        ClusterDeployConfig(canary_traffic_percent=0),
        ClusterDeployConfig(canary_traffic_percent=100),
        ClusterDeployConfig(min_replicas=0, max_replicas=0),
    ):
        inference_service(NAME, STORAGE, config)
    inference_service(
        "a" * 63, STORAGE, ClusterDeployConfig(deployment_mode="Standard", scale_metric="memory", scale_target=2048)
    )


def test_webhook_rules_refuse_storage_kserve_cannot_download() -> None:
    with pytest.raises(
        BertopsError, match="storageUri 'mlflow-artifacts:/1/abc/artifacts/model' is not one KServe can download"
    ):
        inference_service(NAME, "mlflow-artifacts:/1/abc/artifacts/model", ClusterDeployConfig())
    manifest = to_manifest(inference_service(NAME, STORAGE, ClusterDeployConfig()))
    manifest["spec"]["predictor"]["model"]["name"] = "custom"
    with pytest.raises(BertopsError, match=r"spec\.predictor\.model\.name is not allowed"):
        check_webhook_rules(manifest)


# --- the cluster path, against the real client and a recorded transport ----------------------


NOT_FOUND = (
    404,
    {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": f'inferenceservices.serving.kserve.io "{NAME}" not found',
        "reason": "NotFound",
        "details": {"name": NAME, "group": "serving.kserve.io", "kind": "inferenceservices"},
        "code": 404,
    },
)


def stored(manifest: dict[str, Any], generation: int, status: dict[str, Any] | None = None) -> dict[str, Any]:
    """An InferenceService as the API server returns it: the spec plus server metadata and KServe's status."""
    obj = copy.deepcopy(manifest)
    obj["metadata"].update(
        uid="6f1e0c2a-3b7d-4f7e-9d55-0c6a1f0f7a11",
        resourceVersion=str(1000 + generation),
        generation=generation,
        creationTimestamp="2026-11-22T10:00:00Z",
        managedFields=[
            {
                "manager": FIELD_MANAGER,
                "operation": "Apply",
                "apiVersion": "serving.kserve.io/v1beta1",
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:spec": {}},
            }
        ],
    )
    if status is not None:
        obj["status"] = status
    return obj


def revision(number: int) -> str:
    """Knative's name for the predictor's revision ``number`` (the Configuration's generation)."""
    return f"{NAME}-predictor-{number:05d}"


def ready_status(number: int, child_generation: int | None = None) -> dict[str, Any]:
    """Knative mode, revision ``number`` ready with all the traffic; the Knative Service at ``child_generation``.

    KServe fills ``components.predictor`` and ``observedGeneration`` from the Knative Service's status
    (kserve/kserve pkg/apis/serving/v1beta1/inference_service_status.go, ``PropagateStatus``).
    """
    return {
        "observedGeneration": child_generation or number,
        "url": f"http://{NAME}.{NAMESPACE}.example.com",
        "address": {"url": f"http://{NAME}-predictor.{NAMESPACE}.svc.cluster.local"},
        "deploymentMode": "Knative",
        "components": {
            "predictor": {
                "latestCreatedRevision": revision(number),
                "latestReadyRevision": revision(number),
                "latestRolledoutRevision": revision(number),
                "traffic": [{"revisionName": revision(number), "percent": 100, "latestRevision": True}],
                "url": f"http://{NAME}-predictor.{NAMESPACE}.example.com",
            }
        },
        "conditions": [
            {"type": "IngressReady", "status": "True", "lastTransitionTime": "2026-11-22T10:01:00Z"},
            {"type": "PredictorReady", "status": "True", "lastTransitionTime": "2026-11-22T10:01:00Z"},
            {"type": "Ready", "status": "True", "lastTransitionTime": "2026-11-22T10:01:00Z"},
        ],
        "modelStatus": {
            "transitionStatus": "UpToDate",
            "states": {"activeModelState": "Loaded", "targetModelState": "Loaded"},
            "copies": {"failedCopies": 0, "totalCopies": 1},
        },
    }


def progressing_status(number: int) -> dict[str, Any]:
    """Knative mode, revision ``number`` created and not ready: the route keeps the previous one."""
    message = (
        f'Revision "{revision(number)}" failed with message: 0/4 nodes are available: 4 Insufficient nvidia.com/gpu.'
    )
    return {
        "observedGeneration": number,
        "deploymentMode": "Knative",
        "components": {
            "predictor": {
                "latestCreatedRevision": revision(number),
                "latestReadyRevision": revision(number - 1) if number > 1 else "",
                "traffic": [{"revisionName": revision(number - 1), "percent": 100, "latestRevision": True}]
                if number > 1
                else [],
            }
        },
        "conditions": [
            {
                "type": "PredictorReady",
                "status": "False",
                "reason": "RevisionMissing",
                "message": message,
                "lastTransitionTime": "2026-11-22T10:02:00Z",
            },
            {
                "type": "Ready",
                "status": "False",
                "reason": "RevisionMissing",
                "message": message,
                "lastTransitionTime": "2026-11-22T10:02:00Z",
            },
        ],
        "modelStatus": {
            "transitionStatus": "InProgress",
            "states": {"activeModelState": "Loaded", "targetModelState": "Pending"},
        },
    }


def standard_status(deployment_generation: int, progressing_reason: str) -> dict[str, Any]:
    """Standard (raw Deployment) mode: KServe's PredictorReady from the Deployment's conditions.

    ``PropagateRawStatus`` (kserve/kserve pkg/apis/serving/v1beta1/inference_service_status.go) sets
    PredictorReady True from Available=True, keeps it True (Available's reason) while Progressing is
    True mid-rollout, takes Progressing's reason once it is NewReplicaSetAvailable, and copies the
    Deployment's observedGeneration.
    """
    available = progressing_reason == "NewReplicaSetAvailable"
    reason = progressing_reason if available else "MinimumReplicasAvailable"
    message = (
        f'ReplicaSet "{NAME}-predictor-7c9f" has successfully progressed.'
        if available
        else "Deployment has minimum availability."
    )
    return {
        "observedGeneration": deployment_generation,
        "url": f"http://{NAME}-{NAMESPACE}.example.com",
        "address": {"url": f"http://{NAME}-predictor.{NAMESPACE}.svc.cluster.local"},
        "deploymentMode": "Standard",
        "components": {"predictor": {"url": f"http://{NAME}-predictor-{NAMESPACE}.example.com"}},
        "conditions": [
            {"type": "IngressReady", "status": "True", "lastTransitionTime": "2026-11-22T10:01:00Z"},
            {
                "type": "PredictorReady",
                "status": "True",
                "reason": reason,
                "message": message,
                "lastTransitionTime": "2026-11-22T10:01:00Z",
            },
            {"type": "Ready", "status": "True", "lastTransitionTime": "2026-11-22T10:01:00Z"},
        ],
        "modelStatus": {
            "transitionStatus": "UpToDate",
            "states": {"activeModelState": "Loaded", "targetModelState": "Loaded"},
            "copies": {"failedCopies": 0, "totalCopies": 1},
        },
    }


def failed_load_status(generation: int) -> dict[str, Any]:
    status = progressing_status(generation)
    status["modelStatus"] = {
        "transitionStatus": "BlockedByFailedLoad",
        "states": {"activeModelState": "", "targetModelState": "FailedToLoad"},
        "lastFailureInfo": {"reason": "ModelLoadFailed", "message": "config.json not found in /mnt/models"},
    }
    return status


STANDARD = ClusterDeployConfig(deployment_mode="Standard", scale_metric="cpu", scale_target=80)


def new_manifest(config: ClusterDeployConfig | None = None) -> dict[str, Any]:
    return to_manifest(inference_service(NAME, STORAGE, config or ClusterDeployConfig()))


def previous_object() -> dict[str, Any]:
    """Version 1 of the endpoint, first applied by an operator with kubectl, Ready."""
    manifest = to_manifest(inference_service(NAME, "s3://mlflow/1/old/artifacts/model", ClusterDeployConfig()))
    manifest["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] = json.dumps(manifest)
    return stored(manifest, 1, ready_status(1))


def test_recorded_responses_have_the_crd_shape(crd_schemas: dict) -> None:
    for obj in (
        previous_object(),
        stored(new_manifest(), 2, ready_status(2)),
        stored(new_manifest(), 2, progressing_status(2)),
        stored(new_manifest(), 2, failed_load_status(2)),
        stored(new_manifest(STANDARD), 4, standard_status(2, "ReplicaSetUpdated")),
        stored(new_manifest(STANDARD), 4, standard_status(2, "NewReplicaSetAvailable")),
    ):
        assert k8s_tools.schema_errors(obj, crd_schemas) == []


def assert_is_apply(request: Request, crd_schemas: dict) -> None:
    """A server-side apply of a valid InferenceService by the bertops field manager."""
    assert (request.method, request.path) == ("PATCH", PATH)
    assert request.headers["Content-Type"] == APPLY_PATCH
    assert request.query == {"fieldManager": FIELD_MANAGER, "force": "True"}
    assert k8s_tools.schema_errors(request.body, crd_schemas) == []
    check_webhook_rules(request.body)


def test_creates_with_server_side_apply_and_waits_for_ready(crd_schemas: dict) -> None:
    manifest = new_manifest()
    transport = RecordedTransport(
        {"GET": [NOT_FOUND, (200, stored(manifest, 1, ready_status(1)))], "PATCH": [(201, stored(manifest, 1))]}
    )
    endpoint = deploy_cluster(NAME, STORAGE, api=client_with(transport), timeout=5, poll_interval=0)
    assert transport.calls() == [("GET", PATH), ("PATCH", PATH), ("GET", PATH)]
    assert_is_apply(transport.requests[1], crd_schemas)
    assert transport.requests[1].body == manifest
    assert (endpoint.url, endpoint.generation, endpoint.namespace) == (
        f"http://{NAME}.{NAMESPACE}.example.com",
        1,
        NAMESPACE,
    )


def test_update_waits_for_ready_of_the_new_generation(crd_schemas: dict) -> None:
    previous, manifest = previous_object(), new_manifest()
    transport = RecordedTransport(
        {
            # The first poll still shows generation 1's Ready: it must not count for generation 2.
            "GET": [
                (200, previous),
                (200, stored(manifest, 2, ready_status(1))),
                (200, stored(manifest, 2, ready_status(2))),
            ],
            "PATCH": [(200, stored(manifest, 2, ready_status(1)))],
        }
    )
    endpoint = deploy_cluster(NAME, STORAGE, api=client_with(transport), timeout=5, poll_interval=0)
    assert transport.calls() == [("GET", PATH), ("PATCH", PATH), ("GET", PATH), ("GET", PATH)]
    assert_is_apply(transport.requests[1], crd_schemas)
    assert endpoint.generation == 2


def test_a_ready_status_of_the_old_revision_is_not_the_new_one(crd_schemas: dict) -> None:
    """``status.observedGeneration`` is the Knative Service's, not the InferenceService's generation.

    KServe copies it and ``components.predictor`` from the Knative Service's status (kserve/kserve
    pkg/apis/serving/v1beta1/inference_service_status.go, ``PropagateStatus``), and marks the model
    Loaded only when the latest created revision is the latest ready one (``PropagateModelStatus``).
    Knative reports a Service Ready at its observed generation only once its Configuration and Route
    caught up with it (knative/serving pkg/reconciler/service/service.go, ``ReconcileKind``).
    Here earlier label-only updates had already taken the Knative Service to generation 2, so right
    after the apply (InferenceService generation 2) the old revision's status reads
    ``observedGeneration == generation`` and Ready; then the new revision exists and is not ready yet.
    """
    previous = stored(new_manifest(), 1, ready_status(2))
    manifest = new_manifest()
    not_ready_yet = ready_status(2, child_generation=3)
    not_ready_yet["components"]["predictor"]["latestCreatedRevision"] = revision(3)
    serving = ready_status(3)
    for status in (not_ready_yet, serving):
        assert k8s_tools.schema_errors(stored(manifest, 2, status), crd_schemas) == []
    transport = RecordedTransport(
        {
            "GET": [
                (200, previous),
                (200, stored(manifest, 2, ready_status(2))),
                (200, stored(manifest, 2, not_ready_yet)),
                (200, stored(manifest, 2, serving)),
            ],
            "PATCH": [(200, stored(manifest, 2, ready_status(2)))],
        }
    )
    endpoint = deploy_cluster(NAME, STORAGE, api=client_with(transport), timeout=5, poll_interval=0)
    assert transport.calls() == [("GET", PATH), ("PATCH", PATH)] + [("GET", PATH)] * 3
    assert endpoint.generation == 2


def test_a_rolled_out_deployment_counts_whatever_its_own_generation() -> None:
    """Standard mode: ``observedGeneration`` is the predictor Deployment's (kserve/kserve
    pkg/apis/serving/v1beta1/inference_service_status.go, ``PropagateRawStatus``), behind the
    InferenceService's own when changes reached only the HPA (here: generation 4, Deployment at 1).
    While the new ReplicaSet rolls out, the old pods keep Available, and with it PredictorReady and
    Ready, True; only Progressing's reason NewReplicaSetAvailable, which KServe copies, says done.
    """
    config = STANDARD
    manifest = new_manifest(config)
    previous = stored(manifest, 3, standard_status(1, "NewReplicaSetAvailable"))
    transport = RecordedTransport(
        {
            "GET": [
                (200, previous),
                (200, stored(manifest, 4, standard_status(1, "NewReplicaSetAvailable"))),
                (200, stored(manifest, 4, standard_status(2, "ReplicaSetUpdated"))),
                (200, stored(manifest, 4, standard_status(2, "NewReplicaSetAvailable"))),
            ],
            "PATCH": [(200, stored(manifest, 4, standard_status(1, "NewReplicaSetAvailable")))],
        }
    )
    endpoint = deploy_cluster(NAME, STORAGE, config, api=client_with(transport), timeout=5, poll_interval=0)
    assert transport.calls() == [("GET", PATH), ("PATCH", PATH)] + [("GET", PATH)] * 3
    assert endpoint.generation == 4


def test_a_failed_load_reported_before_the_apply_does_not_roll_back_the_fix() -> None:
    """The previous revision's failure is in the status until KServe reports on the new spec."""
    manifest = new_manifest()
    previous = stored(manifest, 1, failed_load_status(1))
    transport = RecordedTransport(
        {
            "GET": [
                (200, previous),
                (200, stored(manifest, 2, failed_load_status(1))),
                (200, stored(manifest, 2, ready_status(2))),
            ],
            "PATCH": [(200, stored(manifest, 2, failed_load_status(1)))],
        }
    )
    endpoint = deploy_cluster(NAME, STORAGE, api=client_with(transport), timeout=5, poll_interval=0)
    assert endpoint.generation == 2 and [m for m, _ in transport.calls()] == ["GET", "PATCH", "GET", "GET"]


def test_an_api_error_while_waiting_is_retried() -> None:
    manifest = new_manifest()
    unavailable = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "etcdserver: request timed out",
        "reason": "InternalError",
        "code": 500,
    }
    transport = RecordedTransport(
        {
            "GET": [NOT_FOUND, (500, unavailable), (200, stored(manifest, 1, ready_status(1)))],
            "PATCH": [(201, stored(manifest, 1))],
        }
    )
    endpoint = deploy_cluster(NAME, STORAGE, api=client_with(transport), timeout=5, poll_interval=0)
    assert transport.calls() == [("GET", PATH), ("PATCH", PATH), ("GET", PATH), ("GET", PATH)]
    assert endpoint.generation == 1


def test_rolls_back_to_the_previous_spec_when_never_ready(crd_schemas: dict) -> None:
    previous, manifest = previous_object(), new_manifest(ClusterDeployConfig(canary_traffic_percent=20))
    transport = RecordedTransport(
        {
            "GET": [(200, previous), (200, stored(manifest, 2, progressing_status(2)))],
            "PATCH": [(200, stored(manifest, 2, ready_status(1))), (200, stored(previous, 3, ready_status(1)))],
        }
    )
    with pytest.raises(BertopsError) as caught:
        deploy_cluster(
            NAME,
            STORAGE,
            ClusterDeployConfig(canary_traffic_percent=20),
            api=client_with(transport),
            timeout=0.3,
            poll_interval=0.05,
        )
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(
        f"InferenceService {NAMESPACE}/{NAME} was not Ready after 0.3s (RevisionMissing: Revision"
    )
    assert message.endswith("restored the previous spec (generation 1)")
    calls = transport.calls()
    assert calls[:2] == [("GET", PATH), ("PATCH", PATH)] and calls[-1] == ("PATCH", PATH)
    assert set(calls[2:-1]) == {("GET", PATH)} and len(calls[2:-1]) >= 2
    rollback = transport.requests[-1]
    assert_is_apply(rollback, crd_schemas)
    assert rollback.body == restorable(previous)
    assert rollback.body["spec"] == previous["spec"]
    assert "canaryTrafficPercent" not in rollback.body["spec"]["predictor"]
    assert set(rollback.body["metadata"]) == {"name", "namespace", "labels", "annotations"}
    assert "kubectl.kubernetes.io/last-applied-configuration" not in rollback.body["metadata"]["annotations"]


def test_deletes_the_new_service_when_there_was_none_before(crd_schemas: dict) -> None:
    manifest = new_manifest()
    transport = RecordedTransport(
        {
            "GET": [NOT_FOUND, (200, stored(manifest, 1, progressing_status(1)))],
            "PATCH": [(201, stored(manifest, 1))],
            "DELETE": [
                (
                    200,
                    {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "metadata": {},
                        "status": "Success",
                        "details": {"name": NAME},
                    },
                )
            ],
        }
    )
    with pytest.raises(BertopsError, match=r"was not Ready after 0.2s .*; deleted it \(there was none before\)$"):
        deploy_cluster(NAME, STORAGE, api=client_with(transport), timeout=0.2, poll_interval=0.05)
    assert transport.calls()[-1] == ("DELETE", PATH)
    assert [m for m, _ in transport.calls()].count("PATCH") == 1


def test_a_model_that_cannot_load_rolls_back_without_waiting_out_the_timeout() -> None:
    previous, manifest = previous_object(), new_manifest()
    transport = RecordedTransport(
        {
            "GET": [(200, previous), (200, stored(manifest, 2, failed_load_status(2)))],
            "PATCH": [(200, stored(manifest, 2, ready_status(1))), (200, stored(previous, 3, ready_status(1)))],
        }
    )
    started = time.monotonic()
    with pytest.raises(
        BertopsError, match=r"cannot load the model \(ModelLoadFailed: config.json not found in /mnt/models\); restored"
    ):
        deploy_cluster(NAME, STORAGE, api=client_with(transport), timeout=600, poll_interval=30)
    assert time.monotonic() - started < 5
    assert transport.calls() == [("GET", PATH), ("PATCH", PATH), ("GET", PATH), ("PATCH", PATH)]


def test_a_refused_apply_changes_nothing_and_says_why() -> None:
    invalid = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'admission webhook "inferenceservice.kserve-webhook-server.validator" denied the request: exactly one of [Model] must be specified',
        "reason": "Invalid",
        "code": 422,
    }
    transport = RecordedTransport({"GET": [(200, previous_object())], "PATCH": [(422, invalid)]})
    with pytest.raises(BertopsError, match=r"was refused: 422 admission webhook .* denied the request"):
        deploy_cluster(NAME, STORAGE, api=client_with(transport), timeout=5, poll_interval=0)
    assert transport.calls() == [("GET", PATH), ("PATCH", PATH)]


def test_a_deployment_mode_change_is_refused_before_any_change() -> None:
    previous = previous_object()
    previous["status"]["deploymentMode"] = "RawDeployment"
    transport = RecordedTransport({"GET": [(200, previous)]})
    with pytest.raises(BertopsError, match="runs in RawDeployment mode; it cannot change to Serverless"):
        deploy_cluster(NAME, STORAGE, api=client_with(transport))
    assert transport.calls() == [("GET", PATH)]


@pytest.mark.parametrize(
    ("existing", "applied"), [("Knative", "Serverless"), ("Serverless", "Knative"), ("Standard", "RawDeployment")]
)
def test_the_legacy_and_the_new_name_of_a_mode_are_the_same_mode(
    existing: str, applied: str, crd_schemas: dict
) -> None:
    """KServe >= 0.16 stores ``Knative`` for ``Serverless`` and ``Standard`` for ``RawDeployment``.

    Its mutating webhook rewrites the annotation (kserve/kserve
    pkg/apis/serving/v1beta1/inference_service_defaults.go, ``DefaultInferenceService``), the status
    reports the new name, and the validating webhook compares the annotation with
    ``ParseDeploymentMode(status.deploymentMode)`` (pkg/apis/serving/v1beta1/inference_service_validation.go
    ``validateDeploymentMode``, pkg/constants/constants.go): an update in the legacy name is the same mode.
    """
    raw = applied in RAW_MODES
    config = ClusterDeployConfig(deployment_mode=applied, scale_metric="cpu" if raw else "concurrency", scale_target=80)
    previous, manifest = previous_object(), new_manifest(config)
    previous["metadata"]["annotations"][DEPLOYMENT_MODE_ANNOTATION] = existing
    previous["status"]["deploymentMode"] = existing
    served = standard_status(2, "NewReplicaSetAvailable") if raw else ready_status(2)
    transport = RecordedTransport(
        {"GET": [(200, previous), (200, stored(manifest, 2, served))], "PATCH": [(200, stored(manifest, 2))]}
    )
    endpoint = deploy_cluster(NAME, STORAGE, config, api=client_with(transport), timeout=5, poll_interval=0)
    assert transport.calls()[:2] == [("GET", PATH), ("PATCH", PATH)]
    assert_is_apply(transport.requests[1], crd_schemas)
    assert transport.requests[1].body["metadata"]["annotations"][DEPLOYMENT_MODE_ANNOTATION] == applied
    assert endpoint.generation == 2


def test_without_a_cluster_the_error_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing-kubeconfig"))
    with pytest.raises(BertopsError, match="no Kubernetes cluster to deploy to") as caught:
        load_api_client()
    assert "\n" not in str(caught.value)


def test_storage_uri_comes_from_the_registry(tmp_path: Any) -> None:
    from bertops.registry import open_client

    client = open_client("", tmp_path)
    client.create_registered_model(NAME)
    client.create_model_version(NAME, source=STORAGE)
    client.create_model_version(NAME, source=(tmp_path / "artifacts" / "model").as_uri())
    assert registered_storage_uri(NAME, "1", str(tmp_path)) == STORAGE
    with pytest.raises(BertopsError, match=r"version 2 is stored at file://.*, which KServe cannot download"):
        registered_storage_uri(NAME, "2", str(tmp_path))


# --- what serves: labels, annotations, and a cluster rollback -------------------------------

STORAGE_V1 = "s3://mlflow/1/aaa111/artifacts/model"


def registry_with_two_champions(tmp_path: Any) -> str:
    """A registry where version 1 was champion, then version 2; returns the state directory."""
    from bertops.registry import open_client, set_champion

    state = str(tmp_path / "state")
    client = open_client("", state)
    client.create_registered_model(NAME)
    client.create_model_version(NAME, source=STORAGE_V1)
    client.create_model_version(NAME, source=STORAGE)
    set_champion(client, NAME, "1")
    set_champion(client, NAME, "2")
    return state


def test_the_endpoint_says_which_version_run_and_commit_it_serves(tmp_path: Any, crd_schemas: dict) -> None:
    """``kubectl get isvc -L bertops.io/model-version`` shows what serves: label values must pass
    Kubernetes' IsValidLabelValue (k8s.io/apimachinery pkg/util/validation), run and commit are annotations."""
    state = registry_with_two_champions(tmp_path)
    config = cluster_deploy_config(NAMESPACE, "Serverless", 0, RESOURCES, -1)
    manifest = to_manifest(inference_service(NAME, STORAGE, config))
    transport = RecordedTransport(
        {"GET": [NOT_FOUND, (200, stored(manifest, 1, ready_status(1)))], "PATCH": [(201, stored(manifest, 1))]}
    )
    run = "bertops-text-classifier-2026-11-22-10-00-00-" + "x" * 40  # longer than a label value may be
    commit = "0123456789abcdef0123456789abcdef01234567"
    deploy_registered_version(
        NAME, "2", state, "", config, pipeline_run=run, git_commit=commit, api=client_with(transport), poll_interval=0
    )
    apply = transport.requests[1]
    assert_is_apply(apply, crd_schemas)
    meta = apply.body["metadata"]
    assert meta["labels"] == {
        "app.kubernetes.io/part-of": "bertops",
        "bertops.io/model-name": NAME,
        "bertops.io/model-version": "2",
    }
    assert meta["annotations"] == {
        "bertops.io/pipeline-run": run,
        "bertops.io/git-commit": commit,
        DEPLOYMENT_MODE_ANNOTATION: "Serverless",
    }
    label_value = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
    assert all(label_value.fullmatch(v) and len(v) <= 63 for v in meta["labels"].values())


def kubeconfig(tmp_path: Any, monkeypatch: pytest.MonkeyPatch, transport: RecordedTransport) -> None:
    """A kubeconfig for https://kubernetes.test, whose connections the recorded transport answers."""
    path = tmp_path / "kubeconfig"
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "test", "cluster": {"server": "https://kubernetes.test"}}],
                "users": [{"name": "test", "user": {"token": "t0ken"}}],
                "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
                "current-context": "test",
            }
        )
    )
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(path))
    # The client reads $KUBECONFIG once, when it is imported (kubernetes/config/kube_config.py).
    monkeypatch.setattr("kubernetes.config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION", str(path))
    # The kubernetes client makes its connection pool with urllib3.PoolManager (kubernetes/client/rest.py).
    monkeypatch.setattr(urllib3, "PoolManager", lambda *args, **kwargs: transport)


LEASES = f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases"
# The model's Lease (bertops.lease): not there yet, created, released.
TAKE_LEASE = [("GET", f"{LEASES}/bertops-{NAME}"), ("POST", LEASES)]
RELEASE_LEASE = ("PUT", f"{LEASES}/bertops-{NAME}")
_LEASE = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease"}
LEASE_ANSWERS = {
    "POST": [(201, _LEASE | {"metadata": {"name": f"bertops-{NAME}", "namespace": NAMESPACE, "resourceVersion": "1"}})],
    "PUT": [(200, _LEASE | {"metadata": {"name": f"bertops-{NAME}", "namespace": NAMESPACE, "resourceVersion": "2"}})],
}


def live_version_2() -> dict[str, Any]:
    """The InferenceService as the pipeline left it: version 2 as a 20 % canary, in Knative mode."""
    config = cluster_deploy_config(NAMESPACE, "Serverless", 0, RESOURCES, 20)
    labels = {"bertops.io/model-name": NAME, "bertops.io/model-version": "2"}
    annotations = {"bertops.io/pipeline-run": "run-2", "bertops.io/git-commit": "abc123"}
    manifest = to_manifest(inference_service(NAME, STORAGE, config, labels, annotations))
    manifest["metadata"]["annotations"][DEPLOYMENT_MODE_ANNOTATION] = "Knative"  # as KServe >= 0.16 stores it
    return stored(manifest, 3, ready_status(2))


def test_cluster_rollback_redeploys_the_previous_champion(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], crd_schemas: dict
) -> None:
    from bertops.models import champion
    from cli.main import main

    state = registry_with_two_champions(tmp_path)
    live = live_version_2()
    transport = RecordedTransport(
        {
            "GET": [NOT_FOUND, (200, live), (200, stored(live, 4, ready_status(3)))],
            "PATCH": [(200, stored(live, 4, ready_status(2)))],
            **LEASE_ANSWERS,
        }
    )
    kubeconfig(tmp_path, monkeypatch, transport)
    argv = ["models", "rollback", "--deploy-target", "cluster", "--namespace", NAMESPACE, "--state-dir", state]
    assert main([*argv, "--model-name", NAME]) == 0
    # Under the model's Lease, as a run's register and deploy: one change of what serves at a time.
    assert transport.calls() == [*TAKE_LEASE, ("GET", PATH), ("PATCH", PATH), ("GET", PATH), RELEASE_LEASE]
    apply = transport.requests[3]
    assert apply.headers["authorization"] == "Bearer t0ken"
    assert_is_apply(apply, crd_schemas)
    predictor = apply.body["spec"]["predictor"]
    assert predictor["model"]["storageUri"] == STORAGE_V1
    assert "canaryTrafficPercent" not in predictor  # a rollback goes live at once
    assert {k: v for k, v in predictor.items() if k not in ("model", "canaryTrafficPercent")} == {
        k: v for k, v in live["spec"]["predictor"].items() if k not in ("model", "canaryTrafficPercent")
    }
    assert apply.body["metadata"]["labels"]["bertops.io/model-version"] == "1"
    # The server learns its version from that label (KServe fills the runtime's --model-version).
    runtime = to_manifest(serving_runtime(ClusterDeployConfig()))
    args = kserve_fills(container_kserve_runs(runtime, apply.body)["args"], apply.body["metadata"])
    assert "--model-version=1" in args
    assert apply.body["metadata"]["annotations"] == {DEPLOYMENT_MODE_ANNOTATION: "Knative"}
    assert champion(NAME, state) == "1"
    out = capsys.readouterr().out
    assert f"InferenceService {NAMESPACE}/{NAME} now serves version 1" in out
    assert f"{NAME}: champion is now version 1" in out


def test_a_failed_cluster_rollback_leaves_the_champion_where_it_serves(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bertops.models import champion
    from cli.main import main

    state = registry_with_two_champions(tmp_path)
    live = live_version_2()
    transport = RecordedTransport(
        {
            "GET": [NOT_FOUND, (200, live), (200, stored(live, 4, failed_load_status(3)))],
            "PATCH": [(200, stored(live, 4, ready_status(2))), (200, stored(live, 5, ready_status(2)))],
            **LEASE_ANSWERS,
        }
    )
    kubeconfig(tmp_path, monkeypatch, transport)
    argv = ["models", "rollback", "--deploy-target", "cluster", "--state-dir", state, "--model-name", NAME]
    assert main([*argv, "--namespace", NAMESPACE]) == 2
    assert [m for m, _ in transport.calls()] == ["GET", "POST", "GET", "PATCH", "GET", "PATCH", "PUT"]
    assert transport.requests[-2].body == restorable(live)
    assert champion(NAME, state) == "2"
    assert "cannot load the model" in capsys.readouterr().err
