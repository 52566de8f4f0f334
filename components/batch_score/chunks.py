"""The output folder of a scoring run: a manifest, one Parquet file per finished chunk, then the result.

Each chunk is written to a temporary name and renamed when complete, so a chunk file on disk is
always whole: a process killed at any moment (``kill -9`` included) loses at most the chunk it
was scoring, and a rerun with the same output folder scores only the chunks that are missing.
The manifest, written once when the folder is created, says what the chunks are predictions of
(input files and their SHA-256, text column, model version, chunk size); a rerun that would mix
other predictions in is refused. ``predictions.parquet`` appears, by rename too, only once every
chunk is there; then the chunks are removed.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bertops.errors import BertopsError

if TYPE_CHECKING:
    import pyarrow as pa

MANIFEST = "manifest.json"
CHUNKS = "chunks"
PREDICTIONS = "predictions.parquet"
LOCK = ".lock"


@dataclass(frozen=True)
class Manifest:
    """What the chunks of an output folder are predictions of."""

    model_name: str
    model_version: str
    input: str
    input_files: dict[str, str]
    text_column: str
    rows: int
    chunk_rows: int

    def differences(self, other: Manifest) -> list[str]:
        """Each field that differs, as ``field: was X, now Y`` (input files by name and hash).

        The input's path is not compared: the same files under another path are the same input.
        """
        found = []
        for name, was in asdict(self).items():
            now = getattr(other, name)
            if name == "input":
                continue
            if name == "input_files":
                found += _file_differences(was, now)
            elif was != now:
                found.append(f"{name.replace('_', ' ')}: was {was!r}, now {now!r}")
        return found

    @property
    def chunks(self) -> int:
        return -(-self.rows // self.chunk_rows)


def _file_differences(was: dict[str, str], now: dict[str, str]) -> list[str]:
    found = [f"input file {name}: no longer there" for name in sorted(set(was) - set(now))]
    found += [f"input file {name}: new" for name in sorted(set(now) - set(was))]
    found += [
        f"input file {name}: its content changed" for name in sorted(set(was) & set(now)) if was[name] != now[name]
    ]
    return found


def write_atomically(path: Path, write: Any) -> None:
    """``write(handle)`` into a temporary file beside ``path``, flushed to disk, then renamed to ``path``."""
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    with tmp.open("wb") as handle:
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)


class ChunkStore:
    """The chunks of one output folder; see the module's docstring."""

    def __init__(self, out: Path, manifest: Manifest):
        self.out = out
        self.manifest = manifest
        self.dir = out / CHUNKS

    def path(self, index: int) -> Path:
        return self.dir / f"chunk-{index:06d}.parquet"

    def bounds(self, index: int) -> tuple[int, int]:
        """The input rows ``[start, stop)`` of chunk ``index``."""
        start = index * self.manifest.chunk_rows
        return start, min(start + self.manifest.chunk_rows, self.manifest.rows)

    def is_done(self, index: int) -> bool:
        """Whether chunk ``index`` is on disk with its full number of rows."""
        import pyarrow.parquet as pq

        path = self.path(index)
        if not path.is_file():
            return False
        start, stop = self.bounds(index)
        return int(pq.read_metadata(path).num_rows) == stop - start

    def missing(self) -> list[int]:
        """The chunks still to score, in order."""
        return [i for i in range(self.manifest.chunks) if not self.is_done(i)]

    def write(self, index: int, table: pa.Table) -> None:
        """Store chunk ``index`` (whole, or not at all)."""
        import pyarrow.parquet as pq

        write_atomically(self.path(index), lambda handle: pq.write_table(table, handle))

    def assemble(self, path: Path) -> None:
        """Every chunk, in order, into one Parquet file at ``path`` (renamed into place when complete)."""
        import pyarrow.parquet as pq

        def write(handle: Any) -> None:
            first = pq.read_table(self.path(0))
            with pq.ParquetWriter(handle, first.schema) as writer:
                writer.write_table(first)
                for index in range(1, self.manifest.chunks):
                    writer.write_table(pq.read_table(self.path(index)))

        write_atomically(path, write)

    def open(self) -> None:
        """Create the chunk folder; drop what a process killed while writing left (those chunks are scored again)."""
        self.dir.mkdir(exist_ok=True)
        for stale in self.dir.glob("*.tmp-*"):
            stale.unlink()

    def remove(self) -> None:
        """Remove the chunks, once they are assembled."""
        shutil.rmtree(self.dir, ignore_errors=True)


def check_output_folder(out: Path) -> None:
    """``BertopsError`` when ``out`` holds files but is not a batch-score output (no manifest)."""
    if out.is_dir() and not (out / MANIFEST).is_file() and any(p.name != LOCK for p in out.iterdir()):
        raise BertopsError(f"{out} exists and is not a batch-score output (no {MANIFEST}): give another output folder")


def prepare(out: Path, manifest: Manifest) -> None:
    """Write ``manifest`` into a new output folder, or check that the one there is the same scoring.

    ``BertopsError`` when ``out`` holds something else: a folder that is not a scoring output, or
    predictions of another input or model version (the message names each difference).
    """
    check_output_folder(out)
    existing = out / MANIFEST
    if not existing.is_file():
        out.mkdir(parents=True, exist_ok=True)
        body = json.dumps(asdict(manifest), indent=2).encode()
        write_atomically(existing, lambda handle: handle.write(body))
        return
    try:
        found = Manifest(**json.loads(existing.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError) as exc:
        raise BertopsError(f"{existing}: not a batch-score manifest ({exc}); give another output folder") from exc
    differences = found.differences(manifest)
    if differences:
        raise BertopsError(
            f"{out} holds predictions of another scoring run ({'; '.join(differences)}): "
            "give another output folder, or delete this one to start over"
        )


@contextmanager
def exclusive(out: Path) -> Iterator[None]:
    """Hold the output folder's lock: a second scoring run into it fails at once, naming the folder."""
    from filelock import FileLock, Timeout

    out.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(out / LOCK))
    try:
        lock.acquire(timeout=0)
    except Timeout as exc:
        raise BertopsError(f"{out}: another batch-score run is writing this output folder") from exc
    try:
        yield
    finally:
        lock.release()
