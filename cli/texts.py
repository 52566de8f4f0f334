"""The texts of a ``bertops predict --file``: plain text, JSON Lines or CSV, with errors naming the file, line and column."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

from bertops.errors import BertopsError

# The column of texts in a .jsonl or .csv file unless --column names another.
DEFAULT_COLUMN = "text"
TABLE_FORMATS = (".jsonl", ".csv")


@dataclass(frozen=True)
class Text:
    """One text to classify and where it came from: its 1-based ``line`` in the file ``source``, or its
    position among the command's arguments (``source`` empty)."""

    source: str
    line: int
    text: str


def describe(texts: list[Text]) -> str:
    """Where ``texts`` (consecutive, from one source) came from, for an error message."""
    first, last = texts[0].line, texts[-1].line
    numbers = f"line {first}" if first == last else f"lines {first}-{last}"
    if texts[0].source:
        return f"{texts[0].source} {numbers}"
    return numbers.replace("line", "text", 1) + " of the arguments"


def read_texts(path: Path, column: str = "") -> list[Text]:
    """The texts of ``path``: one per non-blank line of a text file, or ``column`` (default ``text``) of
    each record of a ``.jsonl`` or ``.csv`` file; ``BertopsError`` names the file, line and column of a problem."""
    if not path.exists():
        raise BertopsError(f"--file {path}: no such file")
    if not path.is_file():
        raise BertopsError(f"--file {path}: not a file")
    if path.suffix not in TABLE_FORMATS and column:
        raise BertopsError(f"--column applies to .jsonl and .csv files; {path} is read as one text per line")
    content = _decode(path)
    if path.suffix == ".jsonl":
        texts = _jsonl_texts(path, content, column or DEFAULT_COLUMN)
    elif path.suffix == ".csv":
        texts = _csv_texts(path, content, column or DEFAULT_COLUMN)
    else:
        texts = [Text(str(path), n, line) for n, line in enumerate(content.splitlines(), start=1) if line.strip()]
    if not texts:
        raise BertopsError(f"--file {path}: no texts in it")
    return texts


def _decode(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise BertopsError(f"{path}: line {line} is not valid UTF-8 (byte {exc.start})") from exc


def _checked(path: Path, line: int, column: str, value: object) -> Text:
    """``value`` as the text of ``line``; it must be a non-blank string."""
    if not isinstance(value, str):
        raise BertopsError(f"{path}: line {line}: {column!r} is not a string (got {type(value).__name__})")
    if not value.strip():
        raise BertopsError(f"{path}: line {line}: {column!r} is empty")
    return Text(str(path), line, value)


def _jsonl_texts(path: Path, content: str, column: str) -> list[Text]:
    texts = []
    for number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BertopsError(f"{path}: line {number} is not valid JSON ({exc.msg})") from exc
        if not isinstance(record, dict):
            raise BertopsError(f"{path}: line {number} is not a JSON object")
        if column not in record:
            fields = ", ".join(map(repr, record)) or "none"
            raise BertopsError(f"{path}: line {number} has no {column!r} field (fields: {fields}; see --column)")
        texts.append(_checked(path, number, column, record[column]))
    return texts


def _csv_texts(path: Path, content: str, column: str) -> list[Text]:
    reader = csv.DictReader(io.StringIO(content, newline=""))
    if reader.fieldnames is None:
        return []
    if column not in reader.fieldnames:
        columns = ", ".join(map(repr, reader.fieldnames))
        raise BertopsError(f"{path}: no column {column!r} (columns: {columns}; see --column)")
    texts, start = [], reader.line_num + 1
    try:
        for record in reader:
            texts.append(_checked(path, start, column, record[column] or ""))
            start = reader.line_num + 1
    except csv.Error as exc:
        raise BertopsError(f"{path}: line {reader.line_num} is not valid CSV ({exc})") from exc
    return texts
