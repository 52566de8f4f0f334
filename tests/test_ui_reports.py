"""The HTML pages the Kubeflow UI shows (a candidate's training curves, the winner's error
analysis), rendered from real training runs and evaluations; and a local run's copies of them."""

from __future__ import annotations

import base64
import json
from html.parser import HTMLParser
from pathlib import Path

import pytest

from bertops.artifacts import CURVES_FILE, load_texts, training_record
from bertops.evaluation import load_evaluation, save_evaluation
from components.candidates.error_analysis import error_analysis_html
from components.finetune.curves import curves_html
from serving.scoring import evaluate_model

INJECTED = '<script>alert("owned")</script> & <img src=x onerror=alert(1)>'


class _Page(HTMLParser):
    """What a browser would build from the page: its elements' tags, the table rows as cell texts, the images."""

    def __init__(self, markup: str) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.rows: list[list[str]] = []
        self.images: list[dict[str, str | None]] = []
        self._cell: list[str] | None = None
        self.feed(markup)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.images.append(dict(attrs))

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _png(image: dict[str, str | None]) -> bytes:
    src = image["src"] or ""
    assert src.startswith("data:image/png;base64,"), src[:40]
    return base64.b64decode(src.removeprefix("data:image/png;base64,"))


@pytest.fixture(scope="module")
def trained(tokenized_small: Path, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model after 20 steps, evaluated twice on the way: real curves, and mistakes to analyse."""
    from components.finetune.config import LoopConfig
    from components.finetune.finetune import train

    out = tmp_path_factory.mktemp("trained-briefly")
    train(tokenized_small, out, LoopConfig(base_model=str(tiny_model), max_steps=20, learning_rate=2e-3, eval_every=10))
    return out


def test_the_curves_page_shows_a_real_run_its_numbers_and_its_figure_inline(trained: Path) -> None:
    record = training_record(trained)
    figure = (trained / CURVES_FILE).read_bytes()
    settings = {"learning_rate": 0.002, "base_model": INJECTED}
    page = _Page(curves_html(INJECTED, record, settings, figure))
    # The candidate id and settings are data: shown as text, never markup.
    assert "script" not in page.tags and page.images[0]["alt"] == "training curves"
    assert [_png(image) for image in page.images] == [figure]
    cells = {row[0]: row[1:] for row in page.rows if row}
    assert cells["optimizer steps"] == [str(record["steps"])] == ["20"]
    assert cells["validation accuracy (exported model)"] == [f"{record['validation_accuracy']:.4f}"]
    assert cells["base_model"] == [repr(INJECTED)] and cells["learning_rate"] == ["0.002"]
    history = [row for row in page.rows if row and row[0] in {str(h["step"]) for h in record["history"]}]
    assert len(history) == len(record["history"]) == 2


@pytest.fixture(scope="module")
def evaluated(trained: Path, tokenized_small: Path) -> tuple:
    result = evaluate_model(trained, tokenized_small)
    return result.test, load_texts(tokenized_small, "test")


def test_the_error_analysis_lists_classes_mistakes_and_a_reliability_diagram(evaluated: tuple) -> None:
    result, texts = evaluated
    assert len(result.actual) == len(result.confidence) == len(texts) == result.rows == 60
    wrong = [i for i in range(result.rows) if result.actual[i] != result.predicted[i]]
    assert wrong, "the tiny model is right on every test row: nothing to analyse"
    # The most confident mistake leads the list; its text is made hostile to check the escaping.
    first = max(wrong, key=lambda i: (result.confidence[i], -i))
    texts = [INJECTED if i == first else text for i, text in enumerate(texts)]
    markup = error_analysis_html("higher-lr", result, texts)
    page = _Page(markup)
    assert "script" not in page.tags and INJECTED not in markup
    header = next(row for row in page.rows if row[:2] == ["class", "precision"])
    assert header == ["class", "precision", "recall", "F1", "support"]
    classes = {row[0]: row[1:] for row in page.rows if row and row[0] in result.labels and len(row) == 5}
    assert set(classes) == set(result.labels) == {"business", "entertainment", "politics", "sports", "tech"}
    for label, (precision, _, f1, support) in classes.items():
        assert precision == f"{result.per_class[label]['precision']:.4f}"
        assert f1 == f"{result.per_class[label]['f1']:.4f}"
        assert support == str(result.per_class[label]["support"])
    mistakes = [row for row in page.rows if len(row) == 5 and row[0].isdigit()]
    assert len(mistakes) == len(wrong)
    assert mistakes[0] == [
        str(first),
        result.actual[first],
        result.predicted[first],
        f"{result.confidence[first]:.4f}",
        INJECTED,
    ]
    assert f"Misclassified texts ({len(wrong)} of 60)" in markup
    (diagram,) = page.images
    assert diagram["alt"] == "reliability diagram" and _png(diagram).startswith(b"\x89PNG\r\n\x1a\n")


def test_an_evaluation_written_before_per_row_confidences_still_renders(evaluated: tuple, tmp_path: Path) -> None:
    """Registered versions' evaluations hold no per-row labels or confidences: the page says so."""
    from bertops.evaluation import ModelEvaluation

    result, texts = evaluated
    path = tmp_path / "evaluation.json"
    save_evaluation(ModelEvaluation(result, result, 1.0), path)
    raw = json.loads(path.read_text())
    for split in ("validation", "test"):
        del raw[split]["actual"], raw[split]["confidence"]
    path.write_text(json.dumps(raw))
    old = load_evaluation(path).test
    page = _Page(error_analysis_html("base", old, texts))
    assert not page.images and {row[0] for row in page.rows if len(row) == 5} >= set(result.labels)
    assert "written by an older version" in error_analysis_html("base", old, texts)


@pytest.mark.e2e
def test_bertops_run_leaves_the_pages_where_its_summary_says(
    bbc_data: Path, tiny_model: Path, state_dir: Path, capsys
) -> None:
    """The same pages a Kubeflow user opens in the UI, after a local run: one folder per run."""
    from cli.main import main

    flags = {
        "data-path": bbc_data,
        "state-dir": state_dir,
        "base-model": tiny_model,
        "max-train-samples": 200,
        "max-eval-samples": 60,
        "max-length": 32,
        "max-steps": 6,
        "eval-every": 3,
        "learning-rate": 0.002,
        # Not promoted: nothing is deployed, the reports are still written.
        "min-accuracy": 1.0,
        "model-name": "ui-reports",
    }
    assert main(["run", *(part for name, value in flags.items() for part in (f"--{name}", str(value)))]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.strip().startswith("reports"))
    folder = Path(line.split()[1])
    assert folder.parent == state_dir / "reports" and folder.name.startswith("bertops-text-classifier-")
    assert sorted(p.name for p in folder.iterdir()) == [
        "curves-base.html",
        "curves-higher-lr.html",
        "error-analysis.html",
        "selection.md",
        "validation.html",
    ]
    for candidate in ("base", "higher-lr"):
        page = _Page((folder / f"curves-{candidate}.html").read_text())
        assert _png(page.images[0]).startswith(b"\x89PNG")
        assert f"Fine-tuning: candidate {candidate}" in (folder / f"curves-{candidate}.html").read_text()
    winner = (folder / "error-analysis.html").read_text()
    assert "Error analysis: candidate " in winner and "reliability diagram" in winner
