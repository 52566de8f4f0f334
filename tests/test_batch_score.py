"""Batch scoring (``bertops score``, the batch-score step and pipeline) with a real registry and a real endpoint.

Version 1 of NAME is the tiny classifier trained by the shared fixtures, with its ``model.onnx``
(the champion, as a run leaves it); version 2 is the same model without ``model.onnx``.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import requests

from bertops import endpoints
from cli.main import main as bertops_main
from components.batch_score.batch_score import batch_score
from components.batch_score.config import BatchScoreConfig
from components.register.register import Submission, register_model

NAME = "news"
LINEAGE = {"data_version": "md5:x", "git_commit": "c", "base_model": "tiny", "pipeline_run": "r"}
CHUNK = 50


@pytest.fixture(scope="module")
def registry(onnx_model: Path, trained_tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A state dir whose registry holds NAME version 1 (champion, with model.onnx) and 2."""
    state = tmp_path_factory.mktemp("score") / "state"
    assert register_model(Submission(onnx_model, NAME, {}, {}, LINEAGE), True, str(state)).version == "1"
    assert register_model(Submission(trained_tiny, NAME, {}, {}, LINEAGE), False, str(state)).version == "2"
    yield state
    for endpoint in endpoints.list_endpoints(state):
        endpoints.delete(endpoint.name, state)


