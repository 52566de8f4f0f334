"""KFP component: evaluate on the test split; the Kubeflow UI draws the confusion matrix."""

from kfp import dsl
from kfp.dsl import ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from bertops.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def evaluate(
    model: Input[Model],
    tokenized: Input[Dataset],
    min_accuracy: float,
    metrics: Output[Metrics],
    confusion: Output[ClassificationMetrics],
) -> bool:
    """Score the model on held-out data; returns whether it clears the deployment gate.

    A single output on purpose: the local runner resolves ``dsl.If`` conditions only on a
    task's single ``Output``.
    """
    from pathlib import Path

    from bertops.step import step
    from components.evaluate.evaluate import evaluate_model

    with step("evaluate"):
        result = evaluate_model(Path(model.path), Path(tokenized.path))
        metrics.log_metric("accuracy", result.accuracy)
        metrics.log_metric("macro_f1", result.macro_f1)
        metrics.log_metric("test_rows", float(result.test_rows))
        for name, scores in result.per_class.items():
            metrics.log_metric(f"f1_{name}", scores["f1"])
        confusion.log_confusion_matrix(result.labels, result.confusion_matrix)
        return result.accuracy >= min_accuracy
