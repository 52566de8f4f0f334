"""Where a local run's wall time went: each task's start and end, read back from the run log.

kfp.local logs ``HH:MM:SS.ffffff - INFO - Executing task 'name'`` when a task starts and
``Task 'name' finished with status SUCCESS`` when it ends (names in ANSI colours). Tasks of a
loop run under one name; a finish closes the oldest open start of its name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_EVENT = re.compile(
    r"^(\d\d):(\d\d):(\d\d(?:\.\d+)?) - \w+ - (?:Executing task '([^']+)'|Task '([^']+)' finished with status)"
)
_DAY = 24 * 3600.0


@dataclass(frozen=True)
class StepTime:
    """One task's run: seconds from the run log's first event to its start and to its end."""

    name: str
    start: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


def step_times(log_text: str) -> list[StepTime]:
    """Every finished task of the run log ``log_text``, in the order they started."""
    open_starts: dict[str, list[float]] = {}
    done: list[StepTime] = []
    first: float | None = None
    previous, offset = 0.0, 0.0
    for line in _ANSI.sub("", log_text).splitlines():
        match = _EVENT.match(line.strip())
        if not match:
            continue
        hours, minutes, seconds, started, finished = match.groups()
        clock = int(hours) * 3600 + int(minutes) * 60 + float(seconds) + offset
        # The log has times of day only: a run that passes midnight goes on counting.
        if clock < previous - 1:
            offset += _DAY
            clock += _DAY
        first = clock if first is None else first
        previous = clock
        at = clock - first
        if started:
            open_starts.setdefault(started, []).append(at)
        elif open_starts.get(finished):
            done.append(StepTime(finished, open_starts[finished].pop(0), at))
    return sorted(done, key=lambda s: s.start)


def phase_seconds(steps: list[StepTime], name: str) -> float:
    """Wall seconds from the first start to the last end of the tasks called ``name`` (0 if none ran)."""
    runs = [s for s in steps if s.name == name]
    return max(s.end for s in runs) - min(s.start for s in runs) if runs else 0.0


def split_line(log_file: Path) -> str:
    """The run's wall time by step, e.g. ``validate 9 s, tokenize 6 s, finetune 2 x 170 s (175 s wall), ...``."""
    steps = step_times(log_file.read_text(encoding="utf-8", errors="replace"))
    parts = []
    for name in dict.fromkeys(s.name for s in steps):
        runs = [s for s in steps if s.name == name]
        if len(runs) == 1:
            parts.append(f"{name} {runs[0].seconds:.0f} s")
        else:
            each = "/".join(f"{s.seconds:.0f}" for s in runs)
            parts.append(f"{name} {len(runs)} x ({each}) s, {phase_seconds(steps, name):.0f} s wall")
    return ", ".join(parts)
