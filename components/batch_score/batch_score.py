"""Score a file or folder of texts with a registered version, through the predictor the server runs.

``batch_score`` reads and checks the whole input first, resolves the version (the champion unless
one is named), then scores the rows chunk by chunk into a resumable output folder
(``components.batch_score.chunks``) and writes ``predictions.parquet`` and a summary
(``summary.json``, ``summary.md``). The predictor is ``serving.predictor.TextClassifierPredictor``
with the server's settings, so a row gets the label the endpoint gives it.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bertops.dvc_data import data_version, dvc_file_for
from components.batch_score.chunks import (
    PREDICTIONS,
    ChunkStore,
    Manifest,
    check_output_folder,
    exclusive,
    prepare,
    write_atomically,
)
from components.batch_score.config import BatchScoreConfig
from components.batch_score.inputs import ScoringInput, read_input
from components.batch_score.model import RegisteredModel, fetch_model
from serving.config import ServingConfig
from serving.predictor import TextClassifierPredictor

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

log = logging.getLogger(__name__)

SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"
# Rows handed to the predictor at once: enough batches for its length sort to cut padding, few
# enough that progress moves often.
WINDOW_BATCHES = 8
PROBABILITY_PREFIX = "prob_"
# ``progress(done, total)``: rows scored so far (those of an earlier run included) and in all.
Progress = Callable[[int, int], None]


def tracked_root(path: Path) -> Path | None:
    """The DVC-tracked path that holds ``path`` (``data`` for ``data/test.jsonl`` beside ``data.dvc``)."""
    for candidate in (path.resolve(), *path.resolve().parents):
        if candidate.name and dvc_file_for(candidate).is_file():
            return candidate
    return None


def input_version(path: Path) -> str:
    """The DVC version (``md5:...``) of the data holding ``path``, or ``untracked``."""
    root = tracked_root(path)
    return data_version(root) if root is not None else "untracked"


def score_rows(
    predictor: TextClassifierPredictor, texts: Sequence[str], window: int, tick: Callable[[int], None]
) -> np.ndarray:
    """Class probabilities of ``texts``, ``window`` rows at a time; ``tick(rows)`` after each window."""
    import numpy as np

    probs = np.empty((len(texts), len(predictor.labels)), dtype=np.float32)
    for start in range(0, len(texts), window):
        stop = min(start + window, len(texts))
        probs[start:stop] = predictor.probabilities(texts[start:stop])
        tick(stop - start)
    return probs


def chunk_table(
    data: ScoringInput, start: int, stop: int, probs: np.ndarray, labels: list[str], model: RegisteredModel
) -> pa.Table:
    """The predictions of input rows ``[start, stop)``: where each row came from, its label,
    confidence and every class's probability, and the version that gave them."""
    import pyarrow as pa

    rows = stop - start
    best = probs.argmax(axis=1)
    columns: dict[str, Any] = {
        "source": pa.array(data.sources[start:stop], pa.string()),
        "row": pa.array(data.rows[start:stop], pa.int64()),
        "label": pa.array([labels[i] for i in best], pa.string()),
        "confidence": pa.array(probs.max(axis=1), pa.float32()),
    }
    for column, label in enumerate(labels):
        columns[f"{PROBABILITY_PREFIX}{label}"] = pa.array(probs[:, column], pa.float32())
    columns["model_name"] = pa.array([model.name] * rows, pa.string())
    columns["model_version"] = pa.array([model.version] * rows, pa.string())
    return pa.table(columns)


def score_missing(
    store: ChunkStore, data: ScoringInput, model: RegisteredModel, batch_size: int, progress: Progress | None
) -> tuple[int, float, str]:
    """Score every chunk not on disk yet; ``(rows scored, seconds, backend)``."""
    missing = store.missing()
    if not missing:
        return 0, 0.0, ""
    predictor = TextClassifierPredictor(model.directory, ServingConfig(max_batch_size=batch_size))
    total = len(data)
    done = total - sum(store.bounds(i)[1] - store.bounds(i)[0] for i in missing)
    if done:
        log.info("resuming: %d of %d rows were scored by an earlier run", done, total)
    report = progress or (lambda _done, _total: None)
    report(done, total)
    started, scored, next_log = time.perf_counter(), 0, 0.0

    def tick(rows: int) -> None:
        nonlocal done, scored, next_log
        done, scored = done + rows, scored + rows
        report(done, total)
        if done / total >= next_log:
            next_log = done / total + 0.1
            log.info("scored %d/%d rows (%.0f rows/s)", done, total, scored / (time.perf_counter() - started))

    for index in missing:
        start, stop = store.bounds(index)
        probs = score_rows(predictor, data.texts[start:stop], batch_size * WINDOW_BATCHES, tick)
        store.write(index, chunk_table(data, start, stop, probs, predictor.labels, model))
    return scored, time.perf_counter() - started, predictor.backend.name


