"""The int8 variant (issue 16): exported beside model.onnx, served only when the evaluate step's gate
passes, recorded in the registry, and served by the server the registry's files say.

The gate's boundary is tested on constructed evaluations; everything else on the tiny model
fine-tuned by the session fixtures, exported and quantized for real.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import requests

from bertops import config as cfg
from bertops import endpoints, models
from bertops.errors import BertopsError
from bertops.evaluation import (
    Evaluation,
    ModelEvaluation,
    choose_variant,
    load_evaluation,
    read_serving_record,
    save_evaluation,
)
from components.deploy.deploy import deploy_local
from components.finetune.launch import export_onnx_beside
from components.register.register import Submission, register_model
from serving.backends import INT8_FILE, load_backend
from serving.config import ServingConfig
from serving.onnx_export import export_int8
from serving.predictor import TextClassifierPredictor
from serving.scoring import evaluate_model, evaluate_variants

NAME = "int8-news"
LINEAGE = {"data_version": "md5:x", "git_commit": "c", "base_model": "tiny", "pipeline_run": "r"}


def _split(accuracy: float, macro_f1: float) -> Evaluation:
    return Evaluation(
        accuracy, macro_f1, macro_f1, macro_f1, 0.05, 200, ["a", "b"], {}, [[1, 0], [0, 1]], mean_confidence=0.9
    )


def _scores(accuracy: float, macro_f1: float, latency: float = 10.0) -> ModelEvaluation:
    return ModelEvaluation(_split(0.5, 0.5), _split(accuracy, macro_f1), latency)


# --- the gate: int8 within the tolerance of fp32 in test accuracy and in test macro F1 -----------


def test_int8_exactly_at_the_tolerance_is_served_with_its_own_metrics() -> None:
    fp32, int8 = _scores(0.900, 0.880, 10.0), _scores(0.895, 0.875, 6.0)
    chosen = choose_variant(fp32, int8, 0.005)
    assert chosen.variant == "int8" and chosen.test.accuracy == 0.895 and chosen.batch_latency_ms == 6.0
    assert chosen.variant_reason.startswith("int8: ") and "within 0.005 of fp32" in chosen.variant_reason
    assert chosen.variants == {
        "fp32": {"test_accuracy": 0.900, "test_macro_f1": 0.880, "batch_latency_ms": 10.0},
        "int8": {"test_accuracy": 0.895, "test_macro_f1": 0.875, "batch_latency_ms": 6.0},
    }
    assert chosen.flat()["int8_test_accuracy"] == 0.895 and chosen.flat()["fp32_test_accuracy"] == 0.900
    assert chosen.serving_record() == {"variant": "int8", "reason": chosen.variant_reason}


def test_int8_just_above_the_tolerance_is_not_served() -> None:
    chosen = choose_variant(_scores(0.900, 0.880), _scores(0.8949, 0.880), 0.005)
    assert chosen.variant == "fp32" and chosen.test.accuracy == 0.900
    assert "accuracy more than 0.005 below fp32" in chosen.variant_reason
    assert set(chosen.variants) == {"fp32", "int8"}


def test_int8_that_keeps_accuracy_but_loses_macro_f1_is_not_served() -> None:
    chosen = choose_variant(_scores(0.900, 0.880), _scores(0.905, 0.870), 0.005)
    assert chosen.variant == "fp32" and chosen.test.macro_f1 == 0.880
    assert chosen.variant_reason.endswith("; macro_f1 more than 0.005 below fp32")
    assert "test accuracy 0.9050 vs fp32 0.9000 (+0.0050)" in chosen.variant_reason


def test_tolerance_zero_serves_int8_only_when_it_is_no_worse() -> None:
    assert choose_variant(_scores(0.9, 0.88), _scores(0.9, 0.88), 0.0).variant == "int8"
    assert choose_variant(_scores(0.9, 0.88), _scores(0.9, 0.8799), 0.0).variant == "fp32"


def test_without_int8_fp32_is_served_and_a_bad_tolerance_is_refused() -> None:
    chosen = choose_variant(_scores(0.9, 0.88), None, 0.005, "no model.int8.onnx")
    assert chosen.variant == "fp32" and chosen.variant_reason == "fp32: no model.int8.onnx"
    assert set(chosen.variants) == {"fp32"}
    for tolerance in (-0.001, float("nan")):
        with pytest.raises(ValueError, match="int8_tolerance must be >= 0"):
            choose_variant(_scores(0.9, 0.88), _scores(0.9, 0.88), tolerance)


def test_evaluations_round_trip_and_old_ones_load_as_fp32(tmp_path: Path) -> None:
    chosen = choose_variant(_scores(0.9, 0.88), _scores(0.9, 0.88), 0.005)
    save_evaluation(chosen, tmp_path / "new.json")
    assert load_evaluation(tmp_path / "new.json") == chosen
    # What save_evaluation wrote before variants existed.
    old = json.loads((tmp_path / "new.json").read_text())
    for key in ("variant", "variant_reason", "variants"):
        del old[key]
    (tmp_path / "old.json").write_text(json.dumps(old))
    loaded = load_evaluation(tmp_path / "old.json")
    assert loaded.variant == "fp32" and loaded.variant_reason == "" and loaded.variants == {}
    assert loaded.test == chosen.test and "int8_test_accuracy" not in loaded.flat()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"quantize": "int4"}, "--quantize must be one of int8, none, got 'int4'"),
        ({"int8_tolerance": -0.01}, "--int8-tolerance must be 0-1, got -0.01"),
        ({"int8_tolerance": float("nan")}, "--int8-tolerance must be a finite number"),
    ],
)
def test_bad_quantize_settings_name_their_flag(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(BertopsError, match=message):
        cfg.validate_settings(cfg.PipelineConfig().replace(**overrides))
    cfg.validate_settings(cfg.PipelineConfig().replace(quantize="none", int8_tolerance=0.0))


# --- export, scoring and the gate on the real tiny model -----------------------------------------


@pytest.fixture(scope="module")
def int8_model(onnx_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny model with ``model.onnx`` and its ``model.int8.onnx``."""
    model_dir = tmp_path_factory.mktemp("int8") / "model"
    shutil.copytree(onnx_model, model_dir)
    exported = export_int8(model_dir)
    assert exported.path == model_dir / INT8_FILE and exported.path.is_file()
    # Quantization changes outputs, a little.
    assert 0 < exported.max_abs_diff < 0.1
    return model_dir


