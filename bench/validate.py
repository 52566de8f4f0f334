"""Benchmark the validate step: rows/s of the project's suite against a textbook GX suite.

    .venv/bin/python -m bench.validate [--rows 100000 1000000] [--rounds 2]

Both suites check the same things on the same synthetic splits (nulls, label set, text length
bounds, duplicate texts, leakage between splits). The baseline runs them the usual way, on the
raw text column (``ExpectColumnValueLengthsToBeBetween``, ``ExpectColumnValuesToBeUnique`` and
``ExpectColumnValuesToNotBeInSet`` with the earlier splits' texts); the project derives a
length, a 64-bit hash and a seen-before flag once with vectorized pandas and runs the suite on
those (plus per-class share bounds). Runs alternate baseline/project; the best round of each
counts, because these machines are shared and a quiet round is the truest.
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np
import pandas as pd

LABELS = ["business", "entertainment", "politics", "sports", "tech"]


def synthetic_splits(rows: int, seed: int = 0) -> dict[str, pd.DataFrame]:
    """``rows`` unique texts of 5-60 words with 5 labels, split 80/10/10."""
    rng = np.random.default_rng(seed)
    vocab = np.array([f"w{i}" for i in range(5000)])
    lengths = rng.integers(5, 60, rows)
    words = vocab[rng.integers(0, len(vocab), int(lengths.sum()))]
    cuts = np.cumsum(lengths)[:-1]
    texts = [f"{i} " + " ".join(chunk) for i, chunk in enumerate(np.split(words, cuts))]
    frame = pd.DataFrame({"text": texts, "label": np.array(LABELS)[rng.integers(0, 5, rows)]})
    a, b = int(rows * 0.8), int(rows * 0.9)
    return {"train": frame.iloc[:a], "validation": frame.iloc[a:b], "test": frame.iloc[b:]}


def baseline(frames: dict[str, pd.DataFrame]) -> bool:
    """The textbook suite: expectations straight on the raw text column."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    exp = gx.expectations
    earlier: list[str] = []
    ok = True
    for split, frame in frames.items():
        suite = gx.ExpectationSuite(name=f"baseline-{split}")
        for column in ("text", "label"):
            suite.add_expectation(exp.ExpectColumnToExist(column=column))
            suite.add_expectation(exp.ExpectColumnValuesToNotBeNull(column=column))
        suite.add_expectation(exp.ExpectColumnValueLengthsToBeBetween(column="text", min_value=1, max_value=100_000))
        suite.add_expectation(exp.ExpectColumnValuesToBeUnique(column="text"))
        suite.add_expectation(exp.ExpectColumnValuesToBeInSet(column="label", value_set=LABELS))
        if earlier:
            suite.add_expectation(exp.ExpectColumnValuesToNotBeInSet(column="text", value_set=earlier))
        asset = context.data_sources.add_pandas(f"b-{split}").add_dataframe_asset(name=split)
        batch = asset.add_batch_definition_whole_dataframe("all").get_batch(batch_parameters={"dataframe": frame})
        ok &= bool(batch.validate(suite, result_format={"result_format": "SUMMARY"}).success)
        earlier.extend(frame["text"].tolist())
    return ok


def project(frames: dict[str, pd.DataFrame]) -> bool:
    """The project's suite, exactly as the validate step runs it."""
    from components.validate.validate import validate_frames

    report, _ = validate_frames(frames, "bench")
    return report.success


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    started = time.perf_counter()
    import great_expectations  # noqa: F401 - the import cost is paid once, outside the timings

    print(f"great_expectations import: {time.perf_counter() - started:.1f}s (once per step process, not timed below)")
    print(f"{'rows':>9} | {'baseline s':>10} {'rows/s':>10} | {'bertops s':>9} {'rows/s':>10} | speed-up")
    for rows in args.rows:
        frames = synthetic_splits(rows)
        best = {"baseline": float("inf"), "project": float("inf")}
        for _ in range(args.rounds):
            for name, run in (("baseline", baseline), ("project", project)):
                t0 = time.perf_counter()
                if not run(frames):
                    raise SystemExit(f"{name} suite rejected clean synthetic data")
                best[name] = min(best[name], time.perf_counter() - t0)
        b, p = best["baseline"], best["project"]
        print(f"{rows:>9} | {b:>10.2f} {rows / b:>10,.0f} | {p:>9.2f} {rows / p:>10,.0f} | {b / p:.2f}x")


if __name__ == "__main__":
    main()