def summarize(
    predictions: Path, manifest: Manifest, data_path: Path, scored: int, seconds: float, backend: str
) -> dict[str, Any]:
    """What the run produced: rows, label mix, mean confidence, throughput, version and lineage."""
    import pyarrow.parquet as pq

    table = pq.read_table(predictions, columns=["label", "confidence"])
    counts = dict(sorted(Counter(table.column("label").to_pylist()).items()))
    confidence = table.column("confidence").to_numpy()
    return {
        "model_name": manifest.model_name,
        "model_version": manifest.model_version,
        "input": manifest.input,
        "input_files": manifest.input_files,
        "data_version": input_version(data_path),
        "text_column": manifest.text_column,
        "rows": manifest.rows,
        "label_counts": counts,
        "label_shares": {label: n / manifest.rows for label, n in counts.items()},
        "mean_confidence": float(confidence.mean()),
        "rows_scored_by_this_run": scored,
        "rows_from_an_earlier_run": manifest.rows - scored,
        "seconds": seconds,
        "rows_per_s": scored / seconds if seconds else 0.0,
        "backend": backend,
        "predictions": PREDICTIONS,
    }


def summary_markdown(summary: dict[str, Any]) -> str:
    """The summary as a short Markdown page (the Kubeflow UI renders it)."""
    earlier = summary["rows_from_an_earlier_run"]
    resumed = f" ({earlier} scored by an earlier, interrupted run)" if earlier else ""
    speed = (
        f"{summary['rows_per_s']:.1f} rows/s on {summary['backend']} ({summary['rows_scored_by_this_run']} rows "
        f"in {summary['seconds']:.1f} s)"
        if summary["seconds"]
        else "nothing left to score in this run"
    )
    lines = [
        f"# Batch scoring of {summary['input']}",
        "",
        "| | |",
        "|---|---|",
        f"| model | {summary['model_name']} version {summary['model_version']} |",
        f"| data version | {summary['data_version']} |",
        f"| rows | {summary['rows']}{resumed} |",
        f"| mean confidence | {summary['mean_confidence']:.3f} |",
        f"| throughput | {speed} |",
        f"| predictions | {summary['predictions']} |",
        "",
        "| predicted label | rows | share |",
        "|---|---:|---:|",
    ]
    lines += [
        f"| {label} | {n} | {summary['label_shares'][label]:.1%} |" for label, n in summary["label_counts"].items()
    ]
    return "\n".join(lines) + "\n"


def write_summary(summary: dict[str, Any], out: Path) -> None:
    """``summary.md``, then ``summary.json``: the JSON file marks the output folder complete."""
    markdown = summary_markdown(summary).encode()
    write_atomically(out / SUMMARY_MD, lambda handle: handle.write(markdown))
    body = json.dumps(summary, indent=2).encode()
    write_atomically(out / SUMMARY_JSON, lambda handle: handle.write(body))


def batch_score(config: BatchScoreConfig, out: Path, progress: Progress | None = None) -> dict[str, Any]:
    """Score ``config.data_path`` into ``out`` (resuming what a killed run left there); the summary.

    Bad input (no such file, an empty file, no text column, a row without text), an unknown
    version and an output folder that holds other predictions raise ``BertopsError`` naming the
    file, column, row or difference, before any prediction is written.
    """
    data_path = Path(config.data_path)
    data = read_input(data_path, config.text_column)
    check_output_folder(out)
    with tempfile.TemporaryDirectory(prefix="bertops-score-") as scratch:
        model = fetch_model(
            config.model_name, config.model_version, config.state_dir, config.tracking_uri, Path(scratch)
        )
        manifest = Manifest(
            model.name,
            model.version,
            str(data_path),
            data.fingerprint,
            config.text_column,
            len(data),
            config.chunk_rows,
        )
        with exclusive(out):
            prepare(out, manifest)
            if (out / SUMMARY_JSON).is_file():
                log.info("%s: already complete, nothing to score", out)
                return dict(json.loads((out / SUMMARY_JSON).read_text(encoding="utf-8")))
            store = ChunkStore(out, manifest)
            store.open()
            scored, seconds, backend = score_missing(store, data, model, config.batch_size, progress)
            store.assemble(out / PREDICTIONS)
            summary = summarize(out / PREDICTIONS, manifest, data_path, scored, seconds, backend)
            write_summary(summary, out)
            store.remove()
    log.info(
        "%s: %d rows with %s v%s, mean confidence %.3f", out, summary["rows"], model.name, model.version,
        summary["mean_confidence"],
    )  # fmt: skip
    return summary


def pull_input(path: Path, remote: str) -> None:
    """``dvc pull`` the DVC-tracked data that holds ``path`` from ``remote``."""
    from bertops.dvc_data import pull_from_remote
    from bertops.errors import BertopsError

    root = tracked_root(path)
    if root is None:
        raise BertopsError(
            f"{path}: no .dvc file tracks it or a folder holding it, so it cannot be pulled from {remote!r}"
        )
    pull_from_remote(root, remote)
