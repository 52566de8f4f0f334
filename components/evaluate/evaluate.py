"""The evaluate step's own output: the confusion matrix as a figure.

The scoring itself is ``serving.scoring.evaluate_model``: the promotion gate scores the champion
with it too, through the same predictor the server runs.
"""

from __future__ import annotations

from pathlib import Path

from bertops.evaluation import Evaluation


def confusion_matrix_png(result: Evaluation, path: Path, title: str = "Confusion matrix (test split)") -> None:
    """Draw the confusion matrix as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = max(4.0, 0.9 * len(result.labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(result.confusion_matrix, cmap="Blues")
    ax.set_xticks(range(len(result.labels)), result.labels, rotation=45, ha="right")
    ax.set_yticks(range(len(result.labels)), result.labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    peak = max((max(row) for row in result.confusion_matrix), default=0)
    for i, row in enumerate(result.confusion_matrix):
        for j, count in enumerate(row):
            ax.text(j, i, str(count), ha="center", va="center", color="white" if count > peak / 2 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
