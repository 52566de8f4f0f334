"""The inference log: one JSON Lines record per text a model answered, written by the server or the sink.

The model server (``serving.kserve_model``, ``--log-inference-dir``) and the cluster's inference
sink (``serving.inference_sink``, fed by KServe's ``logger``) both write these records, and the
drift monitor reads them back with ``read_records``. A record::

    {"ts": "2026-12-02T11:00:00.123456+00:00", "model": "news", "model_version": "3",
     "request_id": "...", "text": "...", "text_sha256": "...", "text_chars": 42,
     "label": "sport", "confidence": 0.91, "probabilities": {"sport": 0.91, ...}}

Texts may be personal data: with ``log_texts`` off a record keeps only ``text_sha256`` and
``text_chars`` (the stripped length, as the data gate measures it), and the measures that need
the text itself are skipped by the monitor.

Writing happens on a thread of its own behind a bounded queue: a request only builds its
records and offers them to the queue, never waits for the disk; when the queue is full the
records are dropped and counted (``on_drop``). Files rotate by size, one current file per
writer process, and the oldest rotated files are removed past ``max_files``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import queue
import random
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# Every file of the log ends so; the current file of a writer is PREFIX-PID.jsonl, rotated ones
# PREFIX-PID.TIMESTAMP.jsonl.
SUFFIX = ".jsonl"
_STOP = object()


@dataclass(frozen=True)
class LogSettings:
    """Where and how much a writer logs."""

    directory: Path
    sample_rate: float = 1.0
    log_texts: bool = True
    max_file_bytes: int = 64 * 1024 * 1024
    max_files: int = 10
    queue_size: int = 10_000
    prefix: str = "inference"

    def __post_init__(self) -> None:
        if not 0.0 <= self.sample_rate <= 1.0:
            raise ValueError(f"sample rate must be between 0 and 1, got {self.sample_rate}")
        for name in ("max_file_bytes", "max_files", "queue_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


def local_log_dir(state_dir: str | Path, model: str) -> Path:
    """Where a local endpoint of ``model`` writes its inference log: ``STATE_DIR/inference-logs/MODEL``."""
    return Path(state_dir).resolve() / "inference-logs" / model


def utc_now() -> str:
    """The current time as the records' ISO-8601 UTC timestamp."""
    return datetime.now(UTC).isoformat()


