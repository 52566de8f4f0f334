"""KServe model over ``TextClassifierPredictor``: V1 (``instances``) and V2 (Open Inference Protocol).

Thin on purpose: request parsing lives in ``serving.payload``, batching in
``serving.batcher``, the model in ``serving.predictor``. Nothing heavy runs on the event loop:
tokenizing and the forward passes run in a one-thread executor, so health checks and request
parsing go on while the model works.
"""

from __future__ import annotations

import asyncio
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from kserve import Model
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from bertops.inference_log import InferenceLogWriter
from serving import metrics
from serving.batcher import AdaptiveBatcher
from serving.config import ServingConfig
from serving.payload import TEXT_INPUT, requested_outputs, texts_v1, texts_v2
from serving.predictor import TextClassifierPredictor


class TextClassifierModel(Model):
    """Accepts texts, answers label names and probabilities; texts of concurrent requests share batches."""

    def __init__(
        self,
        name: str,
        predictor: TextClassifierPredictor,
        config: ServingConfig,
        inference_log: InferenceLogWriter | None = None,
    ):
        super().__init__(name)
        self.predictor = predictor
        self.config = config
        self.inference_log = inference_log
        # One thread: the backend already uses every core per forward pass; the point is to keep
        # the event loop free. Tokenizing happens there too, once per batch (a fast tokenizer
        # must not be used from two threads at once anyway).
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="predict")
        # Texts are grouped by their length in characters, a close proxy of their token count.
        self.batcher: AdaptiveBatcher[str, np.ndarray] = AdaptiveBatcher(
            self._forward,
            max_batch_size=config.max_batch_size,
            max_wait_s=config.max_wait_ms / 1000,
            size=len,
            on_batch=metrics.BATCH_SIZE.observe,
            # Past the bound a request answers 503 at once (serving.limits) instead of waiting.
            max_queued=config.max_queued_texts,
            on_drop=metrics.DROPPED_TEXTS.inc,
        )
        metrics.QUEUED_TEXTS.set_function(lambda: self.batcher.queued)

    @property
    def platform(self) -> str:
        """The backend serving the model, V2 metadata's ``platform``: ``onnxruntime_onnx`` or ``pytorch_safetensors``."""
        return self.predictor.backend.platform

    @property
    def versions(self) -> list[str]:
        """V2 metadata's ``versions``: the registry version served (``--model-version``), none when unknown."""
        return [self.config.model_version] if self.config.model_version else []

    def load(self) -> bool:
        """Warm the backend up, then report ready: the first request finds it initialized."""
        self.predictor.warm_up()
        self.ready = True
        return self.ready

    def get_input_types(self) -> list[dict[str, Any]]:
        return [{"name": TEXT_INPUT, "datatype": "BYTES", "shape": [-1]}]

    def get_output_types(self) -> list[dict[str, Any]]:
        return [
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(self.predictor.labels)]},
        ]

    async def predict(
        self,
        payload: dict[str, Any] | InferRequest,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> dict[str, Any] | InferResponse:
        if isinstance(payload, InferRequest):
            texts, outputs = texts_v2(payload, self.config), requested_outputs(payload)
        else:
            texts = texts_v1(payload, self.config)
        probs = np.stack(await self.batcher.submit(texts))
        labels = self.predictor.label_names(probs)
        if self.inference_log is not None:
            request_id = (headers or {}).get("x-request-id") or (
                payload.id if isinstance(payload, InferRequest) else None
            )
            # Only sampling and building the records happen here; the disk is the writer thread's.
            self.inference_log.log_answers(
                self.name,
                self.config.model_version,
                request_id or uuid.uuid4().hex,
                texts,
                self.predictor.labels,
                probs,
            )
        if isinstance(payload, InferRequest):
            tensors = {
                "label": InferOutput("label", [len(labels)], "BYTES", np.array(labels, dtype=np.object_)),
                "probabilities": InferOutput("probabilities", list(probs.shape), "FP32", probs),
            }
            return InferResponse(
                response_id=payload.id or "",
                model_name=self.name,
                model_version=self.config.model_version or None,
                infer_outputs=[tensors[name] for name in outputs],
                use_binary_outputs=payload.use_binary_outputs,
                requested_outputs=payload.request_outputs,
            )
        names = self.predictor.labels
        return {
            "predictions": [
                {"label": label, "probabilities": dict(zip(names, row.tolist(), strict=True))}
                for label, row in zip(labels, probs, strict=True)
            ]
        }

    async def _forward(self, texts: list[str]) -> list[np.ndarray]:
        loop = asyncio.get_running_loop()
        with metrics.FORWARD_SECONDS.time():
            probs = await loop.run_in_executor(self._pool, self.predictor.probabilities, texts)
        return list(probs)

    def stop(self) -> None:
        """Called by KServe after the HTTP server has drained in-flight requests."""
        self.ready = False
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self.inference_log is not None:
            self.inference_log.close()
