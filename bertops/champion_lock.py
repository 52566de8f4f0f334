"""The rule that keeps concurrent runs from undoing each other: compare-and-set on the champion.

A run's steps run in separate processes (pods on a cluster), so nothing holds a lock from the
gate to the deploy. Instead:

- the gate records the champion version it compared against (``Decision.champion_version``);
- register moves the ``champion`` alias only if the champion is still that version, checked and
  set under the model's lock; otherwise the version is registered, not promoted, and says why;
- deploy serves a version only if it is still the champion, checked under the same lock that
  covers starting the new server (or applying the InferenceService), saving the endpoint record
  and stopping the old server.

So each change of what serves is one short critical section, and any order of two runs' sections
ends with the champion, the endpoint record and the running server in agreement. The lock is
the state directory's lock file (``bertops.state_lock``) locally, and a Kubernetes Lease
(``bertops.lease``) in the InferenceService's namespace when the endpoint is on a cluster.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from bertops.registry import CHAMPION_ALIAS
from bertops.state_lock import DEFAULT_TIMEOUT, state_lock

if TYPE_CHECKING:
    from kubernetes.client import ApiClient
    from mlflow import MlflowClient

# How long a holder may keep the Lease: the longest critical section, a deploy that waits for
# Ready (900 s by default) and then rolls back, with room to spare.
CLUSTER_HOLD_SECONDS = 1500
# How long a run waits for another run's Lease before it fails: past one full hold.
CLUSTER_WAIT_SECONDS = 1800.0


def champion_lock(
    model_name: str,
    state_dir: str,
    what: str,
    deploy_target: str = "local",
    namespace: str = "",
    api: ApiClient | None = None,
) -> AbstractContextManager[None]:
    """The lock for changing what ``model_name`` serves: a Lease on a cluster, else the state directory's lock file.

    ``what`` (``register news v3``) is what a waiting run is told the holder does.
    """
    if deploy_target == "cluster":
        from bertops.k8s import load_api_client
        from bertops.lease import lease_lock, lease_name

        return lease_lock(
            api or load_api_client(),
            namespace,
            lease_name(model_name),
            what,
            CLUSTER_HOLD_SECONDS,
            CLUSTER_WAIT_SECONDS,
        )
    return state_lock(state_dir, model_name, what, DEFAULT_TIMEOUT)


def current_champion(client: MlflowClient, model_name: str) -> str:
    """The version that holds the ``champion`` alias now; '' when there is none (or no such model)."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(model_name, CHAMPION_ALIAS).version)
    except MlflowException:
        return ""


def champion_changed(expected: str, current: str) -> str:
    """Why a promotion gated against champion ``expected`` may not go ahead now that it is ``current``; '' if it may."""
    if expected == current:
        return ""
    before, now = expected or "none", current or "none"
    return f"champion changed from {before} to {now} during this run; rerun to gate against {now}"


def not_champion(client: MlflowClient, model_name: str, version: str) -> str:
    """Why ``version`` may not be deployed as the champion; '' when it holds the alias."""
    current = current_champion(client, model_name)
    if current == str(version):
        return ""
    return f"version {version} is no longer the champion ({current or 'none'} is): another run or a promote moved it"
