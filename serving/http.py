"""What the server adds around KServe's FastAPI app: body limits, metrics, access logs, 4xx for bad input.

- ``BodyLimitMiddleware`` answers 413 before reading a body whose Content-Length is over the
  limit, and stops reading a streamed (chunked) body as soon as it passes the limit, so an
  oversized request costs neither time nor memory.
- ``AccessMiddleware`` counts and times inference requests (Prometheus) and logs one
  structured line per request.
- ``StrictDataPlane`` turns any failure to decode a request body (KServe's binary-tensor
  parser raises ``KeyError``, ``ValueError`` ... on malformed input) into a 400, and fills the
  V2 model metadata's ``platform`` (the backend) and ``versions`` (the registry version).
- ``ModelVersionRoutes`` serves the versioned V2 routes (``/v2/models/NAME/versions/V/...``,
  ``?model_version=V``), which KServe answers 501, for the one version the server serves.
- ``StrictRepositoryExtension``: with the repository API on, loading a model the server does not
  hold is a 404, not KServe's 503.
- ``validation_error`` answers V2 schema errors with a short 422 that does not echo the body;
  ``client_error`` answers a request's own failure (400, 404, 499, 501, 503: ``CLIENT_ERRORS``)
  with one log line and no traceback; real server errors keep KServe's 500 and traceback.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import struct
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kserve.constants.constants import INFERENCE_CONTENT_LENGTH_HEADER
from kserve.errors import (
    InferenceError,
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
    ServerNotLive,
    ServerNotReady,
    UnsupportedProtocol,
)
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.model_repository_extension import ModelRepositoryExtension
from starlette.requests import ClientDisconnect, Request

from serving import metrics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger(__name__)
access_log = logging.getLogger("serving.access")

REPOSITORY_PATH = re.compile(r"^/v2/repository(/|$)")
# The V2 routes of one model that take a version: metadata, readiness, inference.
MODEL_PATH = re.compile(r"^/v2/models/(?P<name>[^/]+)(/versions/(?P<version>[^/]+))?(?P<route>/ready|/infer)?$")
VERSION_QUERY = "model_version"
_ENDPOINTS = (
    ("v1", re.compile(r"^/v1/models/[^/]+:predict$")),
    ("v2", re.compile(r"^/v2/models/[^/]+(/versions/[^/]+)?/infer$")),
)


def inference_endpoint(path: str) -> str | None:
    """``v1`` or ``v2`` for an inference path, ``None`` for health, metadata and the rest."""
    return next((name for name, pattern in _ENDPOINTS if pattern.match(path)), None)


class _BodyTooLarge(Exception):
    """Raised from ``receive`` to stop the app reading a body past the limit."""


async def _send_json(send: Send, status: int, content: dict[str, str], close: bool = False) -> None:
    body = json.dumps(content).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        # The rest of the body is never read, so the connection cannot carry another request.
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class BodyLimitMiddleware:
    """413 for request bodies over ``max_body_bytes``, declared or streamed."""

    def __init__(self, app: ASGIApp, max_body_bytes: int):
        self.app = app
        self.max_body_bytes = max_body_bytes

    def _too_large(self) -> dict[str, str]:
        return {"error": f"request body is larger than {self.max_body_bytes} bytes (--max-body-bytes)"}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        # uvicorn has already refused a Content-Length that is not a number.
        if declared is not None and int(declared) > self.max_body_bytes:
            await _send_json(send, 413, self._too_large(), close=True)
            return
        received = 0
        exceeded = False
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    exceeded = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            # Whatever the app answers to a body cut short (FastAPI makes it a 400) gives way to the 413.
            if exceeded:
                return
            response_started = response_started or message["type"] == "http.response.start"
            await send(message)

        with contextlib.suppress(_BodyTooLarge):
            await self.app(scope, limited_receive, guarded_send)
        if exceeded and not response_started:
            await _send_json(send, 413, self._too_large(), close=True)


class RepositoryApiGuard:
    """404 for KServe's model repository API (load/unload), which has no authentication.

    KServe registers its routes unconditionally; this answers for them unless the server was
    started with ``--repository-api true`` (on loopback only, ``serving.server`` checks).
    """

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and REPOSITORY_PATH.match(scope["path"]):
            await _send_json(send, 404, {"error": "the model repository API is off (--repository-api)"})
            return
        await self.app(scope, receive, send)


async def _reject(scope: Scope, send: Send, status: int, reason: str) -> None:
    """Answer ``status`` with ``reason``, logged as ``client_error`` logs a request's own failure."""
    scope.setdefault("state", {})[ERROR_KEY] = reason
    if inference_endpoint(scope["path"]) is None:
        log.warning("%s %s %d: %s", scope["method"], scope["path"], status, reason, extra={"status": status})
    await _send_json(send, status, {"error": reason})


