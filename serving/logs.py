"""Structured logs: one JSON object per line on stderr, for the server and the libraries under it."""

from __future__ import annotations

import json
import logging
import logging.config
from datetime import UTC, datetime

# Attributes every LogRecord has; anything else on a record came from ``extra=`` and is a field
# (except uvicorn's "color_message", a terminal-coloured copy of the message).
_NOT_FIELDS = {
    *vars(logging.LogRecord("", 0, "", 0, "", None, None)),
    "message",
    "asctime",
    "taskName",
    "color_message",
}


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", **extra}``; exceptions under ``"exception"``."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _NOT_FIELDS})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(log_format: str = "json", level: int = logging.INFO) -> None:
    """Send every logger (ours, KServe's, uvicorn's) to stderr in ``log_format`` (json or text).

    KServe's per-request timing lines and uvicorn's access lines are turned off: the server's
    own access line (``serving.access``) carries the same facts as fields.
    """
    formatter: dict[str, object] = (
        {"()": JsonFormatter} if log_format == "json" else {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}
    )
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {"default": formatter},
            "handlers": {
                "stderr": {"class": "logging.StreamHandler", "formatter": "default", "stream": "ext://sys.stderr"}
            },
            "root": {"handlers": ["stderr"], "level": level},
            "loggers": {
                # Attach nothing of their own, so everything reaches the root handler once.
                name: {"handlers": [], "propagate": True, "level": lvl}
                for name, lvl in (
                    ("kserve", level),
                    ("kserve.trace", logging.WARNING),
                    ("uvicorn", level),
                    ("uvicorn.error", level),
                    ("uvicorn.access", logging.WARNING),
                )
            },
        }
    )
