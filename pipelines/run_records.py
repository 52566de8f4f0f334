"""Local runs by name: what each run was started with, whether it finished, and where it checkpoints.

A local run's name is its ``checkpoint_name`` (``--checkpoint-name``; by default its start time,
``run-YYYYmmdd-HHMMSS``). It checkpoints its fine-tuning under
``<state_dir>/checkpoints/<run name>/<candidate>`` (unless ``--checkpoint-dir`` says otherwise),
so a run started again under the same name (or with ``bertops run --resume``) finds them and
continues where training stopped. Each run's record, ``<state_dir>/runs/<run name>.json``, holds
its settings and its state: ``running`` (with the pid of the process running it), ``failed`` or
``finished``. A finished run's checkpoints are removed; an unfinished run's stay until it is
resumed to the end."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from bertops.config import PipelineConfig, parameter_names
from bertops.endpoints import pid_alive
from bertops.errors import BertopsError

RUNNING, FAILED, FINISHED = "running", "failed", "finished"


def checkpoints_root(state_dir: str | Path) -> Path:
    """Where local runs checkpoint when ``checkpoint_dir`` is not set: one folder per run name below it."""
    return Path(state_dir) / "checkpoints"


def record_path(state_dir: str | Path, run_name: str) -> Path:
    return Path(state_dir) / "runs" / f"{run_name}.json"


def new_run_name() -> str:
    """A run name for a run that was not given one: its start time (a valid ``--checkpoint-name``)."""
    return time.strftime("run-%Y%m%d-%H%M%S")


def settings_of(config: PipelineConfig) -> dict[str, Any]:
    """Every run parameter of ``config`` as its flag takes it (JSON settings as text)."""
    return {f.name: getattr(group, f.name) for group in config.groups() for f in dataclasses.fields(group)}


def write(config: PipelineConfig, state: str) -> None:
    """Record the run ``config.train.checkpoint_name`` in ``state`` (atomically: a reader never sees half a record)."""
    path = record_path(config.registry.state_dir, config.train.checkpoint_name)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "run_name": config.train.checkpoint_name,
        "state": state,
        "pid": os.getpid(),
        "settings": settings_of(config),
    }
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(record, indent=2), encoding="utf-8")
    tmp.replace(path)


def finish(recorded: PipelineConfig, ran: PipelineConfig) -> None:
    """Mark the run finished; its checkpoints go when they were in the default place (nothing resumes them)."""
    if not recorded.train.checkpoint_dir and ran.train.checkpoint_dir:
        shutil.rmtree(Path(ran.train.checkpoint_dir) / ran.train.checkpoint_name, ignore_errors=True)
    write(recorded, FINISHED)


def _unfinished(record: dict[str, Any]) -> bool:
    """Failed, or running in a process that is gone (killed, or the machine went down)."""
    return record["state"] == FAILED or (record["state"] == RUNNING and not pid_alive(int(record["pid"])))


def unfinished_run(state_dir: str | Path, run_name: str = "") -> dict[str, Any] | None:
    """The record of the unfinished run ``run_name`` (empty: the newest unfinished run), or None."""
    folder = Path(state_dir) / "runs"
    paths = [record_path(state_dir, run_name)] if run_name else sorted(folder.glob("*.json"), key=os.path.getmtime)
    records = [json.loads(p.read_text(encoding="utf-8")) for p in paths if p.is_file()]
    unfinished = [r for r in records if _unfinished(r)]
    return unfinished[-1] if unfinished else None


def resumed_config(state_dir: str | Path, run_name: str, required: bool) -> PipelineConfig | None:
    """The settings the unfinished run ``run_name`` (empty: the newest one) was started with, or None.

    ``BertopsError`` when ``required`` (``--resume``) and there is no such run.
    """
    record = unfinished_run(state_dir, run_name)
    if record is None:
        if required:
            which = f"run {run_name!r}" if run_name else "run (interrupted or failed)"
            raise BertopsError(f"--resume: no unfinished {which} in {Path(state_dir) / 'runs'}")
        return None
    known = set(parameter_names())
    return PipelineConfig().replace(**{k: v for k, v in record["settings"].items() if k in known})
