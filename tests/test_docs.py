"""Every cluster name a user reads agrees with bertops/cluster.py: namespaces, service accounts,
Secrets and their keys in README.md, docs/cluster.md, the chart, the manifests, the CI workflow and
the compiled pipeline. An operator who follows the docs word for word creates what the run uses."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from bertops import cluster

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCS = [REPO_ROOT / "README.md", REPO_ROOT / "docs" / "cluster.md"]
FILES = [
    *DOCS,
    *sorted((REPO_ROOT / "helm").rglob("*.yaml")),
    *sorted((REPO_ROOT / "helm").rglob("*.txt")),
    *sorted((REPO_ROOT / "manifests").rglob("*.yaml")),
    *sorted((REPO_ROOT / ".github" / "workflows").glob("*.yaml")),
]
RUN_NAMESPACES = {namespace for namespace, _ in cluster.RUN_IDENTITIES.values()}
# Namespaces of the platform itself (Istio's gateway, Knative, KServe, the Trainer, cert-manager,
# an MLflow server, Prometheus), which the docs read from but bertops puts nothing in.
PLATFORM_NAMESPACES = {
    "istio-system",
    "knative-serving",
    "cert-manager",
    "kubeflow-system",
    "mlflow",
    "kserve",
    "monitoring",
}
# Prometheus's account (kube-prometheus), which the chart's policies admit to /metrics and nothing runs as.
SCRAPER_ACCOUNTS = {"prometheus-k8s"}
ACCOUNTS = (
    {account for _, account in cluster.RUN_IDENTITIES.values()} | {cluster.SERVING_SERVICE_ACCOUNT} | SCRAPER_ACCOUNTS
)
SECRETS = {secret.name: secret for secret in cluster.SECRETS}
# Every `bertops-*` name that may appear: the table's, and the objects and files that are not
# accounts or Secrets.
NAMES = (
    set(SECRETS)
    | {role.name for role in cluster.ROLES}
    | {cluster.SERVING_SERVICE_ACCOUNT}
    | {
        "bertops-text-classifier",  # the ServingRuntime and its model format
        "bertops-predictor-ingress",  # the NetworkPolicy
        "bertops-predictor-allow-callers",  # the Istio policies and their token audience
        "bertops-predictor-deny-others",
        "bertops-predictor-service-account-tokens",
        "bertops-inference",
        "bertops-cpu",  # the images
        "bertops-cuda",
        "bertops-workspace",  # the example PVC
        "bertops-query",  # the example query pod
        "bertops-data",  # .dvc/config's example bucket
        "bertops-model-server",  # the ServiceMonitor
        "bertops-grafana-dashboard",  # the dashboard's ConfigMap
    }
)
NAMESPACE_FLAG = re.compile(r"(?:\s-n|--namespace)[ =]\"?([A-Za-z0-9_.${}'|-]+)")
# A YAML field, a run argument (`namespace=...`) or a Python keyword, not prose.
NAMESPACE_FIELD = re.compile(r"(?:^\s*(?:- )?namespace: *|\bnamespace=)[\"']?([A-Za-z0-9_.${}-]+)")


def lines() -> list[tuple[Path, int, str]]:
    return [(path, n, line) for path in FILES for n, line in enumerate(path.read_text().splitlines(), 1)]


def commands(path: Path) -> list[str]:
    """Shell commands of a file, continuation lines joined."""
    return path.read_text().replace("\\\n", " ").splitlines()


def code(path: Path) -> list[str]:
    """The shell lines of a Markdown file's code blocks (fenced or indented), continuations joined."""
    kept, fenced = [], False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif fenced or line.startswith("    "):
            kept.append(line)
    return "\n".join(kept).replace("\\\n", " ").splitlines()


def test_docs_embed_the_generated_table() -> None:
    assert cluster.table() in (REPO_ROOT / "docs" / "cluster.md").read_text()


@pytest.mark.parametrize("pattern", [NAMESPACE_FLAG, NAMESPACE_FIELD], ids=["flag", "field"])
def test_every_namespace_is_the_runs_or_the_platforms(pattern: re.Pattern[str]) -> None:
    wrong = []
    for path, n, line in lines():
        for value in pattern.findall(line):
            templated = value.startswith(("$", "{", '"$', "'"))  # a variable, a template, a helm expression
            if not templated and value not in RUN_NAMESPACES | PLATFORM_NAMESPACES:
                wrong.append(f"{path.relative_to(REPO_ROOT)}:{n}: {value}")
    assert wrong == []