def test_the_int8_model_loads_and_serves_on_onnx_runtime(int8_model: Path) -> None:
    backend = load_backend(int8_model, ServingConfig(variant="int8"))
    assert backend.variant == "int8" and backend.name == "onnxruntime (CPUExecutionProvider, int8)"
    assert (int8_model / INT8_FILE).stat().st_size < (int8_model / "model.onnx").stat().st_size
    int8 = TextClassifierPredictor(int8_model, ServingConfig(variant="int8"))
    fp32 = TextClassifierPredictor(int8_model, ServingConfig(variant="fp32"))
    assert fp32.backend.name == "onnxruntime (CPUExecutionProvider)" and fp32.backend.variant == "fp32"
    texts = ["Shares rose on Wall Street", "The striker scored twice", "A new phone went on sale"]
    int8_probs, fp32_probs = int8.probabilities(texts), fp32.probabilities(texts)
    np.testing.assert_allclose(int8_probs.sum(axis=1), 1.0, rtol=1e-5)
    assert np.abs(int8_probs - fp32_probs).max() < 0.1


def test_variant_int8_refuses_a_model_without_it(onnx_model: Path) -> None:
    with pytest.raises(ValueError, match=r"variant int8: no model\.int8\.onnx in"):
        load_backend(onnx_model, ServingConfig(variant="int8"))
    with pytest.raises(ValueError, match="variant must be one of auto, fp32, int8; got 'int4'"):
        ServingConfig(variant="int4")


def test_export_beside_the_model_follows_the_quantize_setting(trained_tiny: Path, tmp_path: Path) -> None:
    from bertops.artifacts import training_record
    from components.finetune.finetune import TrainResult

    result = TrainResult(**training_record(trained_tiny))
    for quantize in ("int8", "none"):
        model_dir = shutil.copytree(trained_tiny, tmp_path / quantize)
        export_onnx_beside(model_dir, result, quantize)
        assert (model_dir / "model.onnx").is_file()
        assert (model_dir / INT8_FILE).is_file() == (quantize == "int8")


def _sabotaged(int8_model: Path, out: Path) -> Path:
    """A copy of ``int8_model`` whose int8 graph always answers the first label: an int8 model that fails the gate."""
    import onnx
    from onnx import numpy_helper

    model_dir = shutil.copytree(int8_model, out)
    graph = onnx.load(str(model_dir / INT8_FILE))
    (bias,) = [t for t in graph.graph.initializer if t.name.endswith("classifier.bias")]
    values = numpy_helper.to_array(bias).copy()
    values[0] += 100.0
    bias.CopyFrom(numpy_helper.from_array(values, bias.name))
    onnx.save(graph, str(model_dir / INT8_FILE))
    return model_dir


def test_evaluate_serves_int8_within_the_tolerance_and_fp32_otherwise(
    int8_model: Path, tokenized_small: Path, tmp_path: Path
) -> None:
    served = evaluate_variants(int8_model, tokenized_small, 1.0)
    int8 = evaluate_model(int8_model, tokenized_small, ServingConfig(variant="int8"))
    assert served.variant == "int8" and served.test.predicted == int8.test.predicted
    assert served.test.accuracy == int8.test.accuracy == served.variants["int8"]["test_accuracy"]
    assert set(served.variants) == {"fp32", "int8"}

    worse = evaluate_variants(_sabotaged(int8_model, tmp_path / "worse"), tokenized_small, 0.005)
    fp32 = evaluate_model(int8_model, tokenized_small, ServingConfig(variant="fp32"))
    assert worse.variant == "fp32" and worse.test.predicted == fp32.test.predicted
    assert worse.variants["int8"]["test_accuracy"] < fp32.test.accuracy - 0.005
    assert "more than 0.005 below fp32" in worse.variant_reason