def text_sha256(text: str) -> str:
    """The hex SHA-256 of a text's UTF-8 bytes (lone surrogates escaped, as the server refuses them anyway)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def make_record(
    model: str,
    model_version: str,
    request_id: str,
    text: str,
    probabilities: dict[str, float],
    log_texts: bool,
    ts: str | None = None,
) -> dict[str, Any]:
    """One record of the log: the text (or only its hash and length), the answer, and who answered it."""
    label = max(probabilities, key=probabilities.__getitem__) if probabilities else ""
    record: dict[str, Any] = {
        "ts": ts or utc_now(),
        "model": model,
        "model_version": model_version,
        "request_id": request_id,
    }
    if log_texts:
        record["text"] = text
    record |= {
        "text_sha256": text_sha256(text),
        # Stripped, as the data gate measures lengths: the monitor compares the two.
        "text_chars": len(text.strip()),
        "label": label,
        "confidence": float(probabilities.get(label, 0.0)),
        "probabilities": {k: float(v) for k, v in probabilities.items()},
    }
    return record


class InferenceLogWriter:
    """Appends records to rotating JSON Lines files from a background thread, never blocking the caller.

    ``on_written``, ``on_drop`` and ``on_error`` are called with a count (records written, dropped
    because the queue was full, lost to a write error): the server's Prometheus counters.
    """

    def __init__(
        self,
        settings: LogSettings,
        on_written: Callable[[int], None] | None = None,
        on_drop: Callable[[int], None] | None = None,
        on_error: Callable[[int], None] | None = None,
        rng: random.Random | None = None,
    ):
        self.settings = settings
        self._on_written = on_written or (lambda n: None)
        self._on_drop = on_drop or (lambda n: None)
        self._on_error = on_error or (lambda n: None)
        self._rng = rng or random.Random()
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=settings.queue_size)
        settings.directory.mkdir(parents=True, exist_ok=True)
        self.current = settings.directory / f"{settings.prefix}-{os.getpid()}{SUFFIX}"
        self._thread = threading.Thread(target=self._run, name="inference-log", daemon=True)
        self._thread.start()

    def sampled(self, count: int) -> list[int]:
        """Which of ``count`` texts to log, each kept with probability ``sample_rate``."""
        rate = self.settings.sample_rate
        if rate >= 1.0:
            return list(range(count))
        return [i for i in range(count) if self._rng.random() < rate]

    def submit(self, records: Iterable[dict[str, Any]]) -> None:
        """Queue records for writing; those that do not fit are dropped and counted."""
        dropped = 0
        for record in records:
            try:
                self._queue.put_nowait(record)
            except queue.Full:
                dropped += 1
        if dropped:
            self._on_drop(dropped)

    def log_answers(
        self,
        model: str,
        model_version: str,
        request_id: str,
        texts: Sequence[str],
        label_names: Sequence[str],
        probabilities: Sequence[Sequence[float]] | Any,
    ) -> None:
        """Sample the texts of one request and queue a record for each one kept (``probabilities``: one row a text)."""
        ts = utc_now()
        self.submit(
            make_record(
                model,
                model_version,
                request_id,
                texts[i],
                dict(zip(label_names, map(float, probabilities[i]), strict=True)),
                self.settings.log_texts,
                ts,
            )
            for i in self.sampled(len(texts))
        )

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued (waiting at most ``timeout`` seconds), then stop the thread."""
        with contextlib.suppress(queue.Full):
            self._queue.put(_STOP, timeout=timeout)
        self._thread.join(timeout)

    def _run(self) -> None:
        handle = None
        while True:
            batch = [self._queue.get()]
            # Whatever else is queued goes out in the same write.
            with contextlib.suppress(queue.Empty):
                while len(batch) < 1000:
                    batch.append(self._queue.get_nowait())
            stop = any(item is _STOP for item in batch)
            records = [item for item in batch if item is not _STOP]
            if records:
                handle = self._write(handle, records)
            if stop:
                if handle is not None:
                    handle.close()
                return

    def _write(self, handle: Any, records: list[dict[str, Any]]) -> Any:
        """Append ``records``; rotate first when the current file is full. Returns the open handle."""
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8", "surrogatepass")
        try:
            if handle is not None and handle.tell() + len(data) > self.settings.max_file_bytes and handle.tell():
                handle.close()
                handle = None
                self._rotate()
            if handle is None:
                handle = self.current.open("ab")
            handle.write(data)
            handle.flush()
        except OSError as exc:
            log.warning("inference log: %d records lost: %s", len(records), exc)
            self._on_error(len(records))
            if handle is not None:
                with contextlib.suppress(OSError):
                    handle.close()
            return None
        self._on_written(len(records))
        return handle

    def _rotate(self) -> None:
        """Rename the current file with a timestamp and remove the oldest files past ``max_files``."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        self.current.replace(self.current.with_name(f"{self.current.stem}.{stamp}{SUFFIX}"))
        files = sorted(log_files(self.settings.directory, self.settings.prefix), key=_mtime)
        for old in files[: max(len(files) - self.settings.max_files + 1, 0)]:
            old.unlink(missing_ok=True)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def log_files(directory: Path, prefix: str = "") -> list[Path]:
    """The log's files in ``directory`` (of writers named ``prefix``; all when empty)."""
    if not directory.is_dir():
        return []
    return [p for p in directory.iterdir() if p.name.endswith(SUFFIX) and p.name.startswith(prefix) and p.is_file()]


@dataclass
class LogWindow:
    """Records read back, oldest first, and how many lines could not be read (torn or foreign)."""

    records: list[dict[str, Any]]
    unreadable: int = 0


def _parse(line: bytes) -> dict[str, Any] | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    ok = isinstance(record, dict) and isinstance(record.get("ts"), str) and isinstance(record.get("label"), str)
    return record if ok else None


def read_records(
    directory: Path, model: str = "", limit: int = 0, since: datetime | None = None, prefix: str = ""
) -> LogWindow:
    """The newest records of ``model`` (all models when empty) in ``directory``, oldest first.

    ``limit`` keeps the last N records (0: all), ``since`` only those at or after that time.
    Files are read newest first and reading stops once ``limit`` records are in hand, so a long
    log costs only its newest files. A line that is not a record (a write cut short) is counted
    in ``unreadable`` and skipped.
    """
    window: list[dict[str, Any]] = []
    unreadable = 0
    cutoff = since.isoformat() if since else ""
    for path in sorted(log_files(directory, prefix), key=_mtime, reverse=True):
        try:
            lines = path.read_bytes().splitlines()
        except OSError:
            continue
        for line in lines:
            if not line.strip():
                continue
            record = _parse(line)
            if record is None:
                unreadable += 1
            elif (not model or record.get("model") == model) and record["ts"] >= cutoff:
                window.append(record)
        if limit and len(window) >= limit:
            break
    window.sort(key=lambda r: r["ts"])
    return LogWindow(window[-limit:] if limit else window, unreadable)
