"""The validate step's vectorised derivations against the plain Python definitions they replace."""

from __future__ import annotations

import random
import re
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from bertops import drift
from bertops.artifacts import split_path, write_validated_split
from bertops.dataio import read_table
from components.validate.validate import PYTHON_SPACES, _label_flags, _seen_before, derive_columns, normalise_text

# ASCII-heavy: the vectorised paths (whitespace fixing, pyarrow strip) see most of these texts.
ASCII = "aZq \t\n\v\f\r\x1c\x1f.9_-"
MIXED = ASCII + "\u00a0\u2003\u3000\x85ßİΣςﬁÉ日٣½"


def _texts(alphabet: str, n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return ["", " ", "  ", "\x1c", *("".join(rng.choices(alphabet, k=rng.randint(0, 14))) for _ in range(n))]


def test_python_spaces_is_every_character_str_strip_removes() -> None:
    assert set(PYTHON_SPACES) == {c for c in map(chr, range(sys.maxunicode + 1)) if c.isspace()}


def test_normalised_text_matches_python_on_mostly_ascii_texts() -> None:
    texts = _texts(ASCII, 3000) + _texts(MIXED, 300, seed=1)
    got = normalise_text(pd.Series(texts)).tolist()
    assert got == [re.sub(r"\s+", " ", t).strip().casefold() for t in texts]


def _frames(texts: Sequence[object], labels: Sequence[object]) -> dict[str, pd.DataFrame]:
    frame = pd.DataFrame({"text": texts, "label": labels})
    return {"train": frame.iloc[:-4], "validation": frame.iloc[-4:-2], "test": frame.iloc[-2:]}


def test_derived_lengths_and_string_flags_match_python_for_object_and_arrow_columns() -> None:
    texts: list[object] = [*_texts(MIXED, 200), None, 12, float("nan"), "x\u2003"]
    derived = derive_columns(_frames(texts, ["a"] * len(texts)), "text", "label")
    lengths = np.concatenate([derived[s]["text__length"].to_numpy() for s in ("train", "validation", "test")])
    want = [len(t.strip()) if isinstance(t, str) else (np.nan if t is None or t != t else len(str(t))) for t in texts]
    np.testing.assert_array_equal(lengths, np.array(want, dtype=float))
    flags = np.concatenate([derived[s]["text__is_string"].to_numpy() for s in ("train", "validation", "test")])
    assert flags.tolist() == [isinstance(t, str) for t in texts]
    strings = [t for t in texts if isinstance(t, str)] + [None]
    arrow = pd.Series(pd.arrays.ArrowExtensionArray(pa.array(strings)))
    on_arrow = derive_columns(_frames(list(arrow), ["a"] * len(arrow)), "text", "label")
    on_object = derive_columns(_frames(strings, ["a"] * len(strings)), "text", "label")
    for split in on_arrow:
        pd.testing.assert_frame_equal(on_arrow[split], on_object[split])


def test_seen_before_numbers_texts_like_pandas_factorize() -> None:
    splits = {"train": ["b", "a", "b", ""], "validation": ["c", "a", "é"], "test": ["é", "d", "b"]}
    got = _seen_before({s: pa.array(t, type=pa.large_string()) for s, t in splits.items()})
    ids, _ = pd.factorize(pd.Series([t for texts in splits.values() for t in texts]))
    assert np.concatenate([got[s][0] for s in splits]).tolist() == ids.tolist()
    assert [got[s][1].tolist() for s in splits] == [[False] * 4, [False, True, False], [True, False, True]]


def _python_label_flags(labels: list[str | None]) -> dict[str, list[bool]]:
    """The per-row definitions ``_label_flags`` computes once per distinct label."""
    values = pd.Series([v if v is not None else "" for v in labels], dtype=object)
    present = [v is not None for v in labels]
    counts = values[present].value_counts()
    keys = normalise_text(counts.index.to_series())
    odd = set(counts.index[keys.duplicated().to_numpy()])
    numeric = [
        p and re.fullmatch(r"[+-]?\d+(\.\d+)?", v.strip()) is not None for v, p in zip(values, present, strict=True)
    ]
    n_numeric, n_named = sum(numeric), sum(present) - sum(numeric)
    minority = (lambda n: n) if n_numeric <= n_named else (lambda n: not n)
    return {
        "__padded": [p and v != v.strip() for v, p in zip(values, present, strict=True)],
        "__case_variant": [p and v in odd for v, p in zip(values, present, strict=True)],
        "__mixed_kind": [
            bool(p and n_numeric and n_named and minority(n)) for n, p in zip(numeric, present, strict=True)
        ],
    }


def test_label_flags_match_the_per_row_definitions() -> None:
    rng = random.Random(2)
    kinds = ["sport", " sport", "Sport", "sport\x1c", "tech", "TECH ", "3", " 3", "+1.5", "1e5", None, "é", "É"]
    for _ in range(50):
        labels = rng.choices(kinds[: rng.randint(1, len(kinds))], k=rng.randint(1, 40))
        got = _label_flags(pd.Categorical(np.array(labels, dtype=object)))
        assert {k: v.tolist() for k, v in got.items()} == _python_label_flags(labels)


def _python_vocabulary(texts: list[str], cap: int) -> list[str]:
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(drift.words(text))
    return sorted(word for word, _ in counts.most_common(cap))


def test_vocabulary_and_oov_rate_match_the_python_word_counts() -> None:
    for alphabet in (ASCII + "bcd", MIXED + "bcd"):
        texts = _texts(alphabet, 2000, seed=3)
        for cap in (1, 5, 50, 50_000):
            assert drift.vocabulary(texts, cap) == _python_vocabulary(texts, cap)
        known = set(_python_vocabulary(texts[:1000], 20))
        held_out = texts[1000:]
        words = [w for t in held_out for w in drift.words(t)]
        assert drift.oov_rate(held_out, known) == sum(w not in known for w in words) / len(words)
    assert drift.oov_rate(["", "1 2"], {"a"}) == 0.0


def test_validated_splits_read_back_as_plain_strings_from_either_kind_of_column(tmp_path: Path) -> None:
    texts = ["a", "b\u2003", ""]
    write_validated_split(tmp_path / "o", "train", pd.Series(texts, dtype=object), pd.Series([1, 2, 3]))
    write_validated_split(tmp_path / "a", "train", pd.Series(pd.arrays.ArrowExtensionArray(pa.array(texts))), [1, 2, 3])
    want = pd.DataFrame({"text": texts, "label": ["1", "2", "3"]})
    for out in ("o", "a"):
        pd.testing.assert_frame_equal(pd.read_parquet(split_path(tmp_path / out, "train")), want)


def test_jsonl_arrow_columns_hold_the_same_values(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text('{"text": "a b", "label": "x", "n": 1}\n{"text": null, "label": "y", "n": 2}\n', encoding="utf-8")
    plain, arrow = read_table(path), read_table(path, arrow_columns=("text", "missing"))
    assert list(arrow.columns) == list(plain.columns) == ["text", "label", "n"]
    assert isinstance(arrow["text"].dtype, pd.ArrowDtype) and arrow["label"].dtype == object
    assert arrow["text"].tolist() == ["a b", pd.NA] and plain["text"].tolist() == ["a b", None]


def test_a_missing_jsonl_text_is_quoted_as_none_in_the_report(tmp_path: Path) -> None:
    import json

    import pytest

    from bertops.config import ValidationConfig
    from components.validate.validate import ValidationFailed, validate_dataset

    data = tmp_path / "data"
    data.mkdir()
    for split, first in (("train", None), ("validation", "v"), ("test", "t")):
        rows = [{"text": first, "label": "a"}, {"text": f"{split} two", "label": "a"}]
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    config = ValidationConfig(min_train_rows=1, min_eval_rows=1)
    with pytest.raises(ValidationFailed):
        validate_dataset(data, tmp_path / "out", "v1", config=config)
    checks = json.loads((tmp_path / "out" / "report.json").read_text())["checks"]
    missing = next(c for c in checks if c["split"] == "train" and c["description"] == "no missing text")
    assert missing["examples"] == ["None"] and missing["rows"] == [1]