@pytest.fixture(scope="module")
def scored_split(validated: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The validated test split as JSON Lines, the format users most often score."""
    path = tmp_path_factory.mktemp("split") / "test.jsonl"
    pd.read_parquet(validated / "test.parquet").to_json(path, orient="records", lines=True, force_ascii=False)
    return path


@pytest.fixture(scope="module")
def tokenized_all(validated: Path, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The validated data tokenized with every validation and test row, as the evaluate step gets it."""
    from components.tokenize.tokenization import tokenize_dataset

    out = tmp_path_factory.mktemp("tokenized-all")
    tokenize_dataset(validated, out, str(tiny_model), max_length=64, max_train_samples=20, max_eval_samples=0)
    return out


def _bertops(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli", *argv], capture_output=True, text=True, timeout=600)


def _predictions(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "predictions.parquet")


def _endpoint_labels(url: str, texts: list[str]) -> list[str]:
    labels: list[str] = []
    for start in range(0, len(texts), 64):
        answer = requests.post(
            f"{url}/v1/models/{NAME}:predict", json={"instances": texts[start : start + 64]}, timeout=120
        )
        assert answer.status_code == 200, answer.text
        labels += [p["label"] for p in answer.json()["predictions"]]
    return labels


def test_score_gives_the_labels_of_the_endpoint_and_of_the_evaluate_step_on_the_test_split(
    registry: Path, scored_split: Path, tokenized_all: Path, onnx_model: Path, tmp_path: Path
) -> None:
    from bertops.artifacts import load_texts
    from components.deploy.deploy import deploy_local
    from serving.scoring import evaluate_model

    test_file = scored_split
    texts = pd.read_json(test_file, lines=True)["text"].tolist()
    assert texts == load_texts(tokenized_all, "test")  # the evaluate step scores the same rows, in order

    scored = _bertops(
        "score", str(test_file), "--model-name", NAME, "--state-dir", str(registry), "--out", str(tmp_path / "out")
    )
    assert scored.returncode == 0, scored.stderr
    predictions = _predictions(tmp_path / "out")
    assert predictions["row"].tolist() == list(range(len(texts)))
    assert set(predictions["model_version"]) == {"1"} and set(predictions["source"]) == {"test.jsonl"}

    evaluated = evaluate_model(onnx_model, tokenized_all).test.predicted
    endpoint = deploy_local(NAME, "1", str(registry))
    served = _endpoint_labels(endpoint.url, texts)
    assert predictions["label"].tolist() == served == evaluated
    assert len(set(served)) > 1  # a model that answers one label for everything would prove little

    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["rows"] == len(texts) and summary["backend"].startswith("onnxruntime")
    assert summary["label_counts"] == predictions["label"].value_counts().sort_index().to_dict()
    assert f"{len(texts)} rows scored with {NAME} v1" in scored.stdout
    assert "| model | news version 1 |" in (tmp_path / "out" / "summary.md").read_text()


# Runs in a child process: scores with chunks of CHUNK rows, and halts in the middle of the third
# chunk (two written, the third half scored) until the test kills it.
DRIVER = f"""
import sys, time
from pathlib import Path
from components.batch_score.batch_score import batch_score
from components.batch_score.config import BatchScoreConfig

data, state, out, marker = sys.argv[1:5]

def halt_in_the_third_chunk(done, total):
    if done > 2 * {CHUNK} and done % {CHUNK}:
        Path(marker).write_text(str(done))
        time.sleep(3600)

config = BatchScoreConfig(data_path=data, model_name="{NAME}", state_dir=state, batch_size=5, chunk_rows={CHUNK})
batch_score(config, Path(out), halt_in_the_third_chunk)
"""


def _kill_mid_run(data: Path, registry: Path, out: Path, marker: Path) -> None:
    """Start the driver and SIGKILL it once it halts inside its third chunk."""
    child = subprocess.Popen([sys.executable, "-c", DRIVER, str(data), str(registry), str(out), str(marker)])
    try:
        deadline = time.monotonic() + 300
        while not marker.exists():
            assert child.poll() is None, f"the scoring process exited with {child.returncode} before the kill"
            assert time.monotonic() < deadline, "the scoring process never reached its third chunk"
            time.sleep(0.1)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()


def test_a_run_killed_with_sigkill_mid_chunk_resumes_to_complete_predictions_without_duplicates(
    registry: Path, scored_split: Path, tmp_path: Path
) -> None:
    data, out = scored_split, tmp_path / "out"
    _kill_mid_run(data, registry, out, tmp_path / "halted")
    assert int((tmp_path / "halted").read_text()) == 2 * CHUNK + 40
    # Two whole chunks survive; the one in flight is lost; no final output yet.
    assert sorted(p.name for p in (out / "chunks").iterdir()) == ["chunk-000000.parquet", "chunk-000001.parquet"]
    assert not (out / "predictions.parquet").exists() and not (out / "summary.json").exists()
    # What a kill in the middle of a chunk's write leaves: a torn temporary file.
    (out / "chunks" / "chunk-000002.parquet.tmp-99999").write_bytes(b"PAR1 torn")

    flags = ("--model-name", NAME, "--state-dir", str(registry), "--batch-size", "5", "--chunk-rows", str(CHUNK))
    resumed = _bertops("score", str(data), "--out", str(out), *flags)
    assert resumed.returncode == 0, resumed.stderr

    predictions = _predictions(out)
    rows = len(pd.read_json(data, lines=True))
    assert predictions["row"].tolist() == list(range(rows))  # every row once, in order
    assert not (out / "chunks").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["rows_from_an_earlier_run"], summary["rows_scored_by_this_run"]) == (2 * CHUNK, rows - 2 * CHUNK)
    uninterrupted = batch_score(
        BatchScoreConfig(data_path=str(data), model_name=NAME, state_dir=str(registry), batch_size=5, chunk_rows=CHUNK),
        tmp_path / "uninterrupted",
    )
    assert uninterrupted["label_counts"] == summary["label_counts"]
    assert predictions["label"].tolist() == _predictions(tmp_path / "uninterrupted")["label"].tolist()


def _score(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = bertops_main(["score", *argv])
    return code, capsys.readouterr().err


def test_a_rerun_into_an_output_of_another_version_or_input_is_refused_naming_the_difference(
    registry: Path, scored_split: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "test.jsonl"
    shutil.copyfile(scored_split, data)
    out = tmp_path / "out"
    flags = ["--model-name", NAME, "--state-dir", str(registry), "--out", str(out)]
    assert _score([str(data), *flags], capsys)[0] == 0
    before = (out / "predictions.parquet").read_bytes()

    code, err = _score([str(data), "--version", "2", *flags], capsys)
    assert code == 2 and "model version: was '1', now '2'" in err, err
    with data.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps({"text": "One more row", "label": "tech"}) + "\n")
    code, err = _score([str(data), *flags], capsys)
    assert code == 2 and "input file test.jsonl: its content changed" in err and "rows: was" in err, err
    assert (out / "predictions.parquet").read_bytes() == before

    code, err = _score([str(scored_split), *flags], capsys)  # the same input again: nothing to do
    assert code == 0, err
    assert (out / "predictions.parquet").read_bytes() == before


def _jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


BAD_INPUTS = {
    "no text column": (lambda d: _jsonl(d / "a.jsonl", [{"body": "x"}]), "a.jsonl: no column 'text' (columns: body)"),
    "empty file": (lambda d: _jsonl(d / "a.jsonl", []), "a.jsonl: file is empty"),
    "a row without text": (
        lambda d: _jsonl(d / "a.jsonl", [{"text": "fine"}, {"text": "fine"}, {"text": None}]),
        "a.jsonl: row 2 (counting from 0) has no text in column 'text'",
    ),
    "a number for a text": (
        lambda d: _jsonl(d / "a.jsonl", [{"text": 5}]),
        "a.jsonl: row 0 (counting from 0) has a int, not text in column 'text'",
    ),
    "a csv row without text": (
        lambda d: (d / "a.csv").write_text("text,label\nfine,x\n,y\n") and d / "a.csv",
        "a.csv: row 1 (counting from 0) has no text in column 'text'",
    ),
    "no such file": (lambda d: d / "missing.jsonl", "missing.jsonl: no such file or directory"),
    "a folder with nothing to score": (
        lambda d: (d / "folder").mkdir() or d / "folder",
        "folder: no .jsonl, .csv or .parquet files to score",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_error_naming_file_column_and_row_and_writes_nothing(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make, message = BAD_INPUTS[case]
    path = make(tmp_path)
    out = tmp_path / "out"
    # The input is read and checked before the registry is opened: no registry is needed to refuse it.
    code, err = _score([str(path), "--state-dir", str(tmp_path / "state"), "--out", str(out)], capsys)
    assert code == 2
    assert err.startswith("bertops: error: ") and message in err, err
    assert not out.exists() and not (tmp_path / "state").exists()


def test_an_unknown_version_or_a_missing_champion_is_refused_before_anything_is_written(
    registry: Path, scored_split: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    flags = ["--state-dir", str(registry), "--out", str(out)]
    code, err = _score([str(scored_split), "--model-name", NAME, "--version", "7", *flags], capsys)
    assert code == 2 and "news has no version or alias '7' (versions: 2, 1)" in err, err
    code, err = _score([str(scored_split), "--model-name", "other", *flags], capsys)
    assert code == 2 and "no registered model named 'other'" in err, err
    assert not out.exists()


def test_the_batch_score_pipeline_runs_on_the_local_runner(registry: Path, scored_split: Path, tmp_path: Path) -> None:
    from kfp import local

    from pipelines.batch_score_pipeline import build_batch_pipeline

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"), raise_on_error=True)
    config = BatchScoreConfig(data_path=str(scored_split), model_name=NAME, state_dir=str(registry))
    run = build_batch_pipeline()(**dataclasses.asdict(config))
    assert run.output == "1"
    [predictions] = (tmp_path / "root").glob("*/batch-score/predictions")
    reference = batch_score(config, tmp_path / "cli")
    assert pd.read_parquet(predictions)["label"].tolist() == _predictions(tmp_path / "cli")["label"].tolist()
    assert json.loads(predictions.with_name("summary").read_text())["label_counts"] == reference["label_counts"]


def test_bertops_compile_writes_the_batch_score_pipeline_with_cluster_defaults_a_workspace_and_retries(
    tmp_path: Path,
) -> None:
    import yaml

    out = tmp_path / "batch.yaml"
    argv = ["compile", "--pipeline", "batch-score", "--target", "cluster", "--workspace-pvc", "scratch", "-o", str(out)]
    assert bertops_main(argv) == 0
    spec, platform = yaml.safe_load_all(out.read_text())
    defaults = {k: v.get("defaultValue") for k, v in spec["root"]["inputDefinitions"]["parameters"].items()}
    assert defaults["resume_dir"] == "/workspace/batch-score" and defaults["data_remote"] == "s3"
    assert defaults["data_path"] == "/home/bertops/project/data/test.jsonl" and defaults["model_version"] == ""
    executor = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-batch-score"]
    assert executor["pvcMount"][0]["mountPath"] == "/workspace"
    assert {s["secretName"] for s in executor["secretAsEnv"]} == {"bertops-dvc-s3", "bertops-s3"}
    task = spec["root"]["dag"]["tasks"]["batch-score"]
    assert task["retryPolicy"]["maxRetryCount"] == 2
    assert task["inputs"]["parameters"]["pipeline_run"]["runtimeValue"]["constant"] == "{{$.pipeline_job_name}}"
