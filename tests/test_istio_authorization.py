"""Who may call the endpoint on a cluster: the chart's and the kustomize component's Istio policies.

The policies are rendered by a real helm (with and without the cluster serving Istio's security
API) and kubectl kustomize, validated against Istio's own CRDs (tests/upstream/, istio 1.28.0), and
then judged request by request with Istio's documented semantics, which ``istio_admits`` follows:

- istio/api security/v1beta1/authorization_policy.proto (the v1 API has the same messages; the
  reference page https://istio.io/latest/docs/reference/config/security/authorization-policy/ is
  generated from it): "1. If there are any CUSTOM policies that match the request, evaluate and
  deny the request if the evaluation result is deny. 2. If there are any DENY policies that match
  the request, deny the request. 3. If there are no ALLOW policies for the workload, allow the
  request. 4. If any of the ALLOW policies match the request, allow the request. 5. Deny the
  request." A policy applies to a workload in its namespace whose labels include its
  ``selector.matchLabels``; ``rules``: "A match occurs when at least one rule matches the
  request. If not set, the match will never occur."
- Rule: "A match occurs when at least one source, one operation and all conditions matches the
  request. An empty rule is always matched." ``from``/``to`` not set: any source/operation.
- Source and Operation: "Fields in the source are ANDed together"; a field's list matches if any
  value does; ``notX`` is the negative match. Strings match "Exact", "Prefix" (``abc*``),
  "Suffix" (``*abc``) and "Presence" (``*``: the value is not empty). ``principals`` is the mTLS
  peer identity ``<TRUST_DOMAIN>/ns/<NAMESPACE>/sa/<SERVICE_ACCOUNT>``, ``namespaces`` its
  namespace; ``requestPrincipals`` the JWT's ``<ISS>/<SUB>`` (a service-account token's ``sub``
  is ``system:serviceaccount:<NAMESPACE>:<NAME>``).

Knative's side, read in knative/serving knative-v1.16.2 (commit 674f624b):
config/core/deployments/activator.yaml runs the activator as ``serviceAccountName: activator``
and autoscaler.yaml the autoscaler as ``controller``, both in ``knative-serving``;
pkg/activator/net/revision_backends.go probes pods at ``nethttp.HealthCheckPath`` (/healthz) and
pkg/autoscaler/metrics/stats_scraper.go scrapes queue-proxy's ``9090/metrics``. knative/docs
docs/serving/istio-authorization.md: a request forwarded by the activator reaches the pod as
the activator's identity, and system pods need /healthz and /metrics. KServe v0.20.0 (commit
1fb78105) pkg/controller/v1beta1/inferenceservice/components/predictor.go labels predictor pods
``serving.kserve.io/inferenceservice: <name>`` and ``component: predictor``.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import k8s_tools
import pytest
import yaml

from bertops import cluster
from bertops.errors import BertopsError

pytestmark = pytest.mark.cluster

REPO_ROOT = Path(__file__).resolve().parents[1]
CHART = REPO_ROOT / "helm" / "bertops"
COMPONENT = REPO_ROOT / "manifests" / "components" / "istio-authorization"
NAMESPACE = "ml-serving"
ISTIO = ("security.istio.io/v1",)
ISTIO_KINDS = ["AuthorizationPolicy", "AuthorizationPolicy", "RequestAuthentication"]
ISSUER = "https://kubernetes.default.svc.cluster.local"
PREDICTOR = {"serving.kserve.io/inferenceservice": "bbc-news-classifier", "component": "predictor"}
PREDICT = "/v1/models/bbc-news-classifier:predict"
INFER = "/v2/models/bbc-news-classifier/infer"
GATEWAY = "cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account"
ACTIVATOR = "cluster.local/ns/knative-serving/sa/activator"
AUTOSCALER = "cluster.local/ns/knative-serving/sa/controller"
CLIENT = "apps/frontend"
# What a Kubeflow profile puts in its namespace (kubeflow/dashboard's profile controller,
# ns-owner-access-istio) admits, among others, every workload of the namespace: an ALLOW policy
# that admits all is the strongest such neighbour.
ALLOW_ALL = {"kind": "AuthorizationPolicy", "metadata": {"name": "allow-all"}, "spec": {"rules": [{}]}}


def mtls(namespace: str, account: str) -> str:
    return f"cluster.local/ns/{namespace}/sa/{account}"


def token(namespace: str, account: str, issuer: str = ISSUER) -> str:
    """The request principal of a valid service-account token: ``<iss>/<sub>``."""
    return f"{issuer}/system:serviceaccount:{namespace}:{account}"


@dataclass(frozen=True)
class Request:
    """What Istio's sidecar knows of a request: the mTLS peer, the JWT's principal, the path."""

    path: str
    principal: str = ""
    request_principal: str = ""


def string_matches(pattern: str, value: str) -> bool:
    """Istio's Exact, Prefix (``abc*``), Suffix (``*abc``) and Presence (``*``) matches."""
    if pattern == "*":
        return value != ""
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    if pattern.startswith("*"):
        return value.endswith(pattern[1:])
    return value == pattern


