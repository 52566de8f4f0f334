"""Dashboards: the chart's ServiceMonitor and Grafana dashboard, rendered by a real helm, checked against
prometheus-operator's CRD (tests/upstream/), the metrics the server really exports, and Grafana's model.

KServe v0.20 line (commit aaac4e29), read for the ServiceMonitor's selector:
pkg/controller/v1beta1/inferenceservice/components/predictor.go gives the predictor's objects the
labels ``serving.kserve.io/inferenceservice: <name>`` and ``component: predictor``;
reconcilers/service/service_reconciler.go makes Standard mode's Service ``<name>-predictor``
(constants.PredictorServiceName) with port 80 to the container's first port (the agent's 9081
when a logger or batcher is set). In Serverless mode Knative (knative/serving v1.23,
pkg/reconciler/serverlessservice/resources/services.go) makes the revision's private Service with
the revision's labels plus ``networking.internal.knative.dev/serviceType: Private``, its ports
queue-proxy's; the user container's port is renamed ``user-port``. The ServiceMonitor's
``targetPort: 8080`` picks the model server's container port behind either Service.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import k8s_tools
import pytest

pytestmark = pytest.mark.cluster

REPO_ROOT = Path(__file__).resolve().parents[1]
CHART = REPO_ROOT / "helm" / "bertops"
DASHBOARD = CHART / "dashboards" / "bertops.json"
NAMESPACE = "ml-serving"
ISTIO = ("security.istio.io/v1",)
ON = {"serviceMonitor": {"enabled": True}, "dashboard": {"enabled": True}}
ENDPOINT = {"enabled": True, "storageUri": "s3://mlflow/1/0a1b2c/artifacts/model"}
# The gauges `bertops monitor` publishes (Pushgateway or textfile), each labelled by model: the
# contract between the monitor job and this dashboard.
DRIFT_GAUGES = {
    "bertops_drift_label_kl",
    "bertops_drift_length_kl",
    "bertops_drift_oov_rate",
    "bertops_drift_mean_confidence",
    "bertops_drift_window_texts",
    "bertops_drift_verdict",
}
# The series a metric family of each type exports (prometheus_client's exposition).
SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}
METRIC = re.compile(r"\bbertops_[a-z0-9_]+\b")


@pytest.fixture(scope="module")
def schemas(kserve_crd_schemas: dict[tuple[str, str], dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        **kserve_crd_schemas,
        **k8s_tools.load_crd_schemas(k8s_tools.ISTIO_SECURITY_CRDS),
        **k8s_tools.load_crd_schemas(k8s_tools.SERVICE_MONITOR_CRD),
    }


def render(monitoring: dict[str, Any], **values: Any) -> list[dict[str, Any]]:
    return k8s_tools.render_helm(CHART, NAMESPACE, {"monitoring": monitoring, **values}, ISTIO)


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind]
    return found


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def exported_series() -> set[str]:
    """Every series name serving/metrics.py's collectors export, with its type's suffixes."""
    from prometheus_client.metrics import MetricWrapperBase

    from serving import metrics

    names = set()
    for collector in vars(metrics).values():
        if isinstance(collector, MetricWrapperBase):
            for family in collector.describe():
                names |= {family.name + suffix for suffix in SUFFIXES[family.type]}
    return names


def queries(board: dict[str, Any]) -> list[str]:
    """The PromQL of every panel target and template variable."""
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    return exprs + [v["query"]["query"] for v in board["templating"]["list"] if v["type"] == "query"]


@pytest.mark.parametrize(
    ("monitoring", "values"),
    [
        ({}, {}),
        (ON, {}),
        (ON, {"inferenceService": {**ENDPOINT, "deploymentMode": "Standard"}}),
        (ON, {"inferenceService": ENDPOINT, "authorization": {"enabled": False}, "networkPolicy": {"enabled": False}}),
    ],
    ids=["off", "on", "on-standard-endpoint", "on-without-policies"],
)
def test_chart_renders_and_validates_with_monitoring_on_and_off(
    monitoring: dict[str, Any], values: dict[str, Any], schemas: dict
) -> None:
    objects = render(monitoring, **values)
    kinds = [o["kind"] for o in objects]
    expected = 1 if monitoring else 0
    assert (kinds.count("ServiceMonitor"), kinds.count("ConfigMap")) == (expected, expected)
    for obj in objects:
        assert k8s_tools.schema_errors(obj, schemas) == [], f"{obj['kind']}/{obj['metadata']['name']}"


def test_the_schema_check_catches_a_broken_service_monitor(schemas: dict) -> None:
    monitor = one(render(ON), "ServiceMonitor")
    broken = {**monitor, "spec": {**monitor["spec"], "endpoints": [{"targetPort": 8080, "intervall": "30s"}]}}
    assert any("intervall" in e for e in k8s_tools.schema_errors(broken, schemas))


@pytest.mark.parametrize(
    ("mode", "knative"), [("Serverless", True), ("Knative", True), ("Standard", False), ("RawDeployment", False)]
)
def test_service_monitor_scrapes_the_model_servers_own_port_in_each_mode(mode: str, knative: bool) -> None:
    labels = {"release": "kube-prometheus-stack"}
    objects = render(
        {"serviceMonitor": {"enabled": True, "labels": labels, "interval": "15s"}},
        inferenceService={"deploymentMode": mode},
    )
    spec = one(objects, "ServiceMonitor")["spec"]
    wanted = {"serving.kserve.io/inferenceservice": "bbc-news-classifier", "component": "predictor"}
    if knative:
        wanted["networking.internal.knative.dev/serviceType"] = "Private"
    assert spec["selector"] == {"matchLabels": wanted}
    (endpoint,) = spec["endpoints"]
    runtime_port = one(objects, "ServingRuntime")["spec"]["containers"][0]["ports"][0]["containerPort"]
    assert endpoint == {"targetPort": runtime_port, "path": "/metrics", "interval": "15s", "scheme": "http"}
    assert one(objects, "ServiceMonitor")["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_network_policy_admits_prometheus_to_the_model_servers_port_only() -> None:
    def ingress(monitoring: dict[str, Any]) -> list[dict[str, Any]]:
        rules: list[dict[str, Any]] = one(render(monitoring), "NetworkPolicy")["spec"]["ingress"]
        return rules

    off, on = ingress({}), ingress({**ON, "prometheus": {"namespace": "observability", "serviceAccount": "prom"}})
    assert on[: len(off)] == off
    assert on[len(off) :] == [
        {
            "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "observability"}}}],
            "ports": [{"protocol": "TCP", "port": 8080}],
        }
    ]


def test_every_metric_the_dashboard_queries_is_exported_under_that_name() -> None:
    """A metric renamed in serving/metrics.py, or queried without its type's suffix, fails here."""
    queried = {name for expr in queries(dashboard()) for name in METRIC.findall(expr)}
    exported = exported_series()
    assert queried - exported - DRIFT_GAUGES == set()
    # Requests, errors, latency, batch size and queue depth of the server, and every drift figure.
    assert {
        "bertops_requests_total",
        "bertops_request_errors_total",
        "bertops_request_seconds_bucket",
        "bertops_batch_size_bucket",
        "bertops_queued_texts",
    } <= queried
    assert queried >= DRIFT_GAUGES