def test_every_bertops_name_is_one_of_the_projects() -> None:
    unknown = [
        f"{path.relative_to(REPO_ROOT)}:{n}: {name}"
        for path, n, line in lines()
        for name in re.findall(r"(?<![\w/.-])bertops-[a-z0-9]+(?:-[a-z0-9]+)*", line)
        if name not in NAMES
    ]
    assert unknown == []


def test_every_service_account_is_the_runs_or_the_model_servers() -> None:
    found = [
        (f"{path.relative_to(REPO_ROOT)}:{n}", account)
        for path, n, line in lines()
        for account in re.findall(
            r"(?:create token +|--service-account[ =]|serviceAccount(?:Name)?: |--serviceaccount=[\w-]+:)([a-z0-9-]+)",
            line,
        )
    ]
    assert found, "the docs name the run's account"
    assert [f for f in found if f[1] not in ACCOUNTS] == []


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_secret_the_docs_create_has_the_tables_keys_in_the_runs_namespace(doc: Path) -> None:
    created = [c for c in commands(doc) if "create secret generic" in c]
    for command in created:
        (name,) = re.findall(r"create secret generic (\S+)", command)
        spec = SECRETS[name]
        keys = re.findall(r"--from-literal=(\w+)=", command)
        if "..." not in command.split(name, 1)[1].split()[0:1]:  # "create secret generic NAME ..." is a pointer
            assert sorted(keys) == sorted(spec.keys), name
        assert NAMESPACE_FLAG.findall(command) == [cluster.PROFILE_NAMESPACE], command
    if doc.name == "cluster.md":
        assert sorted({re.findall(r"create secret generic (\S+)", c)[0] for c in created}) == sorted(SECRETS)


def test_the_compiled_pipeline_reads_the_tables_secrets_and_deploys_into_the_profile(tmp_path: Path) -> None:
    """The cluster profile's defaults (finding 17) and the Secrets the pods get (finding 10)."""
    from pipelines.compile import compile_pipeline

    path = compile_pipeline(tmp_path / "pipeline.yaml", target="cluster")
    spec, platform = yaml.safe_load_all(path.read_text())
    assert spec["root"]["inputDefinitions"]["parameters"]["namespace"]["defaultValue"] == cluster.PROFILE_NAMESPACE
    used = {}
    for executor in platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"].values():
        for secret in executor.get("secretAsEnv", []):
            used[secret["secretName"]] = {k["secretKey"] for k in secret["keyToEnv"]}
            assert secret["optional"] is True
    assert used == {name: set(spec_.keys) for name, spec_ in SECRETS.items()}


def test_the_bertops_commands_in_the_cluster_docs_parse() -> None:
    """Each `bertops compile/submit/models` line of docs/cluster.md is accepted by the real CLI."""
    import shlex

    from cli.main import build_parser

    parser = build_parser()
    found = []
    for command in code(REPO_ROOT / "docs" / "cluster.md"):
        match = re.search(r"(?:\.venv/bin/)?bertops ((?:compile|submit|models) .*?)(?:#.*)?$", command.strip())
        if match:
            args = shlex.split(match.group(1).replace("$", ""))
            parser.parse_args(args)  # argparse exits on an unknown flag or a bad value
            found.append(args[0])
    assert {"compile", "submit", "models"} <= set(found)


def test_the_docs_show_what_serves_with_the_deploy_steps_own_labels() -> None:
    """Finding 15: `kubectl get isvc -L ...` tells an operator which model, version, run and commit serve."""
    from components.deploy import deploy_cluster as deploy

    text = (REPO_ROOT / "docs" / "cluster.md").read_text()
    assert f"-L {deploy.MODEL_NAME_LABEL},{deploy.MODEL_VERSION_LABEL}" in text
    for annotation in (deploy.RUN_ANNOTATION, deploy.COMMIT_ANNOTATION):
        assert annotation.replace(".", "\\.") in text
    assert f"field manager `{deploy.FIELD_MANAGER}`" in text
