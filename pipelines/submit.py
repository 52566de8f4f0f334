"""Submit the compiled pipeline to a Kubeflow Pipelines server (what CI runs)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from bertops.cluster import PIPELINE_SERVICE_ACCOUNT, PROFILE_NAMESPACE
from bertops.errors import BertopsError


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
    import warnings

    import kfp

    warnings.filterwarnings("ignore", message="This client only works with Kubeflow Pipeline", category=FutureWarning)
    try:
        client = kfp.Client(host=host, existing_token=os.environ.get("KFP_TOKEN"), namespace=namespace)
        result = client.create_run_from_pipeline_package(
            str(package),
            arguments=arguments,
            run_name=run_name,
            experiment_name=experiment,
            namespace=namespace,
            service_account=service_account or None,
        )
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BertopsError(f"cannot submit to KFP at {host}: {first}") from exc
    return str(result.run_id)
