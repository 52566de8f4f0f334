"""The server under overload: bounded headers, timed-out connections, dropped work, a bounded queue.

- ``guarded_protocol`` is uvicorn's httptools protocol (its fast parser, which has no bound of
  its own) with three limits: a request's line and headers may hold at most
  ``--max-header-bytes`` (431) and must arrive within ``--header-timeout-s`` of the request's
  first byte, or of the connection's opening (408); a body must arrive within
  ``--body-timeout-s`` of its headers (408). Each closes the connection.
- ``CancelWhenClientLeaves`` cancels an inference request whose client disconnected while it
  waited for the model: its texts still queued in the batcher leave the queue unrun
  (``bertops_dropped_texts_total``). When the grace period after SIGTERM ends before a request
  does, that request answers 503 instead of uvicorn's 500.
- ``queue_full`` answers the batcher's ``QueueFull`` with 503 and ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from asyncio import TimerHandle
from http import HTTPStatus
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from serving import metrics
from serving.batcher import QueueFull
from serving.config import ServingConfig
from serving.http import ERROR_KEY, ASGIApp, Message, Receive, Scope, Send, inference_endpoint

log = logging.getLogger(__name__)

# What a refused client is told to wait before it tries again, in seconds.
RETRY_AFTER_S = 1


def _raw_response(status: int, error: str) -> bytes:
    """A whole HTTP/1.1 response with a JSON error body, closing the connection."""
    body = json.dumps({"error": error}).encode()
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


class _GuardedHttpToolsProtocol(HttpToolsProtocol):
    """httptools' protocol with a bound on header bytes and deadlines for headers and body (set by ``guarded_protocol``)."""

    max_header_bytes = 64 * 1024
    header_timeout_s = 10.0
    body_timeout_s = 60.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # Bytes received since the current request's head began; counted only while reading one.
        self._head_bytes = 0
        self._reading_head = True
        # A connection that never sends a complete head is cut off like a slow one.
        self._head_timer: TimerHandle | None = self.loop.call_later(self.header_timeout_s, self._head_late)
        self._body_timer: TimerHandle | None = None

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._reading_head:
            self._head_bytes += len(data)
        super().data_received(data)
        # Checked after parsing: a chunk that ends a small head and carries a body is fine. The
        # parser holds at most the limit plus one read (256 KiB) of an unfinished head.
        if self._reading_head and self._head_bytes > self.max_header_bytes and not self.transport.is_closing():
            error = f"request head is larger than {self.max_header_bytes} bytes"
            self._cut(431, "header_too_large", error, answer=self._between_responses())

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_late)

    def on_headers_complete(self) -> None:
        self._reading_head, self._head_bytes = False, 0
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        # Whatever follows is the next request's head; the running request's body is complete
        # (messages are parsed in order), so its timer has nothing left to time.
        self._reading_head, self._head_bytes = True, 0
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        super()._start_asgi_task(cycle, app)
        # Timed from when the app starts reading it (a pipelined request waits for its turn first).
        if cycle.more_body:
            if self._body_timer is not None:
                self._body_timer.cancel()
            self._body_timer = self.loop.call_later(self.body_timeout_s, self._body_late, cycle)

    def _between_responses(self) -> bool:
        """No response is due on the connection: an answer written now is read as the next one."""
        return self.cycle is None or self.cycle.response_complete

    def _head_late(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self._head_bytes == 0 and self._between_responses():
            # Nothing of a request arrived: close quietly, as for an idle keep-alive connection.
            self.transport.close()
            return
        error = f"request head not received within {self.header_timeout_s:g} s"
        self._cut(408, "header_timeout", error, answer=self._between_responses())

    def _body_late(self, cycle: RequestResponseCycle) -> None:
        self._body_timer = None
        if not cycle.more_body or cycle.disconnected or self.transport.is_closing():
            return
        error = f"request body not received within {self.body_timeout_s:g} s of its headers"
        self._cut(408, "body_timeout", error, answer=not cycle.response_started)
        # The app, waiting for the rest of the body, sees the client gone and answers no one.
        cycle.disconnected = True
        cycle.message_event.set()

    def _cut(self, status: int, reason: str, error: str, answer: bool) -> None:
        """Answer ``status`` when ``answer`` (no other response is due first), then close the connection."""
        metrics.CONNECTIONS_CUT.labels(reason).inc()
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "?"
        log.warning("%s: %d, connection closed: %s", client, status, error, extra={"status": status, "reason": reason})
        if answer:
            self.transport.write(_raw_response(status, error))
        self.transport.close()


def guarded_protocol(config: ServingConfig) -> type[HttpToolsProtocol]:
    """The protocol class for uvicorn's ``Config(http=...)`` with ``config``'s header and body limits."""
    return type(
        "GuardedHttpToolsProtocol",
        (_GuardedHttpToolsProtocol,),
        {
            "max_header_bytes": config.max_header_bytes,
            "header_timeout_s": config.header_timeout_s,
            "body_timeout_s": config.body_timeout_s,
        },
    )


async def _send_json(send: Send, status: int, error: str, headers: list[tuple[bytes, bytes]]) -> None:
    body = json.dumps({"error": error}).encode()
    start = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]
    await send({"type": "http.response.start", "status": status, "headers": start})
    await send({"type": "http.response.body", "body": body})


