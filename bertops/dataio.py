"""Read and write the dataset splits with errors that name the file and the problem."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from bertops.errors import BertopsError

if TYPE_CHECKING:
    import pandas as pd

SPLITS = ("train", "validation", "test")
FORMATS = (".jsonl", ".csv", ".parquet")


def find_split_file(data_dir: Path, split: str) -> Path:
    """The one file holding ``split`` in ``data_dir`` (``train.jsonl``, ``train.csv`` or ``train.parquet``)."""
    if not data_dir.is_dir():
        raise BertopsError(f"data directory {data_dir} does not exist (run `bertops data pull` for the default data)")
    found = [data_dir / f"{split}{ext}" for ext in FORMATS if (data_dir / f"{split}{ext}").is_file()]
    if not found:
        raise BertopsError(f"{data_dir}: no {split} split (expected {split}.jsonl, {split}.csv or {split}.parquet)")
    if len(found) > 1:
        raise BertopsError(f"{data_dir}: more than one {split} split: {', '.join(p.name for p in found)}")
    return found[0]


def read_table(path: Path) -> pd.DataFrame:
    """Read one JSON Lines, CSV or Parquet file; unreadable files raise ``BertopsError`` naming the file."""
    import pandas as pd

    if not path.is_file():
        raise BertopsError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise BertopsError(f"{path}: file is empty")
    try:
        if path.suffix == ".jsonl":
            return _read_jsonl(path)
        if path.suffix == ".csv":
            return pd.read_csv(path, encoding="utf-8", dtype=object, keep_default_na=False, na_values=[""])
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
    except UnicodeDecodeError as exc:
        raise BertopsError(f"{path}: not valid UTF-8 at byte {exc.start}") from exc
    except BertopsError:
        raise
    except Exception as exc:
        raise BertopsError(f"{path}: cannot be read as {path.suffix[1:]}: {exc}") from exc
    raise BertopsError(f"{path}: unsupported format {path.suffix!r} (use .jsonl, .csv or .parquet)")


def _read_jsonl(path: Path) -> pd.DataFrame:
    import pandas as pd

    rows = []
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise BertopsError(f"{path}: line {number} is not valid UTF-8 (byte {exc.start})") from exc
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BertopsError(
                    f"{path}: line {number} is not valid JSON ({exc.msg}); is the file truncated?"
                ) from exc
            if not isinstance(record, dict):
                raise BertopsError(f"{path}: line {number} is not a JSON object")
            rows.append(record)
    if not rows:
        raise BertopsError(f"{path}: no rows")
    return pd.DataFrame.from_records(rows)


def write_jsonl(rows: list[dict[str, object]], path: Path) -> None:
    """Write rows as JSON Lines with a byte-stable layout (sorted keys, UTF-8, ``\\n`` endings)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8", newline="\n") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
    tmp.replace(path)


def read_splits(data_dir: Path) -> dict[str, pd.DataFrame]:
    """All three splits of ``data_dir``, keyed by split name."""
    return {split: read_table(find_split_file(data_dir, split)) for split in SPLITS}