def attributes(request: Request) -> dict[str, str]:
    """The request's attributes under the Source and Operation field names that match them."""
    peer_namespace = request.principal.split("/ns/", 1)[1].split("/", 1)[0] if "/ns/" in request.principal else ""
    return {
        "principals": request.principal,
        "requestPrincipals": request.request_principal,
        "namespaces": peer_namespace,
        "paths": request.path,
    }


def fields_match(fields: dict[str, list[str]], request: Request) -> bool:
    """A Source or Operation: every field (ANDed) matches; ``notX`` is the negative of ``X``."""
    values = attributes(request)
    for name, patterns in fields.items():
        positive = name[3].lower() + name[4:] if name.startswith("not") else name
        if positive not in values:
            raise AssertionError(f"the evaluator does not model {name!r}: extend it before using it")
        hit = any(string_matches(p, values[positive]) for p in patterns)
        if hit == name.startswith("not"):
            return False
    return True


def rule_matches(rule: dict[str, Any], request: Request) -> bool:
    """At least one source, one operation and all conditions; an absent list matches anything."""
    if set(rule) - {"from", "to"}:
        raise AssertionError(f"the evaluator does not model {sorted(set(rule) - {'from', 'to'})}")
    sources = [f["source"] for f in rule.get("from", [])]
    operations = [t["operation"] for t in rule.get("to", [])]
    return (not sources or any(fields_match(s, request) for s in sources)) and (
        not operations or any(fields_match(o, request) for o in operations)
    )


def policy_matches(policy: dict[str, Any], request: Request) -> bool:
    return any(rule_matches(rule, request) for rule in policy["spec"].get("rules", []))


def istio_admits(objects: list[dict[str, Any]], labels: dict[str, str], request: Request) -> bool:
    """Istio's decision for a request to a workload with ``labels`` under the AuthorizationPolicies in ``objects``."""
    policies = [
        o
        for o in objects
        if o["kind"] == "AuthorizationPolicy"
        and o["spec"].get("selector", {}).get("matchLabels", {}).items() <= labels.items()
    ]
    actions = {p["spec"].get("action", "ALLOW") for p in policies}
    assert actions <= {"ALLOW", "DENY"}, actions
    if any(policy_matches(p, request) for p in policies if p["spec"].get("action") == "DENY"):
        return False
    allows = [p for p in policies if p["spec"].get("action", "ALLOW") == "ALLOW"]
    return not allows or any(policy_matches(p, request) for p in allows)


def render(values: dict[str, Any] | None = None, api_versions: tuple[str, ...] = ISTIO) -> list[dict[str, Any]]:
    return k8s_tools.render_helm(CHART, NAMESPACE, values, api_versions)


def istio_objects(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o["apiVersion"].startswith("security.istio.io/")]


@pytest.fixture(scope="module")
def policies() -> list[dict[str, Any]]:
    """The chart's defaults where Istio is installed, with one client named besides the pipeline."""
    return istio_objects(render({"authorization": {"clients": [CLIENT]}}))


@pytest.fixture(scope="module")
def istio_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    return k8s_tools.load_crd_schemas(k8s_tools.ISTIO_SECURITY_CRDS)


