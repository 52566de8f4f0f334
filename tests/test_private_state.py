"""Local state is private (issue 14, item 10): after a real registry write and an endpoint record,
the state dir is 0700 and the registry database and the record 0600; older open state is
tightened when opened; a state dir opened for the docker runner's image user stays shared."""

from __future__ import annotations

import time
from pathlib import Path

from bertops import endpoints
from bertops.endpoints import Endpoint
from bertops.registry import open_client


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def _write_state(state: Path, model: str) -> None:
    """A real registry write (a registered model) and an endpoint record."""
    open_client("", state).create_registered_model(model)
    endpoints.save(Endpoint(model, "http://127.0.0.1:9", 0, "1", "m", "m.log", time.time()), state)


def test_the_state_dir_the_registry_and_the_records_are_owner_only(tmp_path: Path) -> None:
    state = tmp_path / "state"
    _write_state(state, "news")
    assert _mode(state) == 0o700
    assert _mode(state / "registry") == 0o700
    assert _mode(state / "registry" / "mlflow.db") == 0o600
    assert _mode(state / "endpoints") == 0o700
    assert _mode(state / "endpoints" / "news.json") == 0o600


def test_state_left_open_by_an_older_version_is_tightened_when_opened(tmp_path: Path) -> None:
    state = tmp_path / "state"
    _write_state(state, "news")
    for path, mode in ((state, 0o755), (state / "registry", 0o755), (state / "registry" / "mlflow.db", 0o644)):
        path.chmod(mode)
    (state / "endpoints" / "news.json").chmod(0o644)
    _write_state(state, "sport")
    assert _mode(state) == 0o700
    assert _mode(state / "registry") == 0o700
    assert _mode(state / "registry" / "mlflow.db") == 0o600
    assert _mode(state / "endpoints" / "sport.json") == 0o600


def test_a_state_dir_opened_for_the_docker_runners_image_user_stays_shared(tmp_path: Path) -> None:
    state = tmp_path / "state"
    _write_state(state, "news")
    # What pipelines.run_local._docker_runner does before the steps run as UID 10001.
    for path in (state, *state.rglob("*")):
        path.chmod(path.stat().st_mode | 0o777 if path.is_dir() else path.stat().st_mode | 0o666)
    _write_state(state, "sport")
    assert _mode(state) == 0o777
    assert _mode(state / "registry" / "mlflow.db") == 0o666
    # A record written now is readable by the image's user too.
    assert _mode(state / "endpoints" / "sport.json") & 0o044 == 0o044
