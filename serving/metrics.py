"""Prometheus metrics of the server, in the default registry that KServe's ``/metrics`` exports.

KServe adds its own per-model ``request_*_seconds`` histograms beside these.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

REQUESTS = Counter("bertops_requests", "Inference requests answered, by endpoint and HTTP status", ["endpoint", "code"])
ERRORS = Counter(
    "bertops_request_errors", "Inference requests answered with an error, by reason", ["endpoint", "reason"]
)
LATENCY = Histogram(
    "bertops_request_seconds", "Time from request start to response end", ["endpoint"], buckets=LATENCY_BUCKETS
)
IN_FLIGHT = Gauge("bertops_requests_in_flight", "Inference requests being handled")
BATCH_SIZE = Histogram("bertops_batch_size", "Texts per dispatched batch", buckets=BATCH_BUCKETS)
FORWARD_SECONDS = Histogram("bertops_batch_seconds", "Model time per dispatched batch", buckets=LATENCY_BUCKETS)
QUEUED_TEXTS = Gauge("bertops_queued_texts", "Texts accepted and not yet answered, waiting or running")
QUEUE_FULL = Counter("bertops_queue_full", "Inference requests refused with 503 because the queue bound was reached")
DROPPED_TEXTS = Counter(
    "bertops_dropped_texts", "Queued texts removed unrun because their request ended (its client left, mostly)"
)
CONNECTIONS_CUT = Counter(
    "bertops_connections_cut",
    "Connections the server closed: header_too_large (431), header_timeout, body_timeout (408)",
    ["reason"],
)
INFERENCE_LOG_WRITTEN = Counter("bertops_inference_log_records", "Inference log records written to disk")
INFERENCE_LOG_DROPPED = Counter(
    "bertops_inference_log_dropped", "Inference log records dropped because the writer's queue was full"
)
INFERENCE_LOG_ERRORS = Counter("bertops_inference_log_errors", "Inference log records lost to a write error")

# HTTP status -> reason label of ERRORS.
ERROR_REASONS = {
    400: "invalid_input",
    404: "not_found",
    413: "body_too_large",
    422: "unprocessable",
    499: "client_closed",
    # Queue full, shutting down or a model not ready: the server's state, not a fault.
    503: "unavailable",
}


def error_reason(status: int) -> str:
    """The ``reason`` label for an error status."""
    return ERROR_REASONS.get(status, "server_error" if status >= 500 else "client_error")
