"""Benchmark batch scoring against the best a client of the endpoint can do: same model, same texts.

    .venv/bin/python -m bench.score [--concurrency 1 4 8] [--per-request 32] [--duration 10] [--rounds 2]

The model is bench.serve's (all-MiniLM-L6-v2 from its PyPI package with a random 5-label head and
its ``model.onnx``), registered as the champion of a scratch registry; the texts are bench.serve's
(the first sentence of each BBC News article, 2,225 rows).

- **batch**: ``components.batch_score.batch_score`` (what ``bertops score`` runs) on a JSONL file of
  the texts, in-process, with its defaults; rows/s is its own figure (scoring, chunk writes
  included; model load and input read excluded).
- **endpoint**: ``python -m serving.server`` with its defaults, driven by bench.serve's load
  generator (closed loop of ``c`` keep-alive connections, raw asyncio HTTP/1.1) sending V1
  requests of ``--per-request`` texts each, for ``--duration`` seconds per concurrency; rows/s is
  answered requests x texts per request / seconds.

Each round measures batch and every concurrency once, the order reversed every other round,
because the machine is shared and its speed drifts; the server idles while batch scoring runs.
The last line is batch rows/s over the best concurrency's rows/s, pooled over the rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.serve import MODEL_NAME, Run, Server, bench_texts, build_model, drive, free_port, start, wait_ready
from bertops.env import apply_env_defaults

LINEAGE = {"data_version": "bench", "git_commit": "bench", "base_model": "all-MiniLM-L6-v2", "pipeline_run": "bench"}


def register(model_dir: Path, state: Path) -> None:
    """The bench model as version 1, the champion, of a scratch registry."""
    from components.register.register import Submission, register_model

    register_model(Submission(model_dir, MODEL_NAME, {}, {}, LINEAGE), True, str(state))


def batch_rows_per_s(data: Path, state: Path, out: Path) -> float:
    """One batch-scoring run of ``data`` into the new folder ``out``: its rows/s."""
    from components.batch_score.batch_score import batch_score
    from components.batch_score.config import BatchScoreConfig

    config = BatchScoreConfig(data_path=str(data), model_name=MODEL_NAME, state_dir=str(state))
    return float(batch_score(config, out)["rows_per_s"])


async def endpoint_rows_per_s(
    server: Server, bodies: list[bytes], per_request: int, concurrency: int, duration: float
) -> float:
    """Rows/s of ``concurrency`` closed-loop clients sending ``per_request`` texts per request."""
    run = Run()
    await drive(server.port, bodies, concurrency, duration, run)
    if run.errors:
        raise RuntimeError(f"{run.errors} requests failed at concurrency {concurrency}; see {server.log_file}")
    return len(run.latencies) * per_request / run.seconds


def measure_round(
    args: argparse.Namespace, index: int, server: Server, bodies: list[bytes], work: Path
) -> dict[str, float]:
    """Batch and every concurrency once, in this round's order; ``{"batch": rows/s, "c=N": rows/s, ...}``."""
    cells = ["batch", *(f"c={c}" for c in args.concurrency)]
    row: dict[str, float] = {}
    for cell in cells if index % 2 == 0 else cells[::-1]:
        if cell == "batch":
            row[cell] = batch_rows_per_s(work / "texts.jsonl", work / "state", work / f"out-{index}")
        else:
            concurrency = int(cell.removeprefix("c="))
            row[cell] = asyncio.run(endpoint_rows_per_s(server, bodies, args.per_request, concurrency, args.duration))
    row["load"] = os.getloadavg()[0]
    return row


def report(rows: list[dict[str, float]], concurrency: list[int]) -> None:
    """The table of rounds, then the pooled figures and the ratio."""
    cells = ["batch", *(f"c={c}" for c in concurrency)]
    print("| round | batch rows/s | " + " | ".join(f"endpoint {c} rows/s" for c in cells[1:]) + " | load avg |")
    print("|---:" * (len(cells) + 2) + "|")
    for i, row in enumerate(rows, start=1):
        print(f"| {i} | " + " | ".join(f"{row[c]:.1f}" for c in cells) + f" | {row['load']:.2f} |")
    pooled = {c: statistics.mean(row[c] for row in rows) for c in cells}
    best = max(cells[1:], key=pooled.__getitem__)
    print(
        f"batch {pooled['batch']:.1f} rows/s; best endpoint client {best} {pooled[best]:.1f} rows/s; "
        f"batch / best endpoint **{pooled['batch'] / pooled[best]:.2f}x**"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8], help="endpoint client connections")
    parser.add_argument("--per-request", type=int, default=32, help="texts per endpoint request")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per endpoint run")
    parser.add_argument("--rounds", type=int, default=2)
    return parser


def main() -> None:
    args = _parser().parse_args()
    apply_env_defaults()
    logging.basicConfig(level=logging.WARNING)
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="bench-score-"))
    server: Server | None = None
    try:
        model_dir = build_model(work / "model")
        texts = bench_texts()
        (work / "texts.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
        register(model_dir, work / "state")
        port = free_port()
        command = ["-m", "serving.server", "--model-dir", str(model_dir), "--model-name", MODEL_NAME]
        server = start("endpoint", [*command, "--http-port", str(port)], port, work)
        bodies = [
            json.dumps({"instances": texts[i : i + args.per_request]}).encode()
            for i in range(0, len(texts), args.per_request)
        ]
        asyncio.run(wait_ready(server))
        asyncio.run(endpoint_rows_per_s(server, bodies, args.per_request, 4, 3.0))  # warm-up
        print(f"{len(texts)} texts, {args.per_request} per endpoint request, cpus {os.cpu_count()}", flush=True)
        # The client's own garbage collections would show up as server time.
        gc.freeze()
        rows: list[dict[str, Any]] = [measure_round(args, i, server, bodies, work) for i in range(args.rounds)]
        report(rows, args.concurrency)
        print(f"total {time.perf_counter() - started:.0f} s")
    finally:
        if server is not None:
            server.process.terminate()
            server.process.wait(timeout=60)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
