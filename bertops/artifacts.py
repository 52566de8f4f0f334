"""How the artifacts passed between steps are laid out, written and read.

Each step writes its output with the functions here and the next step reads it with them, so
no step needs to know another step's code:

- a **validated dataset** (validate -> tokenize): ``{split}.parquet`` with ``text`` and ``label``
  (as strings) columns, the rows as given, once they passed the data gate;
- a **tokenized dataset** (tokenize -> finetune, evaluate, gate): ``{split}.parquet`` with
  ``input_ids``, ``label`` and ``text`` columns, ``labels.json`` (label names in id order) and
  ``tokenized.json`` (the tokenizer and the sequence length it was cut to);
- a **model directory** (finetune -> evaluate, register, deploy, server): a ``save_pretrained``
  model and tokenizer whose ``model_max_length`` is the length it was trained on,
  ``training.json`` (the run's record, written last: its presence means the directory is
  complete), ``curves.png`` and, where the export passed its parity check, ``model.onnx``;
- an **evaluation** (evaluate -> select-winner, gate, register): see ``bertops.evaluation``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bertops.errors import BertopsError

LABELS_FILE = "labels.json"
TOKENIZED_FILE = "tokenized.json"
TRAINING_FILE = "training.json"
CURVES_FILE = "curves.png"
ONNX_FILE = "model.onnx"


def split_path(data_dir: Path, split: str) -> Path:
    """The Parquet file of one validated or tokenized split."""
    return data_dir / f"{split}.parquet"


def write_validated_split(data_dir: Path, split: str, texts: Any, labels: Any) -> None:
    """Write one validated split whole or not at all (a temporary file renamed into place).

    Texts go to Parquet straight from pyarrow (zero-copy for a pyarrow-backed Series); the file
    reads back as the plain string columns ``pandas.DataFrame.to_parquet`` would have written.
    """
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = split_path(data_dir, split)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".parquet.tmp")
    texts = pd.Series(texts)
    text = pa.array(texts) if isinstance(texts.dtype, pd.ArrowDtype) else pa.array(texts.to_numpy(), from_pandas=True)
    label = pa.array(pd.Series(labels).astype(str).to_numpy(), type=pa.string())
    pq.write_table(pa.table({"text": text, "label": label}), tmp)
    tmp.replace(path)


def write_tokenized_meta(data_dir: Path, label_names: list[str], base_model: str, max_length: int) -> None:
    """Record the label names and how the splits were tokenized, beside the split files."""
    (data_dir / LABELS_FILE).write_text(json.dumps(label_names), encoding="utf-8")
    meta = {"tokenizer": base_model, "max_length": max_length}
    (data_dir / TOKENIZED_FILE).write_text(json.dumps(meta), encoding="utf-8")


def tokenized_max_length(data_dir: Path) -> int | None:
    """The sequence length the splits were cut to; ``None`` for a dataset that does not say."""
    path = data_dir / TOKENIZED_FILE
    if not path.is_file():
        return None
    return int(json.loads(path.read_text(encoding="utf-8"))["max_length"])


def load_texts(data_dir: Path, split: str) -> list[str]:
    """The texts of one tokenized split, in the same order as its ids."""
    import pandas as pd

    return pd.read_parquet(split_path(data_dir, split), columns=["text"])["text"].tolist()


def load_tokenized(data_dir: Path, split: str) -> tuple[list[list[int]], list[int], list[str]]:
    """(token ids per row, label id per row, label names) of one tokenized split."""
    import pandas as pd

    frame = pd.read_parquet(split_path(data_dir, split))
    names = json.loads((data_dir / LABELS_FILE).read_text(encoding="utf-8"))
    return [list(ids) for ids in frame["input_ids"]], frame["label"].astype(int).tolist(), names


def require_saved_model(model_dir: Path, what: str = "nothing registered") -> None:
    """``BertopsError`` unless ``model_dir`` holds a ``save_pretrained`` model."""
    if not (model_dir / "config.json").is_file():
        raise BertopsError(f"{model_dir}: not a saved model (no config.json); {what}")


def training_record(model_dir: Path) -> dict[str, Any]:
    """The fine-tuning record (``training.json``) beside the model, or ``{}`` if it has none."""
    path = model_dir / TRAINING_FILE
    if not path.is_file():
        return {}
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BertopsError(f"{path}: not a training record ({exc}); nothing registered") from exc
    if not isinstance(record, dict) or not isinstance(record.get("history", []), list):
        raise BertopsError(f"{path}: not a training record (no object with a history list); nothing registered")
    return record


def write_training_record(model_dir: Path, record: dict[str, Any]) -> None:
    """Write ``training.json``; call it last, since its presence marks the model directory complete."""
    (model_dir / TRAINING_FILE).write_text(json.dumps(record, indent=2), encoding="utf-8")
