"""Read and write the dataset splits with errors that name the file and the problem."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from bertops.errors import BertopsError

if TYPE_CHECKING:
    import pandas as pd

SPLITS = ("train", "validation", "test")
FORMATS = (".jsonl", ".csv", ".parquet")
SPLIT_SEED = 42
VALIDATION_SHARE = 0.1
TEST_SHARE = 0.2


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


def read_table(path: Path, arrow_columns: Collection[str] = ()) -> pd.DataFrame:
    """Read one JSON Lines, CSV or Parquet file; unreadable files raise ``BertopsError`` naming the file.

    Columns named in ``arrow_columns`` that a JSON Lines file holds as plain strings stay pyarrow-backed
    (``pandas.ArrowDtype``): no Python string per row, which costs seconds on a million long texts.
    """
    import pandas as pd

    if not path.is_file():
        raise BertopsError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise BertopsError(f"{path}: file is empty")
    try:
        if path.suffix == ".jsonl":
            return _read_jsonl(path, arrow_columns)
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


def _read_jsonl(path: Path, arrow_columns: Collection[str] = ()) -> pd.DataFrame:
    """pyarrow's multithreaded reader when it reads the file as the line-by-line reader would, else the latter.

    pyarrow infers timestamps from date-like strings and makes arrays of nested values; those files,
    and any it cannot parse, go through ``_read_jsonl_lines``, which also names the bad line.
    """
    import pyarrow as pa
    import pyarrow.json as pa_json

    try:
        table = pa_json.read_json(str(path))
        # The reader does not check that strings are UTF-8; this does.
        table.validate(full=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return _read_jsonl_lines(path)
    plain = (pa.string(), pa.large_string(), pa.int64(), pa.float64(), pa.bool_(), pa.null())
    if table.num_rows == 0 or any(field.type not in plain for field in table.schema):
        return _read_jsonl_lines(path)
    import pandas as pd

    names = table.column_names
    kept = [name for name in arrow_columns if name in names and table.schema.field(name).type == pa.string()]
    frame = table.drop_columns(kept).to_pandas()
    for name in kept:
        frame.insert(names.index(name), name, pd.Series(pd.arrays.ArrowExtensionArray(table.column(name))))
    return frame


def _read_jsonl_lines(path: Path) -> pd.DataFrame:
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


def split_indices(
    labels: Sequence[str],
    seed: int = SPLIT_SEED,
    validation_share: float = VALIDATION_SHARE,
    test_share: float = TEST_SHARE,
) -> dict[str, list[int]]:
    """Stratified train/validation/test row indices, deterministic for a given seed.

    Each class is shuffled on its own (classes in sorted order, one ``random.Random(seed)``),
    then cut into test, validation and train shares.
    """
    by_label: dict[str, list[int]] = defaultdict(list)
    for index, label in enumerate(labels):
        by_label[label].append(index)
    splits: dict[str, list[int]] = {split: [] for split in SPLITS}
    rng = random.Random(seed)
    for label in sorted(by_label):
        members = by_label[label]
        rng.shuffle(members)
        n_test = round(len(members) * test_share)
        n_val = round(len(members) * validation_share)
        splits["test"].extend(members[:n_test])
        splits["validation"].extend(members[n_test : n_test + n_val])
        splits["train"].extend(members[n_test + n_val :])
    return splits


def load_dataset(
    path: Path, label_column: str = "label", seed: int = SPLIT_SEED, arrow_columns: Collection[str] = ()
) -> dict[str, pd.DataFrame]:
    """The three splits of ``path``: a directory with ``train``/``validation``/``test`` files, or one
    file that is split here (stratified by ``label_column``, 70/10/20, with ``seed``); ``arrow_columns``
    as for ``read_table``."""
    if path.is_dir() or not path.exists():
        return {split: read_table(find_split_file(path, split), arrow_columns) for split in SPLITS}
    frame = read_table(path, arrow_columns)
    if label_column not in frame.columns:
        raise BertopsError(
            f"{path}: no column {label_column!r} to split on (columns: {', '.join(map(str, frame.columns))})"
        )
    parts = split_indices(frame[label_column].astype(str).tolist(), seed)
    return {split: frame.iloc[sorted(rows)].reset_index(drop=True) for split, rows in parts.items()}
