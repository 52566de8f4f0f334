"""KFP component: evaluate one candidate; the Kubeflow UI draws its confusion matrix and metrics."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from bertops.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def evaluate(
    model: Input[Model],
    tokenized: Input[Dataset],
    metrics: Output[Metrics],
    confusion: Output[ClassificationMetrics],
    evaluation: Output[Artifact],
    plots: Output[HTML],
    int8_tolerance: float = 0.005,
) -> None:
    """Score the model as the server runs it (ONNX Runtime when it has ``model.onnx``) on the
    validation and test splits: accuracy, macro and per-class precision/recall/F1, ECE, the
    latency of a batch of 32 texts, and the test confusion matrix (also as a PNG). With a
    ``model.int8.onnx`` its int8 variant is scored too and served when its test accuracy and
    macro F1 are within ``int8_tolerance`` of fp32's; the metrics are the served variant's."""
    import base64
    import tempfile
    from pathlib import Path

    from bertops.evaluation import confusion_matrix_png, save_evaluation
    from bertops.step import step
    from serving.scoring import evaluate_variants

    with step("evaluate"):
        result = evaluate_variants(Path(model.path), Path(tokenized.path), int8_tolerance)
        for name, value in result.flat().items():
            metrics.log_metric(name, value)
        confusion.log_confusion_matrix(result.test.labels, result.test.confusion_matrix)
        save_evaluation(result, Path(evaluation.path))
        # Lets the select step pair each evaluation with its model whatever order they arrive in.
        evaluation.metadata["model_uri"] = model.uri
        with tempfile.TemporaryDirectory() as scratch:
            png = Path(scratch) / "confusion.png"
            confusion_matrix_png(result.test, png)
            encoded = base64.b64encode(png.read_bytes()).decode()
        Path(plots.path).write_text(
            f'<!doctype html><meta charset="utf-8"><title>confusion matrix</title>'
            f'<img alt="confusion matrix" src="data:image/png;base64,{encoded}">',
            encoding="utf-8",
        )
