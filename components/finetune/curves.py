"""Training curves: loss and validation metrics per evaluation, drawn to a PNG beside the model."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def plot_curves(history: Sequence[dict[str, Any]], path: Path) -> None:
    """Draw train/validation loss and validation accuracy against the optimizer step to ``path``."""
    import matplotlib

    # Agg: pipeline pods and CI have no display.
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [row["step"] for row in history]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    loss_ax.plot(steps, [row["train_loss"] for row in history], marker="o", label="train")
    loss_ax.plot(steps, [row["val_loss"] for row in history], marker="o", label="validation")
    loss_ax.set(xlabel="step", ylabel="cross-entropy loss", title="Loss")
    loss_ax.legend()
    acc_ax.plot(steps, [row["val_accuracy"] for row in history], marker="o", color="tab:green")
    acc_ax.set(xlabel="step", ylabel="accuracy", title="Validation accuracy", ylim=(0.0, 1.0))
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
    fig.savefig(path, dpi=100)
    plt.close(fig)


# The record's numbers the curves page leads with, and how it names them.
KEY_NUMBERS = (
    ("steps", "optimizer steps"),
    ("final_train_loss", "final train loss"),
    ("validation_accuracy", "validation accuracy (exported model)"),
    ("best_step", "best step"),
    ("samples_per_second", "samples/s"),
    ("train_seconds", "training seconds"),
    ("device", "device"),
    ("precision", "precision"),
    ("world_size", "processes"),
    ("effective_batch_size", "effective batch size"),
    ("resumed_from_step", "resumed from step"),
    ("stopped_early", "stopped early"),
)
# The settings the page shows: what a candidate may change.
SHOWN_SETTINGS = ("base_model", "learning_rate", "batch_size", "epochs", "max_steps")
HISTORY_COLUMNS = ("step", "epoch", "train_loss", "val_loss", "val_accuracy", "learning_rate")


def _shown(column: str, value: Any) -> Any:
    """A history value as the page shows it: learning rates in significant digits (they are tiny)."""
    return f"{value:.3g}" if column == "learning_rate" and isinstance(value, float) else value


def curves_html(candidate: str, record: dict[str, Any], settings: dict[str, Any], png: bytes | None) -> str:
    """The candidate's training page for the Kubeflow UI: its settings, the run's key numbers from
    ``record`` (``training.json``), the curves figure ``png`` inline and the evaluation history."""
    from bertops import html_report

    history = record.get("history") or []
    sections = [
        "<h2>Settings</h2>",
        # As given: a learning rate of 5e-05 must not read as 0.0001.
        html_report.table(["setting", "value"], [(name, repr(value)) for name, value in sorted(settings.items())]),
        "<h2>Result</h2>",
        html_report.table(["", "value"], [(label, record[key]) for key, label in KEY_NUMBERS if key in record]),
        "<h2>Curves</h2>",
        html_report.png_image(png, "training curves") if png else "<p class='note'>no evaluation ran: no curves</p>",
    ]
    if history:
        sections += [
            "<h2>Evaluations</h2>",
            html_report.table(
                HISTORY_COLUMNS, [[_shown(c, row.get(c, "")) for c in HISTORY_COLUMNS] for row in history]
            ),
        ]
    return html_report.page(f"Fine-tuning: candidate {candidate}", sections)


def write_curves_page(
    path: Path, candidate: str, model_dir: Path, record: dict[str, Any], settings: dict[str, Any]
) -> None:
    """Write the candidate's ``curves_html`` page to ``path``, with the figure the run left in ``model_dir``."""
    from bertops.artifacts import CURVES_FILE

    figure = model_dir / CURVES_FILE
    shown = {name: settings[name] for name in SHOWN_SETTINGS if name in settings}
    page = curves_html(candidate, record, shown, figure.read_bytes() if figure.is_file() else None)
    path.write_text(page, encoding="utf-8")
