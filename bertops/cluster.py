"""Who runs what, where, on a cluster: the one table of namespaces, service accounts, Roles and Secrets.

Kubeflow's multi-user mode (its default install) runs every pipeline pod, the KFP driver and
launcher included, in the user's profile namespace as the profile's ``default-editor`` service
account. bertops keeps everything of a run in that one namespace: its Roles are bound to that
account there, its Secrets live there, and the InferenceService is created there. A standalone
KFP install runs pods in ``kubeflow`` as ``pipeline-runner``; the same table holds with those
two names swapped (``bertops compile --target cluster --namespace kubeflow``, chart value
``pipeline.serviceAccount=pipeline-runner``).

README, docs/cluster/, the chart, the kustomize base and the pipeline all take their names
from here; ``python -m bertops.cluster`` prints the table that docs/cluster/README.md embeds, and the
tests check every name and namespace in those files against it.
"""

from __future__ import annotations

from dataclasses import dataclass

# Kubeflow's default profile namespace (kubeflow/manifests: the example user's profile).
PROFILE_NAMESPACE = "kubeflow-user-example-com"
# The account KFP runs a multi-user profile's pipeline pods as (Kubeflow's profile controller creates it).
PIPELINE_SERVICE_ACCOUNT = "default-editor"
# Standalone KFP (no profiles): pods run in this namespace as this account.
STANDALONE_NAMESPACE = "kubeflow"
STANDALONE_SERVICE_ACCOUNT = "pipeline-runner"
# The model server's account: no API token, lists the storage Secret for KServe's storage initializer.
SERVING_SERVICE_ACCOUNT = "bertops-serving"


@dataclass(frozen=True)
class SecretSpec:
    """A Secret the run needs in its namespace: which keys, which steps read it, and why."""

    name: str
    keys: tuple[str, ...]
    readers: tuple[str, ...]
    purpose: str


@dataclass(frozen=True)
class RoleSpec:
    """A namespaced Role of bertops, bound to the pipeline's service account."""

    name: str
    rules: tuple[tuple[str, str, tuple[str, ...]], ...]  # (apiGroup, resource, verbs)
    purpose: str


DVC_SECRET = SecretSpec(
    "bertops-dvc-s3",
    ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"),
    ("validate",),
    "DVC remote on S3/MinIO: the validate step pulls the pinned data",
)
ARTIFACT_SECRET = SecretSpec(
    "bertops-s3",
    ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_S3_ENDPOINT_URL"),
    ("gate", "register", f"storage-initializer ({SERVING_SERVICE_ACCOUNT})"),
    "MLflow's artifact store: the gate downloads the champion, register uploads the winner, "
    "KServe's storage initializer downloads the served model (with serving.kserve.io/s3-* annotations)",
)
SECRETS = (DVC_SECRET, ARTIFACT_SECRET)

DEPLOY_ROLE = RoleSpec(
    "bertops-inferenceservice-manager",
    (
        ("serving.kserve.io", "inferenceservices", ("get", "list", "watch", "create", "patch", "delete")),
        ("coordination.k8s.io", "leases", ("get", "create", "update")),
    ),
    "the deploy step applies, watches and rolls back InferenceServices; register and deploy take the "
    "model's Lease (one run at a time moves the champion and changes the InferenceService)",
)
TRAINING_ROLE = RoleSpec(
    "bertops-training-job-manager",
    (
        ("trainer.kubeflow.org", "trainjobs", ("get", "create", "delete")),
        ("kubeflow.org", "pytorchjobs", ("get", "create", "delete")),
    ),
    "launcher=TrainJob/PyTorchJob: the finetune step submits, polls and cleans up a failed job",
)
ROLES = (DEPLOY_ROLE, TRAINING_ROLE)

# Where a run's pods run and as whom: Kubeflow's multi-user mode (the default) and standalone KFP.
RUN_IDENTITIES = {
    "multi-user": (PROFILE_NAMESPACE, PIPELINE_SERVICE_ACCOUNT),
    "standalone": (STANDALONE_NAMESPACE, STANDALONE_SERVICE_ACCOUNT),
}


def role_rules(role: RoleSpec) -> list[dict[str, list[str]]]:
    """``role``'s rules as a Kubernetes Role writes them: one rule per API group and resource."""
    return [
        {"apiGroups": [group], "resources": [resource], "verbs": list(verbs)} for group, resource, verbs in role.rules
    ]


def table(namespace: str = PROFILE_NAMESPACE, service_account: str = PIPELINE_SERVICE_ACCOUNT) -> str:
    """The Markdown table of every account, Role binding and Secret a run needs, all in ``namespace``."""
    rows = [
        "| kind | name | namespace | keys / rules | used by |",
        "|---|---|---|---|---|",
        f"| ServiceAccount | `{service_account}` | `{namespace}` | (Kubeflow's) | every pipeline pod, KFP driver and launcher |",
        f"| ServiceAccount | `{SERVING_SERVICE_ACCOUNT}` | `{namespace}` | lists `{ARTIFACT_SECRET.name}` | the model server |",
    ]
    for role in ROLES:
        rules = "; ".join(f"{res}.{group}: {', '.join(verbs)}" for group, res, verbs in role.rules)
        rows.append(
            f"| Role + RoleBinding to `{service_account}` | `{role.name}` | `{namespace}` | {rules} | {role.purpose} |"
        )
    for secret in SECRETS:
        keys = ", ".join(f"`{k}`" for k in secret.keys)
        rows.append(f"| Secret | `{secret.name}` | `{namespace}` | {keys} | {', '.join(secret.readers)} |")
    return "\n".join(rows)


if __name__ == "__main__":
    import sys

    # `python -m bertops.cluster standalone` prints the standalone KFP variant.
    print(table(*RUN_IDENTITIES[sys.argv[1] if len(sys.argv) > 1 else "multi-user"]))
