"""A process killed in the middle of registration leaves no partial version behind."""

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bertops.registry import CHAMPION_ALIAS, open_client
from components.register.register import Submission, register_model

LINEAGE = {"data_version": "md5:x", "git_commit": "c", "base_model": "tiny", "pipeline_run": "r"}

# The registering process dies (SIGKILL: no cleanup, no except, no finally) the moment it calls
# the named MlflowClient method; everything before that point ran for real.
SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from mlflow import MlflowClient
    from components.register.register import Submission, register_model

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    setattr(MlflowClient, sys.argv[3], die)
    register_model(Submission(Path(sys.argv[1]), "crash", {"test_accuracy": 0.9}, {}, {
        "data_version": "md5:x", "git_commit": "c", "base_model": "tiny", "pipeline_run": "killed"}), True, sys.argv[2])
    """
)


def _register_and_die_at(method: str, model: Path, state: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(model), str(state), method], capture_output=True, timeout=300
    )
    assert result.returncode == -signal.SIGKILL, result.stderr.decode()[-2000:]


@pytest.mark.parametrize("method", ["log_artifacts", "create_model_version"])
def test_kill_before_the_version_exists_leaves_no_version(method: str, trained_tiny: Path, state_dir: Path) -> None:
    register_model(Submission(trained_tiny, "crash", {"test_accuracy": 0.8}, {}, LINEAGE), True, str(state_dir))
    _register_and_die_at(method, trained_tiny, state_dir)
    client = open_client("", state_dir)
    versions = client.search_model_versions("name='crash'")
    assert [str(v.version) for v in versions] == ["1"]
    assert str(client.get_model_version_by_alias("crash", CHAMPION_ALIAS).version) == "1"
    # The registry is still usable: the next registration is version 2, complete.
    again = register_model(
        Submission(trained_tiny, "crash", {"test_accuracy": 0.85}, {}, LINEAGE), False, str(state_dir)
    )
    assert again.version == "2"
    assert client.get_model_version("crash", "2").tags["metric.test_accuracy"] == "0.850000"


def test_kill_before_the_alias_moves_leaves_a_complete_version_and_the_old_champion(
    trained_tiny: Path, state_dir: Path
) -> None:
    register_model(Submission(trained_tiny, "crash", {"test_accuracy": 0.8}, {}, LINEAGE), True, str(state_dir))
    _register_and_die_at("set_registered_model_alias", trained_tiny, state_dir)
    client = open_client("", state_dir)
    second = client.get_model_version("crash", "2")
    assert second.tags["pipeline_run"] == "killed" and second.tags["metric.test_accuracy"] == "0.900000"
    assert "Model card: crash" in (second.description or "")
    assert str(client.get_model_version_by_alias("crash", CHAMPION_ALIAS).version) == "1"
