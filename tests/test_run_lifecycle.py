"""A local run's steps live and die with it, and a killed run resumes its fine-tuning under its name.

The runs here are real processes killed with SIGKILL: ``bertops run`` itself, or a two-line
pipeline run through the same task group (grandchildren, a detached server).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bertops import endpoints
from bertops.config import PipelineConfig
from bertops.errors import BertopsError
from cli.main import build_parser
from cli.run import _settings
from pipelines import run_records
from pipelines.run_local import named_run

REPO_ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1"}
# Only a guard against a hang: the checks below wait for an event, not for a time.
HANG_S = 120.0


def wait_for(what: str, found: Callable[[], object], process: subprocess.Popen[str] | None = None) -> object:
    """Poll until ``found()`` is truthy; fail if ``process`` ended first or it never happens."""
    deadline = time.monotonic() + HANG_S
    while time.monotonic() < deadline:
        value = found()
        if value:
            return value
        if process is not None and process.poll() is not None:
            pytest.fail(f"the run ended ({process.returncode}) before {what}: {process.stderr.read()[-3000:]}")  # type: ignore[union-attr]
        time.sleep(0.05)
    pytest.fail(f"no {what} after {HANG_S:.0f}s")


def alive(pid: int) -> bool:
    """Running (a zombie is dead: it only waits for its new parent to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid``."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError):
            continue
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return {p for p in found if alive(p)}


def tasks_of(pid: int, function: str) -> set[int]:
    """The processes below ``pid`` once the KFP task of component ``function`` runs there (empty before)."""
    below = descendants(pid)
    for task in below:
        with contextlib.suppress(OSError):
            argv = Path(f"/proc/{task}/cmdline").read_bytes().split(b"\0")
            if b"kfp.dsl.executor_main" in argv and function.encode() in argv:
                return below
    return set()


def assert_all_gone(pids: set[int]) -> None:
    wait_for(f"end of {sorted(pids)}", lambda: not any(alive(p) for p in pids))


def bertops_run(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "cli", "run", *args],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def read_until(run: subprocess.Popen[str], text: str) -> None:
    """Read the run's terminal output until a line holds ``text`` (a run that ends first fails the test)."""
    assert run.stdout is not None
    for line in run.stdout:
        if text in line:
            return
    pytest.fail(f"the run ended ({run.wait()}) before {text!r}: {run.stderr.read()[-3000:]}")  # type: ignore[union-attr]


@pytest.mark.slow
def test_steps_die_with_a_killed_run(bbc_data: Path, tiny_model: Path, tmp_path: Path) -> None:
    # Fine-tuning for longer than the test waits, with an evaluation each epoch (13 steps).
    run = bertops_run(
        *("--data-path", str(bbc_data), "--state-dir", str(tmp_path / "state"), "--base-model", str(tiny_model)),
        *("--candidates", '[{"id": "base"}]', "--max-train-samples", "200", "--max-eval-samples", "60"),
        *("--max-length", "32", "--max-steps", "1000000", "--eval-every", "0", "--checkpoint-every", "0"),
    )
    try:
        # Killed in the training loop: a task killed while it starts dies anyway, at its first print
        # into the closed pipe; one that only logs from then on (as training does) ran on for good.
        read_until(run, "eval step 13:")
        task = tasks_of(run.pid, "finetune")
        assert task
    finally:
        run.kill()
        run.wait(timeout=HANG_S)
    assert_all_gone(task)


HOLDING_PIPELINE = '''
import sys
from pathlib import Path

from kfp import dsl, local

from bertops import endpoints
from pipelines.task_group import tasks_die_with_this_process


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def hold(state_dir: str) -> None:
    """Start a child, a recorded and an unrecorded detached server, then wait to be killed."""
    import os, subprocess, sys, time
    from pathlib import Path

    from bertops import endpoints

    def start(**options):
        return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], **options).pid

    child = start()
    recorded, unrecorded = start(start_new_session=True), start(start_new_session=True)
    endpoints.save(endpoints.Endpoint("held", "http://127.0.0.1:1", recorded, "1", "", "", 0.0), state_dir)
    pids = {"task": os.getpid(), "child": child, "recorded": recorded, "unrecorded": unrecorded}
    Path(state_dir, "pids.json").write_text(__import__("json").dumps(pids))
    time.sleep(600)


@dsl.pipeline
def holding(state_dir: str):
    hold(state_dir=state_dir)


state = Path(sys.argv[1])
local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(state / "root"))
with tasks_die_with_this_process(state):
    holding(state_dir=str(state))
'''


@pytest.mark.slow
def test_a_killed_run_takes_its_task_tree_and_its_unrecorded_servers(tmp_path: Path) -> None:
    driver = tmp_path / "driver.py"
    driver.write_text(HOLDING_PIPELINE)
    state = tmp_path / "state"
    state.mkdir()
    run = subprocess.Popen(
        [sys.executable, str(driver), str(state)], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    pids_file = state / "pids.json"
    wait_for("task's pids", pids_file.is_file, run)
    pids = json.loads(pids_file.read_text())
    run.kill()
    run.wait(timeout=HANG_S)
    try:
        assert_all_gone({pids["task"], pids["child"], pids["unrecorded"]})
        assert alive(pids["recorded"])  # a server that was recorded outlives the run, as deploy means it to
    finally:
        endpoints.stop_process(pids["recorded"])


def test_a_local_run_checkpoints_under_its_name_in_the_state_dir(tmp_path: Path) -> None:
    recorded, ran = named_run(PipelineConfig().replace(state_dir=str(tmp_path)), "subprocess")
    assert ran.train.checkpoint_dir == str(tmp_path / "checkpoints")
    assert recorded.train.checkpoint_dir == ""  # resumed, it gets the default place again (and frees it)
    assert recorded.train.checkpoint_name == ran.train.checkpoint_name and ran.train.checkpoint_name.startswith("run-")
    # A given checkpoint_dir is the user's, and a docker runner's steps cannot share the state's.
    given = PipelineConfig().replace(state_dir=str(tmp_path), checkpoint_dir="/ckpt", checkpoint_name="mine")
    assert named_run(given, "subprocess") == (given, given)
    assert named_run(PipelineConfig().replace(checkpoint_name="mine"), "docker")[1].train.checkpoint_dir == ""


def parse_run(*flags: str) -> PipelineConfig:
    return _settings(build_parser().parse_args(["run", *flags]))


def test_resume_takes_the_newest_unfinished_run_and_its_settings(tmp_path: Path) -> None:
    state = str(tmp_path)
    with pytest.raises(BertopsError, match=r"--resume: no unfinished run \(interrupted or failed\)"):
        parse_run("--resume", "--state-dir", state)
    older = PipelineConfig().replace(state_dir=state, checkpoint_name="older", max_steps=7)
    run_records.write(older, run_records.FAILED)
    killed = PipelineConfig().replace(state_dir=state, checkpoint_name="killed", max_steps=4, learning_rate=3e-4)
    run_records.write(killed, run_records.RUNNING)
    # The record of a run in a live process is not resumable: its process is this test's.
    assert parse_run("--resume", "--state-dir", state).train.checkpoint_name == "older"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    record = run_records.record_path(state, "killed")
    record.write_text(record.read_text().replace(f'"pid": {os.getpid()}', f'"pid": {int(dead.stdout)}'))
    os.utime(record)

    resumed = parse_run("--resume", "--state-dir", state, "--eval-every", "2")
    assert (resumed.train.checkpoint_name, resumed.train.max_steps, resumed.train.learning_rate) == ("killed", 4, 3e-4)
    assert resumed.train.eval_every == 2  # a flag given now still applies
    # Naming an unfinished run resumes it too; a new name starts afresh from the flags.
    assert parse_run("--checkpoint-name", "older", "--state-dir", state).train.max_steps == 7
    assert (
        parse_run("--checkpoint-name", "fresh", "--state-dir", state).train.max_steps
        == PipelineConfig().train.max_steps
    )


def test_a_finished_run_removes_its_checkpoints_and_is_not_resumed(tmp_path: Path) -> None:
    recorded, ran = named_run(PipelineConfig().replace(state_dir=str(tmp_path), checkpoint_name="done"), "subprocess")
    checkpoints = Path(ran.train.checkpoint_dir) / "done" / "base" / "step-00000002"
    checkpoints.mkdir(parents=True)
    run_records.write(recorded, run_records.FAILED)
    run_records.finish(recorded, ran)
    assert not checkpoints.parent.parent.exists()
    assert run_records.unfinished_run(tmp_path) is None


def test_a_run_name_must_be_a_plain_name(tmp_path: Path) -> None:
    # Refused before it names a record or a checkpoint folder outside the state directory.
    with pytest.raises(BertopsError, match="--checkpoint-name must be"):
        parse_run("--checkpoint-name", "../elsewhere", "--state-dir", str(tmp_path))


@pytest.mark.slow
@pytest.mark.e2e
def test_a_run_killed_while_fine_tuning_resumes_from_its_last_checkpoint(
    bbc_data: Path, tiny_model: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    flags = [
        *("--data-path", str(bbc_data), "--state-dir", str(state), "--base-model", str(tiny_model)),
        *("--candidates", '[{"id": "base"}]', "--max-train-samples", "200", "--max-eval-samples", "60"),
        *("--max-length", "32", "--max-steps", "40", "--checkpoint-every", "10", "--eval-every", "1000"),
        *("--learning-rate", "2e-3", "--min-accuracy", "0.99"),
    ]
    run = bertops_run(*flags)
    step = wait_for("checkpoint", lambda: list(state.glob("checkpoints/run-*/base/step-*")), run)
    run.kill()
    run.wait(timeout=HANG_S)
    (run_name,) = {p.parent.parent.name for p in step}  # type: ignore[attr-defined]

    resumed = subprocess.run(
        [sys.executable, "-m", "cli", "run", "--resume", "--state-dir", str(state)],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log_text = "\n".join(p.read_text() for p in (state / "runs").glob("*.log"))
    assert f"resuming from {state}/checkpoints/{run_name}/base at step" in log_text
    assert not (state / "checkpoints" / run_name).exists()
    assert json.loads(run_records.record_path(state, run_name).read_text())["state"] == "finished"
