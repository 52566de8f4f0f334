"""The kustomize manifests: rendered by real kubectl, checked against Kubernetes' and KServe's schemas,
the deploy step's own ServingRuntime, and checkov's policies. RBAC is checked in tests/test_rbac.py."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import k8s_tools
import pytest

from bertops import __version__, cluster
from bertops.images import REPOSITORY
from bertops.k8s import to_manifest
from components.deploy.inference_service import ClusterDeployConfig, cpu_config, serving_runtime

pytestmark = pytest.mark.cluster

REPO_ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = REPO_ROOT / "manifests"
NAMESPACE = cluster.PROFILE_NAMESPACE
# The overlays name the release tag (the chart's appVersion); docs/cluster/install.md sets the built one.
OVERLAY_IMAGES = {"gpu": f"{REPOSITORY}/bertops-cuda:{__version__}", "cpu": f"{REPOSITORY}/bertops-cpu:{__version__}"}
OVERLAYS = {
    "gpu": ClusterDeployConfig(namespace=NAMESPACE, image=OVERLAY_IMAGES["gpu"]),
    "cpu": cpu_config(namespace=NAMESPACE, image=OVERLAY_IMAGES["cpu"]),
}
KINDS = [
    "NetworkPolicy",
    "Role",
    "Role",
    "RoleBinding",
    "RoleBinding",
    "ServiceAccount",
    "ServingRuntime",
]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {overlay: k8s_tools.render_kustomize(MANIFESTS / "overlays" / overlay) for overlay in OVERLAYS}


@pytest.fixture(scope="module")
def crd_schemas(kserve_crd_schemas: dict[tuple[str, str], dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return kserve_crd_schemas


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    return found


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_the_platform_part_into_the_profile_namespace(overlay: str, rendered: dict) -> None:
    """No Namespace object (finding 15: `kubectl delete -k` would delete the profile's namespace) and
    no InferenceService (finding 13: the pipeline creates the endpoint; no placeholder model URI)."""
    objects = rendered[overlay]
    assert sorted(o["kind"] for o in objects) == KINDS
    assert {o["metadata"].get("namespace") for o in objects} == {NAMESPACE}
    assert all(o["metadata"]["labels"]["app.kubernetes.io/part-of"] == "bertops" for o in objects)


def test_no_committed_manifest_names_a_model() -> None:
    committed = list(MANIFESTS.rglob("*.yaml"))
    assert committed and not [p for p in committed if re.search(r"\b(s3|gs|pvc|hf|oci)://", p.read_text())]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_passes_its_schema(overlay: str, rendered: dict, crd_schemas: dict) -> None:
    for obj in rendered[overlay]:
        assert k8s_tools.schema_errors(obj, crd_schemas) == [], f"{obj['kind']}/{obj['metadata']['name']}"


def test_schema_check_rejects_broken_built_in_objects(rendered: dict, crd_schemas: dict) -> None:
    binding = dict(one(rendered["gpu"], "RoleBinding", "bertops-inferenceservice-manager"))
    del binding["roleRef"]
    assert any("roleRef" in e for e in k8s_tools.schema_errors(binding, crd_schemas))
    account = {**one(rendered["gpu"], "ServiceAccount", "bertops-serving"), "automountToken": False}
    assert any("automountToken" in e for e in k8s_tools.schema_errors(account, crd_schemas))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_runs_what_the_deploy_step_would_serve_with(overlay: str, rendered: dict) -> None:
    runtime = one(rendered[overlay], "ServingRuntime")
    assert runtime == to_manifest(serving_runtime(OVERLAYS[overlay]))
    assert runtime["spec"]["containers"][0]["image"] == OVERLAY_IMAGES[overlay]


def test_storage_secret_is_referenced_by_name_never_committed(rendered: dict) -> None:
    objects = rendered["gpu"]
    serving = one(objects, "ServiceAccount", cluster.SERVING_SERVICE_ACCOUNT)
    assert serving["secrets"] == [{"name": cluster.ARTIFACT_SECRET.name}]
    assert serving["automountServiceAccountToken"] is False
    committed = [*MANIFESTS.rglob("*.yaml"), *(REPO_ROOT / "helm").rglob("*.yaml")]
    assert committed and not [p for p in committed if "kind: Secret" in p.read_text()]


def test_network_policy_admits_only_the_ingress_path(rendered: dict) -> None:
    """The ingress gateways' pods and knative-serving; not every pod of istio-system, nor of the namespace."""
    policy = one(rendered["gpu"], "NetworkPolicy")["spec"]
    assert policy["podSelector"] == {
        "matchExpressions": [{"key": "serving.kserve.io/inferenceservice", "operator": "Exists"}]
    }
    assert policy["policyTypes"] == ["Ingress"]
    (rule,) = policy["ingress"]
    gateways, namespaces = rule["from"]
    assert gateways == {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "istio-system"}},
        "podSelector": {
            "matchExpressions": [
                {"key": "istio", "operator": "In", "values": ["ingressgateway", "cluster-local-gateway"]}
            ]
        },
    }
    assert namespaces == {
        "namespaceSelector": {
            "matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["knative-serving"]}
            ]
        }
    }


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
