"""The kustomize manifests: rendered by real kubectl, checked against Kubernetes' and KServe's schemas,
the webhook's rules, the deploy step's own objects, and checkov's policies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bertops import k8s_tools
from bertops.images import CPU_IMAGE, CUDA_IMAGE
from components.deploy.inference_service import (
    ClusterDeployConfig,
    check_webhook_rules,
    cpu_config,
    inference_service,
    serving_runtime,
    to_manifest,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = REPO_ROOT / "manifests"
OVERLAYS = {"gpu": ClusterDeployConfig(), "cpu": cpu_config()}
KINDS = [
    "InferenceService",
    "Namespace",
    "NetworkPolicy",
    "Role",
    "Role",
    "RoleBinding",
    "RoleBinding",
    "ServiceAccount",
    "ServiceAccount",
    "ServingRuntime",
]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {overlay: k8s_tools.render_kustomize(MANIFESTS / "overlays" / overlay) for overlay in OVERLAYS}


@pytest.fixture(scope="module")
def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    return k8s_tools.load_crd_schemas(k8s_tools.kserve_crd_dir())


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    return found


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_the_serving_namespace(overlay: str, rendered: dict) -> None:
    objects = rendered[overlay]
    assert sorted(o["kind"] for o in objects) == KINDS
    assert one(objects, "Namespace")["metadata"]["name"] == "bertops"
    assert {o["metadata"].get("namespace") for o in objects if o["kind"] != "Namespace"} == {"bertops"}
    assert all(o["metadata"]["labels"]["app.kubernetes.io/part-of"] == "bertops" for o in objects)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_passes_its_schema(overlay: str, rendered: dict, crd_schemas: dict) -> None:
    for obj in rendered[overlay]:
        assert k8s_tools.schema_errors(obj, crd_schemas) == [], f"{obj['kind']}/{obj['metadata']['name']}"
    check_webhook_rules(one(rendered[overlay], "InferenceService"))


def test_schema_check_rejects_broken_built_in_objects(rendered: dict, crd_schemas: dict) -> None:
    binding = dict(one(rendered["gpu"], "RoleBinding", "bertops-inferenceservice-manager"))
    del binding["roleRef"]
    assert any("roleRef" in e for e in k8s_tools.schema_errors(binding, crd_schemas))
    account = {**one(rendered["gpu"], "ServiceAccount", "bertops-serving"), "automountToken": False}
    assert any("automountToken" in e for e in k8s_tools.schema_errors(account, crd_schemas))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_serves_what_the_deploy_step_would(overlay: str, rendered: dict) -> None:
    config = OVERLAYS[overlay]
    runtime = one(rendered[overlay], "ServingRuntime")
    assert runtime == to_manifest(serving_runtime(config))
    isvc = one(rendered[overlay], "InferenceService")
    storage_uri = isvc["spec"]["predictor"]["model"]["storageUri"]
    assert isvc == to_manifest(inference_service(isvc["metadata"]["name"], storage_uri, config))


def test_images_are_the_ones_in_images_py(rendered: dict) -> None:
    images = {
        overlay: one(objects, "ServingRuntime")["spec"]["containers"][0]["image"]
        for overlay, objects in rendered.items()
    }
    assert images == {"gpu": CUDA_IMAGE, "cpu": CPU_IMAGE}


def test_rbac_lets_the_pipeline_manage_inferenceservices_and_training_jobs_and_nothing_else(rendered: dict) -> None:
    objects = rendered["gpu"]
    assert not [o for o in objects if o["kind"].startswith("Cluster")]
    rules = {
        "bertops-inferenceservice-manager": [
            {
                "apiGroups": ["serving.kserve.io"],
                "resources": ["inferenceservices"],
                "verbs": ["get", "list", "watch", "create", "patch", "delete"],
            }
        ],
        # The finetune step only submits jobs and reads their status.
        "bertops-training-job-manager": [
            {"apiGroups": ["trainer.kubeflow.org"], "resources": ["trainjobs"], "verbs": ["get", "create"]},
            {"apiGroups": ["kubeflow.org"], "resources": ["pytorchjobs"], "verbs": ["get", "create"]},
        ],
    }
    for name, expected in rules.items():
        assert one(objects, "Role", name)["rules"] == expected
        binding = one(objects, "RoleBinding", name)
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name}
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "bertops-pipeline", "namespace": "bertops"}]


def test_storage_secret_is_referenced_by_name_never_committed(rendered: dict) -> None:
    objects = rendered["gpu"]
    serving = one(objects, "ServiceAccount", "bertops-serving")
    assert serving["secrets"] == [{"name": "bertops-s3"}]
    assert serving["automountServiceAccountToken"] is False
    assert one(objects, "InferenceService")["spec"]["predictor"]["serviceAccountName"] == "bertops-serving"
    committed = [*MANIFESTS.rglob("*.yaml"), *(REPO_ROOT / "helm").rglob("*.yaml")]
    assert committed and not [p for p in committed if "kind: Secret" in p.read_text()]


def test_network_policy_admits_only_the_ingress_path(rendered: dict) -> None:
    policy = one(rendered["gpu"], "NetworkPolicy")["spec"]
    assert policy["podSelector"] == {
        "matchExpressions": [{"key": "serving.kserve.io/inferenceservice", "operator": "Exists"}]
    }
    assert policy["policyTypes"] == ["Ingress"]
    (rule,) = policy["ingress"]
    allowed = [
        p["namespaceSelector"]["matchExpressions"][0]["values"] for p in rule["from"] if "namespaceSelector" in p
    ]
    assert allowed == [["istio-system", "knative-serving"]]


def test_checkov_finds_no_failed_checks() -> None:
    reports = {r["check_type"]: r for r in k8s_tools.checkov(MANIFESTS, ["kubernetes", "kustomize"])}
    assert set(reports) == {"kubernetes", "kustomize"}
    for check_type, report in reports.items():
        failed = [(c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]]
        assert failed == [], check_type
        # Each overlay's objects are scanned (the kustomize scan renders them with kubectl).
        assert report["summary"]["resource_count"] >= len(KINDS), check_type
        assert report["summary"]["passed"] > 0
        assert all(c["check_result"].get("suppress_comment") for c in report["results"]["skipped_checks"])
