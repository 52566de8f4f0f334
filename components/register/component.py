"""KFP component: register the model version in MLflow and publish its model card."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Metrics, Model, Output

from bertops.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def register(
    model: Input[Model],
    test_metrics: Input[Metrics],
    train_metrics: Input[Metrics],
    tokenized: Input[Dataset],
    data_version: str,
    passed: bool,
    model_name: str,
    state_dir: str,
    tracking_uri: str,
    git_commit: str,
    pipeline_run: str,
    model_card: Output[Markdown],
) -> str:
    """Register the model with its metrics and lineage; returns the new version.

    The ``champion`` alias moves to it if it passed the gate.
    """
    from pathlib import Path

    from bertops.step import step
    from components.register.register import model_card as render_card
    from components.register.register import register_model

    with step("register"):
        metrics = {k: float(v) for k, v in test_metrics.metadata.items() if isinstance(v, (int, float))}
        metrics.update(
            {f"train_{k}": float(v) for k, v in train_metrics.metadata.items() if isinstance(v, (int, float))}
        )
        params = {"max_length": tokenized.metadata.get("max_length"), **model.metadata}
        lineage = {
            "data_version": data_version,
            "git_commit": git_commit,
            "base_model": str(model.metadata.get("base_model", "")),
            "pipeline_run": pipeline_run,
        }
        result = register_model(Path(model.path), model_name, metrics, params, lineage, passed, state_dir, tracking_uri)
        Path(model_card.path).write_text(render_card(model_name, metrics, params, lineage), encoding="utf-8")
        return result.version
