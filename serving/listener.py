"""The server's listening socket, bound by the server itself, and the status file that reports it.

The socket is bound before the model loads, so a port that another program listens on fails the
start at once with one line (``cannot listen on 127.0.0.1:8080: [Errno 98] Address already in
use``), and port 0 has no gap between choosing a free port and binding it: the kernel picks it
at the bind. It listens only once the model is loaded (until then a connection is refused, not
left hanging), and the status file then reports the port with the server's pid. uvicorn serves
this very socket.

A server that takes over a port from a predecessor which is still serving it (``--port-wait-s``)
loads its model first, reports ``waiting-for-port``, and binds as soon as the predecessor, told
to stop, closes its listening socket: the port is unanswered only between those two moments.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import time
from pathlib import Path

log = logging.getLogger(__name__)

WAITING = "waiting-for-port"
LISTENING = "listening"
# uvicorn's default backlog.
BACKLOG = 2048
# How often a waiting server tries the port: the longest it stays unanswered after a predecessor lets go.
RETRY_S = 0.01


def bind_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (port 0: one the kernel picks); ``OSError`` as the OS says."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        # As uvicorn does: a predecessor's connections that are still closing do not hold the port;
        # its listening socket still does, so two servers never listen on it together.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def cannot_listen(host: str, port: int, exc: OSError) -> SystemExit:
    """Log the one line that says why the port cannot be had; the caller raises the exit."""
    log.error("cannot listen on %s:%d: %s", host, port, exc)
    return SystemExit(1)


def bind_early(host: str, port: int, port_wait_s: float) -> socket.socket | None:
    """The socket, bound now; ``None`` when the port is in use and the server may wait for it."""
    try:
        return bind_socket(host, port)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE and port_wait_s > 0:
            log.info("%s:%d is in use: the model loads first, then the server waits for the port", host, port)
            return None
        raise cannot_listen(host, port, exc) from None


def bind_when_free(host: str, port: int, port_wait_s: float) -> socket.socket:
    """The socket, bound as soon as ``host:port`` is free, within ``port_wait_s`` seconds."""
    deadline = time.monotonic() + port_wait_s
    while True:
        try:
            return bind_socket(host, port)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                raise cannot_listen(host, port, exc) from None
        time.sleep(RETRY_S)


def start_listening(sock: socket.socket, host: str, status_file: str) -> None:
    """Listen on the bound ``sock``, log its address and report its port in ``status_file``."""
    port = int(sock.getsockname()[1])
    try:
        sock.listen(BACKLOG)
    except OSError as exc:
        # Another program listened first on a port both of us had bound with SO_REUSEADDR.
        raise cannot_listen(host, port, exc) from None
    log.info("listening on %s:%d", host, port)
    write_status(status_file, LISTENING, port)


def write_status(status_file: str, state: str, port: int = 0) -> None:
    """Record ``{"pid", "state", "port"}`` atomically in ``status_file`` (nothing if it is '')."""
    if not status_file:
        return
    path = Path(status_file)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), "state": state, "port": port}), encoding="utf-8")
    tmp.replace(path)