def test_a_model_without_int8_is_evaluated_and_served_as_fp32(onnx_model: Path, tokenized_small: Path) -> None:
    served = evaluate_variants(onnx_model, tokenized_small, 0.005)
    assert served.variant == "fp32" and set(served.variants) == {"fp32"}
    assert served.variant_reason.startswith("fp32: no model.int8.onnx")


# --- the registry records the variant; servers and the gate run what it says ----------------------


def test_serving_json_picks_the_variant_auto_serves(int8_model: Path, tmp_path: Path) -> None:
    model_dir = shutil.copytree(int8_model, tmp_path / "model")
    assert load_backend(model_dir, ServingConfig()).variant == "fp32"  # no serving.json: fp32
    (model_dir / "serving.json").write_text(json.dumps({"variant": "int8", "reason": "int8: within"}))
    assert load_backend(model_dir, ServingConfig()).variant == "int8"
    assert load_backend(model_dir, ServingConfig(variant="fp32")).variant == "fp32"
    (model_dir / "serving.json").write_text('{"variant": "int4"}')
    with pytest.raises(ValueError, match=r"serving\.json: 'variant' must be one of fp32, int8"):
        read_serving_record(model_dir)


def test_the_gate_scores_a_champion_as_its_serving_json_says(
    int8_model: Path, tokenized_small: Path, tmp_path: Path
) -> None:
    model_dir = shutil.copytree(int8_model, tmp_path / "champion")
    (model_dir / "serving.json").write_text(json.dumps({"variant": "int8", "reason": "r"}))
    assert evaluate_model(model_dir, tokenized_small).variant == "int8"


@pytest.fixture(scope="module")
def registry(int8_model: Path, onnx_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Version 1 of NAME registered before variants existed (no serving.json); version 2 with int8 served."""
    state = tmp_path_factory.mktemp("int8-registry") / "state"
    register_model(Submission(onnx_model, NAME, {}, {}, LINEAGE), True, str(state))
    chosen = replace(_scores(0.9, 0.88), variant="int8", variant_reason="int8: within 0.005 of fp32")
    register_model(Submission(int8_model, NAME, {}, {}, LINEAGE, serving=chosen.serving_record()), False, str(state))
    yield state
    for endpoint in endpoints.list_endpoints(state):
        endpoints.delete(endpoint.name, state)


def _served_backend(endpoint: endpoints.Endpoint) -> str:
    """The backend the server at ``endpoint`` logged at start, once it answers a prediction."""
    answer = requests.post(f"{endpoint.url}/v1/models/{NAME}:predict", json={"instances": ["Oil fell"]}, timeout=60)
    assert answer.status_code == 200, answer.text
    (line,) = [line for line in Path(endpoint.log_file).read_text().splitlines() if "warm-up:" in line]
    return line


def test_a_registered_int8_version_is_served_from_model_int8_onnx(registry: Path) -> None:
    shown = models.show_version(NAME, "2", str(registry))
    assert "  serving         int8  int8: within 0.005 of fp32" in shown
    assert "serving         fp32  (registered before the int8 variant)" in models.show_version(NAME, "1", str(registry))
    assert "onnxruntime (CPUExecutionProvider, int8)" in _served_backend(deploy_local(NAME, "2", str(registry)))


def test_a_version_registered_before_variants_is_served_as_fp32(registry: Path) -> None:
    line = _served_backend(deploy_local(NAME, "1", str(registry)))
    assert "onnxruntime (CPUExecutionProvider)" in line and "int8" not in line


def test_the_pipeline_passes_quantize_to_finetune_and_the_tolerance_to_evaluate(tmp_path: Path) -> None:
    import yaml

    from cli.main import main

    out = tmp_path / "pipeline.yaml"
    assert main(["compile", "--output", str(out)]) == 0
    spec = next(yaml.safe_load_all(out.read_text()))
    defaults = {k: v.get("defaultValue") for k, v in spec["root"]["inputDefinitions"]["parameters"].items()}
    assert (defaults["quantize"], defaults["int8_tolerance"]) == ("int8", 0.005)
    tasks = spec["components"]["comp-for-loop-1"]["dag"]["tasks"]
    for task, name in (("finetune", "quantize"), ("evaluate", "int8_tolerance")):
        binding = tasks[task]["inputs"]["parameters"][name]
        assert binding == {"componentInputParameter": f"pipelinechannel--{name}"}
