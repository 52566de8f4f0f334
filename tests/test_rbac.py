"""Who the run's pods are on a cluster, and what they may do: checked against upstream's own RBAC.

KFP runs every pod of a run (the v2 driver, the launcher, Argo's executor and the step itself) as the
run's service account. tests/upstream/ holds the upstream files these tests read, each with its
repository, path and version in its header:

- kubeflow/pipelines 2.17.0 manifests/kustomize/base/pipeline/pipeline-runner-role.yaml: what the
  standalone account ``pipeline-runner`` holds;
- kubeflow/pipelines 2.17.0 manifests/kustomize/base/installs/multi-user/api-service/params.env: in
  multi-user mode the API server runs pods as ``default-editor``;
- kubeflow/dashboard components/profile-controller/controllers/profile_controller.go: the profile
  controller binds ``default-editor`` to the ClusterRole ``kubeflow-edit`` in each profile namespace;
- kubeflow/manifests v1.11.0 common/kubeflow-roles/base/cluster-roles.yaml and kubeflow/pipelines
  2.17.0 .../multi-user/view-edit-cluster-roles.yaml: the ClusterRoles aggregated into ``kubeflow-edit``.

From those, the account bertops tells users to run as must hold what the driver, launcher and
executor call, and every permission of ``pipeline-runner`` but the few, listed below, that cannot
matter to a bertops run. The chart and the kustomize manifests must bind bertops's Roles (with the
rules in bertops/cluster.py) to exactly that account, in the Role's own namespace.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import k8s_tools
import pytest
import yaml

from bertops import cluster

pytestmark = pytest.mark.cluster

REPO_ROOT = Path(__file__).resolve().parents[1]
UPSTREAM = Path(__file__).resolve().parent / "upstream"
CHART = REPO_ROOT / "helm" / "bertops"
Rule = dict[str, list[str]]
# What a "*" verb stands for on the resources these roles name.
VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")

# The Kubernetes API calls of a KFP 2.17.0 run's own machinery, read in kubeflow/pipelines@2.17.0:
NEEDED_BY_KFP = {
    # backend/src/v2/component/launcher_v2.go and driver/k8s.go: CoreV1().Pods(ns).Get (own pod).
    ("", "pods", "get"),
    # backend/src/v2/config/env.go: CoreV1().ConfigMaps(ns).Get (the kfp-launcher ConfigMap).
    ("", "configmaps", "get"),
    # backend/src/v2/objectstore/object_store.go: CoreV1().Secrets(ns).Get (artifact store credentials).
    ("", "secrets", "get"),
    # backend/src/v2/driver/k8s.go: PersistentVolumeClaims(ns).Create/Get/Delete (kfp-kubernetes PVCs).
    ("", "persistentvolumeclaims", "create"),
    ("", "persistentvolumeclaims", "get"),
    ("", "persistentvolumeclaims", "delete"),
    # argoproj/argo-workflows docs/workflow-rbac.md: "The minimum for the executor to function".
    ("argoproj.io", "workflowtaskresults", "create"),
    ("argoproj.io", "workflowtaskresults", "patch"),
}

# pipeline-runner's permissions that default-editor does not get from the upstream roles above,
# and why a bertops run does not miss them. Exact: a change upstream fails the test.
NOT_HELD_BY_DEFAULT_EDITOR = {
    # A namespaced Role cannot grant a cluster-scoped resource: pipeline-runner does not hold it either.
    ("", "persistentvolumes"): set(VERBS),
    # The core group has no deployments or replicasets (they are apps/): the rule grants nothing there.
    ("", "deployments"): set(VERBS),
    ("", "replicasets"): set(VERBS),
    # pods/log only answers get, which default-editor holds.
    ("", "pods/log"): {"create", "update", "patch", "delete", "deletecollection"},
    # kfp-kubernetes volume snapshots: not called by the 2.17.0 v2 driver, not used by bertops.
    ("snapshot.storage.k8s.io", "volumesnapshots"): {"create", "delete", "get"},
    # KFP v1-era components (TFJob, Katib launchers, Seldon): bertops's one kubeflow.org resource,
    # pytorchjobs, comes with the bertops-training-job-manager Role.
    ("kubeflow.org", "*"): set(VERBS),
    ("machinelearning.seldon.io", "seldondeployments"): set(VERBS),
    # The KFP API server's optional MLflow plugin checks these; pods (and bertops's steps) never do.
    ("mlflow.kubeflow.org", "experiments"): {"get", "list", "create", "update"},
}


def upstream(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((UPSTREAM / name).read_text()) if doc]


def aggregated_rules(
    cluster_roles: dict[str, dict[str, Any]], name: str, seen: frozenset[str] = frozenset()
) -> list[Rule]:
    """A ClusterRole's rules after Kubernetes' aggregation controller: its own, plus those of every
    ClusterRole whose labels match one of its ``aggregationRule`` selectors, recursively."""
    role = cluster_roles[name]
    rules: list[Rule] = list(role.get("rules") or [])
    for selector in (role.get("aggregationRule") or {}).get("clusterRoleSelectors", []):
        for other, obj in cluster_roles.items():
            labels = obj["metadata"].get("labels", {})
            if other not in seen | {name} and selector["matchLabels"].items() <= labels.items():
                rules += aggregated_rules(cluster_roles, other, seen | {name})
    return rules


def allows(rules: list[Rule], group: str, resource: str, verb: str) -> bool:
    """Kubernetes' RBAC rule match (no resourceNames in these roles)."""
    return any(
        (group in r["apiGroups"] or "*" in r["apiGroups"])
        and (resource in r["resources"] or "*" in r["resources"])
        and (verb in r["verbs"] or "*" in r["verbs"])
        for r in rules
    )


