"""Two runs on one state directory: the champion, the endpoint record and the running server agree.

Each run's gate, register and deploy steps run in their own process, as kfp.local runs them: the
KFP component functions, on the real sqlite registry and real model servers. The runs are held
in step (both gate before either registers, both register before either deploys), the
interleaving in which they used to both promote and leave a server running with no record.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from bertops import endpoints
from bertops.errors import BertopsError
from bertops.evaluation import save_evaluation
from bertops.registry import CHAMPION_ALIAS, champion_history, model_files, open_client
from components.register.register import Submission, register_model

NAME = "news"
LINEAGE = {"data_version": "md5:x", "git_commit": "c", "base_model": "tiny", "pipeline_run": "first"}
REPO_ROOT = Path(__file__).resolve().parents[1]

# One run's gate -> register -> deploy, each a KFP component function as the step runs it. argv:
# model, evaluation, tokenized, state, run name, folder where the runs wait for each other.
RUN = textwrap.dedent(
    """
    import inspect, json, sys, time
    from pathlib import Path
    from kfp import dsl
    from components.deploy.component import deploy
    from components.gate.component import promotion_gate
    from components.register.component import register

    model, evaluation, tokenized, state, run, meet = sys.argv[1:]
    out = Path(meet) / run

    def together(stage):
        # Both runs reach ``stage`` before either goes on.
        Path(f"{out}.{stage}").touch()
        deadline = time.monotonic() + 240
        while len(list(Path(meet).glob(f"*.{stage}"))) < 2:
            assert time.monotonic() < deadline, f"the other run never reached {stage}"
            time.sleep(0.05)

    def call(component, **given):
        # Only the inputs this version of the step declares.
        accepted = inspect.signature(component.python_func).parameters
        return component.python_func(**{k: v for k, v in given.items() if k in accepted})

    common = dict(model_name="news", state_dir=state, tracking_uri="", pipeline_run=run, git_commit="c",
                  trigger="manual", deploy_target="local", namespace="bertops")
    decision = dsl.Artifact(uri=f"{out}.decision.json")
    promote = call(promotion_gate, winner_evaluation=dsl.Artifact(uri=evaluation),
                   tokenized=dsl.Dataset(uri=tokenized), promotion_metric="test.accuracy", promotion_margin=0.0,
                   min_accuracy=0.0, min_macro_f1=0.0, decision=decision,
                   report=dsl.Markdown(uri=f"{out}.gate.md"), **common)
    together("gated")
    Path(f"{out}.report.html").write_text("<!doctype html><title>validation</title>")
    version = call(register, model=dsl.Model(uri=model, metadata={"base_model": "tiny"}),
                   evaluation=dsl.Artifact(uri=evaluation, metadata={"reason": "the only candidate"}),
                   decision=decision, dataset=dsl.Dataset(uri=f"{out}.no-dataset"), data_version="md5:x",
                   validation_report=dsl.HTML(uri=f"{out}.report.html"), data_path=str(out), data_remote="",
                   promote=promote, max_length=64,
                   model_card=dsl.Markdown(uri=f"{out}.card.md"), **common)
    together("registered")
    url = call(deploy, version=version, serve_port=0, canary_traffic_percent=-1, deployment_mode="Serverless",
               serving_gpus=0, serving_resources={}, **common) if promote else ""
    print(json.dumps({"run": run, "gate": promote, "version": version, "url": url}))
    """
)


def model_servers(state: Path) -> list[int]:
    """Pids of the model servers serving a model of ``state``'s registry, recorded or not."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"serving.server" in argv and any(str(state.resolve()).encode() in arg for arg in argv):
            found.append(int(proc.name))
    return found


@pytest.fixture
def state(state_dir: Path) -> Iterator[Path]:
    """The state directory; servers left running without a record are stopped too."""
    yield state_dir
    for pid in model_servers(state_dir):
        endpoints.stop_process(pid)


@pytest.fixture
def better_evaluation(trained_tiny: Path, tokenized_small: Path, tmp_path: Path) -> Path:
    """The tiny model's real evaluation, with a test accuracy that beats it: every gate promotes."""
    from serving.scoring import evaluate_model

    scored = evaluate_model(trained_tiny, tokenized_small)
    path = tmp_path / "evaluation.json"
    save_evaluation(dataclasses.replace(scored, test=dataclasses.replace(scored.test, accuracy=1.0)), path)
    return path


def champion(state: Path) -> str:
    return str(open_client("", state).get_model_version_by_alias(NAME, CHAMPION_ALIAS).version)


def register(model: Path, state: Path, promote: bool = True, expected: str | None = None, run: str = "r") -> str:
    submission = Submission(model, NAME, {"test_accuracy": 0.8}, {}, LINEAGE | {"pipeline_run": run})
    if expected is None:  # as before the compare-and-set: the setup of the race runs on any version
        return register_model(submission, promote, str(state)).version
    return register_model(submission, promote, str(state), "", expected).version


