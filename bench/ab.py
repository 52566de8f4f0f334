"""A/B: one benchmark of this tree against the same benchmark at another commit, in one invocation.

    .venv/bin/python -m bench.ab --base REV [--rounds 2] -- bench.validate --rows 100000 --rounds 1

Each benchmark prints its figures as ratios against its own baseline measured in the same run
(``2.57x``), which cancels most of the load swings of a shared machine. This runs the benchmark
module in a temporary worktree of ``REV`` (A) and in this tree (B), alternating A B, B A, ..., and
prints every ``N.NNx`` ratio of each run, then B / A per ratio: a refactoring that costs
nothing shows about 1.00, within the spread of the rounds. Both trees use this environment's
Python; the module must exist at both commits.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RATIO = re.compile(r"(\d+(?:\.\d+)?)x\b")


def ratios(output: str) -> list[float]:
    """Every ``N.NNx`` figure of a benchmark's output, in order."""
    return [float(match) for match in RATIO.findall(output)]


def run_bench(tree: Path, module: str, args: list[str]) -> str:
    """Run ``python -m module args`` with ``tree`` as the project; its stdout (stderr passes through)."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=tree, env=env, stdout=subprocess.PIPE, text=True, check=True
    )
    return done.stdout


def compare(a_runs: list[list[float]], b_runs: list[list[float]]) -> list[str]:
    """Lines of B / A per ratio position: the mean of each side and the quotient."""
    width = min(len(r) for r in a_runs + b_runs)
    lines = []
    for i in range(width):
        a = statistics.mean(run[i] for run in a_runs)
        b = statistics.mean(run[i] for run in b_runs)
        spread = [run[i] for run in a_runs + b_runs]
        lines.append(
            f"ratio {i + 1}: A {a:.2f}x, B {b:.2f}x, B / A {b / a:.2f} (all runs {min(spread):.2f}-{max(spread):.2f})"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="the commit to compare with (A); this tree is B")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each side, alternating")
    parser.add_argument("bench", nargs=argparse.REMAINDER, help="-- MODULE [ARGS...]")
    args = parser.parse_args()
    module, *bench_args = [a for a in args.bench if a != "--"] or ["bench.validate"]
    with tempfile.TemporaryDirectory(prefix="bench-ab-") as scratch:
        base = Path(scratch) / "base"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base), args.base], check=True)
        try:
            a_runs: list[list[float]] = []
            b_runs: list[list[float]] = []
            for round_ in range(args.rounds):
                sides = [("A", base, a_runs), ("B", ROOT, b_runs)]
                # A B, then B A: a machine whose load drifts during the invocation favours neither side.
                for side, tree, runs in sides if round_ % 2 == 0 else sides[::-1]:
                    output = run_bench(tree, module, bench_args)
                    runs.append(ratios(output))
                    print(
                        f"--- round {round_ + 1}, {side} ({args.base if side == 'A' else 'this tree'})\n{output}",
                        flush=True,
                    )
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], check=False)
    print(f"{module} {' '.join(bench_args)}: A = {args.base}, B = this tree, {args.rounds} round(s) each")
    print("\n".join(compare(a_runs, b_runs)))


if __name__ == "__main__":
    main()
