"""The inference sink: receives KServe's logger CloudEvents and writes the inference log's records.

``python -m serving.inference_sink --log-dir /var/lib/bertops/inference-logs --port 8080``

An InferenceService with ``spec.predictor.logger`` (mode ``all``, url: this service) has KServe's
agent send each request body and each 200 response body as a CloudEvent in binary mode: the body
as is, the attributes as ``ce-*`` headers (kserve ``pkg/logger/worker.go``): ``ce-type``
``org.kubeflow.serving.inference.request`` or ``...response``, ``ce-id`` shared by the request
and its response, ``ce-inferenceservicename``, ``ce-time``, ``ce-annotations`` (JSON of the
annotations named in the logger's ``metadataAnnotations``). The two halves arrive separately and
in any order; the sink pairs them by ``ce-id`` and writes one record per text (V1 ``instances`` /
``predictions``, V2 ``text`` input / ``label`` and ``probabilities`` outputs) with
``bertops.inference_log``, so the monitor reads them as it reads a local server's log. Halves
that never meet (a failed request has no response event) are dropped after ``--pair-timeout-s``.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import socket
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bertops.inference_log import InferenceLogWriter, LogSettings, make_record, utc_now

log = logging.getLogger("serving.inference_sink")

REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"
# The InferenceService annotation that carries the registry version (copied from its label).
MODEL_VERSION_ANNOTATION = "bertops.io/model-version"
MAX_EVENT_BYTES = 8 * 1024 * 1024


@dataclass
class Half:
    """One event of a pair: its payload and what its headers said."""

    kind: str
    body: bytes
    model: str
    version: str
    ts: str
    arrived: float = field(default_factory=time.monotonic)


def event_time(value: str) -> str:
    """``ce-time`` (RFC 3339) as the log's ISO-8601 UTC timestamp; now when it is missing or malformed."""
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).isoformat()
    except ValueError:
        return utc_now()


def v1_or_v2_texts(request: dict[str, Any]) -> list[str]:
    """The texts of a V1 (``instances``) or V2 (input ``text``) request body."""
    if isinstance(request.get("instances"), list):
        return [str(t) for t in request["instances"]]
    for tensor in request.get("inputs") or []:
        if isinstance(tensor, dict) and tensor.get("name") == "text":
            return [str(t) for t in tensor.get("data") or []]
    raise ValueError("no V1 'instances' and no V2 'text' input")


def answers(response: dict[str, Any], count: int) -> list[dict[str, float]]:
    """The probabilities of each text from a V1 or V2 response body, by label name.

    A V2 response names only each row's label, not the columns of ``probabilities`` (they follow
    the model's ``id2label``); a column is named after the label of a row where it is the largest,
    and ``#i`` when no row of this response names it.
    """
    if isinstance(response.get("predictions"), list):
        return [{str(k): float(v) for k, v in p["probabilities"].items()} for p in response["predictions"]]
    outputs = {t.get("name"): t for t in response.get("outputs") or [] if isinstance(t, dict)}
    labels = [str(v) for v in outputs["label"]["data"]]
    flat = [float(v) for v in outputs["probabilities"]["data"]]
    width = len(flat) // max(count, 1)
    rows = [flat[i * width : (i + 1) * width] for i in range(count)]
    names = [f"#{i}" for i in range(width)]
    for label, row in zip(labels, rows, strict=True):
        names[row.index(max(row))] = label
    return [dict(zip(names, row, strict=True)) for row in rows]


class Pairs:
    """Request and response halves waiting for each other, bounded in number and age."""

    def __init__(self, max_pending: int, timeout_s: float):
        self.max_pending = max_pending
        self.timeout_s = timeout_s
        self._pending: OrderedDict[str, Half] = OrderedDict()
        self._lock = threading.Lock()
        self.expired = 0

    def match(self, event_id: str, half: Half) -> tuple[Half, Half] | None:
        """The (request, response) pair once both halves of ``event_id`` are in, else None (kept)."""
        with self._lock:
            now = time.monotonic()
            while self._pending and (
                len(self._pending) >= self.max_pending
                or now - next(iter(self._pending.values())).arrived > self.timeout_s
            ):
                self._pending.popitem(last=False)
                self.expired += 1
            other = self._pending.get(event_id)
            if other is None or other.kind == half.kind:
                self._pending[event_id] = half
                return None
            del self._pending[event_id]
        return (other, half) if other.kind == REQUEST_TYPE else (half, other)