@pytest.mark.slow
def test_two_runs_leave_one_champion_served_by_the_one_recorded_server(
    trained_tiny: Path, tokenized_small: Path, better_evaluation: Path, state: Path, tmp_path: Path
) -> None:
    register(trained_tiny, state)  # version 1, the champion both runs gate against
    meet = tmp_path / "meet"
    meet.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    args = [str(trained_tiny), str(better_evaluation), str(tokenized_small), str(state)]
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", RUN, *args, run, str(meet)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for run in ("run-a", "run-b")
    ]
    outcomes = []
    for proc in runs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()[-3000:]
        outcomes.append(json.loads(out.decode().strip().splitlines()[-1]))
    assert [o["gate"] for o in outcomes] == [True, True]  # both gated against version 1
    client = open_client("", state)
    promoted = [
        o["version"] for o in outcomes if client.get_model_version(NAME, o["version"]).tags["promoted"] == "true"
    ]
    (winner,) = promoted
    (loser,) = {o["version"] for o in outcomes} - {winner}
    assert champion(state) == winner and champion_history(client, NAME) == ["1", winner]
    reason = client.get_model_version(NAME, loser).tags["gate_reason"]
    assert reason.startswith(f"champion changed from 1 to {winner} during this run; rerun to gate against {winner}")
    # What serves: the record names the champion, its server answers, and no other server runs.
    record = endpoints.get(NAME, state)
    assert record.model_version == winner and record.model_dir == str(model_files(NAME, winner, str(state)))
    assert record.is_ready(timeout=10)
    assert model_servers(state) == [record.pid]
    assert [o["url"] for o in outcomes if o["version"] == winner] == [record.url]


def test_a_promotion_gated_against_a_replaced_champion_is_registered_but_not_promoted(
    trained_tiny: Path, state_dir: Path
) -> None:
    register(trained_tiny, state_dir)  # 1
    register(trained_tiny, state_dir, expected="1", run="other")  # 2: another run promoted meanwhile
    version = register(trained_tiny, state_dir, expected="1", run="late")
    client = open_client("", state_dir)
    refused = client.get_model_version(NAME, version)
    assert (version, refused.tags["promoted"]) == ("3", "false")
    why = "champion changed from 1 to 2 during this run; rerun to gate against 2"
    assert refused.tags["gate_reason"].startswith(why)
    assert f"Not promoted: {why}" in (refused.description or "")
    assert champion(state_dir) == "2" and champion_history(client, NAME) == ["1", "2"]
    # Gated against the champion that still holds: promoted.
    assert register(trained_tiny, state_dir, expected="2", run="next") == "4"
    assert champion(state_dir) == "4"


def test_a_first_promotion_is_refused_once_another_run_made_a_champion(trained_tiny: Path, state_dir: Path) -> None:
    register(trained_tiny, state_dir, expected="")  # the gate saw no champion, and there is none: promoted
    assert register(trained_tiny, state_dir, expected="", run="late") == "2"
    assert champion(state_dir) == "1"
    reason = open_client("", state_dir).get_model_version(NAME, "2").tags["gate_reason"]
    assert reason.startswith("champion changed from none to 1 during this run")


def test_deploy_of_a_version_that_is_no_longer_champion_changes_nothing(trained_tiny: Path, state: Path) -> None:
    from components.deploy.component import deploy

    register(trained_tiny, state)
    register(trained_tiny, state, run="newer")  # 2 is champion now; nothing serves yet
    url = deploy.python_func(
        model_name=NAME, version="1", state_dir=str(state), tracking_uri="", serve_port=0, deploy_target="local",
        namespace="", canary_traffic_percent=-1, deployment_mode="Serverless", serving_gpus=0,
        serving_resources={}, pipeline_run="late", git_commit="c",
    )  # fmt: skip
    assert url == ""
    assert endpoints.list_endpoints(state) == [] and model_servers(state) == []


HOLD = textwrap.dedent(
    """
    import sys
    from bertops.state_lock import state_lock
    with state_lock(sys.argv[1], "news", "register news for run run-a"):
        print("held", flush=True)
        sys.stdin.read()
    """
)


def test_a_second_run_waits_names_the_holder_and_gets_the_lock_once_the_holder_is_killed(
    state_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from bertops.state_lock import holder as lock_holder
    from bertops.state_lock import lock_path, state_lock

    def holder_of(state: Path) -> str:
        return lock_holder(lock_path(state, NAME))

    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(state_dir)], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        with pytest.raises(BertopsError) as refused, state_lock(state_dir, NAME, "register news for run run-b", 0.5):
            pytest.fail("took a lock that another process holds")
        message = str(refused.value)
        assert f"(pid {holder.pid} on " in message and "register news for run run-a" in message
        assert str(lock_path(state_dir, NAME)) in message
        waiting = f"waiting for another bertops run (pid {holder.pid} on "
        assert any(r.getMessage().startswith(waiting) for r in caplog.records)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    # kill -9 leaves no lock behind: the kernel dropped it with the process.
    with state_lock(state_dir, NAME, "register news for run run-b", timeout=60):
        assert holder_of(state_dir).endswith("register news for run run-b")
