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

# HTTP status -> reason label of ERRORS.
ERROR_REASONS = {
    400: "invalid_input",
    404: "not_found",
    413: "body_too_large",
    422: "unprocessable",
    499: "client_closed",
}


def error_reason(status: int) -> str:
    """The ``reason`` label for an error status."""
    return ERROR_REASONS.get(status, "server_error" if status >= 500 else "client_error")
