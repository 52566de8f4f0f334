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


@contextmanager
def step(name: str) -> Iterator[logging.Logger]:
    """Set up a pipeline step; a ``BertopsError`` is recorded for the launcher, then re-raised."""
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {name} %(levelname)s %(message)s")
    configure_process()
    log = logging.getLogger(f"bertops.{name}")
    try:
        yield log
    except BertopsError as exc:
        error_file = os.environ.get(ERROR_FILE_ENV)
        if error_file:
            Path(error_file).write_text(f"{name}: {exc}", encoding="utf-8")
        log.error("%s", exc)
        raise