@pytest.mark.parametrize(
    ("enabled", "api_versions", "kinds"),
    [
        ("auto", (), []),
        ("auto", ISTIO, ISTIO_KINDS),
        (True, (), ISTIO_KINDS),
        (False, ISTIO, []),
    ],
    ids=["auto-without-istio", "auto-with-istio", "forced", "off"],
)
def test_policies_come_with_istios_security_api(enabled: Any, api_versions: tuple[str, ...], kinds: list[str]) -> None:
    """On by default where the cluster serves security.istio.io/v1; a cluster without Istio gets no object it cannot take."""
    objects = render({"authorization": {"enabled": enabled}}, api_versions)
    assert sorted(o["kind"] for o in istio_objects(objects)) == kinds
    for obj in istio_objects(objects):
        assert obj["spec"]["selector"]["matchLabels"] == PREDICTOR
        assert obj["metadata"]["namespace"] == NAMESPACE


def test_rendered_policies_pass_istios_crd_schemas(policies: list[dict[str, Any]], istio_schemas: dict) -> None:
    assert sorted(o["kind"] for o in policies) == ISTIO_KINDS
    for obj in policies:
        assert k8s_tools.schema_errors(obj, istio_schemas) == [], obj["metadata"]["name"]
    # The check has teeth: a misspelled field and a wrong action are refused.
    allow = next(o for o in policies if o["spec"]["action"] == "ALLOW")
    typo = {**allow, "spec": {**allow["spec"], "rules": [{"from": [{"source": {"principal": ["x"]}}]}]}}
    assert any("principal" in e for e in k8s_tools.schema_errors(typo, istio_schemas))
    wrong = {**allow, "spec": {**allow["spec"], "action": "PERMIT"}}
    assert any("PERMIT" in e for e in k8s_tools.schema_errors(wrong, istio_schemas))


ADMITTED = {
    "pipeline account, mTLS, V1": Request(PREDICT, mtls(NAMESPACE, cluster.PIPELINE_SERVICE_ACCOUNT)),
    "pipeline account, mTLS, V2": Request(INFER, mtls(NAMESPACE, cluster.PIPELINE_SERVICE_ACCOUNT)),
    "pipeline token through the gateway": Request(PREDICT, GATEWAY, token(NAMESPACE, cluster.PIPELINE_SERVICE_ACCOUNT)),
    "named client token through the activator": Request(INFER, ACTIVATOR, token("apps", "frontend")),
    "named client, mTLS, V2 readiness": Request("/v2/health/ready", mtls("apps", "frontend")),
    "named client, mTLS, V2 server metadata": Request("/v2", mtls("apps", "frontend")),
    "activator probe": Request("/healthz", ACTIVATOR),
    "autoscaler scrape": Request("/metrics", AUTOSCALER),
}
DENIED = {
    "no identity at all": Request(PREDICT),
    "another account of the namespace": Request(PREDICT, mtls(NAMESPACE, "default")),
    "an account of another namespace": Request(PREDICT, mtls("team-b", cluster.PIPELINE_SERVICE_ACCOUNT)),
    "anyone through the gateway": Request(PREDICT, GATEWAY),
    "anyone through the activator": Request(INFER, ACTIVATOR),
    "the token of an unnamed account": Request(PREDICT, GATEWAY, token(NAMESPACE, "default")),
    "a named subject from another issuer": Request(
        PREDICT, GATEWAY, token(NAMESPACE, cluster.PIPELINE_SERVICE_ACCOUNT, "https://evil.example.com")
    ),
    "the repository API, to the pipeline": Request(
        "/v2/repository/models/bbc-news-classifier/unload", mtls(NAMESPACE, cluster.PIPELINE_SERVICE_ACCOUNT)
    ),
    "the OpenAPI docs, to a named client": Request("/docs", mtls("apps", "frontend")),
    "metrics, to a named client": Request("/metrics", mtls("apps", "frontend")),
    "metrics, to another namespace": Request("/metrics", mtls("team-b", "prometheus")),
    "the activator off its paths": Request("/v2/repository/index", ACTIVATOR),
}


