"""The docs a user reads. Every cluster name agrees with bertops/cluster.py: namespaces, service
accounts, Secrets and their keys in the README, docs/, the chart, the manifests, the CI workflow and
the compiled pipeline, so an operator who follows the docs word for word creates what the run uses.
Every relative link resolves, the README stays short, the chart's values table is the generated
one, and the README's claims about CI, the steps and the license hold."""

from __future__ import annotations

import importlib.util
import json
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from bertops import cluster

REPO_ROOT = Path(__file__).resolve().parents[1]
CLUSTER_DOCS = REPO_ROOT / "docs" / "cluster"
DOCS = [
    REPO_ROOT / "README.md",
    *sorted((REPO_ROOT / "docs").rglob("*.md")),
    REPO_ROOT / "components" / "README.md",
    REPO_ROOT / "helm" / "bertops" / "README.md",
]
MAX_README_LINES = 200
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
    assert cluster.table() in (CLUSTER_DOCS / "README.md").read_text()


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


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_secret_the_docs_create_has_the_tables_keys_in_the_runs_namespace(doc: Path) -> None:
    created = [c for c in commands(doc) if "create secret generic" in c]
    for command in created:
        (name,) = re.findall(r"create secret generic (\S+)", command)
        spec = SECRETS[name]
        keys = re.findall(r"--from-literal=(\w+)=", command)
        if "..." not in command.split(name, 1)[1].split()[0:1]:  # "create secret generic NAME ..." is a pointer
            assert sorted(keys) == sorted(spec.keys), name
        assert NAMESPACE_FLAG.findall(command) == [cluster.PROFILE_NAMESPACE], command
    if doc == CLUSTER_DOCS / "install.md":  # step 1 creates every Secret
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
    """Each `bertops compile/submit/models` line of docs/cluster/ is accepted by the real CLI."""
    import shlex

    from cli.main import build_parser

    parser = build_parser()
    found = []
    for command in (c for doc in sorted(CLUSTER_DOCS.glob("*.md")) for c in code(doc)):
        match = re.search(r"(?:\.venv/bin/)?bertops ((?:compile|submit|models) .*?)(?:#.*)?$", command.strip())
        if match:
            args = shlex.split(match.group(1).replace("$", ""))
            parser.parse_args(args)  # argparse exits on an unknown flag or a bad value
            found.append(args[0])
    assert {"compile", "submit", "models"} <= set(found)


def test_the_docs_show_what_serves_with_the_deploy_steps_own_labels() -> None:
    """Finding 15: `kubectl get isvc -L ...` tells an operator which model, version, run and commit serve."""
    from components.deploy import deploy_cluster as deploy

    text = (CLUSTER_DOCS / "endpoint.md").read_text()
    assert f"-L {deploy.MODEL_NAME_LABEL},{deploy.MODEL_VERSION_LABEL}" in text
    for annotation in (deploy.RUN_ANNOTATION, deploy.COMMIT_ANNOTATION):
        assert annotation.replace(".", "\\.") in text
    assert f"field manager `{deploy.FIELD_MANAGER}`" in text


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"#{1,6} +(.*?) *#*$")


def outside_fences(path: Path) -> Iterator[tuple[int, str]]:
    """The numbered lines of a Markdown file outside fenced code blocks."""
    fenced = False
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced:
            yield n, line


def anchors(path: Path) -> set[str]:
    """The anchors GitHub gives a Markdown file's headings: lower case, punctuation dropped,
    spaces to hyphens, and a repeated heading suffixed -1, -2, ..."""
    seen: dict[str, int] = {}
    for _, line in outside_fences(path):
        match = HEADING.match(line)
        if match:
            slug = re.sub(r"[^\w\- ]", "", match[1].strip().lower()).replace(" ", "-")
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            if count:
                seen[f"{slug}-{count}"] = 1
    return set(seen)


def relative_links(path: Path) -> Iterator[tuple[int, str]]:
    """``(line, target)`` of every link to a path or an anchor, not in code."""
    for n, line in outside_fences(path):
        for target in LINK.findall(re.sub(r"`[^`]*`", "", line)):
            if not re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                yield n, target


def broken_links(path: Path, root: Path = REPO_ROOT) -> list[str]:
    """``file:line: target (why)`` for every relative link of ``path`` that leads nowhere."""
    broken = []
    for n, target in relative_links(path):
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        where = f"{path.relative_to(root)}:{n}: {target}"
        if not dest.exists():
            broken.append(f"{where} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{where} (no heading with that anchor)")
    return broken


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_relative_link_resolves(doc: Path) -> None:
    assert broken_links(doc) == []


