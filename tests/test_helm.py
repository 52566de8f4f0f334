"""The helm chart, with a real helm v4: lint, values schema, rendered objects against Kubernetes' and KServe's
schemas and the webhook's rules, agreement with the deploy step and the kustomize manifests, NOTES, checkov."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import k8s_tools
import pytest
import yaml

from bertops import __version__, cluster
from bertops.errors import BertopsError
from bertops.images import CPU_IMAGE, CUDA_IMAGE, REPOSITORY
from bertops.k8s import to_manifest
from components.deploy.inference_service import (
    ClusterDeployConfig,
    check_webhook_rules,
    cpu_config,
    inference_service,
    serving_runtime,
)

pytestmark = pytest.mark.cluster

REPO_ROOT = Path(__file__).resolve().parents[1]
CHART = REPO_ROOT / "helm" / "bertops"
NAMESPACE = "ml-serving"
STORAGE = "s3://mlflow/1/0a1b2c/artifacts/model"
# The images bertops/images.py names (tagged by commit), as chart values.
IMAGES = {"cuda": CUDA_IMAGE.rsplit(":", 1)[0], "cpu": CPU_IMAGE.rsplit(":", 1)[0], "tag": CUDA_IMAGE.rsplit(":", 1)[1]}
ENDPOINT = {"enabled": True, "storageUri": STORAGE}
GPU = {"image": IMAGES, "inferenceService": ENDPOINT}
CPU = {"image": IMAGES, "gpu": {"enabled": False}, "inferenceService": ENDPOINT}
PLATFORM_KINDS = ["NetworkPolicy", "Role", "Role", "RoleBinding", "RoleBinding", "ServiceAccount", "ServingRuntime"]
# Labels and annotations differ by design (helm's release labels, checkov's skip reasons).
RELEASE_METADATA = ("labels", "annotations")


@pytest.fixture(scope="module")
def crd_schemas(kserve_crd_schemas: dict[tuple[str, str], dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return kserve_crd_schemas


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind]
    return found


def without_release_metadata(obj: dict[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in obj["metadata"].items() if k not in RELEASE_METADATA}
    return {**obj, "metadata": meta}


@pytest.mark.parametrize("values_file", ["gpu-values.yaml", "cpu-values.yaml"])
def test_lint_strict_passes(values_file: str) -> None:
    out = k8s_tools.helm("lint", "--strict", CHART, "--values", CHART / "ci" / values_file)
    assert "1 chart(s) linted, 0 chart(s) failed" in out


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"inferenceService": {**ENDPOINT, "canaryTrafficPercent": 150}},
            "canaryTrafficPercent': maximum: got 150, want 100",
        ),
        ({"inferenceService": {**ENDPOINT, "storageUri": "mlflow-artifacts:/1/model"}}, "/inferenceService/storageUri"),
        ({"inferenceService": {**ENDPOINT, "name": "Bert_Classifier"}}, "/inferenceService/name"),
        ({"inferenceService": {**ENDPOINT, "scaleMetric": "latency"}}, "/inferenceService/scaleMetric"),
        ({"image": {"tag": "latest"}}, "/image/tag"),
        ({"image": {"cuda": "ghcr.io/bertops/bertops-cuda:0.1.0"}}, "/image/cuda"),
        ({"gpu": {"count": 0}}, "/gpu/count"),
        ({"serviceAccounts": {"pipeline": "bertops-pipeline"}}, "additional properties 'serviceAccounts' not allowed"),
        ({"pipeline": {"serviceAccount": "Default_Editor"}}, "/pipeline/serviceAccount"),
    ],
)
def test_values_schema_refuses_bad_values(values: dict[str, Any], message: str) -> None:
    with pytest.raises(BertopsError, match="values don't meet the specifications of the schema") as caught:
        k8s_tools.render_helm(CHART, NAMESPACE, values)
    assert message in str(caught.value)


def test_default_install_needs_no_value_and_leaves_the_endpoint_to_the_pipeline() -> None:
    """Finding 13: `helm install` before any model exists; the deploy step creates the endpoint."""
    objects = k8s_tools.render_helm(CHART, NAMESPACE)
    assert sorted(o["kind"] for o in objects) == PLATFORM_KINDS
    with pytest.raises(BertopsError, match=r"inferenceService\.storageUri is required"):
        k8s_tools.render_helm(CHART, NAMESPACE, {"inferenceService": {"enabled": True}})


@pytest.mark.parametrize(
    "values",
    [{}, GPU, CPU, {"image": IMAGES, "inferenceService": {**ENDPOINT, "canaryTrafficPercent": 10}}],
    ids=["default", "gpu", "cpu", "canary"],
)
def test_rendered_objects_pass_their_schemas(values: dict[str, Any], crd_schemas: dict) -> None:
    objects = k8s_tools.render_helm(CHART, NAMESPACE, values)
    endpoint = ["InferenceService"] if values else []
    assert sorted(o["kind"] for o in objects) == sorted(PLATFORM_KINDS + endpoint)
    assert {o["metadata"]["namespace"] for o in objects} == {NAMESPACE}
    for obj in objects:
        assert k8s_tools.schema_errors(obj, crd_schemas) == [], f"{obj['kind']}/{obj['metadata']['name']}"
    if endpoint:
        check_webhook_rules(one(objects, "InferenceService"))


@pytest.mark.parametrize(
    ("values", "config"),
    [
        (GPU, ClusterDeployConfig(namespace=NAMESPACE)),
        (CPU, cpu_config(namespace=NAMESPACE)),
        (
            {"image": IMAGES, "inferenceService": {**ENDPOINT, "canaryTrafficPercent": 10, "maxReplicas": 5}},
            ClusterDeployConfig(namespace=NAMESPACE, canary_traffic_percent=10, max_replicas=5),
        ),
    ],
    ids=["gpu", "cpu", "canary"],
)
def test_chart_serves_what_the_deploy_step_would(values: dict[str, Any], config: ClusterDeployConfig) -> None:
    objects = k8s_tools.render_helm(CHART, NAMESPACE, values)
    expected_runtime = to_manifest(serving_runtime(config))
    expected_isvc = to_manifest(inference_service("bbc-news-classifier", STORAGE, config))
    assert without_release_metadata(one(objects, "ServingRuntime")) == without_release_metadata(expected_runtime)
    isvc = one(objects, "InferenceService")
    assert without_release_metadata(isvc) == without_release_metadata(expected_isvc)
    assert isvc["metadata"]["annotations"] == expected_isvc["metadata"]["annotations"]


@pytest.mark.parametrize("overlay", ["gpu", "cpu"])
def test_chart_and_kustomize_manifests_agree(overlay: str) -> None:
    """Default installs of both, in the profile namespace the manifests name, create the same objects."""
    values = {} if overlay == "gpu" else {"gpu": {"enabled": False}}
    charted = k8s_tools.render_helm(CHART, cluster.PROFILE_NAMESPACE, values)
    kustomized = k8s_tools.render_kustomize(REPO_ROOT / "manifests" / "overlays" / overlay)
    by_key = {(o["kind"], o["metadata"]["name"]): without_release_metadata(o) for o in kustomized}
    assert sorted(by_key) == sorted((o["kind"], o["metadata"]["name"]) for o in charted)
    for obj in charted:
        key = (obj["kind"], obj["metadata"]["name"])
        assert without_release_metadata(obj) == by_key[key], key


def test_images_are_the_repositories_in_images_py_at_the_tag_given() -> None:
    """Finding 15: images are tagged by commit; the chart takes the tag (default: its appVersion)."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["image"] == {"cuda": f"{REPOSITORY}/bertops-cuda", "cpu": f"{REPOSITORY}/bertops-cpu", "tag": ""}
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == __version__

    def image(values: dict[str, Any]) -> str:
        return one(k8s_tools.render_helm(CHART, NAMESPACE, values), "ServingRuntime")["spec"]["containers"][0]["image"]

    assert image({}) == f"{REPOSITORY}/bertops-cuda:{__version__}"
    assert image({"image": {"tag": "0.1.0-0123456789ab"}}) == f"{REPOSITORY}/bertops-cuda:0.1.0-0123456789ab"
    assert image({"image": IMAGES}) == CUDA_IMAGE
    assert image({"image": IMAGES, "gpu": {"enabled": False}}) == CPU_IMAGE
    # The defaults themselves satisfy the schema that guards overrides.
    import jsonschema

    jsonschema.validate(values, json.loads((CHART / "values.schema.json").read_text()))


