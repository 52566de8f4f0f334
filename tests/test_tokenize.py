import json
from pathlib import Path

import pandas as pd

from bertops.artifacts import load_tokenized
from components.tokenize.tokenization import stratified_sample


def test_stratified_sample_keeps_every_class() -> None:
    labels = ["a"] * 90 + ["b"] * 8 + ["c"] * 2
    picked = stratified_sample(labels, 9, seed=1)
    assert len(picked) == 9 == len(set(picked))
    assert {labels[i] for i in picked} == {"a", "b", "c"}
    assert stratified_sample(labels, 0, seed=1) == list(range(100))


def test_tokenized_splits_are_truncated_unpadded_and_labelled(tokenized_small: Path) -> None:
    names = json.loads((tokenized_small / "labels.json").read_text())
    assert names == ["business", "entertainment", "politics", "sports", "tech"]
    ids, labels, _ = load_tokenized(tokenized_small, "train")
    assert len(ids) == 200 and set(labels) == set(range(5))
    assert max(len(s) for s in ids) == 64
    assert all(s[0] == 101 and s[-1] == 102 for s in ids)  # [CLS] ... [SEP], no [PAD]
    assert len(pd.read_parquet(tokenized_small / "test.parquet")) == 60
