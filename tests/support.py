"""Fakes shared by the test modules."""

from __future__ import annotations

import json
from dataclasses import dataclass
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