@pytest.mark.parametrize("neighbour", [[], [ALLOW_ALL]], ids=["alone", "beside-an-allow-all-policy"])
@pytest.mark.parametrize("name", list(ADMITTED) + list(DENIED))
def test_policy_admits_the_named_callers_and_denies_by_default(
    name: str, neighbour: list[dict[str, Any]], policies: list[dict[str, Any]]
) -> None:
    """Every request that no rule names is refused, also beside a namespace-wide ALLOW policy (Kubeflow's)."""
    request = ADMITTED.get(name) or DENIED[name]
    assert istio_admits(policies + neighbour, PREDICTOR, request) is (name in ADMITTED)
    # The same request to a pod of another workload is not these policies' business.
    assert istio_admits(policies, {"app": "something-else"}, request) is True


def test_standard_mode_leaves_knative_out() -> None:
    objects = istio_objects(render({"inferenceService": {"deploymentMode": "Standard"}}))
    assert not istio_admits(objects, PREDICTOR, Request("/healthz", ACTIVATOR))
    assert not istio_admits(objects, PREDICTOR, Request("/metrics", AUTOSCALER))
    assert istio_admits(objects, PREDICTOR, Request(PREDICT, mtls(NAMESPACE, cluster.PIPELINE_SERVICE_ACCOUNT)))


@pytest.mark.parametrize("mode", ["Serverless", "Standard"])
@pytest.mark.parametrize("neighbour", [[], [ALLOW_ALL]], ids=["alone", "beside-an-allow-all-policy"])
def test_with_a_service_monitor_prometheus_may_read_the_metrics_and_nothing_else(
    mode: str, neighbour: list[dict[str, Any]]
) -> None:
    values = {
        "inferenceService": {"deploymentMode": mode},
        "monitoring": {
            "serviceMonitor": {"enabled": True},
            "prometheus": {"namespace": "mon", "serviceAccount": "prom"},
        },
    }
    objects = istio_objects(render(values)) + neighbour
    prometheus = mtls("mon", "prom")
    pipeline = mtls(NAMESPACE, cluster.PIPELINE_SERVICE_ACCOUNT)
    assert istio_admits(objects, PREDICTOR, Request("/metrics", prometheus))
    refused = [
        Request(PREDICT, prometheus),
        Request("/healthz", prometheus),
        Request("/v2/repository/index", prometheus),
        Request("/metrics", pipeline),
        Request("/metrics", mtls("other", "prom")),
        # Plaintext from outside the mesh: no identity at all.
        Request("/metrics"),
    ]
    assert [r for r in refused if istio_admits(objects, PREDICTOR, r)] == []
    assert istio_admits(objects, PREDICTOR, Request(PREDICT, pipeline))
    # Knative's own accounts keep what they had.
    knative = mode == "Serverless"
    assert istio_admits(objects, PREDICTOR, Request("/metrics", AUTOSCALER)) is knative
    assert istio_admits(objects, PREDICTOR, Request("/healthz", ACTIVATOR)) is knative


def test_without_a_service_monitor_the_policies_are_unchanged_by_monitoring() -> None:
    """The dashboard alone opens nothing (and the kustomize component still matches the chart)."""
    assert istio_objects(render({"monitoring": {"dashboard": {"enabled": True}}})) == istio_objects(render())


def test_without_a_token_issuer_callers_are_known_by_mtls_only() -> None:
    objects = istio_objects(render({"authorization": {"jwt": {"issuer": ""}}}))
    assert sorted(o["kind"] for o in objects) == ["AuthorizationPolicy", "AuthorizationPolicy"]
    pipeline = cluster.PIPELINE_SERVICE_ACCOUNT
    assert istio_admits(objects, PREDICTOR, Request(PREDICT, mtls(NAMESPACE, pipeline)))
    # No RequestAuthentication: a token is never validated, so no request principal is ever set.
    assert not istio_admits(objects, PREDICTOR, Request(PREDICT, GATEWAY))


