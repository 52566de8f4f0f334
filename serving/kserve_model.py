"""KServe model over ``TextClassifierPredictor``: V1 (``instances``) and V2 (Open Inference Protocol)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kserve import Model
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from serving.predictor import TextClassifierPredictor


class TextClassifierModel(Model):
    """Accepts text, answers labels and probabilities; model work runs off the event loop."""

    def __init__(self, name: str, predictor: TextClassifierPredictor):
        super().__init__(name)
        self.predictor = predictor
        # One worker: torch already uses every core per forward; the point is to keep the event
        # loop (health checks, other requests' parsing) free while the model runs.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="predict")
        self.ready = True

    async def predict(
        self,
        payload: dict[str, Any] | InferRequest,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> dict[str, Any] | InferResponse:
        texts = _texts_v2(payload) if isinstance(payload, InferRequest) else _texts_v1(payload)
        loop = asyncio.get_running_loop()
        try:
            labels, probs = await loop.run_in_executor(self._executor, self.predictor.predict, texts)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from exc
        if isinstance(payload, InferRequest):
            return InferResponse(
                response_id=payload.id or "",
                model_name=self.name,
                infer_outputs=[
                    InferOutput("label", [len(labels)], "BYTES", labels),
                    InferOutput("probabilities", list(probs.shape), "FP32", probs.ravel().tolist()),
                ],
            )
        names = self.predictor.labels
        return {
            "predictions": [
                {"label": label, "probabilities": dict(zip(names, map(float, row), strict=True))}
                for label, row in zip(labels, probs, strict=True)
            ]
        }


def _texts_v1(payload: dict[str, Any] | bytes) -> list[str]:
    if not isinstance(payload, dict):
        raise InvalidInput("request body must be a JSON object sent with Content-Type: application/json")
    instances = payload.get("instances")
    if not isinstance(instances, list) or not instances:
        raise InvalidInput('V1 body must be {"instances": ["text", ...]} with at least one instance')
    texts = []
    for i, item in enumerate(instances):
        text = item.get("text") if isinstance(item, dict) else item
        if not isinstance(text, str):
            raise InvalidInput(f'instance {i} must be a string or {{"text": "..."}}')
        texts.append(text)
    return texts


def _texts_v2(request: InferRequest) -> list[str]:
    if len(request.inputs) != 1:
        raise InvalidInput(f"expected one input tensor of texts, got {len(request.inputs)}")
    tensor = request.inputs[0]
    if tensor.datatype != "BYTES":
        raise InvalidInput(f"input {tensor.name!r} must have datatype BYTES, got {tensor.datatype}")
    data = tensor.data
    if not isinstance(data, list) or not data:
        raise InvalidInput(f"input {tensor.name!r} has no data")
    count = 1
    for dim in tensor.shape:
        count *= dim
    if count != len(data):
        raise InvalidInput(f"input {tensor.name!r}: shape {tensor.shape} does not match {len(data)} elements")
    return [d.decode("utf-8") if isinstance(d, bytes) else d for d in data]
