"""Kubernetes client helpers the steps share: a client, the API server's error message, a polling loop.

Imports of the kubernetes client stay inside the functions: most entry points never talk to a
cluster and should not pay for loading it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from bertops.errors import BertopsError

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

T = TypeVar("T")


def load_api_client() -> ApiClient:
    """A client for the cluster this runs in (a pipeline pod), else the current kubeconfig context."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        try:
            config.load_kube_config()
        except config.ConfigException as exc:
            raise BertopsError(
                f"no Kubernetes cluster to deploy to: not in a pod and no usable kubeconfig ({exc})"
            ) from exc
    return client.ApiClient()


def api_error(exc: Exception) -> str:
    """The API server's own message for a failed request (its Status body), else the HTTP reason."""
    body = getattr(exc, "body", None)
    try:
        message = json.loads(body)["message"] if body else None
    except (ValueError, KeyError, TypeError):
        message = None
    return f"{getattr(exc, 'status', '')} {message or getattr(exc, 'reason', exc)}".strip()


def to_manifest(obj: Any) -> dict[str, Any]:
    """The JSON/YAML form of a typed Kubernetes (or KServe, Kubeflow) object, unset fields left out."""
    from kubernetes.client import ApiClient

    return dict(ApiClient().sanitize_for_serialization(obj))


def wait_until(
    probe: Callable[[], tuple[T | None, str]],
    timeout: float,
    poll_interval: float,
    on_timeout: Callable[[str], Exception],
) -> T:
    """Call ``probe`` until it returns a result; raise ``on_timeout(reason)`` once ``timeout`` seconds pass.

    ``probe`` returns ``(result, '')`` when done, else ``(None, why not yet)``; it raises to stop
    waiting early. The last reason goes into the timeout's error.
    """
    deadline = time.monotonic() + timeout
    while True:
        result, reason = probe()
        if result is not None:
            return result
        if time.monotonic() >= deadline:
            raise on_timeout(reason)
        time.sleep(poll_interval)