def pipeline_runner_rules() -> list[Rule]:
    (role,) = upstream("kfp-2.17.0-pipeline-runner-role.yaml")
    assert (role["kind"], role["metadata"]["name"]) == ("Role", cluster.STANDALONE_SERVICE_ACCOUNT)
    return role["rules"]


def default_editor_rules() -> list[Rule]:
    """What the profile controller's RoleBinding gives default-editor in a profile namespace."""
    (binding,) = upstream("kubeflow-dashboard-profile-controller-default-editor.yaml")
    assert binding["subjects"][0]["name"] == cluster.PIPELINE_SERVICE_ACCOUNT
    roles = {
        obj["metadata"]["name"]: obj
        for name in (
            "kubeflow-manifests-v1.11.0-kubeflow-roles.yaml",
            "kfp-2.17.0-multi-user-view-edit-cluster-roles.yaml",
        )
        for obj in upstream(name)
    }
    return aggregated_rules(roles, binding["roleRef"]["name"])


BERTOPS_RULES = [rule for role in cluster.ROLES for rule in cluster.role_rules(role)]
ACCOUNT_RULES = {"multi-user": default_editor_rules, "standalone": pipeline_runner_rules}


def test_multi_user_kfp_runs_pods_as_the_account_bertops_submits_with() -> None:
    """The API server's default account in multi-user mode (params.env, read by
    backend/src/apiserver/template/template.go setDefaultServiceAccount) is the one bertops names,
    and ``bertops submit`` and the submit helper use it."""
    import inspect

    from cli.main import build_parser
    from pipelines.submit import submit

    params = dict(
        line.split("=", 1)
        for line in (UPSTREAM / "kfp-2.17.0-multi-user-api-service-params.env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert params["DEFAULTPIPELINERUNNERSERVICEACCOUNT"] == cluster.PIPELINE_SERVICE_ACCOUNT
    args = build_parser().parse_args(["submit", "--host", "http://kfp.example"])
    assert args.service_account == cluster.PIPELINE_SERVICE_ACCOUNT
    assert inspect.signature(submit).parameters["service_account"].default == cluster.PIPELINE_SERVICE_ACCOUNT


@pytest.mark.parametrize("mode", cluster.RUN_IDENTITIES)
@pytest.mark.parametrize("needed", sorted(NEEDED_BY_KFP), ids="/".join)
def test_the_run_account_may_do_what_the_kfp_driver_launcher_and_executor_do(
    mode: str, needed: tuple[str, str, str]
) -> None:
    assert allows(pipeline_runner_rules(), *needed), "not in upstream's pipeline-runner: the list above is wrong"
    assert allows(ACCOUNT_RULES[mode]() + BERTOPS_RULES, *needed)


def test_default_editor_holds_every_permission_of_pipeline_runner_but_the_listed_ones() -> None:
    held = default_editor_rules() + BERTOPS_RULES
    missing: dict[tuple[str, str], set[str]] = {}
    for rule in pipeline_runner_rules():
        verbs = VERBS if rule["verbs"] == ["*"] else rule["verbs"]
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in verbs:
                    if not allows(held, group, resource, verb):
                        missing.setdefault((group, resource), set()).add(verb)
    assert missing == NOT_HELD_BY_DEFAULT_EDITOR


def test_the_training_role_may_delete_a_failed_job() -> None:
    """A retried finetune task deletes the failed TrainJob/PyTorchJob of its earlier attempt."""
    for group, resource in (("trainer.kubeflow.org", "trainjobs"), ("kubeflow.org", "pytorchjobs")):
        for verb in ("get", "create", "delete"):
            assert allows(cluster.role_rules(cluster.TRAINING_ROLE), group, resource, verb)


def docs_overlay(namespace: str, account: str) -> str:
    """The kustomization docs/cluster/install.md gives for another namespace or account, filled in."""
    text = (REPO_ROOT / "docs" / "cluster" / "install.md").read_text()
    (block,) = re.findall(r"```yaml\n(# manifests/overlays/mine/kustomization\.yaml\n.*?)```", text, re.S)
    return block.replace(cluster.PROFILE_NAMESPACE, namespace).replace(cluster.PIPELINE_SERVICE_ACCOUNT, account)


def rendered(source: str, namespace: str, account: str, tmp_path: Path) -> list[dict[str, Any]]:
    if source == "helm":
        return k8s_tools.render_helm(CHART, namespace, {"pipeline": {"serviceAccount": account}})
    if source == "docs-overlay":
        shutil.copytree(REPO_ROOT / "manifests", tmp_path / "manifests")
        mine = tmp_path / "manifests" / "overlays" / "mine"
        mine.mkdir()
        (mine / "kustomization.yaml").write_text(docs_overlay(namespace, account))
        return k8s_tools.render_kustomize(mine)
    assert (namespace, account) == cluster.RUN_IDENTITIES["multi-user"], "the overlays are the multi-user default"
    return k8s_tools.render_kustomize(REPO_ROOT / "manifests" / "overlays" / source)


CASES = [
    ("helm", *cluster.RUN_IDENTITIES["multi-user"]),
    ("helm", *cluster.RUN_IDENTITIES["standalone"]),
    ("helm", "team-a", cluster.PIPELINE_SERVICE_ACCOUNT),
    ("gpu", *cluster.RUN_IDENTITIES["multi-user"]),
    ("cpu", *cluster.RUN_IDENTITIES["multi-user"]),
    ("docs-overlay", "team-a", cluster.PIPELINE_SERVICE_ACCOUNT),
    ("docs-overlay", *cluster.RUN_IDENTITIES["standalone"]),
]


@pytest.mark.parametrize(("source", "namespace", "account"), CASES)
def test_roles_are_bound_to_the_run_account_in_their_own_namespace(
    source: str, namespace: str, account: str, tmp_path: Path
) -> None:
    objects = rendered(source, namespace, account, tmp_path)
    assert not [o for o in objects if o["kind"] in ("ClusterRole", "ClusterRoleBinding", "Namespace")]
    roles = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Role"}
    bindings = {o["metadata"]["name"]: o for o in objects if o["kind"] == "RoleBinding"}
    assert set(roles) == set(bindings) == {role.name for role in cluster.ROLES}
    for spec in cluster.ROLES:
        role, binding = roles[spec.name], bindings[spec.name]
        assert role["rules"] == cluster.role_rules(spec)
        assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == namespace
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": spec.name}
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": namespace}]
    # bertops creates only the model server's account; the run's account is Kubeflow's.
    accounts = [o["metadata"]["name"] for o in objects if o["kind"] == "ServiceAccount"]
    assert accounts == [cluster.SERVING_SERVICE_ACCOUNT]
    assert {o["metadata"]["namespace"] for o in objects} == {namespace}


# The verb RBAC checks for each HTTP method of a request on one named object or a collection.
VERB_OF = {"GET": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


def requested(path: str, method: str) -> tuple[str, str, str]:
    """``(apiGroup, resource, verb)`` that the API server authorizes for a request on ``path``."""
    parts = path.strip("/").split("/")
    group, rest = ("", parts[2:]) if parts[0] == "api" else (parts[1], parts[3:])
    assert rest[0] == "namespaces", path
    return group, rest[2], VERB_OF[method]


def lease_requests() -> list[tuple[str, str, str]]:
    """What the Lease of bertops/lease.py asks the API server: create a missing one, take over an
    expired one (a replace), release (a replace); recorded from the kubernetes client's requests."""
    from support import RecordedTransport, client_with

    from bertops.lease import lease_lock

    lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "l", "resourceVersion": "1"}}
    expired = lease | {"spec": {"holderIdentity": "dead", "renewTime": "2020-01-01T00:00:00.000000Z"}}
    seen = []
    for first in ((404, {"kind": "Status", "code": 404}), (200, expired)):
        transport = RecordedTransport({"GET": [first], "POST": [(201, lease)], "PUT": [(200, lease)]})
        with lease_lock(client_with(transport), cluster.PROFILE_NAMESPACE, "l", "test", 60, 5, 0):
            pass
        seen += [requested(r.path, r.method) for r in transport.requests]
    return seen


def test_the_run_account_may_take_and_give_back_the_models_lease() -> None:
    """Register and deploy serialize on a Lease: the Role grants every call bertops/lease.py makes."""
    calls = set(lease_requests())
    assert calls == {("coordination.k8s.io", "leases", v) for v in ("get", "create", "update")}
    for call in calls:
        assert allows(cluster.role_rules(cluster.DEPLOY_ROLE), *call), call
