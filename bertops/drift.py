"""Drift measures shared by the data gate (validate step) and the drift monitor.

The reference profile of accepted training data holds the train label mix, a decile histogram
of text lengths, the training vocabulary and the out-of-vocabulary rate of the held-out
validation split. Both steps compare against it with the same KL divergence that Great
Expectations' ``expect_column_kl_divergence_to_be_less_than`` computes (``label_kl``,
``length_kl``; a test checks them against its observed values), and the same bounds
(``ValidationConfig.max_label_drift`` and ``max_length_drift``).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

# The accepted data's profile that the data gate measures drift against, under the state directory.
REFERENCE_PROFILE = "validation/reference_profile.json"
# The profile of a run's own data: in the validate step's dataset, and a run artifact of each
# registered version (the register step logs it), where the monitor finds the champion's.
PROFILE_FILE = "reference_profile.json"
# Smoothing for the reference histogram, so an empty reference bin does not make KL infinite.
PSEUDO_COUNT = 0.5
# Words of the training vocabulary kept in the profile, the most frequent first.
VOCABULARY_CAP = 50_000
# A word: a run of letters (any script), lower-cased; digits and punctuation are not words.
WORD = re.compile(r"[^\W\d_]+")


def entropy_kl(observed: Sequence[float], expected: Sequence[float]) -> float:
    """KL(observed || expected) of two weight vectors, each normalised first (``scipy.stats.entropy``).

    Infinite when ``observed`` has weight where ``expected`` has none.
    """
    p = np.asarray(observed, dtype=float)
    q = np.asarray(expected, dtype=float)
    p, q = p / p.sum(), q / q.sum()
    present = p > 0
    if np.any(q[present] == 0):
        return math.inf
    return float(np.sum(p[present] * np.log(p[present] / q[present])))


def label_kl(counts: Mapping[str, int], reference: Mapping[str, float]) -> float:
    """KL of an observed label mix from the reference shares, as Great Expectations computes it.

    A label the reference does not have makes it infinite (no tail weight is held out).
    """
    names = list(reference) + [name for name in counts if name not in reference]
    observed = [float(counts.get(name, 0)) for name in names]
    expected = [float(reference.get(name, 0.0)) for name in names]
    return entropy_kl(observed, expected)


def length_kl(lengths: Sequence[float], edges: Sequence[float], weights: Sequence[float]) -> float:
    """KL of observed text lengths from the reference histogram, as Great Expectations computes it.

    Lengths below the first or above the last edge count in tails that the reference gives no
    weight, so any such length makes it infinite.
    """
    values = np.asarray(lengths, dtype=float)
    counts, _ = np.histogram(values, bins=np.asarray(edges, dtype=float))
    below, above = int((values < edges[0]).sum()), int((values > edges[-1]).sum())
    return entropy_kl([below, *counts, above], [0.0, *weights, 0.0])


def length_histogram(lengths: Sequence[float]) -> tuple[list[float], list[float]]:
    """Decile bin edges of ``lengths`` (the last one far above the longest) and smoothed bin weights."""
    values = np.asarray(lengths, dtype=float)
    deciles = np.unique(np.quantile(values, np.linspace(0.1, 0.9, 9)).round())
    edges = [0.0, *[float(e) for e in deciles if e > 0], float(max(values.max(), 1)) * 10 + 1]
    counts, _ = np.histogram(values, bins=edges)
    weights = (counts + PSEUDO_COUNT) / (counts.sum() + PSEUDO_COUNT * len(counts))
    return edges, [float(w) for w in weights]


def words(text: str) -> list[str]:
    """The lower-cased words of a text."""
    return WORD.findall(text.lower())


def vocabulary(texts: Iterable[str], cap: int = VOCABULARY_CAP) -> list[str]:
    """The ``cap`` most frequent words of ``texts``, sorted (ties at the cap go to the word seen first)."""
    import pyarrow.compute as pc

    counted = pc.value_counts(word_stream(texts))
    names, counts = counted.field(0), counted.field(1).to_numpy().copy()
    counts[pc.equal(names, "").to_numpy(zero_copy_only=False)] = 0
    # value_counts lists words in order of first appearance, so a stable sort keeps Counter.most_common's ties.
    top = np.argsort(-counts, kind="stable")[: min(cap, int((counts > 0).sum()))]
    return sorted(names.take(top).to_pylist())


def oov_rate(texts: Iterable[str], known: set[str]) -> float:
    """Share of the words of ``texts`` that are not in ``known`` (0 when there are no words)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    stream = word_stream(texts)
    total = len(stream) - (pc.sum(pc.equal(stream, "")).as_py() or 0)
    if not total:
        return 0.0
    inside = pc.sum(pc.is_in(stream, value_set=pa.array(sorted(known - {""}), type=pa.large_string()))).as_py() or 0
    return (total - inside) / total


