"""Credentials in URLs stay out of the run log and the terminal (issue 14, item 10)."""

from __future__ import annotations

import io
import os
import subprocess
import sys

from bertops.redact import redact_credentials
from pipelines.run_local import _StepLogFilter

TRACKING_URI = "https://alice:s3cr3t@mlflow.example/api?token=abc123&experiment=7"


def test_userinfo_and_secret_query_values_are_masked_and_nothing_else() -> None:
    assert redact_credentials(TRACKING_URI) == "https://***@mlflow.example/api?token=***&experiment=7"
    assert redact_credentials("postgresql://mlflow:pw@db:5432/mlflow") == "postgresql://***@db:5432/mlflow"
    assert redact_credentials("https://ghp_tok@github.com/o/r") == "https://***@github.com/o/r"
    signed = "https://s3.example/b/k?X-Amz-Date=1&X-Amz-Signature=f00&X-Amz-Security-Token=t"
    assert (
        redact_credentials(signed) == "https://s3.example/b/k?X-Amz-Date=1&X-Amz-Signature=***&X-Amz-Security-Token=***"
    )
    for kept in ("sqlite:////home/u/.bertops/registry/mlflow.db", "s3://bucket/runs/a@b", "user@example.com"):
        assert redact_credentials(kept) == kept


def test_the_run_log_and_the_terminal_get_the_tracking_uri_without_its_credentials() -> None:
    log, terminal = io.StringIO(), io.StringIO()
    stdout = _StepLogFilter(log, terminal, verbose=True)
    line = f'[KFP Executor] Got executor_input: {{"parameterValues": {{"tracking_uri": "{TRACKING_URI}"}}}}\n'
    # The executor's output arrives in pieces; one ends inside the password.
    stdout.write(line[:60])
    stdout.write(line[60:])
    for written in (log.getvalue(), terminal.getvalue()):
        assert "s3cr3t" not in written and "abc123" not in written
        assert '"tracking_uri": "https://***@mlflow.example/api?token=***&experiment=7"' in written


def test_a_cli_error_naming_the_tracking_uri_hides_its_credentials() -> None:
    # Nothing listens on port 9: the registry cannot be reached, and the error names the URI.
    env = {**os.environ, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    uri = "https://alice:s3cr3t@127.0.0.1:9/?token=abc123"
    result = subprocess.run(
        [sys.executable, "-m", "cli", "models", "list", "--tracking-uri", uri],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 2
    assert "https://***@127.0.0.1:9/?token=***" in result.stderr
    assert "s3cr3t" not in result.stderr + result.stdout and "abc123" not in result.stderr + result.stdout