def test_quantiles_are_taken_over_histogram_buckets_by_le() -> None:
    quantiles = [e for e in queries(dashboard()) if "histogram_quantile" in e]
    assert {"0.5", "0.99"} <= {re.search(r"histogram_quantile\(([0-9.]+)", e)[1] for e in quantiles}  # type: ignore[index]
    for expr in quantiles:
        assert re.search(r"sum by \(le\b", expr) and re.search(r"rate\(bertops_\w+_bucket\{", expr), expr


def test_dashboard_is_a_grafana_dashboard() -> None:
    board = dashboard()
    assert re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", board["uid"]) and board["title"]
    assert isinstance(board["schemaVersion"], int)
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        covered = {
            (x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not covered & cells, f"{panel['title']} overlaps another panel"
        cells |= covered
        if panel["type"] == "row":
            continue
        assert panel["type"] in {"timeseries", "stat"} and panel["title"], panel
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"] and len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])
        used = {name for t in panel["targets"] for name in re.findall(r"\$(\w+)", t["expr"])}
        assert used <= set(variables) | {"__rate_interval"}, (panel["title"], used)


def test_kl_limit_lines_are_the_data_gates_defaults() -> None:
    from bertops.config import ValidationConfig

    (panel,) = [p for p in dashboard()["panels"] if "bertops_drift_label_kl" in str(p.get("targets"))]
    steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert steps[-1]["value"] == ValidationConfig().max_label_drift == ValidationConfig().max_length_drift


def test_the_dashboard_ships_in_a_configmap_for_grafanas_sidecar() -> None:
    configmap = one(
        render({"dashboard": {"enabled": True, "labels": {"grafana_dashboard": "1"}, "folder": "ml"}}), "ConfigMap"
    )
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["annotations"]["grafana_folder"] == "ml"
    assert json.loads(configmap["data"]["bertops.json"]) == dashboard()