class ModelVersionRoutes:
    """The versioned V2 routes, for the registry version this server serves (``--model-version``).

    KServe answers 501 to any version, in the path or in ``?model_version=``. Here a request for
    the version served goes on as its unversioned route; any other version is a 404 naming the
    version served. A server that does not know its version (empty ``model_version``) answers
    every versioned request 404.
    """

    def __init__(self, app: ASGIApp, model_version: str):
        self.app = app
        self.model_version = model_version

    def _unknown_version(self, name: str, asked: str) -> str:
        if not self.model_version:
            return (
                f"model {name!r} has no version {asked!r} here: this server was started without --model-version, "
                f"so only the unversioned routes (/v2/models/{name}/...) answer"
            )
        return (
            f"model {name!r} has no version {asked!r} here: this server serves version {self.model_version!r} "
            "(ask for it, or leave the version out)"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = MODEL_PATH.match(scope["path"]) if scope["type"] == "http" else None
        if match is None:
            await self.app(scope, receive, send)
            return
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        asked = [match["version"]] if match["version"] else []
        asked += [value for key, value in query if key == VERSION_QUERY and value]
        wrong = next((version for version in asked if version != self.model_version), None)
        if wrong is not None:
            await _reject(scope, send, 404, self._unknown_version(match["name"], wrong))
            return
        if match["version"] or any(key == VERSION_QUERY for key, _ in query):
            path = f"/v2/models/{match['name']}{match['route'] or ''}"
            # The copy shares the request state with the middleware outside (the access line's error).
            scope.setdefault("state", {})
            scope = {
                **scope,
                "path": path,
                "raw_path": quote(path).encode(),
                "query_string": urlencode([(k, v) for k, v in query if k != VERSION_QUERY]).encode("latin-1"),
            }
        await self.app(scope, receive, send)


class AccessMiddleware:
    """Prometheus counts and latency of inference requests, and one access log line each."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = inference_endpoint(scope["path"]) if scope["type"] == "http" else None
        if endpoint is None:
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        # What the client sees if the app raises: ServerErrorMiddleware outside us answers 500.
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        metrics.IN_FLIGHT.inc()
        try:
            await self.app(scope, receive, recording_send)
        finally:
            metrics.IN_FLIGHT.dec()
            seconds = time.perf_counter() - start
            metrics.REQUESTS.labels(endpoint, str(status)).inc()
            metrics.LATENCY.labels(endpoint).observe(seconds)
            if status >= 400:
                metrics.ERRORS.labels(endpoint, metrics.error_reason(status)).inc()
            headers = dict(scope["headers"])
            access_log.info(
                "%s %s %d",
                scope["method"],
                scope["path"],
                status,
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "latency_ms": round(seconds * 1000, 3),
                    "request_bytes": int(headers.get(b"content-length", b"0") or 0),
                    "request_id": headers.get(b"x-request-id", b"").decode("latin-1") or None,
                    "error": scope.get("state", {}).get(ERROR_KEY),
                },
            )


class NotServed(LookupError):
    """A route KServe registers that this server does not serve (404)."""


class StrictDataPlane(DataPlane):
    """KServe's data plane; a request body it cannot decode is the client's error (400), not a 500.

    V2 model metadata says what KServe leaves empty: the backend that serves the model in
    ``platform`` and the registry version in ``versions`` (a model's attributes of those names).
    """

    async def ready(self) -> bool:
        """Ready only while every registered model can answer (KServe's says ready regardless)."""
        models = self.model_registry.get_models().values()
        return bool(models) and all(getattr(m, "ready", False) for m in models) and await super().ready()

    async def model_metadata(self, model_name: str) -> dict[str, Any]:
        metadata: dict[str, Any] = await super().model_metadata(model_name)
        model = self.get_model_from_registry(model_name)
        platform = getattr(model, "platform", "")
        versions = getattr(model, "versions", None)
        return {
            **metadata,
            "platform": platform or metadata["platform"],
            "versions": metadata.get("versions") if versions is None else versions,
        }

    async def explain(self, model_name: str, request: Any, headers: Any = None) -> Any:
        """404: no explainer serves here (KServe answers 501, a server error, for a model without one)."""
        await self.get_model(model_name)
        raise NotServed(f"model {model_name!r} has no explainer: this server answers :predict and /infer")

    def decode_inference_request(self, body: Any, headers: Any, model_name: str) -> Any:
        """Without the binary-extension header a V2 body is all JSON, whatever its Content-Type.

        That is the protocol's rule and Triton's; tritonclient's JSON mode sends no Content-Type,
        and KServe would otherwise take the body for binary tensors and answer 400.
        """
        if isinstance(body, bytes) and INFERENCE_CONTENT_LENGTH_HEADER not in (headers or {}):
            headers = {**headers, INFERENCE_CONTENT_LENGTH_HEADER: str(len(body))}
        return super().decode_inference_request(body, headers, model_name)

    def decode(self, body: Any, headers: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().decode(body, headers, *args, **kwargs)
        except InvalidInput:
            raise
        except (KeyError, IndexError, TypeError, ValueError, AttributeError, struct.error, InferenceError) as exc:
            raise InvalidInput(f"malformed request body: {type(exc).__name__}: {exc}") from exc


class StrictRepositoryExtension(ModelRepositoryExtension):
    """KServe's model repository extension; loading a model the server does not hold is a 404.

    KServe answers 503 ("not ready") to the load of any model it does not hold: its repository's
    ``load`` does nothing in a server that brings its own model (``ModelRepository.load`` is empty),
    so the readiness check after it fails whatever the name. This server serves only the model
    it started with; once unloaded, that one is gone too (restart the server).
    """

    async def load(self, model_name: str) -> None:
        """Load ``model_name``: ``ModelNotFound`` (404) unless the server holds it."""
        if self._model_registry.get_model(model_name) is None:
            raise ModelNotFound(model_name)
        await super().load(model_name)


# What a request that failed for a reason of its own answers, instead of KServe's handlers, which
# log each at ERROR with a traceback. 499 (nginx's "client closed request"): the client left
# while its body was being read; nobody reads that answer, it is for the access log and metrics.
CLIENT_ERRORS: dict[type[BaseException], int] = {
    InvalidInput: 400,
    ModelNotFound: 404,
    NotServed: 404,
    ClientDisconnect: 499,
    NotImplementedError: 501,
    UnsupportedProtocol: 501,
    ModelNotReady: 503,
    ServerNotReady: 503,
    ServerNotLive: 503,
}
# Where a handler leaves the reason for the access line (Starlette's request.state lives in the scope).
ERROR_KEY = "bertops_error"


def client_error_status(exc: BaseException) -> int:
    """The status ``CLIENT_ERRORS`` gives ``exc`` (by its class or a base class)."""
    return next(status for kind, status in CLIENT_ERRORS.items() if isinstance(exc, kind))


async def client_error(request: Request, exc: Exception) -> JSONResponse:
    """The status and reason of a request's own failure, logged as one line without a traceback.

    On an inference path the access line is that line (it carries the reason as ``error``);
    elsewhere (metadata, readiness, the repository API) one warning line says what happened.
    """
    status = client_error_status(exc)
    reason = str(exc) or type(exc).__name__
    setattr(request.state, ERROR_KEY, reason)
    if inference_endpoint(request.url.path) is None:
        log.warning("%s %s %d: %s", request.method, request.url.path, status, reason, extra={"status": status})
    return JSONResponse(status_code=status, content={"error": reason})


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    """422 naming the fields that break the V2 schema, without echoing the body back."""
    assert isinstance(exc, RequestValidationError)
    problems = []
    for error in exc.errors():
        if error.get("type") == "json_invalid":
            problems.append("body is not valid JSON")
            continue
        location = [str(part) for part in error.get("loc", ())[1:]]
        # V2 bodies may be JSON or raw bytes; the "not bytes" alternative says nothing useful.
        if location[:1] == ["bytes"]:
            continue
        if location[:1] == ["InferenceRequest"]:
            location = location[1:]
        problems.append(f"{'.'.join(location) or 'body'}: {error.get('msg', 'invalid')}")
    detail = "; ".join(problems[:5]) + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else "")
    return JSONResponse(status_code=422, content={"error": f"invalid request: {detail}"})


def install(app: Any, max_body_bytes: int, repository_api: bool = False, model_version: str = "") -> None:
    """Add the body limit, access metrics, the repository guard, versioned routes and 4xx handlers to KServe's ``app``."""
    app.add_middleware(ModelVersionRoutes, model_version=model_version)
    if not repository_api:
        app.add_middleware(RepositoryApiGuard)
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=max_body_bytes)
    # Added last, so outermost: it also counts and logs the 413s of the body limit.
    app.add_middleware(AccessMiddleware)
    app.add_exception_handler(RequestValidationError, validation_error)
    for kind in CLIENT_ERRORS:
        app.add_exception_handler(kind, client_error)