def test_request_authentication_checks_the_clusters_tokens_for_the_endpoints_audience(
    policies: list[dict[str, Any]],
) -> None:
    (authn,) = [o for o in policies if o["kind"] == "RequestAuthentication"]
    assert authn["spec"]["jwtRules"] == [
        {"issuer": ISSUER, "jwksUri": f"{ISSUER}/openid/v1/jwks", "audiences": ["bertops-inference"]}
    ]
    inline = istio_objects(render({"authorization": {"jwt": {"jwks": '{"keys": []}'}}}))
    (rule,) = next(o for o in inline if o["kind"] == "RequestAuthentication")["spec"]["jwtRules"]
    assert rule["jwks"] == '{"keys": []}' and "jwksUri" not in rule


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"authorization": {"enabled": "yes"}}, "/authorization/enabled"),
        ({"authorization": {"clients": ["frontend"]}}, "/authorization/clients/0"),
        ({"authorization": {"jwt": {"jwksUri": "kubernetes.default.svc/openid/v1/jwks"}}}, "/authorization/jwt"),
        ({"networkPolicy": {"gatewayIstioLabels": []}}, "/networkPolicy/gatewayIstioLabels"),
    ],
)
def test_values_schema_refuses_bad_authorization_values(values: dict[str, Any], message: str) -> None:
    with pytest.raises(BertopsError, match="values don't meet the specifications of the schema") as caught:
        render(values)
    assert message in str(caught.value)


def test_kustomize_component_creates_what_the_chart_does(tmp_path: Path) -> None:
    """An overlay with the component, in the profile namespace, equals the chart where Istio is installed."""
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    shutil.copytree(REPO_ROOT / "manifests", overlay / "manifests")
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": ["manifests/overlays/gpu"],
                "components": ["manifests/components/istio-authorization"],
            }
        )
    )
    kustomized = istio_objects(k8s_tools.render_kustomize(overlay))
    charted = istio_objects(k8s_tools.render_helm(CHART, cluster.PROFILE_NAMESPACE, None, ISTIO))
    by_key = {(o["kind"], o["metadata"]["name"]): o for o in kustomized}
    assert sorted(by_key) == sorted((o["kind"], o["metadata"]["name"]) for o in charted)
    for obj in charted:
        key = (obj["kind"], obj["metadata"]["name"])
        expected = {**obj, "metadata": {k: v for k, v in obj["metadata"].items() if k != "labels"}}
        got = {**by_key[key], "metadata": {k: v for k, v in by_key[key]["metadata"].items() if k != "labels"}}
        assert got == expected, key


def test_network_policy_admits_only_the_gateways_and_the_named_namespaces() -> None:
    values = {"networkPolicy": {"ingressNamespaces": ["knative-serving", "monitoring"]}}
    (policy,) = [o for o in render(values, ()) if o["kind"] == "NetworkPolicy"]
    (rule,) = policy["spec"]["ingress"]
    assert rule["from"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "istio-system"}},
            "podSelector": {
                "matchExpressions": [
                    {"key": "istio", "operator": "In", "values": ["ingressgateway", "cluster-local-gateway"]}
                ]
            },
        },
        {
            "namespaceSelector": {
                "matchExpressions": [
                    {
                        "key": "kubernetes.io/metadata.name",
                        "operator": "In",
                        "values": ["knative-serving", "monitoring"],
                    }
                ]
            }
        },
    ]
    # Not the release's own namespace as a whole: a pod there is no caller by being there.
    assert not any(p == {"podSelector": {}} for p in rule["from"])
    (only_gateways,) = [
        o for o in render({"networkPolicy": {"ingressNamespaces": []}}, ()) if o["kind"] == "NetworkPolicy"
    ]
    assert len(only_gateways["spec"]["ingress"][0]["from"]) == 1


def test_notes_show_a_call_with_a_token_where_the_policies_are_installed() -> None:
    values = {
        "inferenceService": {"enabled": True, "storageUri": "s3://mlflow/1/model"},
        "authorization": {"enabled": True},
    }
    out = k8s_tools.helm("install", "bertops", CHART, "--namespace", NAMESPACE, "--dry-run=client", values=values)
    notes = out[out.index("NOTES:") :]
    token_command = f"kubectl -n {NAMESPACE} create token default-editor --audience bertops-inference --duration 1h"
    assert token_command in notes
    assert notes.count('-H "Authorization: Bearer ${TOKEN}"') == 2
