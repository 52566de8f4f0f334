"""Three real pipeline runs on the same data: promote, keep the champion, promote a better one."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bertops import endpoints, models
from bertops.config import PipelineConfig
from bertops.registry import CHAMPION_ALIAS, open_client
from pipelines.run_local import run_local

pytestmark = pytest.mark.e2e
NAME = "promo-news"


def _run(bbc_data: Path, state: Path, tiny_model: Path, candidates: list[dict[str, object]]) -> str:
    config = PipelineConfig().replace(
        data_path=str(bbc_data), state_dir=str(state), model_name=NAME, base_model=str(tiny_model),
        max_train_samples=240, max_eval_samples=100, max_length=64, learning_rate=2e-3,
        candidates=json.dumps(candidates), min_accuracy=0.25,
    )  # fmt: skip
    return run_local(config).version


def test_only_a_better_model_moves_champion_and_redeploys(bbc_data: Path, tiny_model: Path, state_dir: Path) -> None:
    client = open_client("", state_dir)

    first = _run(bbc_data, state_dir, tiny_model, [{"id": "short", "max_steps": 60}, {"id": "tiny", "max_steps": 2}])
    assert str(client.get_model_version_by_alias(NAME, CHAMPION_ALIAS).version) == first == "1"
    assert client.get_model_version(NAME, "1").tags["candidate"] == "short"
    served_first = endpoints.get(NAME, state_dir)
    assert served_first.model_version == "1"

    second = _run(bbc_data, state_dir, tiny_model, [{"id": "worse", "max_steps": 3}])
    assert second == "2"
    worse = client.get_model_version(NAME, "2")
    assert worse.tags["promoted"] == "false"
    assert "champion v1" in worse.tags["gate_reason"] or "below the absolute thresholds" in worse.tags["gate_reason"]
    assert str(client.get_model_version_by_alias(NAME, CHAMPION_ALIAS).version) == "1"
    assert endpoints.get(NAME, state_dir) == served_first  # not redeployed

    third = _run(bbc_data, state_dir, tiny_model, [{"id": "longer", "max_steps": 300}])
    better = client.get_model_version(NAME, third)
    assert better.tags["promoted"] == "true" and "beats champion v1" in better.tags["gate_reason"]
    assert str(client.get_model_version_by_alias(NAME, CHAMPION_ALIAS).version) == third == "3"
    served_third = endpoints.get(NAME, state_dir)
    assert served_third.model_version == "3" and served_third.is_ready()
    assert not endpoints.pid_alive(served_first.pid)

    lineage = models.show_version(NAME, "3", str(state_dir))
    for fragment in (
        "[champion]",
        "data_version    untracked",
        "pipeline_run    bertops-text-classifier",
        "test_accuracy",
    ):
        assert fragment in lineage

    # Rollback through the CLI: the champion goes back to 1 and the local endpoint follows it.
    cli = [
        sys.executable,
        "-m",
        "cli",
        "models",
        "rollback",
        "--model-name",
        NAME,
        "--state-dir",
        str(state_dir),
    ]
    result = subprocess.run(cli, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "champion is now version 1" in result.stdout
    assert str(client.get_model_version_by_alias(NAME, CHAMPION_ALIAS).version) == "1"
    assert endpoints.get(NAME, state_dir).model_version == "1"
