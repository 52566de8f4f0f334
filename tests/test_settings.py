"""Flags that make no sense are refused before anything starts, naming the flag (issue 14, item 11)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bertops import config as cfg
from bertops.errors import BertopsError
from cli.main import main

# The seven examples: (flag, value).
NONSENSE = [
    ("--promotion-margin", "-1"),
    ("--serve-port", "70000"),
    ("--canary-traffic-percent", "150"),
    ("--deploy-target", "bogus"),
    ("--model-name", "../../etc"),
    ("--candidates", "[]"),
    ("--max-steps", "-1"),
]


class Started(Exception):
    """Raised by the stand-ins of the pipeline runner and compiler: work would have started."""


@pytest.fixture
def no_work(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A scratch working directory where running or compiling the pipeline raises ``Started``."""
    import pipelines.compile
    import pipelines.run_local

    def started(*args: object, **kwargs: object) -> None:
        raise Started

    monkeypatch.setattr(pipelines.run_local, "run_local", started)
    monkeypatch.setattr(pipelines.compile, "compile_pipeline", started)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize(("flag", "value"), NONSENSE)
@pytest.mark.parametrize("command", ["run", "submit"])
def test_nonsense_flag_is_refused_before_anything_starts(
    command: str, flag: str, value: str, no_work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = no_work / "state"
    extra = ["--host", "https://kfp.example.com"] if command == "submit" else []
    started = time.perf_counter()
    code = main([command, *extra, "--state-dir", str(state), flag, value])
    assert code == 2
    assert time.perf_counter() - started < 5
    err = capsys.readouterr().err.strip()
    assert err.startswith("bertops: error: ") and "\n" not in err
    assert flag in err and value.removeprefix("-") in err
    assert not state.exists()


def test_defaults_pass_and_reach_the_pipeline(no_work: Path) -> None:
    cfg.validate_settings(cfg.PipelineConfig())
    cfg.validate_settings(cfg.profile("cluster"))
    with pytest.raises(Started):
        main(["run", "--state-dir", str(no_work / "state")])


@pytest.mark.parametrize(
    "overrides",
    [
        {"model_name": "e2e-news"},
        {"model_name": "ctr-news"},
        {"model_name": "m"},
        {"model_name": "ft-run-1"},
        {"min_accuracy": 0.0, "max_steps": 1, "eval_every": 0, "canary_traffic_percent": 0},
        {"canary_traffic_percent": 100, "serve_port": 65535, "deploy_target": "cluster", "promotion_margin": 0.0},
        {"candidates": '[{"id": "a", "learning_rate": 2e-3, "max_steps": 0}, {}]', "launcher": "TrainJob"},
        {"max_length": 8, "deployment_mode": "Standard", "precision": "bf16"},
    ],
)
def test_sensible_values_pass(overrides: dict[str, object]) -> None:
    cfg.validate_settings(cfg.PipelineConfig().replace(**overrides))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"model_name": "News"}, "--model-name"),
        ({"model_name": "a" * 64}, "--model-name"),
        ({"canary_traffic_percent": -2}, "--canary-traffic-percent"),
        ({"learning_rate": 0.0}, "--learning-rate must be > 0"),
        ({"batch_size": 0}, "--batch-size must be >= 1"),
        ({"epochs": 0}, "--epochs must be >= 1"),
        ({"max_length": 4096}, "--max-length must be 8-512"),
        ({"min_class_share": 0.5, "max_class_share": 0.4}, r"--min-class-share \(0.5\) must not exceed"),
        ({"min_accuracy": 85.0}, "--min-accuracy must be 0-1"),
        ({"serve_port": -1}, "--serve-port must be 0-65535"),
        ({"precision": "int8"}, "--precision must be one of"),
        ({"candidates": '[{"id": "a"}, {"id": "a"}]'}, "--candidates ids must be unique"),
        ({"candidates": '[{"id": "a", "batch_size": 0}]'}, "--candidates entry 0: batch_size must be >= 1"),
        ({"candidates": '[{"lr": 1}]'}, r"--candidates entry 0: unknown field\(s\) lr"),
        ({"candidates": "[1]"}, "--candidates entry 0 must be a JSON object"),
        ({"candidates": "{}"}, "--candidates must be a list"),
    ],
)
def test_each_bound_names_its_flag(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(BertopsError, match=message):
        cfg.validate_settings(cfg.PipelineConfig().replace(**overrides))


def test_every_problem_is_reported_at_once() -> None:
    config = cfg.PipelineConfig().replace(serve_port=70000, max_steps=-1)
    with pytest.raises(BertopsError, match=r"--max-steps must be >= 0, got -1; --serve-port must be 0-65535"):
        cfg.validate_settings(config)
