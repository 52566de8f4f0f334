"""The command line: bad input gives one line on stderr that names the problem and a non-zero exit;
`bertops submit` sends KFP what a cluster run needs."""

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support import KfpApiRecorder


def _bertops(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["predict", "hello", "--endpoint", "ghost"], "no local endpoint named 'ghost'"),
        (["endpoints", "delete", "ghost"], "no local endpoint named 'ghost'"),
        (["endpoints", "delete"], "needs the endpoint NAME"),
        (["validate", "no/such/dir"], "no/such/dir does not exist"),
        (["run", "--data-path", "no/such/dir", "--base-model", "/no/model"], "does not exist"),
        (
            ["submit", "--host", "http://127.0.0.1:9", "-o", "p.yaml", "--tracking-uri", "http://mlflow.mlflow:5000"],
            "cannot submit to KFP at http://127.0.0.1:9",
        ),
        (["run", "--finetune-node-selector", "[1]"], "--finetune-node-selector must be an object in JSON, got '[1]'"),
        (["run", "--finetune-tolerations", "{oops"], "--finetune-tolerations is not valid JSON"),
    ],
)
def test_bad_input_gives_one_line_error(tmp_path: Path, args: list[str], fragment: str) -> None:
    result = (
        _bertops(*args, "--state-dir", str(tmp_path))
        if args[0] in ("predict", "endpoints")
        else _bertops(*args, cwd=tmp_path)
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("bertops: error: ") and fragment in lines[-1], result.stderr
    assert "Traceback" not in result.stderr


def test_validate_reports_a_broken_file(tmp_path: Path) -> None:
    for split in ("train", "validation", "test"):
        (tmp_path / f"{split}.jsonl").write_text('{"text": "a", "label": "x"}\n')
    (tmp_path / "test.jsonl").write_bytes(b'{"text": "trunc')
    result = _bertops("validate", str(tmp_path), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "test.jsonl: line 1 is not valid JSON" in result.stderr


def test_unknown_hub_model_offline_names_the_model(tmp_path: Path) -> None:
    from bertops.errors import BertopsError
    from bertops.model_source import load_tokenizer

    with pytest.raises(BertopsError, match="base model 'no-such-org/no-such-model': cannot load it"):
        load_tokenizer("no-such-org/no-such-model")


def test_submit_sends_the_run_as_the_profile_account_with_the_commit_and_the_volume(tmp_path: Path) -> None:
    """What `bertops submit` sends is what KFP runs: the service account its driver and launcher
    run as, the compile options, the run parameters, which pass the API server's type check
    (kubeflow/pipelines backend/src/apiserver/template/v2_template.go, validatePipelineJobInputs)."""
    from bertops.cluster import PIPELINE_SERVICE_ACCOUNT, PROFILE_NAMESPACE
    from cli.main import main

    api = KfpApiRecorder()
    try:
        settings = ["--launcher", "TrainJob", "--finetune-gpus", "0", "--tracking-uri", "http://mlflow.mlflow:5000"]
        code = main(
            ["submit", "--host", api.host, "-o", str(tmp_path / "p.yaml"), "--workspace-pvc", "ft-ws", *settings]
        )
    finally:
        api.server.shutdown()
    assert code == 0
    run = api.created_run()
    assert run["service_account"] == PIPELINE_SERVICE_ACCOUNT == "default-editor"
    # Multi-user KFP files the run under its experiment's profile namespace; without one it
    # refuses the experiment (the client's default namespace is "kubeflow").
    touched = [(path, body) for _, path, body in api.requests if "/experiments" in path]
    assert touched and all(
        PROFILE_NAMESPACE in path or body.get("namespace") == PROFILE_NAMESPACE for path, body in touched
    ), touched
    parameters = run["runtime_config"]["parameters"]
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    assert parameters["git_commit"].startswith(commit)
    assert parameters["launcher"] == "TrainJob" and parameters["finetune_gpus"] == 0
    spec = run["pipeline_spec"]["pipeline_spec"]
    declared = spec["root"]["inputDefinitions"]["parameters"]
    kinds: dict[str, Any] = {
        "STRING": str,
        "NUMBER_INTEGER": int,
        "NUMBER_DOUBLE": (int, float),
        "LIST": list,
        "STRUCT": dict,
    }
    assert all(isinstance(v, kinds[declared[k]["parameterType"]]) for k, v in parameters.items())
    # Compiled with the cluster profile and the volume: the first task knows the volume's name.
    assert declared["deploy_target"]["defaultValue"] == "cluster"
    validate_inputs = spec["root"]["dag"]["tasks"]["validate"]["inputs"]["parameters"]
    assert validate_inputs["workspace_pvc"] == {"runtimeValue": {"constant": "ft-ws"}}
    finetune = run["pipeline_spec"]["platform_spec"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert finetune["exec-finetune"]["pvcMount"][0]["constant"] == "ft-ws"


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (
            ["--launcher", "PyTorchJob", "--tracking-uri", "http://mlflow.mlflow:5000"],
            ["launcher=PyTorchJob needs the workspace volume", "--workspace-pvc NAME"],
        ),
        (
            ["--target", "local"],
            ["deploy_target=local", "tracking_uri=''", "state_dir='.bertops'", "data_path='data'"],
        ),
        (["--tracking-uri", "http://m:5000", "--data-path", "data/bbc"], ["data_path='data/bbc' is relative"]),
        (["--finetune-gpus", "-1", "--tracking-uri", "http://m:5000"], ["finetune_gpus=-1"]),
    ],
)
def test_submit_refuses_a_run_that_cannot_work_before_compiling(
    tmp_path: Path, args: list[str], fragments: list[str]
) -> None:
    """Before anything reaches the server: no package is written, no run is created."""
    result = _bertops("submit", "--host", "http://127.0.0.1:9", "-o", "p.yaml", *args, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("bertops: error: this run cannot work in a Kubernetes pod: "), result.stderr
    assert all(fragment in lines[-1] for fragment in fragments), lines[-1]
    assert not (tmp_path / "p.yaml").exists()


CLUSTER_RUN = ["--tracking-uri", "http://mlflow.mlflow:5000"]


def test_submit_records_the_commit_of_the_code_wherever_it_is_run_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CI job may run `bertops submit` from outside the checkout: the commit is still the code's."""
    from cli.main import main

    repo = Path(__file__).resolve().parents[1]
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=repo)
    monkeypatch.chdir(tmp_path)
    api = KfpApiRecorder()
    try:
        assert main(["submit", "--host", api.host, "-o", str(tmp_path / "p.yaml"), *CLUSTER_RUN]) == 0
    finally:
        api.server.shutdown()
    assert api.created_run()["runtime_config"]["parameters"]["git_commit"].startswith(head.stdout.strip())


def _run_state(state: str, **fields: object) -> dict:
    return {"run_id": "r1", "state": state, **fields}


def test_submit_wait_waits_for_the_run_and_exits_zero_when_it_succeeds(tmp_path: Path, capsys) -> None:
    from cli.main import main

    api = KfpApiRecorder([_run_state("PENDING"), _run_state("RUNNING"), _run_state("SUCCEEDED")])
    try:
        args = ["submit", "--host", api.host, "-o", str(tmp_path / "p.yaml"), "--wait", "--wait-poll", "0.01"]
        assert main([*args, *CLUSTER_RUN]) == 0
    finally:
        api.server.shutdown()
    polls = [path for method, path, _ in api.requests if method == "GET" and path.startswith("/apis/v2beta1/runs/r1")]
    assert len(polls) == 3
    assert capsys.readouterr().out.strip().endswith("run r1 SUCCEEDED")


def test_submit_wait_exits_non_zero_naming_the_failed_task_when_the_run_fails(tmp_path: Path, capsys) -> None:
    from cli.main import main

    failed = _run_state(
        "FAILED",
        error={"message": "1 task failed"},
        run_details={
            "task_details": [
                {"display_name": "Validate data", "state": "SUCCEEDED"},
                {"display_name": "Fine-tune", "state": "FAILED", "error": {"message": "CUDA out of memory"}},
            ]
        },
    )
    api = KfpApiRecorder([_run_state("RUNNING"), failed])
    try:
        args = ["submit", "--host", api.host, "-o", str(tmp_path / "p.yaml"), "--wait", "--wait-poll", "0.01"]
        assert main([*args, *CLUSTER_RUN]) == 2
    finally:
        api.server.shutdown()
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error == ("bertops: error: run r1 FAILED: 1 task failed (failed tasks: Fine-tune: CUDA out of memory)"), (
        error
    )


def test_submit_wait_gives_up_after_its_timeout(tmp_path: Path, capsys) -> None:
    from cli.main import main

    api = KfpApiRecorder([_run_state("RUNNING")])
    try:
        args = ["submit", "--host", api.host, "-o", str(tmp_path / "p.yaml"), "--wait", "--wait-poll", "0.01"]
        assert main([*args, "--wait-timeout", "0.05", *CLUSTER_RUN]) == 2
    finally:
        api.server.shutdown()
    assert "run r1 still RUNNING after 0.05 s (--wait-timeout)" in capsys.readouterr().err


def test_the_summary_of_an_unpromoted_run_names_the_version_still_served(tmp_path: Path) -> None:
    """A run whose version was not deployed (gate failed, or another run's champion moved first)
    says which version the endpoint still serves, not that the gate failed."""
    from bertops import config as cfg
    from bertops import endpoints
    from cli.run import summary
    from pipelines.run_local import LocalRunResult

    config = cfg.PipelineConfig().replace(state_dir=str(tmp_path))
    result = LocalRunResult("md5:0", "passed", "lr3e-5", "5", tmp_path / "run.log")
    metrics = {"test_accuracy": 0.9, "test_macro_f1": 0.9, "test_ece": 0.01, "batch_latency_ms": 40.0}
    reason = "champion changed from 3 to 4 during this run; rerun to gate against 4"
    tags = {"promoted": "false", "gate_reason": reason}
    assert "endpoint          none (this run's version was not deployed" in summary(config, result, metrics, tags, 1.0)
    record = endpoints.Endpoint(config.registry.model_name, "http://127.0.0.1:9", 0, "4", "/m", "/l", 0.0)
    endpoints.save(record, tmp_path)
    text = summary(config, result, metrics, tags, 1.0)
    assert "http://127.0.0.1:9 still serves version 4" in text
    assert reason in text


def _subcommands(parser: Any, name: str = "bertops") -> list[tuple[str, Any]]:
    """``parser`` and every subcommand's parser below it, by command line."""
    import argparse

    found = [(name, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, sub_parser in action.choices.items():
                found += _subcommands(sub_parser, f"{name} {sub}")
    return found


def test_help_shows_no_restructuredtext_markup() -> None:
    import re

    from cli.main import build_parser

    commands = _subcommands(build_parser())
    assert {"bertops", "bertops run", "bertops predict", "bertops validate"} <= {name for name, _ in commands}
    for name, parser in commands:
        text = parser.format_help()
        assert not re.search(r"``|:(func|class|mod|meth|attr|ref):`", text), f"{name} --help:\n{text}"
    # What the console prints, from the installed entry point's module.
    shown = _bertops("--help")
    assert shown.returncode == 0 and "``" not in shown.stdout and "Run the whole pipeline" in shown.stdout


def _small_data(root: Path) -> Path:
    """Three small valid splits: two balanced labels, distinct texts."""
    import json

    data = root / "data"
    data.mkdir()
    for split, n in (("train", 20), ("validation", 6), ("test", 6)):
        rows = [{"text": f"{split} text number {i}", "label": "a" if i % 2 else "b"} for i in range(n)]
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return data


def test_validate_writes_to_its_own_directory_never_into_the_pipeline_runs(tmp_path: Path) -> None:
    data, state = _small_data(tmp_path), tmp_path / "state"
    # A pipeline run's validation report, as kfp.local leaves it under the state directory.
    run_report = state / "pipeline_root" / "run-1" / "validate" / "dataset" / "report.html"
    run_report.parent.mkdir(parents=True)
    run_report.write_text("the pipeline's report")

    result = _bertops("validate", str(data), "--state-dir", str(state), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    own = state / "validate-cli"
    assert f"report: {own / 'report.html'}" in result.stdout
    assert "PASSED" in (own / "report.html").read_text() and (own / "train.parquet").is_file()
    assert not (tmp_path / ".bertops").exists()  # nothing in the default state directory either

    refused = _bertops("validate", str(data), "--state-dir", str(state), "--out", str(run_report.parent))
    assert refused.returncode == 2
    assert "is inside the pipeline's artifacts" in refused.stderr and "--out" in refused.stderr
    assert run_report.read_text() == "the pipeline's report"


@pytest.mark.parametrize(
    ("name", "content", "extra", "fragment"),
    [
        ("absent.txt", None, [], "--file {path}: no such file"),
        ("empty.txt", "\n  \n", [], "--file {path}: no texts in it"),
        (
            "rows.jsonl",
            '{"text": "fine"}\n{"body": "no text"}\n',
            [],
            "{path}: line 2 has no 'text' field (fields: 'body'",
        ),
        ("rows.jsonl", '{"text": "fine"}\n{"text": "trunc\n', [], "{path}: line 2 is not valid JSON"),
        ("rows.jsonl", '{"text": "fine"}\n{"text": 3}\n', [], "{path}: line 2: 'text' is not a string (got int)"),
        ("rows.csv", "id,body\n1,hello\n", [], "{path}: no column 'text' (columns: 'id', 'body'; see --column)"),
        ("rows.csv", "id,body\n1,hello\n2,\n", ["--column", "body"], "{path}: line 3: 'body' is empty"),
        ("lines.txt", "hello\n", ["--column", "body"], "--column applies to .jsonl and .csv files"),
        ("lines.txt", b"caf\xe9\n", [], "{path}: line 1 is not valid UTF-8"),
    ],
    ids=[
        "missing-file",
        "empty-file",
        "missing-field",
        "bad-json",
        "not-a-string",
        "missing-column",
        "empty-cell",
        "column-of-text-file",
        "not-utf8",
    ],
)
def test_predict_file_problems_name_the_file_line_and_column(
    tmp_path: Path, name: str, content: str | bytes | None, extra: list[str], fragment: str
) -> None:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    result = _bertops("predict", "--file", str(path), *extra, "--state-dir", str(tmp_path / "state"))
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("bertops: error: ") and fragment.format(path=path) in last, result.stderr
    assert "Traceback" not in result.stderr


def test_the_summary_splits_the_wall_time_by_step(tmp_path: Path) -> None:
    """The run log's task events (kfp.local's format, colours and a loop's two finetune tasks) become
    the summary's step times; a run past midnight keeps counting."""
    from bertops import config as cfg
    from cli.run import summary
    from pipelines.run_local import LocalRunResult
    from pipelines.step_times import phase_seconds, step_times

    log = tmp_path / "run.log"
    log.write_text(
        "23:59:50.000000 - INFO - Executing task \x1b[96m'validate'\x1b[0m\n"
        "    streamed output of the step\n"
        "23:59:59.500000 - INFO - Task \x1b[96m'validate'\x1b[0m finished with status \x1b[92mSUCCESS\x1b[0m\n"
        "23:59:59.600000 - INFO - Executing task 'finetune'\n"
        "00:00:00.100000 - INFO - Executing task 'finetune'\n"
        "00:02:59.600000 - INFO - Task 'finetune' finished with status SUCCESS\n"
        "00:03:10.100000 - INFO - Task 'finetune' finished with status SUCCESS\n"
        "00:03:11.000000 - INFO - Executing task 'register'\n",  # still running: not a finished step
        encoding="utf-8",
    )
    steps = step_times(log.read_text(encoding="utf-8"))
    assert [(s.name, round(s.start, 1), round(s.seconds, 1)) for s in steps] == [
        ("validate", 0.0, 9.5),
        ("finetune", 9.6, 180.0),
        ("finetune", 10.1, 190.0),
    ]
    assert round(phase_seconds(steps, "finetune"), 1) == 190.5
    assert phase_seconds(steps, "register") == 0.0

    config = cfg.PipelineConfig().replace(state_dir=str(tmp_path))
    result = LocalRunResult("md5:0", "passed", "base", "1", log)
    metrics = {"test_accuracy": 0.9, "test_macro_f1": 0.9, "test_ece": 0.01, "batch_latency_ms": 40.0}
    text = summary(config, result, metrics, {"promoted": "true"}, 3.4)
    assert "  step times        validate 10 s, finetune 2 x (180/190) s, 190 s wall" in text
