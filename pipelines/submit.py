"""Submit the compiled pipeline to a Kubeflow Pipelines server (what CI runs), and wait for the run."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from bertops.cluster import PIPELINE_SERVICE_ACCOUNT, PROFILE_NAMESPACE
from bertops.errors import BertopsError

# KFP's runtime states after which a run changes no more (kfp_server_api V2beta1RuntimeState).
FINAL_STATES = ("SUCCEEDED", "SKIPPED", "FAILED", "CANCELED")
POLL_SECONDS = 15.0


def _client(host: str, namespace: str) -> Any:
    """``kfp.Client`` for ``host``, with the bearer token in ``$KFP_TOKEN`` if the server needs one."""
    import warnings

    import kfp

    warnings.filterwarnings("ignore", message="This client only works with Kubeflow Pipeline", category=FutureWarning)
    return kfp.Client(host=host, existing_token=os.environ.get("KFP_TOKEN"), namespace=namespace)


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def submit(
    host: str,
    package: Path,
    arguments: dict[str, Any],
    experiment: str = "bertops",
    run_name: str | None = None,
    service_account: str = PIPELINE_SERVICE_ACCOUNT,
    namespace: str = PROFILE_NAMESPACE,
) -> str:
    """Create a run of ``package`` on the KFP server at ``host``; returns the run id.

    In multi-user Kubeflow the experiment and the run belong to the profile ``namespace``
    (KFP refuses a run without one there); standalone KFP ignores it.

    The run's pods, KFP's driver and launcher among them, run as ``service_account``: it needs
    what KFP's own pipeline-runner role grants, and the Roles bertops.cluster binds to it.
    The bearer token, if the server needs one, comes from ``$KFP_TOKEN``.
    """
    try:
        result = _client(host, namespace).create_run_from_pipeline_package(
            str(package),
            arguments=arguments,
            run_name=run_name,
            experiment_name=experiment,
            namespace=namespace,
            service_account=service_account or None,
        )
    except Exception as exc:
        raise BertopsError(f"cannot submit to KFP at {host}: {_first_line(exc)}") from exc
    return str(result.run_id)


def wait_for_run(
    host: str, run_id: str, namespace: str = PROFILE_NAMESPACE, timeout: float = 0, poll: float = POLL_SECONDS
) -> str:
    """Poll run ``run_id`` until it reaches a final state; returns it when the run succeeded.

    ``BertopsError`` when it failed or was canceled (with the run's error and its failed tasks),
    when ``timeout`` seconds (0: no limit) pass first, or when the server cannot be asked.
    """
    client = _client(host, namespace)
    deadline = time.monotonic() + timeout if timeout > 0 else None
    while True:
        try:
            run = client.get_run(run_id)
        except Exception as exc:
            raise BertopsError(f"cannot read run {run_id} from KFP at {host}: {_first_line(exc)}") from exc
        state = str(run.state or "").upper()
        if state in FINAL_STATES:
            break
        if deadline is not None and time.monotonic() >= deadline:
            raise BertopsError(f"run {run_id} still {state or 'not started'} after {timeout:g} s (--wait-timeout)")
        time.sleep(poll)
    if state in ("SUCCEEDED", "SKIPPED"):
        return state
    raise BertopsError(f"run {run_id} {state}: {run_failure(run)}")


def run_failure(run: Any) -> str:
    """What a failed run says about why: its error message and the tasks that failed, by display name."""
    message = getattr(run.error, "message", None) or "no error message"
    details = run.run_details.task_details if run.run_details else None
    failed = [
        f"{task.display_name}: {getattr(task.error, 'message', None) or 'failed'}"
        for task in details or []
        if str(task.state or "").upper() == "FAILED"
    ]
    return message + (f" (failed tasks: {'; '.join(failed)})" if failed else "")
