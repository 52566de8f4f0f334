"""Submit the compiled pipeline to a Kubeflow Pipelines server (what CI runs), once or on a schedule, and wait for a run."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
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


# KFP's scheduler reads cron with seconds first (github.com/robfig/cron, 6 fields).
CRON_FIELDS = 6


@dataclass(frozen=True)
class RecurringRun:
    """A KFP recurring run of a compiled pipeline: what ``bertops schedule`` sends (``--dry-run`` prints it).

    ``max_concurrency`` 1: a run that outlasts the interval delays the next instead of racing it
    for the champion. ``no_catchup``: after a pause only the latest missed run starts, not one per
    missed interval (retraining on the same data again and again gains nothing).
    """

    name: str
    cron: str
    package: Path
    parameters: dict[str, Any]
    experiment: str = "bertops"
    service_account: str = PIPELINE_SERVICE_ACCOUNT
    namespace: str = PROFILE_NAMESPACE
    max_concurrency: int = 1
    no_catchup: bool = True

    def request(self) -> dict[str, Any]:
        """The keyword arguments of ``kfp.Client.create_recurring_run``, less the experiment's id."""
        return {
            "job_name": self.name,
            "cron_expression": self.cron,
            "max_concurrency": self.max_concurrency,
            "no_catchup": self.no_catchup,
            "params": self.parameters,
            "pipeline_package_path": str(self.package),
            "service_account": self.service_account or None,
        }


def kfp_cron(expression: str) -> str:
    """``expression`` as KFP's scheduler reads it: a 5-field crontab line gets a leading ``0`` seconds field.

    Raises ``BertopsError`` for anything that has neither 5 nor 6 fields.
    """
    fields = expression.split()
    if len(fields) == CRON_FIELDS - 1:
        fields = ["0", *fields]
    if len(fields) != CRON_FIELDS:
        raise BertopsError(
            f"--cron {expression!r} has {len(expression.split())} fields: give 5 (minute hour day month weekday, "
            "e.g. '0 3 * * 1') or KFP's 6 (seconds first, e.g. '0 0 3 * * 1')"
        )
    return " ".join(fields)


def create_recurring_run(host: str, recurring: RecurringRun) -> str:
    """Create ``recurring`` on the KFP server at ``host`` (its experiment too if missing); returns its id.

    The bearer token, if the server needs one, comes from ``$KFP_TOKEN``.
    """
    import warnings

    import kfp

    warnings.filterwarnings("ignore", message="This client only works with Kubeflow Pipeline", category=FutureWarning)
    try:
        client = kfp.Client(host=host, existing_token=os.environ.get("KFP_TOKEN"), namespace=recurring.namespace)
        experiment = client.create_experiment(recurring.experiment, namespace=recurring.namespace)
        result = client.create_recurring_run(experiment.experiment_id, **recurring.request())
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BertopsError(f"cannot create the recurring run on KFP at {host}: {first}") from exc
    return str(result.recurring_run_id)


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
