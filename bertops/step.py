"""What every KFP component body calls first: logging, offline hub settings, user-facing errors."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bertops.env import configure_process
from bertops.errors import BertopsError

# The file a local run reads back to show the failing step's message on one line.
ERROR_FILE_ENV = "BERTOPS_ERROR_FILE"


class _Tagged(logging.Filter):
    """Prefixes every message with the task's tag: the lines of parallel tasks of one step stay apart."""

    def __init__(self, tag: str) -> None:
        super().__init__()
        self.prefix = f"{tag}: "

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(self.prefix):
            record.msg = self.prefix + str(record.msg)
        return True


@contextmanager
def step(name: str, tag: str = "") -> Iterator[logging.Logger]:
    """Set up a pipeline step; a ``BertopsError`` is recorded for the launcher, then re-raised.

    ``tag`` (a candidate's id, say) prefixes every log line of the step, its error included, so
    the lines of parallel tasks of one step tell which task wrote them.
    """
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {name} %(levelname)s %(message)s")
    configure_process()
    log = logging.getLogger(f"bertops.{name}")
    # Only the handlers there now: the step's (or KFP's executor's) output, not ones added later.
    handlers = list(logging.getLogger().handlers) if tag else []
    tagged = _Tagged(tag)
    for handler in handlers:
        handler.addFilter(tagged)
    try:
        yield log
    except BertopsError as exc:
        error_file = os.environ.get(ERROR_FILE_ENV)
        if error_file:
            label = f"{name} {tag}" if tag else name
            Path(error_file).write_text(f"{label}: {exc}", encoding="utf-8")
        log.error("%s", exc)
        raise
    finally:
        for handler in handlers:
            handler.removeFilter(tagged)