class CancelWhenClientLeaves:
    """Cancels an inference request when its client disconnects; 503 when shutdown's grace period ends first.

    Once the app has read the whole body, a watcher waits for the next ASGI message, which
    uvicorn sends only when the client disconnects (or the response is complete). A request
    cut short this way is answered 499 for the access log and metrics (no one reads it).
    """

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or inference_endpoint(scope["path"]) is None:
            await self.app(scope, receive, send)
            return
        watcher: asyncio.Task[Message] | None = None
        started = complete = client_left = False
        task = asyncio.current_task()
        assert task is not None

        async def watch() -> Message:
            nonlocal client_left
            message = await receive()
            if message["type"] == "http.disconnect" and not complete:
                client_left = True
                task.cancel()
            return message

        async def watching_receive() -> Message:
            nonlocal watcher
            if watcher is not None:
                # The app asks again (to see a disconnect): it gets what the watcher gets.
                return await asyncio.shield(watcher)
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body", False):
                watcher = asyncio.get_running_loop().create_task(watch())
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started, complete
            started = started or message["type"] == "http.response.start"
            complete = message["type"] == "http.response.body" and not message.get("more_body", False)
            await send(message)

        try:
            await self.app(scope, watching_receive, tracking_send)
        except asyncio.CancelledError:
            await self._cancelled(scope, send, client_left, started)
        finally:
            if watcher is not None:
                watcher.cancel()

    @staticmethod
    async def _cancelled(scope: Scope, send: Send, client_left: bool, started: bool) -> None:
        task = asyncio.current_task()
        assert task is not None
        # The watcher cancelled this task when the client left; otherwise uvicorn did, when the
        # grace period after SIGTERM ended. Either way the request still gets an answer (uvicorn's
        # own would be a 500), then the task ends.
        shutting_down = not client_left and task.cancelling() > 0
        if not (client_left or shutting_down):
            raise asyncio.CancelledError
        task.uncancel()
        error = (
            "server shutting down: grace period over" if shutting_down else "client disconnected; queued work dropped"
        )
        scope.setdefault("state", {})[ERROR_KEY] = error
        if not started:
            status, headers = (503, [(b"retry-after", b"%d" % RETRY_AFTER_S)]) if shutting_down else (499, [])
            await _send_json(send, status, error, [*headers, (b"connection", b"close")])


async def queue_full(request: Request, exc: Exception) -> JSONResponse:
    """503 with ``Retry-After`` for a request that would pass the queue bound; nothing of it was queued."""
    metrics.QUEUE_FULL.inc()
    setattr(request.state, ERROR_KEY, str(exc))
    return JSONResponse(status_code=503, content={"error": str(exc)}, headers={"Retry-After": str(RETRY_AFTER_S)})


def install(app: Any) -> None:
    """Add the cancellation of abandoned requests and the 503 of a full queue to KServe's FastAPI ``app``.

    Call it before ``serving.http.install``: the middleware then runs inside the access log's,
    which records the 499 and 503 it answers.
    """
    app.add_middleware(CancelWhenClientLeaves)
    app.add_exception_handler(QueueFull, queue_full)
