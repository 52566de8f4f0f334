"""KFP component: fine-tune on a GPU node (CPU when none is there)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from bertops.images import CUDA_IMAGE


@dsl.component(base_image=CUDA_IMAGE, install_kfp_package=False)
def finetune(
    tokenized: Input[Dataset],
    base_model: str,
    batch_size: int,
    epochs: int,
    max_steps: int,
    learning_rate: float,
    warmup_ratio: float,
    weight_decay: float,
    seed: int,
    model: Output[Model],
    metrics: Output[Metrics],
) -> None:
    """Fine-tune ``base_model`` and publish the model directory and its training metrics."""
    from pathlib import Path

    from bertops.step import step
    from components.finetune.finetune import finetune as run_finetune

    with step("finetune"):
        result = run_finetune(
            Path(tokenized.path),
            Path(model.path),
            base_model,
            batch_size,
            epochs,
            max_steps,
            learning_rate,
            warmup_ratio,
            weight_decay,
            seed,
        )
        model.metadata.update({"base_model": base_model, "framework": "transformers"})
        for name in ("final_train_loss", "validation_accuracy", "samples_per_second", "train_seconds"):
            metrics.log_metric(name, float(getattr(result, name)))
        metrics.log_metric("steps", float(result.steps))
