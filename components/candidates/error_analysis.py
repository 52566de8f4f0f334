"""The winner's error analysis: where it is wrong on the test split, and how far to trust its confidence.

One self-contained HTML page (``bertops.html_report``): the per-class table, the confusion matrix,
a reliability diagram and the misclassified test texts with their true and predicted labels.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

from bertops import html_report
from bertops.evaluation import Evaluation

RELIABILITY_BINS = 10
# Enough rows to see what goes wrong without a page the browser struggles with; the most
# confident mistakes come first.
MAX_MISCLASSIFIED = 200
MAX_TEXT_CHARS = 1000


def reliability_png(confidence: Sequence[float], correct: Sequence[bool], bins: int = RELIABILITY_BINS) -> bytes:
    """Reliability diagram: accuracy against confidence per equal-width bin, with each bin's row count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    conf, hit = np.asarray(confidence, dtype=float), np.asarray(correct, dtype=float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    accuracy = np.divide(np.bincount(which, weights=hit, minlength=bins), counts, out=np.zeros(bins), where=counts > 0)
    centers, width = (edges[:-1] + edges[1:]) / 2, 1.0 / bins
    fig, (acc_ax, count_ax) = plt.subplots(
        2, 1, figsize=(5.5, 6), sharex=True, height_ratios=(3, 1), constrained_layout=True
    )
    acc_ax.bar(centers[counts > 0], accuracy[counts > 0], width=width * 0.9, color="tab:blue", label="accuracy")
    acc_ax.plot([0, 1], [0, 1], linestyle="--", color="gray", label="perfect calibration")
    acc_ax.set(ylabel="accuracy", title="Reliability (test split)", ylim=(0, 1), xlim=(0, 1))
    acc_ax.legend(loc="upper left")
    count_ax.bar(centers, counts, width=width * 0.9, color="tab:gray")
    count_ax.set(xlabel="confidence (probability of the predicted label)", ylabel="rows")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()


def _misclassified_rows(result: Evaluation, texts: Sequence[str]) -> list[tuple[object, ...]]:
    """(row, true, predicted, confidence, text) of each mistake, the most confident first."""
    wrong = [i for i, (a, p) in enumerate(zip(result.actual, result.predicted, strict=True)) if a != p]
    wrong.sort(key=lambda i: (-result.confidence[i], i))
    rows: list[tuple[object, ...]] = []
    for i in wrong:
        shown = texts[i] if len(texts[i]) <= MAX_TEXT_CHARS else texts[i][:MAX_TEXT_CHARS] + " […]"
        rows.append((i, result.actual[i], result.predicted[i], result.confidence[i], shown))
    return rows


def error_analysis_html(candidate: str, result: Evaluation, texts: Sequence[str]) -> str:
    """The error-analysis page of ``candidate`` on the test split whose texts are ``texts`` (in row order)."""
    title = f"Error analysis: candidate {candidate} on the test split"
    per_class = [
        (label, s["precision"], s["recall"], s["f1"], int(s["support"])) for label, s in result.per_class.items()
    ]
    sections = [
        f"<p>accuracy {result.accuracy:.4f}, macro F1 {result.macro_f1:.4f}, expected calibration error "
        f"{result.ece:.4f}, on {result.rows} rows.</p>",
        "<h2>Per class</h2>",
        html_report.table(["class", "precision", "recall", "F1", "support"], per_class),
        "<h2>Confusion matrix</h2><p class='note'>rows: true class; columns: predicted class</p>",
        html_report.table(
            ["true \\ predicted", *result.labels],
            [(label, *row) for label, row in zip(result.labels, result.confusion_matrix, strict=True)],
        ),
    ]
    if not (result.actual and result.confidence) or len(texts) != len(result.actual):
        sections.append(
            "<p class='note'>This evaluation holds no per-row labels and confidences matching the test split "
            "(it was written by an older version): no reliability diagram or misclassified texts.</p>"
        )
        return html_report.page(title, sections)
    correct = [a == p for a, p in zip(result.actual, result.predicted, strict=True)]
    mistakes = _misclassified_rows(result, texts)
    shown = mistakes[:MAX_MISCLASSIFIED]
    sections += [
        "<h2>Reliability</h2>",
        html_report.png_image(reliability_png(result.confidence, correct), "reliability diagram"),
        f"<h2>Misclassified texts ({len(mistakes)} of {result.rows})</h2>",
        f"<p class='note'>the most confident mistakes first; showing {len(shown)}; texts cut at "
        f"{MAX_TEXT_CHARS} characters</p>",
        html_report.table(["row", "true", "predicted", "confidence", "text"], shown, text_column=4),
    ]
    return html_report.page(title, sections)
