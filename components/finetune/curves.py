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
