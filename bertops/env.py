"""The process-wide settings every bertops entry point applies first: one place, not one per entry point.

Entry points are the ``bertops`` command, each pipeline step (``bertops.step``), the fine-tuning
loop's own command and the model server. Each calls ``configure_process`` before any work.
"""

from __future__ import annotations

import logging
import os

# Offline by default (no machine of this project reaches a model hub); a user with a hub sets
# HF_HUB_OFFLINE=0 and the real download path runs. The rest keeps third-party telemetry and
# fork warnings out of runs.
ENV_DEFAULTS: dict[str, str] = {
    "HF_HUB_OFFLINE": "1",
    "DVC_NO_ANALYTICS": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "TOKENIZERS_PARALLELISM": "false",
}
# Libraries that log every request or migration at INFO: a run's log would be mostly theirs.
NOISY_LOGGERS = ("great_expectations", "mlflow", "alembic", "httpx")


def apply_env_defaults() -> None:
    """Set each of ``ENV_DEFAULTS`` unless the environment already sets it."""
    for name, value in ENV_DEFAULTS.items():
        os.environ.setdefault(name, value)


def quiet_noisy_loggers() -> None:
    """Third-party loggers to WARNING; urllib3 to ERROR (its retries are noise, the final failure is reported)."""
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.ERROR)


def configure_process() -> None:
    """Environment defaults and quiet third-party loggers, for an entry point to call before any work."""
    apply_env_defaults()
    quiet_noisy_loggers()
