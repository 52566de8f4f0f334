"""Benchmark the default local run: its wall time by step, and its fine-tuning against the same work in one process.

    .venv/bin/python -m bench.pipeline [--parallelism 0 1] [--max-steps N]

Runs ``bertops run`` with its defaults (the default data, two candidates; only the state
directory is a fresh temporary one) once per ``--parallelism`` value: 0 is the default, the
candidates train side by side and each takes its share of the CPUs; 1 trains them one after
the other, each with every CPU. Each run's wall time is split by step from its log
(``pipelines.step_times``). Then the baseline: the same candidates' fine-tuning (same
settings, same tokenized data, same ONNX and int8 export), one after the other in this one
process with every CPU, so without the per-task interpreter start, imports and artifact
copies of the pipeline. The figure: each run's fine-tune phase (first candidate's start to
the last one's end) over the baseline's time for the same samples.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bertops.env import apply_env_defaults

ROOT = Path(__file__).resolve().parents[1]


def run_pipeline(state_dir: Path, parallelism: int, extra: list[str]) -> tuple[float, Path]:
    """``bertops run`` into ``state_dir``; its wall seconds and its run log. The endpoint it starts is deleted."""
    command = [sys.executable, "-m", "cli", "run", "--state-dir", str(state_dir), "--parallelism", str(parallelism)]
    started = time.perf_counter()
    done = subprocess.run([*command, *extra], cwd=ROOT, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    subprocess.run(
        [sys.executable, "-m", "cli", "endpoints", "delete", "--state-dir", str(state_dir)],
        cwd=ROOT,
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"bertops run failed ({done.returncode}):\n{done.stderr[-3000:]}")
    logs = sorted((state_dir / "runs").glob("*.log"))
    return seconds, logs[-1]


def tokenized_dir(state_dir: Path) -> Path:
    """The tokenize step's output in the run's pipeline root (the folder holding its metadata file)."""
    found = sorted((state_dir / "pipeline_root").glob("**/tokenize/tokenized"))
    if not found:
        raise RuntimeError(f"no tokenize output under {state_dir / 'pipeline_root'}")
    return found[-1]


def one_process(tokenized: Path, work: Path, extra: list[str]) -> tuple[float, int]:
    """The default candidates fine-tuned one after the other here, with every CPU: seconds and samples."""
    from dataclasses import replace

    from bertops import config as cfg
    from components.candidates.candidates import CANDIDATE_FIELDS, plan_candidates
    from components.finetune.launch import finetune_step

    parser = argparse.ArgumentParser()
    cfg.add_arguments(parser)
    config = cfg.from_namespace(parser.parse_args(extra))
    settings = cfg.FinetuneConfig(**cfg.fields_of(cfg.FinetuneConfig, vars(config.train)))
    defaults = {name: getattr(settings, name) for name in CANDIDATE_FIELDS}
    candidates = plan_candidates(json.loads(config.train.candidates), defaults)
    started, samples = time.perf_counter(), 0
    for candidate in candidates:
        mine = replace(settings, **{name: candidate[name] for name in CANDIDATE_FIELDS})
        result = finetune_step(tokenized, work / candidate["id"], mine, quantize=config.train.quantize)
        samples += result.train_samples
    return time.perf_counter() - started, samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parallelism", type=int, nargs="+", default=[0, 1], help="bertops run --parallelism values")
    args, extra = parser.parse_known_args()
    apply_env_defaults()
    from bench.peak import matmul_peak
    from bertops.cpu import available_cpus
    from pipelines.step_times import phase_seconds, split_line, step_times

    print(f"{available_cpus()} CPUs; fp32 matmul peak {matmul_peak():.0f} GFLOP/s; settings: {extra or 'defaults'}")
    print("| run | wall s | fine-tune phase s | one process s | phase / one process | step times |")
    print("|---|---:|---:|---:|---:|---|")
    baseline: tuple[float, int] | None = None
    for parallelism in args.parallelism:
        with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as scratch:
            state = Path(scratch)
            wall, log = run_pipeline(state, parallelism, extra)
            phase = phase_seconds(step_times(log.read_text(encoding="utf-8", errors="replace")), "finetune")
            if baseline is None:
                baseline = one_process(tokenized_dir(state), state / "one-process", extra)
                print(f"one process: {baseline[1]} samples in {baseline[0]:.0f} s", flush=True)
            name = f"bertops run --parallelism {parallelism}" + (" (default)" if parallelism == 0 else "")
            print(
                f"| {name} | {wall:.0f} | {phase:.0f} | {baseline[0]:.0f} | **{phase / baseline[0]:.2f}x** "
                f"| {split_line(log)} |",
                flush=True,
            )
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
