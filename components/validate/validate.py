"""Validate the dataset splits with a Great Expectations suite; only validated data goes on.

Great Expectations takes 8-10 s to import, so it is imported inside the functions that use it
and nowhere else in the project.
"""

from __future__ import annotations

import html
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bertops.dataio import SPLITS, find_split_file, read_table, write_jsonl
from bertops.errors import BertopsError

if TYPE_CHECKING:
    import great_expectations as gx
    import pandas as pd

log = logging.getLogger(__name__)

MAX_TEXT_CHARS = 100_000
MIN_ROWS = {"train": 10, "validation": 2, "test": 2}


class ValidationFailed(BertopsError):
    """The data broke at least one expectation; the message names which, where, and examples."""


@dataclass
class CheckResult:
    """One expectation on one split."""

    split: str
    expectation: str
    column: str | None
    success: bool
    unexpected_count: int = 0
    examples: list[str] = field(default_factory=list)
    # 1-based data rows (the line number in a JSON Lines file).
    rows: list[int] = field(default_factory=list)


@dataclass
class ValidationReport:
    """What the validate step found; written as JSON beside the HTML page."""

    success: bool
    data_version: str
    rows: dict[str, int]
    labels: list[str]
    checks: list[CheckResult]

    def failures(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.success]

    def summary(self) -> str:
        failed = self.failures()
        passed = len(self.checks) - len(failed)
        return f"{passed}/{len(self.checks)} expectations passed" + ("" if not failed else f", {len(failed)} failed")


def build_suite(split: str, text_column: str, label_column: str, labels: list[str]) -> gx.ExpectationSuite:
    """The expectation suite for one split, built in code so it is versioned with the project."""
    import great_expectations as gx

    exp = gx.expectations
    suite = gx.ExpectationSuite(name=f"bertops-{split}")
    for column in (text_column, label_column):
        suite.add_expectation(exp.ExpectColumnToExist(column=column))
        suite.add_expectation(exp.ExpectColumnValuesToNotBeNull(column=column))
    suite.add_expectation(exp.ExpectTableRowCountToBeBetween(min_value=MIN_ROWS[split]))
    suite.add_expectation(
        exp.ExpectColumnValueLengthsToBeBetween(column=text_column, min_value=1, max_value=MAX_TEXT_CHARS)
    )
    suite.add_expectation(exp.ExpectColumnValuesToBeUnique(column=text_column))
    suite.add_expectation(exp.ExpectColumnValuesToBeInSet(column=label_column, value_set=labels))
    return suite


def _run_suite(context: Any, split: str, frame: pd.DataFrame, suite: gx.ExpectationSuite) -> list[CheckResult]:
    asset = context.data_sources.add_pandas(f"pandas-{split}").add_dataframe_asset(name=split)
    batch = asset.add_batch_definition_whole_dataframe("all").get_batch(batch_parameters={"dataframe": frame})
    result = batch.validate(suite, result_format={"result_format": "SUMMARY", "partial_unexpected_count": 3})
    checks = []
    for item in result.results:
        config = item.expectation_config
        details = item.result or {}
        examples = [repr(v)[:80] for v in details.get("partial_unexpected_list", [])[:3]]
        if not item.success and item.exception_info and item.exception_info.get("raised_exception"):
            examples.append(str(item.exception_info.get("exception_message", ""))[:160])
        checks.append(
            CheckResult(
                split=split,
                expectation=config.type,
                column=config.kwargs.get("column"),
                success=bool(item.success),
                unexpected_count=int(details.get("unexpected_count") or 0),
                examples=examples,
                rows=[int(i) + 1 for i in details.get("partial_unexpected_index_list", [])[:3]],
            )
        )
    return checks


def validate_dataset(
    data_dir: Path,
    out_dir: Path,
    data_version: str,
    text_column: str = "text",
    label_column: str = "label",
) -> ValidationReport:
    """Validate ``data_dir``'s three splits; on success write them to ``out_dir`` as ``text``/``label`` JSON Lines.

    Always writes ``report.json`` and ``report.html`` to ``out_dir``. Raises
    ``ValidationFailed`` naming the first broken expectations, their column and example rows;
    in that case no split is written, so nothing downstream can consume bad data.
    """
    import great_expectations as gx

    frames = {split: read_table(find_split_file(data_dir, split)) for split in SPLITS}
    train = frames["train"]
    labels = sorted(str(v) for v in train[label_column].dropna().unique()) if label_column in train else []
    from great_expectations.data_context.types.base import ProgressBarsConfig

    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    checks: list[CheckResult] = []
    for split, frame in frames.items():
        checks.extend(_run_suite(context, split, frame, build_suite(split, text_column, label_column, labels)))
    report = ValidationReport(
        success=all(c.success for c in checks),
        data_version=data_version,
        rows={split: len(frame) for split, frame in frames.items()},
        labels=labels,
        checks=checks,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(asdict(report), indent=2), encoding="utf-8")
    (out_dir / "report.html").write_text(render_html(report), encoding="utf-8")
    if not report.success:
        problems = []
        for check in report.failures()[:3]:
            where = f"column {check.column!r}" if check.column else "table"
            where_rows = f" at rows {', '.join(map(str, check.rows))}" if check.rows else ""
            examples = f"; e.g. {', '.join(check.examples)}" if check.examples else ""
            problems.append(
                f"{check.split} split, {where}: {check.expectation} failed"
                f" ({check.unexpected_count} bad row{'' if check.unexpected_count == 1 else 's'}{where_rows}{examples})"
            )
        raise ValidationFailed(f"data validation failed in {data_dir}: " + " | ".join(problems))
    for split, frame in frames.items():
        records: list[dict[str, object]] = [
            {"text": str(t), "label": str(y)} for t, y in zip(frame[text_column], frame[label_column], strict=True)
        ]
        write_jsonl(records, out_dir / f"{split}.jsonl")
    log.info("validation passed: %s", report.summary())
    return report


def render_html(report: ValidationReport) -> str:
    """A self-contained HTML page (inline CSS, no CDN) that the Kubeflow UI shows as is."""
    rows = "\n".join(
        f"<tr class={'ok' if c.success else 'bad'}><td>{html.escape(c.split)}</td>"
        f"<td>{html.escape(c.expectation)}</td><td>{html.escape(c.column or '(table)')}</td>"
        f"<td>{'pass' if c.success else 'FAIL'}</td><td>{c.unexpected_count}</td>"
        f"<td>{html.escape('; '.join(c.examples))}</td></tr>"
        for c in report.checks
    )
    verdict = "PASSED" if report.success else "FAILED"
    counts = ", ".join(f"{k}: {v}" for k, v in report.rows.items())
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>bertops data validation: {verdict}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:1.5rem;color:#222}}
table{{border-collapse:collapse;width:100%}}th,td{{border:1px solid #ccc;padding:.3rem .5rem;text-align:left;font-size:.9rem}}
th{{background:#f3f3f3}}tr.bad td{{background:#fde8e8}}tr.ok td:nth-child(4){{color:#17702f}}
.verdict{{font-weight:bold;color:{"#17702f" if report.success else "#b00020"}}}
</style></head><body>
<h1>Data validation: <span class="verdict">{verdict}</span></h1>
<p>Data version <code>{html.escape(report.data_version)}</code>; rows {html.escape(counts)};
labels {html.escape(", ".join(report.labels))}. {html.escape(report.summary())}.</p>
<table><tr><th>split</th><th>expectation</th><th>column</th><th>result</th><th>bad rows</th><th>examples</th></tr>
{rows}
</table></body></html>
"""
