"""Serving: the KServe model server of bertops (``python -m serving.server``).

``predictor`` (texts in, label names and probabilities out; ONNX Runtime or PyTorch through
``backends``), ``batcher`` (adaptive batching across requests), ``payload`` (V1/V2 request
parsing with limits), ``kserve_model`` (the thin KServe wrapper), ``http`` (body limit,
metrics, access log, 4xx for bad input), ``config`` (every setting and its flag),
``onnx_export`` (the export the register step runs).
"""
