"""The model server under overload, with real sockets against real servers (``serving.limits``).

``crowded``: PyTorch, one text per forward pass, room in the queue for four large requests and
a small one, and short header, body and idle timeouts, so that large requests take a while and
every limit is quick to reach.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from test_serving import LONG_TEXT, Server, wait_ready

from components.deploy.deploy import free_port
from serving.config import ServingConfig
from serving.server import parse_args

TEXTS_PER_REQUEST = 128
LARGE_ACCEPTED = 4 * TEXTS_PER_REQUEST
QUEUE_BOUND = LARGE_ACCEPTED + 64
MAX_HEADER = 8192
LARGE = {"instances": [LONG_TEXT[:400]] * TEXTS_PER_REQUEST}


@contextmanager
def serving(model_dir: Path, log_path: Path, *flags: str) -> Iterator[Server]:
    """``serving.server`` on a free port with ``flags``, one torch thread, its log in ``log_path``."""
    port = free_port()
    command = [sys.executable, "-m", "serving.server", "--model-dir", str(model_dir), "--model-name", "m"]
    command += ["--http-port", str(port), "--backend", "torch", "--max-batch-size", "1", "--max-wait-ms", "0"]
    command += ["--max-instances", str(TEXTS_PER_REQUEST), "--max-text-chars", "2000", *flags]
    # One torch thread: on a shared machine, two spinning threads can make each pass 50x slower.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        server = Server(f"http://127.0.0.1:{port}", port, process)
        try:
            wait_ready(f"{server.url}/v2/models/m/ready", process)
            yield server
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()


@pytest.fixture(scope="module")
def crowded(trained_tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("crowded") / "server.log"
    flags = ["--max-queued-texts", str(QUEUE_BOUND), "--max-header-bytes", str(MAX_HEADER)]
    flags += ["--header-timeout-s", "1", "--body-timeout-s", "1", "--idle-timeout-s", "1"]
    with serving(trained_tiny, log, *flags) as server:
        server.log = log  # type: ignore[attr-defined]
        yield server


def test_the_limits_are_flags_and_the_queue_holds_at_least_one_full_request() -> None:
    args = parse_args(
        ["--model-dir", "d", "--model-name", "n", "--max-queued-texts", "64", "--header-timeout-s", "2.5"]
    )
    assert (args.config.max_queued_texts, args.config.header_timeout_s) == (64, 2.5)
    # Else a request of --max-instances texts could never be accepted.
    with pytest.raises(ValueError, match=r"max_queued_texts \(63\) must be >= max_instances \(64\)"):
        ServingConfig(max_queued_texts=63)
    with pytest.raises(ValueError, match="body_timeout_s must be > 0"):
        ServingConfig(body_timeout_s=0)


def metric(server: Server, name: str) -> float:
    """The value of an unlabelled metric (0 when it is absent)."""
    text = requests.get(f"{server.url}/metrics", timeout=10).text
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def wait_for(condition: object, seconds: float = 120) -> None:
    """Poll ``condition()`` until it is true; fail after ``seconds`` (a guard against a hang)."""
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


def test_a_burst_over_the_queue_bound_gets_503s_and_a_later_small_request_goes_first(crowded: Server) -> None:
    # Eight requests of 128 texts against a bound of 576: some are refused at once, never with a
    # 500. A one-text request sent once the burst has been sorted out fits in what is left, takes
    # its turn in the batcher and is answered while the accepted ones still run.
    url = f"{crowded.url}/v1/models/m:predict"
    done: list[tuple[str, requests.Response]] = []
    lock = threading.Lock()

    def call(name: str, body: object) -> None:
        answer = requests.post(url, json=body, timeout=300)
        with lock:
            done.append((name, answer))

    barrier = threading.Barrier(8)

    def burst_call(i: int) -> None:
        barrier.wait()
        call(f"burst{i}", LARGE)

    burst = [threading.Thread(target=burst_call, args=(i,)) for i in range(8)]
    for thread in burst:
        thread.start()
    # Every request of the burst is either answered (the 503s) or queued.
    wait_for(lambda: any(a.status_code == 503 for _, a in done) and len(done) + crowded.in_flight() == 8)
    call("small", {"instances": ["Shares rose"]})
    for thread in burst:
        thread.join(timeout=300)
    statuses = {name: answer.status_code for name, answer in done}
    assert set(statuses.values()) <= {200, 503} and statuses["small"] == 200, statuses
    refused = [answer for _, answer in done if answer.status_code == 503]
    accepted = [name for name, answer in done if answer.status_code == 200 and name != "small"]
    assert refused and accepted
    for answer in refused:
        assert answer.headers["Retry-After"] == "1"
        assert "--max-queued-texts" in answer.json()["error"]
    order = [name for name, _ in done]
    assert order.index("small") < order.index(accepted[-1]), order
    assert metric(crowded, "bertops_queue_full_total") == len(refused)
    text = requests.get(f"{crowded.url}/metrics", timeout=10).text
    assert not re.search(r'^bertops_requests_total\{code="5(?!03)', text, re.MULTILINE)


def test_work_of_clients_that_left_is_dropped(crowded: Server) -> None:
    # Four large requests whose clients give up once they are queued: their texts leave the
    # queue unrun, and a small request after them is answered long before their 512 texts could run.
    wait_for(lambda: metric(crowded, "bertops_queued_texts") == 0)
    batches_before = metric(crowded, "bertops_batch_size_count")
    dropped_before = metric(crowded, "bertops_dropped_texts_total")
    body = json.dumps(LARGE).encode()
    head = f"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    clients = [socket.create_connection(("127.0.0.1", crowded.port)) for _ in range(4)]
    for sock in clients:
        sock.sendall(head.encode() + body)
    wait_for(lambda: metric(crowded, "bertops_queued_texts") == LARGE_ACCEPTED)
    for sock in clients:
        sock.close()
    answer = requests.post(f"{crowded.url}/v1/models/m:predict", json={"instances": ["Cup final"]}, timeout=120)
    assert answer.status_code == 200
    run = metric(crowded, "bertops_batch_size_count") - batches_before
    assert run < LARGE_ACCEPTED, f"{run} texts ran for clients that had left"
    wait_for(lambda: metric(crowded, "bertops_queued_texts") == 0)
    dropped = metric(crowded, "bertops_dropped_texts_total") - dropped_before
    # Every text of the four requests either ran before its client left or was dropped.
    assert dropped + metric(crowded, "bertops_batch_size_count") - batches_before - 1 == LARGE_ACCEPTED
    lines = crowded.log.read_text().splitlines()  # type: ignore[attr-defined]
    assert sum("499" in line and "client disconnected; queued work dropped" in line for line in lines) == 4


def _read_until_closed(sock: socket.socket, seconds: float = 30) -> bytes:
    """Everything the server sends until it closes the connection (a hang fails after ``seconds``)."""
    sock.settimeout(seconds)
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def test_an_oversized_header_gets_431_and_memory_stays_bounded(crowded: Server) -> None:
    before = crowded.rss_bytes()
    answers: list[bytes] = []

    def flood() -> None:
        # A header line that never ends, 4 MiB of it offered; the server stops it at 8 KiB.
        with socket.create_connection(("127.0.0.1", crowded.port), timeout=30) as sock:
            sock.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\nX-Junk: ")
            try:
                for _ in range(64):
                    sock.sendall(b"a" * 65536)
            except OSError:
                pass  # closed by the server, as it should
            answers.append(_read_until_closed(sock))

    threads = [threading.Thread(target=flood) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(answers) == 5
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
        assert b"larger than 8192 bytes" in answer
    assert crowded.rss_bytes() - before < 32 * 1024 * 1024
    assert requests.get(f"{crowded.url}/v2/health/ready", timeout=10).status_code == 200


def test_slow_or_silent_clients_are_cut_off(crowded: Server) -> None:
    # A header that trickles in, a byte every 100 ms, never finished: 408 after the 1 s limit.
    with socket.create_connection(("127.0.0.1", crowded.port), timeout=30) as sock:
        sock.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        answer = b""
        for _ in range(300):
            try:
                sock.sendall(b"a")
            except OSError:
                break
            time.sleep(0.1)
            sock.settimeout(0.001)
            try:
                answer += sock.recv(65536)
            except (TimeoutError, BlockingIOError):
                continue
            if answer:
                break
        answer += _read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    # A body that stops short of its Content-Length: 408 once the body limit has passed.
    with socket.create_connection(("127.0.0.1", crowded.port), timeout=30) as sock:
        sock.sendall(b'POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"inst')
        assert _read_until_closed(sock).startswith(b"HTTP/1.1 408 ")
    # A connection that sends nothing, and one left idle after its answer, are closed.
    with socket.create_connection(("127.0.0.1", crowded.port), timeout=30) as sock:
        assert _read_until_closed(sock) == b""
    with socket.create_connection(("127.0.0.1", crowded.port), timeout=30) as sock:
        sock.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _read_until_closed(sock).startswith(b"HTTP/1.1 200 ")
    text = requests.get(f"{crowded.url}/metrics", timeout=10).text
    for reason in ("header_timeout", "body_timeout"):
        assert re.search(rf'^bertops_connections_cut_total\{{reason="{reason}"\}} [1-9]', text, re.MULTILINE)


def test_requests_still_running_when_the_grace_period_ends_answer_503(trained_tiny: Path, tmp_path: Path) -> None:
    # SIGTERM with far more queued work than a one-second grace period allows: new connections
    # are refused at once, and what cannot finish answers 503 with Retry-After, never 500.
    flags = ["--grace-period-s", "1", "--max-queued-texts", str(8 * TEXTS_PER_REQUEST)]
    with serving(trained_tiny, tmp_path / "server.log", *flags) as server:
        statuses: list[requests.Response] = []

        def call() -> None:
            statuses.append(requests.post(f"{server.url}/v1/models/m:predict", json=LARGE, timeout=120))

        threads = [threading.Thread(target=call) for _ in range(8)]
        for thread in threads:
            thread.start()
        wait_for(lambda: metric(server, "bertops_queued_texts") >= 6 * TEXTS_PER_REQUEST)
        server.process.send_signal(signal.SIGTERM)

        def refused() -> bool:
            try:
                socket.create_connection(("127.0.0.1", server.port), timeout=5).close()
            except ConnectionRefusedError:
                return True
            return False

        wait_for(refused)
        assert any(thread.is_alive() for thread in threads), "the work ran out before the listener closed"
        for thread in threads:
            thread.join(timeout=120)
        assert server.process.wait(timeout=60) == 0
    codes = [answer.status_code for answer in statuses]
    assert len(codes) == 8 and set(codes) <= {200, 503} and 503 in codes, codes
    late = next(answer for answer in statuses if answer.status_code == 503)
    assert late.headers["Retry-After"] == "1" and "shutting down" in late.json()["error"]
