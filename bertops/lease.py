"""One holder at a time on a cluster: a Kubernetes Lease (coordination.k8s.io/v1) per model.

The cluster counterpart of ``bertops.state_lock``: two pipeline runs (or a run and ``bertops
models promote --deploy-target cluster``) must not interleave moving the ``champion`` alias and
changing the InferenceService. Pods share no file system, so the lock is a Lease in the
InferenceService's namespace, taken with the API server's optimistic concurrency: a create
fails with 409 when another holder created it first, and a replace carries the
``resourceVersion`` that was read, so it fails with 409 when anyone changed the Lease since.

A holder that dies keeps the Lease until ``leaseDurationSeconds`` after its ``renewTime``; the
next run then takes it over. Holders do not renew: each sets the duration to the longest its
critical section can take, so a live holder never loses it and a dead one blocks for at most
that long. Expiry is judged by the cluster's clocks (``renewTime`` against this pod's time).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from bertops.errors import BertopsError
from bertops.k8s import api_error, wait_until

if TYPE_CHECKING:
    from kubernetes.client import ApiClient, CoordinationV1Api, V1Lease

log = logging.getLogger(__name__)

# A create or replace that lost the race to another holder.
CONFLICT = 409


def lease_name(model_name: str) -> str:
    """The Lease that serializes changes to ``model_name``'s champion and InferenceService."""
    return f"bertops-{model_name}"


def holder_identity(what: str) -> str:
    """Who takes a Lease: what it does, the pod (its host name) and the process."""
    return f"{what} ({socket.gethostname()} pid {os.getpid()})"


def live_holder(lease: V1Lease, now: datetime) -> str:
    """The Lease's holder while its hold lasts; '' when it is free or expired."""
    spec = lease.spec
    if spec is None or not spec.holder_identity:
        return ""
    since = spec.renew_time or spec.acquire_time
    if since is None or since + timedelta(seconds=spec.lease_duration_seconds or 0) <= now:
        return ""
    return str(spec.holder_identity)


def _read(coordination: CoordinationV1Api, namespace: str, name: str) -> V1Lease | None:
    from kubernetes.client.exceptions import ApiException

    try:
        return coordination.read_namespaced_lease(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise BertopsError(f"cannot read Lease {namespace}/{name}: {api_error(exc)}") from exc


def _claim(
    coordination: CoordinationV1Api, namespace: str, name: str, found: V1Lease | None, holder: str, seconds: int
) -> V1Lease | None:
    """Create the Lease or replace ``found`` with this holder; None when another holder won the race (409)."""
    from kubernetes.client import V1Lease, V1LeaseSpec, V1ObjectMeta
    from kubernetes.client.exceptions import ApiException

    now = datetime.now(UTC)
    transitions = (found.spec.lease_transitions or 0) + 1 if found is not None and found.spec else 0
    spec = V1LeaseSpec(
        holder_identity=holder,
        lease_duration_seconds=seconds,
        acquire_time=now,
        renew_time=now,
        lease_transitions=transitions,
    )
    try:
        if found is None:
            body = V1Lease(metadata=V1ObjectMeta(name=name, namespace=namespace), spec=spec)
            return coordination.create_namespaced_lease(namespace, body)
        # The resourceVersion read makes this a compare-and-set: a change since then answers 409.
        return coordination.replace_namespaced_lease(name, namespace, V1Lease(metadata=found.metadata, spec=spec))
    except ApiException as exc:
        if exc.status == CONFLICT:
            return None
        raise BertopsError(f"cannot take Lease {namespace}/{name}: {api_error(exc)}") from exc


def _release(coordination: CoordinationV1Api, namespace: str, name: str, held: V1Lease) -> None:
    """Give the Lease up (no holder); a Lease someone took over meanwhile is theirs, left alone."""
    from kubernetes.client import V1Lease, V1LeaseSpec
    from kubernetes.client.exceptions import ApiException

    spec = V1LeaseSpec(lease_transitions=held.spec.lease_transitions if held.spec else None)
    try:
        # The resourceVersion of this holder's own write: a Lease changed since then is not released.
        coordination.replace_namespaced_lease(name, namespace, V1Lease(metadata=held.metadata, spec=spec))
    except ApiException as exc:
        log.warning("could not release Lease %s/%s: %s", namespace, name, api_error(exc))


@contextmanager
def lease_lock(
    api: ApiClient,
    namespace: str,
    name: str,
    what: str,
    hold_seconds: int,
    timeout: float,
    poll_interval: float = 2.0,
) -> Iterator[None]:
    """Hold Lease ``namespace/name`` while the block runs, for at most ``hold_seconds``.

    A Lease held by someone else is waited for (logged once, naming the holder); after
    ``timeout`` seconds ``BertopsError`` names the holder.
    """
    from kubernetes.client import CoordinationV1Api

    coordination = CoordinationV1Api(api)
    holder = holder_identity(what)
    announced: list[str] = []

    def attempt() -> tuple[Any, str]:
        found = _read(coordination, namespace, name)
        busy = live_holder(found, datetime.now(UTC)) if found is not None else ""
        if busy:
            if not announced:
                log.warning("waiting for another bertops run (%s) that holds Lease %s/%s", busy, namespace, name)
                announced.append(busy)
            return None, f"held by {busy}"
        taken = _claim(coordination, namespace, name, found, holder, hold_seconds)
        return taken, "" if taken is not None else "another run took it first"

    def gave_up(reason: str) -> Exception:
        return BertopsError(
            f"gave up after {timeout:g}s waiting for Lease {namespace}/{name} ({reason}); "
            "let that run finish or stop it, then run again"
        )

    held = wait_until(attempt, timeout, poll_interval, gave_up)
    try:
        yield
    finally:
        _release(coordination, namespace, name, held)
