"""Retraining on a schedule: `bertops schedule` creates a KFP recurring run through the real kfp
client, and the run's ``trigger`` parameter reaches the registered version's lineage."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from support import KfpApiRecorder

from bertops.cluster import PIPELINE_SERVICE_ACCOUNT, PROFILE_NAMESPACE

REPO_ROOT = Path(__file__).resolve().parents[1]
RECURRING_RUNS = "/apis/v2beta1/recurringruns"
CLUSTER_SETTINGS = ["--tracking-uri", "http://mlflow.mlflow:5000"]


@pytest.fixture
def kfp_api() -> Iterator[KfpApiRecorder]:
    api = KfpApiRecorder()
    yield api
    api.server.shutdown()


def _bertops(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_schedule_creates_a_recurring_run_of_the_compiled_pipeline_with_trigger_schedule(
    kfp_api: KfpApiRecorder, tmp_path: Path
) -> None:
    from cli.main import main

    package = tmp_path / "p.yaml"
    code = main(["schedule", "--host", kfp_api.host, "--cron", "30 2 * * 1", "-o", str(package), *CLUSTER_SETTINGS])
    assert code == 0
    (recurring,) = kfp_api.posted(RECURRING_RUNS)
    assert recurring["display_name"] == "bertops-text-classifier-schedule"
    assert recurring["experiment_id"] == "e1"
    # KFP's scheduler reads robfig/cron's 6 fields, seconds first.
    assert recurring["trigger"] == {"cron_schedule": {"cron": "0 30 2 * * 1"}}
    # int64 fields travel as JSON strings in KFP's REST API (grpc-gateway).
    assert str(recurring["max_concurrency"]) == "1"
    assert recurring["no_catchup"] is True
    assert recurring["mode"] == "ENABLE"
    assert recurring["service_account"] == PIPELINE_SERVICE_ACCOUNT
    parameters = recurring["runtime_config"]["parameters"]
    assert parameters["trigger"] == "schedule"
    assert parameters["tracking_uri"] == "http://mlflow.mlflow:5000"
    # The compiled pipeline itself: trigger is a run parameter (manual unless given), fed to register.
    spec = recurring["pipeline_spec"]["pipeline_spec"]
    assert spec == next(yaml.safe_load_all(package.read_text()))
    trigger = spec["root"]["inputDefinitions"]["parameters"]["trigger"]
    assert {k: trigger[k] for k in ("defaultValue", "isOptional", "parameterType")} == {
        "defaultValue": "manual",
        "isOptional": True,
        "parameterType": "STRING",
    }
    assert "recurring run" in trigger["description"]
    register_inputs = spec["root"]["dag"]["tasks"]["register"]["inputs"]["parameters"]
    assert register_inputs["trigger"] == {"componentInputParameter": "trigger"}
    # The experiment is the profile's: multi-user KFP refuses one without a namespace.
    experiments = kfp_api.posted("/apis/v2beta1/experiments")
    assert experiments and all(body.get("namespace") == PROFILE_NAMESPACE for body in experiments)


def test_dry_run_prints_the_request_and_sends_nothing(kfp_api: KfpApiRecorder, tmp_path: Path) -> None:
    result = _bertops(
        "schedule", "--host", kfp_api.host, "--cron", "0 0 3 * * *", "--dry-run", *CLUSTER_SETTINGS, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    request = json.loads(result.stdout)
    assert request["cron_expression"] == "0 0 3 * * *"
    assert request["max_concurrency"] == 1
    assert request["params"]["trigger"] == "schedule"
    assert request["namespace"] == PROFILE_NAMESPACE
    assert (tmp_path / request["pipeline_package_path"]).is_file()
    assert kfp_api.requests == []


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--cron", "every monday", "--dry-run"], "--cron 'every monday' has 2 fields: give 5"),
        (["--cron", "0 3 * * 1"], "bertops schedule needs --host"),
        (["--cron", "0 3 * * 1", "--dry-run", "--target", "local"], "deploy_target=local"),
    ],
)
def test_schedule_refuses_bad_input_before_compiling(tmp_path: Path, args: list[str], fragment: str) -> None:
    result = _bertops("schedule", "-o", "p.yaml", *args, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("bertops: error: ") and fragment in lines[-1], result.stderr
    assert not (tmp_path / "p.yaml").exists()


def test_an_unreachable_server_is_one_line_naming_it(tmp_path: Path) -> None:
    result = _bertops(
        "schedule",
        "--host",
        "http://127.0.0.1:9",
        "--cron",
        "0 3 * * 1",
        "-o",
        "p.yaml",
        *CLUSTER_SETTINGS,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "cannot create the recurring run on KFP at http://127.0.0.1:9" in result.stderr.strip().splitlines()[-1]


def test_register_records_the_trigger_in_the_versions_lineage(
    trained_tiny: Path, tokenized_small: Path, state_dir: Path, tmp_path: Path
) -> None:
    """The register step as the pipeline runs it: the trigger run parameter becomes a version tag."""
    import inspect

    from kfp import dsl

    from bertops.evaluation import save_evaluation
    from bertops.registry import open_client
    from components.register.component import register
    from serving.scoring import evaluate_model

    evaluation = tmp_path / "evaluation.json"
    save_evaluation(evaluate_model(trained_tiny, tokenized_small), evaluation)
    decision = tmp_path / "decision.json"
    decision.write_text(json.dumps({"reason": "no champion yet", "champion_version": ""}))
    (tmp_path / "report.html").write_text("<!doctype html><title>validation</title>")
    (tmp_path / "dataset").mkdir()
    given = dict(
        model=dsl.Model(uri=str(trained_tiny), metadata={"base_model": "tiny"}),
        evaluation=dsl.Artifact(uri=str(evaluation), metadata={"reason": "the only candidate"}),
        decision=dsl.Artifact(uri=str(decision)),
        validation_report=dsl.HTML(uri=str(tmp_path / "report.html")),
        dataset=dsl.Dataset(uri=str(tmp_path / "dataset")),
        data_path=str(tmp_path),
        data_remote="",
        data_version="md5:x",
        promote=False,
        max_length=64,
        model_name="news",
        state_dir=str(state_dir),
        tracking_uri="",
        git_commit="c",
        trigger="schedule",
        pipeline_run="run-1",
        deploy_target="local",
        namespace="bertops",
        model_card=dsl.Markdown(uri=str(tmp_path / "card.md")),
    )
    accepted = inspect.signature(register.python_func).parameters
    assert "trigger" in accepted
    version = register.python_func(**{k: v for k, v in given.items() if k in accepted})
    tags = open_client("", state_dir).get_model_version("news", version).tags
    assert tags["trigger"] == "schedule"
    assert "| trigger | `schedule` |" in (tmp_path / "card.md").read_text()
