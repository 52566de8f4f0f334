"""Candidate fine-tuning configurations of one run, and the choice of the run's winner.

A candidate is a partial training configuration with an ``id``; fields it leaves out take the
run's defaults. The winner is the best candidate on a configurable metric of the *validation*
split (the test split is kept for the promotion gate), with a deterministic tie-break.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from bertops.errors import BertopsError
from bertops.evaluation import ModelEvaluation, metric_direction

# The settings a candidate may change; everything else is shared by the run.
CANDIDATE_FIELDS: dict[str, type] = {
    "base_model": str,
    "learning_rate": float,
    "batch_size": int,
    "epochs": int,
    "max_steps": int,
}
TIE_BREAK_METRIC = "validation.macro_f1"


# kfp.local runs at most two iterations of a loop at once (its orchestrator's ``conservative_max``).
LOCAL_RUNNER_MAX_PARALLEL = 2


def concurrent_candidates(count: int, parallelism: int) -> int:
    """How many of ``count`` candidates train at once on one machine with the loop's ``parallelism`` (0: no limit)."""
    return max(1, min(count, parallelism or count, LOCAL_RUNNER_MAX_PARALLEL))


def plan_candidates(candidates: list[Any], defaults: dict[str, Any], parallelism: int = 0) -> list[dict[str, Any]]:
    """Complete every candidate with the run's defaults; ``BertopsError`` names a bad entry.

    Each also gets ``cpu_sharing``: how many candidates train side by side when the run's steps
    share one machine, so that each takes its share of the CPUs (in pods it is not used).
    """
    if not isinstance(candidates, list) or not candidates:
        raise BertopsError('candidates must be a non-empty JSON list of objects, e.g. [{"id": "base"}]')
    planned: list[dict[str, Any]] = []
    for index, candidate in enumerate(candidates):
        if not isinstance(candidate, dict):
            raise BertopsError(f"candidate {index} must be a JSON object, got {json.dumps(candidate)}")
        unknown = set(candidate) - set(CANDIDATE_FIELDS) - {"id"}
        if unknown:
            allowed = ", ".join(["id", *CANDIDATE_FIELDS])
            raise BertopsError(f"candidate {index}: unknown field(s) {', '.join(sorted(unknown))} (allowed: {allowed})")
        full: dict[str, Any] = {"id": str(candidate.get("id", f"candidate-{index}"))}
        for field, kind in CANDIDATE_FIELDS.items():
            value = candidate.get(field, defaults[field])
            try:
                full[field] = kind(value)
            except (TypeError, ValueError) as exc:
                raise BertopsError(f"candidate {full['id']!r}: {field} must be {kind.__name__}, got {value!r}") from exc
        planned.append(full)
    ids = [c["id"] for c in planned]
    if len(set(ids)) != len(ids):
        raise BertopsError(f"candidate ids must be unique, got {ids}")
    sharing = concurrent_candidates(len(planned), parallelism)
    return [{**c, "cpu_sharing": sharing} for c in planned]


@dataclass
class Selection:
    """The winner of a run and the record of why."""

    winner: int
    metric: str
    reason: str
    table: str


def select_winner(candidates: list[dict[str, Any]], evaluations: list[ModelEvaluation], metric: str) -> Selection:
    """Pick the best candidate by ``metric``; ties go to the better ``validation.macro_f1``, then the smaller id."""
    if len(candidates) != len(evaluations) or not candidates:
        raise BertopsError(f"{len(candidates)} candidates but {len(evaluations)} evaluations")
    sign = metric_direction(metric)
    scores = [e.metric(metric) for e in evaluations]
    order = sorted(
        range(len(candidates)),
        key=lambda i: (-sign * scores[i], -evaluations[i].metric(TIE_BREAK_METRIC), candidates[i]["id"]),
    )
    best = order[0]
    rows = [
        f"| {'**' if i == best else ''}{candidates[i]['id']}{'**' if i == best else ''} | {scores[i]:.4f} | "
        f"{evaluations[i].metric(TIE_BREAK_METRIC):.4f} | {evaluations[i].test.accuracy:.4f} | "
        # The settings a candidate may choose, not what the plan adds for the run (CPU share, MLflow run).
        f"{', '.join(f'{k}={v}' for k, v in candidates[i].items() if k in CANDIDATE_FIELDS)} |"
        for i in order
    ]
    table = "\n".join(
        [f"| candidate | {metric} | {TIE_BREAK_METRIC} | test.accuracy | settings |", "|---|---|---|---|---|", *rows]
    )
    if len(order) == 1:
        reason = f"only candidate {candidates[best]['id']!r} ({metric} {scores[best]:.4f})"
    else:
        runner = order[1]
        tied = scores[best] == scores[runner]
        reason = (
            f"{candidates[best]['id']!r} wins on {metric} {scores[best]:.4f} against {candidates[runner]['id']!r} "
            f"{scores[runner]:.4f}" + (f" (tie broken by {TIE_BREAK_METRIC}, then id)" if tied else "")
        )
    return Selection(best, metric, reason, table)
