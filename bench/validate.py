"""Benchmark the validate step: rows/s of the project's suite against a textbook GX suite.

    .venv/bin/python -m bench.validate [--rows 100000 1000000] [--rounds 2] [--command-rows 1000000]

Both suites check the same things on the same synthetic splits (nulls, label set, text length
bounds, duplicate texts, leakage between splits). The baseline runs them the usual way, on the
raw text column (``ExpectColumnValueLengthsToBeBetween``, ``ExpectColumnValuesToBeUnique`` and
``ExpectColumnValuesToNotBeInSet`` with the earlier splits' texts); the project derives a
length, a 64-bit hash and a seen-before flag once with vectorized pandas and runs the suite on
those (plus per-class share bounds). Runs alternate baseline/project; the best round of each
counts, because the development machine is shared and a quiet round is the truest.

``--command-rows`` then times what a user runs, ``bertops validate DIR`` on JSON Lines files of
that many rows, in fresh processes: the whole command's wall time, and inside it the interpreter
start, the imports (Great Expectations' alone takes seconds) and the step's own work (data
version, read, suite, report, validated splits), beside the suite alone on the same rows.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


# Run in a fresh interpreter: the imports and the step's own work, timed apart.
_PHASES = """
import json, sys, time
from pathlib import Path
t0 = time.perf_counter()
import great_expectations, pandas, pyarrow
from bertops.dvc_data import data_version
from components.validate.validate import validate_dataset
t1 = time.perf_counter()
validate_dataset(Path(sys.argv[1]), Path(sys.argv[2]), data_version(Path(sys.argv[1])))
print(json.dumps({"imports": t1 - t0, "step": time.perf_counter() - t1}))
"""


def _seconds(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def command_phases(rows: int, rounds: int) -> None:
    """Time ``bertops validate`` end to end on ``rows`` rows of JSON Lines, and its phases, best of ``rounds``."""
    with tempfile.TemporaryDirectory(prefix="bench-validate-") as tmp:
        data, out = Path(tmp) / "data", Path(tmp) / "out"
        data.mkdir()
        frames = synthetic_splits(rows)
        for split, frame in frames.items():
            frame.to_json(data / f"{split}.jsonl", orient="records", lines=True, force_ascii=False)
        size = sum(f.stat().st_size for f in data.iterdir()) / 1e6
        cli = [
            sys.executable,
            "-m",
            "cli",
            "validate",
            str(data),
            "--out",
            str(out),
            "--state-dir",
            str(Path(tmp) / "s"),
        ]
        best: dict[str, float] = {}
        for _ in range(rounds):
            timings = {"command": _seconds(cli), "interpreter": _seconds([sys.executable, "-c", "pass"])}
            run = subprocess.run([sys.executable, "-c", _PHASES, str(data), str(out)], check=True, capture_output=True)
            timings |= json.loads(run.stdout.decode().splitlines()[-1])
            t0 = time.perf_counter()
            project(frames)
            timings["suite"] = time.perf_counter() - t0
            best = {k: min(v, best.get(k, float("inf"))) for k, v in timings.items()}
    print(
        f"`bertops validate` on {rows:,} rows ({size:.0f} MB of JSON Lines), best of {rounds}: "
        f"command {best['command']:.2f} s wall = interpreter {best['interpreter']:.2f} s + imports "
        f"{best['imports']:.2f} s + step {best['step']:.2f} s (data version, read, suite, report, splits); "
        f"the suite alone on in-memory frames {best['suite']:.2f} s; step / suite {best['step'] / best['suite']:.2f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--command-rows", type=int, default=1_000_000, help="rows for the end-to-end command (0: skip)")
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
    if args.command_rows:
        command_phases(args.command_rows, args.rounds)


if __name__ == "__main__":
    main()
