"""Texts out of V1 and V2 request bodies, with the server's limits applied.

Every problem with a request is an ``InvalidInput`` (HTTP 400) whose message names the field
and what was expected, so a client error never surfaces as a 500.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferRequest

from serving.config import ServingConfig

TEXT_INPUT = "text"
OUTPUTS = ("label", "probabilities")


def texts_v1(payload: Any, config: ServingConfig) -> list[str]:
    """The texts of ``{"instances": ["text", {"text": "..."}, ...]}``."""
    if isinstance(payload, bytes):
        # KServe hands over the raw body when the content type is not JSON (curl -d sends
        # application/x-www-form-urlencoded); it is still JSON to us.
        try:
            payload = json.loads(payload)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(payload, dict) or "instances" not in payload:
        raise InvalidInput('V1 body must be a JSON object {"instances": ["text", ...]}')
    instances = payload["instances"]
    if not isinstance(instances, list):
        raise InvalidInput(f'"instances" must be a list, got {type(instances).__name__}')
    texts = []
    for i, item in enumerate(_check_count(instances, config)):
        text = item.get("text") if isinstance(item, dict) else item
        if not isinstance(text, str):
            raise InvalidInput(f'instance {i} must be a string or {{"text": "..."}}, got {_describe(item)}')
        texts.append(text)
    return _check_lengths(texts, config)


def texts_v2(request: InferRequest, config: ServingConfig) -> list[str]:
    """The texts of a V2 request's one BYTES input (shape ``[N]`` or ``[N, 1]``)."""
    if len(request.inputs) != 1:
        names = ", ".join(repr(t.name) for t in request.inputs) or "none"
        raise InvalidInput(f"expected exactly one input tensor ({TEXT_INPUT!r}, BYTES), got {names}")
    tensor = request.inputs[0]
    if tensor.name != TEXT_INPUT:
        # As Triton does: a misspelt input name is the client's mistake, not something to guess at.
        raise InvalidInput(f"unknown input {tensor.name!r}; this model takes one BYTES input {TEXT_INPUT!r}")
    if tensor.datatype != "BYTES":
        raise InvalidInput(f"input {tensor.name!r} must have datatype BYTES, got {tensor.datatype}")
    shape = tensor.shape
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise InvalidInput(f"input {tensor.name!r}: shape must be a list of non-negative integers, got {shape!r}")
    if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
        raise InvalidInput(f"input {tensor.name!r}: shape must be [N] or [N, 1], got {shape}")
    data = tensor.data
    if not isinstance(data, list):
        raise InvalidInput(f"input {tensor.name!r}: data must be a list of strings")
    # JSON clients may nest the data as the shape is ([[a], [b]] for [2, 1]); flatten one level.
    if len(shape) == 2 and all(isinstance(row, list) and len(row) == 1 for row in data):
        data = [row[0] for row in data]
    if len(data) != shape[0]:
        raise InvalidInput(f"input {tensor.name!r}: shape {shape} does not match its {len(data)} data elements")
    texts = []
    for i, item in enumerate(_check_count(data, config)):
        if isinstance(item, bytes):
            try:
                item = item.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidInput(f"input {tensor.name!r}: element {i} is not valid UTF-8") from exc
        if not isinstance(item, str):
            raise InvalidInput(f"input {tensor.name!r}: element {i} must be a string, got {_describe(item)}")
        texts.append(item)
    return _check_lengths(texts, config)


def requested_outputs(request: InferRequest) -> list[str]:
    """The output names the request asks for (all of them when it names none)."""
    names = [o.name for o in request.request_outputs or []] or list(OUTPUTS)
    unknown = [n for n in names if n not in OUTPUTS]
    if unknown:
        raise InvalidInput(f"unknown output {unknown[0]!r}; this model has {', '.join(OUTPUTS)}")
    return names


def _check_count(items: Sequence[Any], config: ServingConfig) -> Sequence[Any]:
    if not items:
        raise InvalidInput("no texts to classify: the request holds zero instances")
    if len(items) > config.max_instances:
        raise InvalidInput(f"{len(items)} texts in one request; the limit is {config.max_instances} (--max-instances)")
    return items


def _check_lengths(texts: list[str], config: ServingConfig) -> list[str]:
    for i, text in enumerate(texts):
        if len(text) > config.max_text_chars:
            raise InvalidInput(
                f"text {i} has {len(text)} characters; the limit is {config.max_text_chars} (--max-text-chars)"
            )
        try:
            # JSON's \uXXXX escapes can spell half of a surrogate pair, which is no character at
            # all: the tokenizer would fail on it inside a batch shared with other requests.
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidInput(
                f"text {i} is not valid Unicode: a lone surrogate (U+{ord(text[exc.start]):04X}) at character {exc.start}"
            ) from exc
    return texts


def _describe(value: Any) -> str:
    return "null" if value is None else type(value).__name__
