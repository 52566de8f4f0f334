"""The progress line a fine-tuning run logs, which the local runner reads back to draw one line per candidate.

The finetune step writes it (``components.finetune.progress``), the local runner parses it out of
the step's output (``pipelines.run_local``): the format is defined once, here, between them. In a
Kubeflow pod the same line is simply the step's log.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# "base: step 30/60, loss 0.8123, 41.7 samples/s, ETA 1:05"; the "base: " tag is the candidate's id
# (``bertops.step`` prefixes every line of a tagged step with it), absent for an untagged run.
_PATTERN = re.compile(
    r"(?:(?P<tag>[^\s:]+): )?step (?P<step>\d+)/(?P<total>\d+), loss (?P<loss>\S+), "
    r"(?P<rate>[\d.]+) samples/s, ETA (?P<eta>[\d:]+|\?)$"
)


@dataclass(frozen=True)
class TrainingProgress:
    """Where one fine-tuning run stands."""

    step: int
    total: int
    loss: float
    samples_per_second: float
    # Seconds until the last step at the pace so far (None before a step has finished).
    eta_seconds: float | None
    tag: str = ""

    def message(self) -> str:
        """The log message (without the tag, which the step's log prefix adds)."""
        return (
            f"step {self.step}/{self.total}, loss {self.loss:.4f}, {self.samples_per_second:.1f} samples/s, "
            f"ETA {format_eta(self.eta_seconds)}"
        )


def format_eta(seconds: float | None) -> str:
    """``M:SS`` or ``H:MM:SS``; ``?`` when unknown."""
    if seconds is None:
        return "?"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def parse(line: str) -> TrainingProgress | None:
    """The progress a log line reports, or None for any other line."""
    match = _PATTERN.search(line.rstrip())
    if match is None:
        return None
    eta = match["eta"]
    seconds: float | None = None
    if eta != "?":
        for part in eta.split(":"):
            seconds = (seconds or 0) * 60 + int(part)
    return TrainingProgress(
        step=int(match["step"]),
        total=int(match["total"]),
        loss=float(match["loss"]),
        samples_per_second=float(match["rate"]),
        eta_seconds=seconds,
        tag=match["tag"] or "",
    )