def word_stream(texts: Any) -> Any:
    """The ``words`` of every text of ``texts`` (strings), in order, as one pyarrow ``large_string`` array,
    among empty strings (which are not words: skip them).

    ASCII texts are cut into letter runs on their bytes with numpy, ~20x faster than the regex on
    a million texts; the others go through ``words``, so the stream is the same either way.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    elif not isinstance(texts, pa.Array):
        texts = pa.array(texts if hasattr(texts, "__len__") else list(texts), from_pandas=True)
    texts = texts.cast(pa.large_string()).fill_null("")
    ascii_rows = pc.string_is_ascii(texts)
    if pc.all(ascii_rows).as_py() is not False:
        return _ascii_words(texts, with_rows=False)[0]
    other = np.flatnonzero(~ascii_rows.to_numpy(zero_copy_only=False))
    found, rows = _ascii_words(pc.if_else(ascii_rows, texts, ""), with_rows=True)
    slow = [(row, word) for row in other for word in words(texts[int(row)].as_py())]
    merged = pa.concat_arrays([found, pa.array([w for _, w in slow], type=pa.large_string())])
    # Put the slow texts' words back in their texts' places: a stable sort by row keeps each text's order.
    assert rows is not None
    order = np.argsort(np.concatenate([rows, np.array([r for r, _ in slow], dtype=np.int64)]), kind="stable")
    return merged.take(pa.array(order))


def _ascii_words(texts: Any, with_rows: bool) -> tuple[Any, np.ndarray | None]:
    """``words`` of ASCII ``large_string`` texts (letter runs, lower-cased) and, ``with_rows``, each word's row.

    Each byte becomes its lower-case letter or a space, and pyarrow splits the texts, whose
    offsets are unchanged, at the spaces.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    _, offset_buffer, data_buffer = texts.buffers()
    offsets = np.frombuffer(offset_buffer, dtype=np.int64, count=len(texts) + 1, offset=texts.offset * 8)
    data = np.frombuffer(data_buffer or b"", dtype=np.uint8, count=int(offsets[-1]))
    folded = data | np.uint8(0x20)
    # Arithmetic on the bytes, several times faster than a lookup table: A-Z and a-z fold onto a-z.
    spaced = np.where((folded - np.uint8(97)) < np.uint8(26), folded, np.uint8(0x20))
    spaced_texts = pa.LargeStringArray.from_buffers(
        len(texts), pa.py_buffer(offsets), pa.py_buffer(spaced), texts.buffers()[0], texts.null_count
    )
    # Leading and trailing spaces (and empty texts) split off empty strings, which the callers skip.
    split = pc.ascii_split_whitespace(spaced_texts)
    return pc.list_flatten(split), pc.list_parent_indices(split).to_numpy() if with_rows else None


def build_profile(
    lengths: Sequence[float],
    labels: Sequence[str],
    data_version: str,
    train_texts: Iterable[str],
    held_out_texts: Iterable[str],
) -> dict[str, Any]:
    """The reference profile of accepted data (see the module's docstring); the texts may be pyarrow arrays."""
    edges, weights = length_histogram(lengths)
    counts = Counter(str(label) for label in labels)
    total = sum(counts.values())
    vocab = vocabulary(train_texts)
    return {
        "data_version": data_version,
        "labels": {name: counts[name] / total for name in sorted(counts)},
        "length_edges": edges,
        "length_weights": weights,
        "vocabulary": vocab,
        "oov_rate": oov_rate(held_out_texts, set(vocab)),
    }