def test_the_link_check_sees_a_missing_file_and_a_missing_anchor(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# Title\n\n## The `x` step: 1.\n\n## Twice\n\n## Twice\n", encoding="utf-8")
    doc = tmp_path / "doc.md"
    doc.write_text(
        "[ok](a.md#the-x-step-1) [again](a.md#twice-1) [top](#links) [gone](b.md) [bad](a.md#nope) `[code](c.md)`\n"
        "```\n[fenced](d.md)\n```\n## Links\n[web](https://example.com) [bad](#nowhere)\n",
        encoding="utf-8",
    )
    assert broken_links(doc, tmp_path) == [
        "doc.md:1: b.md (no such file)",
        "doc.md:1: a.md#nope (no heading with that anchor)",
        "doc.md:6: #nowhere (no heading with that anchor)",
    ]


def test_every_page_of_docs_is_reachable_from_the_readme() -> None:
    reached: set[Path] = set()
    todo = [REPO_ROOT / "README.md"]
    while todo:
        page = todo.pop()
        if page in reached or page.suffix != ".md" or not page.is_file():
            continue
        reached.add(page)
        todo += [
            (page.parent / t.partition("#")[0]).resolve() for _, t in relative_links(page) if not t.startswith("#")
        ]
    assert sorted(str(p.relative_to(REPO_ROOT)) for p in (REPO_ROOT / "docs").rglob("*.md") if p not in reached) == []


def test_the_readme_is_short() -> None:
    lines = (REPO_ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines: move reference material to docs/"


def test_ci_runs_what_the_readme_says() -> None:
    """README: `make test` is what CI runs (.ci/run); the example workflow's test job runs .ci/run."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert "`make test` is what CI runs (`.ci/run`)" in readme
    assert re.search(r"^make test$", (REPO_ROOT / ".ci" / "run").read_text(), re.M)
    steps = yaml.safe_load((REPO_ROOT / ".github" / "workflows" / "pipeline.yaml").read_text())["jobs"]["test"]["steps"]
    assert [step["run"].strip() for step in steps if "run" in step] == [".ci/run"]
    # With CI=true the KServe schema checks fail without the CRDs: the job checks them out at a pinned commit.
    (crds,) = [step for step in steps if step.get("with", {}).get("repository") == "kserve/kserve"]
    assert re.fullmatch(r"[0-9a-f]{40}", crds["with"]["ref"])
    (test_step,) = [step for step in steps if "run" in step]
    assert test_step["env"]["BERTOPS_KSERVE_CRDS"].endswith(f"{crds['with']['path']}/config/crd/full")


def test_components_readme_lists_every_step_package_and_task() -> None:
    text = (REPO_ROOT / "components" / "README.md").read_text(encoding="utf-8")
    wrappers = sorted((REPO_ROOT / "components").glob("*/component.py"))
    assert wrappers, "the steps live in components/<step>/component.py"
    assert [p.parent.name for p in wrappers if f"| `{p.parent.name}/` |" not in text] == []
    # Every KFP component appears under its task name (plan_candidates: plan-candidates).
    tasks = [name for p in wrappers for name in re.findall(r"^def (\w+)\(", p.read_text(), re.M)]
    assert len(tasks) >= len(wrappers)
    assert [t for t in tasks if t.replace("_", "-") not in text] == []


def test_the_license_is_apache_2_and_pyproject_says_so() -> None:
    text = (REPO_ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    assert tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["license"] == "Apache-2.0"


def values_table() -> ModuleType:
    spec = importlib.util.spec_from_file_location("values_table", REPO_ROOT / "helm" / "values_table.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_charts_readme_has_the_values_table_generated_now() -> None:
    tool = values_table()
    generated = tool.table()
    readme = (REPO_ROOT / "helm" / "bertops" / "README.md").read_text(encoding="utf-8")
    assert tool.embedded(readme) == generated, "run: .venv/bin/python helm/values_table.py --write"
    # The chart's own values, comments and schema reach the table.
    assert "| `inferenceService.canaryTrafficPercent` | integer or null, 0..100 | `null` | 0-100: share" in generated
    assert '| `gpu.nodeSelector` | map of string | `{"nvidia.com/gpu.present": "true"}` |' in generated


def test_the_values_table_reads_comments_and_refuses_a_key_the_schema_lacks(tmp_path: Path) -> None:
    tool = values_table()
    schema = {
        "type": "object",
        "properties": {
            "a": {"type": "object", "properties": {"b": {"enum": ["x", "y"]}, "c": {"type": "integer", "minimum": 1}}}
        },
    }
    (tmp_path / "values.schema.json").write_text(json.dumps(schema))
    (tmp_path / "values.yaml").write_text(
        "# A group.\na:\n  # Pick x | y.\n  b: x\n\n  # not c's: a blank line follows\n\n  c: 2\n"
    )
    assert tool.table(tmp_path).splitlines()[2:] == [
        "| `a` | object |  | A group. |",
        '| `a.b` | one of `"x"`, `"y"` | `"x"` | Pick x \\| y. |',
        "| `a.c` | integer, 1.. | `2` |  |",
    ]
    (tmp_path / "values.yaml").write_text("a:\n  b: x\n  d: 1\n")
    with pytest.raises(ValueError, match=re.escape("values.yaml key 'a.d' is not in values.schema.json")):
        tool.table(tmp_path)