def pair_records(event_id: str, request: Half, response: Half, log_texts: bool) -> list[dict[str, Any]]:
    """The log records of one answered request."""
    texts = v1_or_v2_texts(json.loads(request.body))
    body = json.loads(response.body)
    version = response.version or str(body.get("model_version") or "")
    return [
        make_record(response.model, version, event_id, text, probs, log_texts, request.ts)
        for text, probs in zip(texts, answers(body, len(texts)), strict=True)
    ]


def _half_from_headers(headers: Any, body: bytes) -> tuple[str, Half]:
    """The event id and half of a binary-mode CloudEvent (``ce-*`` headers, the payload as body)."""
    annotations = json.loads(headers.get("ce-annotations") or "{}")
    half = Half(
        kind=headers.get("ce-type", ""),
        body=body,
        model=headers.get("ce-inferenceservicename", ""),
        version=str(annotations.get(MODEL_VERSION_ANNOTATION, "")),
        ts=event_time(headers.get("ce-time", "")),
    )
    return headers.get("ce-id", ""), half


class SinkHandler(BaseHTTPRequestHandler):
    """POST: one CloudEvent; GET /healthz: 200."""

    server: SinkServer

    def do_GET(self) -> None:
        self._answer(200 if self.path == "/healthz" else 404, {"status": "ok"})

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length > MAX_EVENT_BYTES:
            self._answer(413, {"error": f"event over {MAX_EVENT_BYTES} bytes"})
            return
        body = self.rfile.read(length)
        try:
            event_id, half = _half_from_headers(self.headers, body)
            if not event_id or half.kind not in (REQUEST_TYPE, RESPONSE_TYPE):
                raise ValueError(f"not a KServe inference event (ce-id {event_id!r}, ce-type {half.kind!r})")
            pair = self.server.pairs.match(event_id, half)
            if pair is not None:
                self.server.writer.submit(pair_records(event_id, *pair, self.server.log_texts))
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
            log.warning("event refused: %s", exc)
            self._answer(400, {"error": str(exc)[:300]})
            return
        self._answer(200, {"accepted": event_id})

    def _answer(self, status: int, content: dict[str, str]) -> None:
        data = json.dumps(content).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug(format, *args)


class SinkServer(ThreadingHTTPServer):
    """The sink's HTTP server with its pairing buffer and log writer."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], writer: InferenceLogWriter, pairs: Pairs, log_texts: bool):
        super().__init__(address, SinkHandler)
        self.writer = writer
        self.pairs = pairs
        self.log_texts = log_texts


def make_server(
    host: str, port: int, settings: LogSettings, max_pending: int = 10_000, pair_timeout_s: float = 60.0
) -> SinkServer:
    """A sink bound to ``host:port`` (port 0: a free one), writing to ``settings.directory``; not yet serving."""
    writer = InferenceLogWriter(settings)
    return SinkServer((host, port), writer, Pairs(max_pending, pair_timeout_s), settings.log_texts)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The sink's flags."""
    from bertops.config import parse_bool

    parser = argparse.ArgumentParser(prog="python -m serving.inference_sink", description=__doc__.split("\n\n")[0])
    parser.add_argument("--log-dir", required=True, help="directory of the inference log (a persistent volume)")
    parser.add_argument("--host", default="0.0.0.0", help="address to bind")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on")
    parser.add_argument(
        "--log-texts", type=parse_bool, default=True, help="keep texts (false: SHA-256 and length only)"
    )
    parser.add_argument("--max-file-mb", type=float, default=64.0, help="size at which a log file rotates, MiB")
    parser.add_argument("--max-files", type=int, default=10, help="log files kept")
    parser.add_argument("--pair-timeout-s", type=float, default=60.0, help="how long a half waits for its other half")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Serve until interrupted."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = LogSettings(
        directory=Path(args.log_dir),
        log_texts=args.log_texts,
        max_file_bytes=max(int(args.max_file_mb * 1024 * 1024), 1),
        max_files=args.max_files,
        # Replicas sharing one volume all run as pid 1: the pod's host name keeps their files apart.
        prefix=f"sink-{socket.gethostname()}",
    )
    server = make_server(args.host, args.port, settings, pair_timeout_s=args.pair_timeout_s)
    log.info("inference sink on %s:%d writing to %s", args.host, server.server_address[1], args.log_dir)
    # On SIGTERM (a pod stopping) leave serve_forever so the queued records are written first.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server.serve_forever()
    finally:
        server.writer.close()


if __name__ == "__main__":
    main()