def test_notes_tell_the_operator_how_to_query_the_endpoint() -> None:
    out = k8s_tools.helm("install", "bertops", CHART, "--namespace", NAMESPACE, "--dry-run=client", values=GPU)
    notes = out[out.index("NOTES:") :]
    assert f"kubectl -n {NAMESPACE} get inferenceservice bbc-news-classifier -w" in notes
    assert "jsonpath='{.status.url}'" in notes
    assert "service istio-ingressgateway" in notes
    v1 = '-H "Host: ${SERVICE_HOSTNAME}"'
    assert notes.count(v1) == 2
    assert '"http://${INGRESS_HOST}:${INGRESS_PORT}/v1/models/bbc-news-classifier:predict"' in notes
    assert '"http://${INGRESS_HOST}:${INGRESS_PORT}/v2/models/bbc-news-classifier/infer"' in notes
    assert f"kubectl -n {NAMESPACE} get secret {cluster.ARTIFACT_SECRET.name}" in notes


def test_notes_of_a_default_install_point_at_the_pipeline() -> None:
    out = k8s_tools.helm("install", "bertops", CHART, "--namespace", NAMESPACE, "--dry-run=client")
    notes = out[out.index("NOTES:") :]
    assert "No InferenceService was created" in notes
    assert f"bound to service account\n  {cluster.PIPELINE_SERVICE_ACCOUNT}," in notes
    assert f"kubectl -n {NAMESPACE} get inferenceservices" in notes


def test_checkov_scans_the_rendered_chart_and_finds_no_failed_checks() -> None:
    (report,) = k8s_tools.checkov(REPO_ROOT / "helm", ["helm"], (CHART / "ci" / "gpu-values.yaml",))
    assert report["check_type"] == "helm"
    # Without helm on PATH (or with values that do not render) checkov scans nothing and passes.
    # gpu-values.yaml renders every template: the platform's objects, the InferenceService, the Istio policies,
    # the ServiceMonitor and the dashboard's ConfigMap.
    assert report["summary"]["resource_count"] >= len(PLATFORM_KINDS) + 1 + 3 + 2
    assert report["summary"]["passed"] > 0
    assert [(c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]] == []
    skipped = report["results"]["skipped_checks"]
    assert all(c["check_result"].get("suppress_comment") for c in skipped)
    assert {c["check_id"] for c in skipped} <= {"CKV_K8S_21"}
