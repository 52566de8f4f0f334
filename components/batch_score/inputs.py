"""The rows to score: one file or a folder of files, read and checked before any work starts."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from bertops.dataio import FORMATS, read_table
from bertops.errors import BertopsError


@dataclass
class ScoringInput:
    """Every row to score, in order: the file it came from (``source``), its index there and its text.

    ``fingerprint`` maps each file's name to the SHA-256 of its bytes: a resumed run checks that
    it scores the same input as the run that wrote the chunks it finds.
    """

    path: Path
    text_column: str
    sources: list[str] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    fingerprint: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.texts)


def input_files(path: Path) -> list[Path]:
    """``path`` itself, or the .jsonl/.csv/.parquet files directly in the directory ``path``, by name."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in FORMATS)
        if not files:
            raise BertopsError(f"{path}: no .jsonl, .csv or .parquet files to score")
        return files
    if not path.exists():
        raise BertopsError(f"{path}: no such file or directory")
    if path.suffix not in FORMATS:
        raise BertopsError(f"{path}: unsupported format {path.suffix!r} (use .jsonl, .csv or .parquet)")
    return [path]


def file_sha256(path: Path) -> str:
    """The SHA-256 of the file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_texts(path: Path, text_column: str) -> list[str]:
    """The texts of one file; ``BertopsError`` naming the file, the column and the first bad row."""
    frame = read_table(path)
    if len(frame) == 0:
        raise BertopsError(f"{path}: no rows")
    if text_column not in frame.columns:
        columns = ", ".join(map(str, frame.columns))
        raise BertopsError(f"{path}: no column {text_column!r} (columns: {columns}); set the text column to use")
    texts = frame[text_column].tolist()
    for row, text in enumerate(texts):
        if not isinstance(text, str):
            missing = text is None or text != text  # NaN is not equal to itself
            what = "no text" if missing else f"a {type(text).__name__}, not text"
            raise BertopsError(f"{path}: row {row} (counting from 0) has {what} in column {text_column!r}")
    return texts


def read_input(path: Path, text_column: str) -> ScoringInput:
    """Read and check every row of ``path`` (a file or a directory of files) before anything is scored."""
    scoring = ScoringInput(path=path, text_column=text_column)
    for file in input_files(path):
        texts = file_texts(file, text_column)
        scoring.sources += [file.name] * len(texts)
        scoring.rows += range(len(texts))
        scoring.texts += texts
        scoring.fingerprint[file.name] = file_sha256(file)
    return scoring
