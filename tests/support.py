"""Fakes shared by the test modules."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import urllib3
from kubernetes.client import ApiClient, Configuration


@dataclass
class Request:
    """One request the kubernetes client sent."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


class RecordedTransport:
    """Takes the place of urllib3's PoolManager inside the kubernetes client.

    ``responses`` maps an HTTP method to the (status, JSON body) answers for its requests, in
    order; the last one repeats (polling sees the same object until something changes it).
    """

    def __init__(self, responses: dict[str, list[tuple[int, dict[str, Any]]]]) -> None:
        self.responses = {method: list(answers) for method, answers in responses.items()}
        self.requests: list[Request] = []

    def request(
        self, method: str, url: str, fields: Any = None, headers: Any = None, body: Any = None, **_: Any
    ) -> urllib3.HTTPResponse:
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query)) or dict(fields or [])
        self.requests.append(
            Request(method, parts.path, query, dict(headers or {}), json.loads(body) if body else None)
        )
        answers = self.responses[method]
        status, payload = answers.pop(0) if len(answers) > 1 else answers[0]
        return urllib3.HTTPResponse(
            body=json.dumps(payload).encode(),
            status=status,
            headers={"Content-Type": "application/json"},
            preload_content=True,
        )

    def calls(self) -> list[tuple[str, str]]:
        """``(method, path)`` of every request, in order."""
        return [(r.method, r.path) for r in self.requests]


def client_with(transport: RecordedTransport) -> ApiClient:
    """A real kubernetes client whose HTTP requests go to ``transport``."""
    api = ApiClient(Configuration(host="https://kubernetes.test"))
    api.rest_client.pool_manager = transport
    return api


class KfpApiRecorder:
    """Records what kfp.Client sends to a KFP API server (v2beta1) and answers the fields it reads
    back (kfp_server_api's V2beta1Experiment.experiment_id, V2beta1Run.run_id,
    V2beta1RecurringRun.recurring_run_id). Nothing here imitates the server's checks; the tests
    apply the server's rules to what was recorded."""

    def __init__(self, run_states: list[dict[str, Any]] | None = None) -> None:
        """``run_states``: the answers to reading the run back (``--wait``), in order; the last repeats."""
        requests: list[tuple[str, str, dict[str, Any]]] = []
        states = list(run_states or [{}])

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                requests.append((self.command, self.path, json.loads(self.rfile.read(length) or b"{}")))
                reply: dict[str, Any] = {"experiment_id": "e1"}
                if "/recurringruns" in self.path:
                    reply = {"recurring_run_id": "rr1"}
                elif "/experiments" not in self.path:
                    reply = {"run_id": "r1"}
                if self.command == "GET" and self.path.startswith("/apis/v2beta1/runs/r1"):
                    reply |= states.pop(0) if len(states) > 1 else states[0]
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _answer

            def log_message(self, *args: object) -> None:
                pass

        self.requests = requests
        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def posted(self, path: str) -> list[dict[str, Any]]:
        """The bodies POSTed to ``path``."""
        return [body for method, url, body in self.requests if method == "POST" and url == path]

    def created_run(self) -> dict[str, Any]:
        """The one run created."""
        (run,) = self.posted("/apis/v2beta1/runs")
        return run
