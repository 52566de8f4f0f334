"""The helm chart, with a real helm v4: lint, values schema, rendered objects against Kubernetes' and KServe's
schemas and the webhook's rules, agreement with the deploy step and the kustomize manifests, NOTES, checkov."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from bertops import __version__, k8s_tools
from bertops.errors import BertopsError
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
CHART = REPO_ROOT / "helm" / "bertops"
NAMESPACE = "ml-serving"
STORAGE = "s3://mlflow/1/0a1b2c/artifacts/model"
GPU = {"inferenceService": {"storageUri": STORAGE}}
CPU = {"gpu": {"enabled": False}, "inferenceService": {"storageUri": STORAGE}}
# Labels and annotations differ by design (helm's release labels, checkov's skip reasons).
RELEASE_METADATA = ("labels", "annotations")


@pytest.fixture(scope="module")
def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    return k8s_tools.load_crd_schemas(k8s_tools.kserve_crd_dir())


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
            {"inferenceService": {"storageUri": STORAGE, "canaryTrafficPercent": 150}},
            "canaryTrafficPercent': maximum: got 150, want 100",
        ),
        ({"inferenceService": {"storageUri": "mlflow-artifacts:/1/model"}}, "/inferenceService/storageUri"),
        ({"inferenceService": {"storageUri": STORAGE, "name": "Bert_Classifier"}}, "/inferenceService/name"),
        ({"inferenceService": {"storageUri": STORAGE, "scaleMetric": "latency"}}, "/inferenceService/scaleMetric"),
        ({"image": {"cuda": "ghcr.io/bertops/bertops-cuda:latest"}}, "/image/cuda"),
        ({"gpu": {"count": 0}}, "/gpu/count"),
        ({"inferenceservice": {"storageUri": STORAGE}}, "additional properties 'inferenceservice' not allowed"),
    ],
)
def test_values_schema_refuses_bad_values(values: dict[str, Any], message: str) -> None:
    with pytest.raises(BertopsError, match="values don't meet the specifications of the schema") as caught:
        k8s_tools.render_helm(CHART, NAMESPACE, values)
    assert message in str(caught.value)


def test_storage_uri_is_required() -> None:
    with pytest.raises(BertopsError, match=r"inferenceService\.storageUri is required"):
        k8s_tools.render_helm(CHART, NAMESPACE)
    disabled = k8s_tools.render_helm(CHART, NAMESPACE, {"inferenceService": {"enabled": False}})
    assert "InferenceService" not in [o["kind"] for o in disabled]


@pytest.mark.parametrize(
    "values",
    [GPU, CPU, {"inferenceService": {"storageUri": STORAGE, "canaryTrafficPercent": 10}}],
    ids=["gpu", "cpu", "canary"],
)
def test_rendered_objects_pass_their_schemas(values: dict[str, Any], crd_schemas: dict) -> None:
    objects = k8s_tools.render_helm(CHART, NAMESPACE, values)
    assert sorted(o["kind"] for o in objects) == [
        "InferenceService",
        "NetworkPolicy",
        "Role",
        "Role",
        "RoleBinding",
        "RoleBinding",
        "ServiceAccount",
        "ServiceAccount",
        "ServingRuntime",
    ]
    assert {o["metadata"]["namespace"] for o in objects} == {NAMESPACE}
    for obj in objects:
        assert k8s_tools.schema_errors(obj, crd_schemas) == [], f"{obj['kind']}/{obj['metadata']['name']}"
    check_webhook_rules(one(objects, "InferenceService"))


@pytest.mark.parametrize(
    ("values", "config"),
    [
        (GPU, ClusterDeployConfig(namespace=NAMESPACE)),
        (CPU, cpu_config(namespace=NAMESPACE)),
        (
            {"inferenceService": {"storageUri": STORAGE, "canaryTrafficPercent": 10, "maxReplicas": 5}},
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
    charted = k8s_tools.render_helm(CHART, "bertops", GPU if overlay == "gpu" else CPU)
    kustomized = k8s_tools.render_kustomize(REPO_ROOT / "manifests" / "overlays" / overlay)
    by_key = {(o["kind"], o["metadata"]["name"]): without_release_metadata(o) for o in kustomized}
    for obj in charted:
        key = (obj["kind"], obj["metadata"]["name"])
        expected = by_key[key]
        if obj["kind"] == "InferenceService":
            # The manifests carry an example model path; the chart takes it as a value.
            expected["spec"]["predictor"]["model"]["storageUri"] = STORAGE
        assert without_release_metadata(obj) == expected, key


def test_images_and_version_are_the_ones_in_images_py() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["image"] == {"cuda": CUDA_IMAGE, "cpu": CPU_IMAGE}
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == __version__
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
    assert "create secret generic bertops-s3" in notes and "serving.kserve.io/s3-endpoint" in notes


def test_checkov_scans_the_rendered_chart_and_finds_no_failed_checks() -> None:
    (report,) = k8s_tools.checkov(REPO_ROOT / "helm", ["helm"], (CHART / "ci" / "gpu-values.yaml",))
    assert report["check_type"] == "helm"
    # Without helm on PATH (or with values that do not render) checkov scans nothing and passes.
    assert report["summary"]["resource_count"] >= 6
    assert report["summary"]["passed"] > 0
    assert [(c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]] == []
    skipped = report["results"]["skipped_checks"]
    assert all(c["check_result"].get("suppress_comment") for c in skipped)
    assert {c["check_id"] for c in skipped} <= {"CKV_K8S_21"}
