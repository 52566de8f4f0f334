"""The validation report as one self-contained HTML page: verdict first, then what the data is, then every check.

The Kubeflow UI shows an HTML artifact as is, in a sandboxed frame without network access, so the
page carries its own CSS and draws its charts as inline SVG. Every piece of text that comes from
the data or the settings is escaped.
"""

from __future__ import annotations

import html
import itertools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from components.validate.validate import CheckResult, ValidationReport

# Bar colours of the drift charts: the accepted reference, and the data checked now.
REFERENCE_COLOUR, CURRENT_COLOUR = "#9aa5b1", "#2f6fb0"

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222;max-width:80rem}
table{border-collapse:collapse;margin:.5rem 0 1rem}th,td{border:1px solid #ccc;padding:.3rem .5rem;
text-align:left;font-size:.9rem;vertical-align:top}th{background:#f3f3f3}td.num{text-align:right}
tr.bad td,td.bad{background:#fde8e8}small{color:#666}.pass{color:#17702f}.fail{color:#b00020;font-weight:bold}
.verdict{font-size:1.1rem}.charts{display:flex;flex-wrap:wrap;gap:2rem}figure{margin:0}
figcaption{font-size:.9rem;margin-bottom:.3rem}
"""


def esc(value: object) -> str:
    """``value`` as text safe inside HTML (and SVG) elements and quoted attributes."""
    return html.escape(str(value), quote=True)


def render_html(report: ValidationReport) -> str:
    """The page: verdict and failures, split sizes and class shares, drift figures and chart, all checks."""
    verdict = "PASSED" if report.success else "FAILED"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>bertops data validation: {verdict}</title>
<style>{STYLE}</style></head><body>
<h1>Data validation: <span class="{"pass" if report.success else "fail"}">{verdict}</span></h1>
{_verdict(report)}
<h2>Splits and class shares</h2>
{_class_table(report)}
<h2>Drift from the accepted data</h2>
{_drift_section(report)}
<h2>Checks ({esc(report.summary())}; failures first)</h2>
{_checks_table(report)}
</body></html>
"""


def _verdict(report: ValidationReport) -> str:
    """What happened to the data, in a sentence, and each failure in one line."""
    sizes = ", ".join(f"{esc(split)} {rows}" for split, rows in report.rows.items())
    head = (
        f"<p class=verdict>Data <code>{esc(report.data_version)}</code> ({sizes} rows; labels "
        f"{esc(', '.join(report.labels) or 'none')}): "
    )
    if report.success:
        return head + (f"all {len(report.checks)} checks passed; the pipeline goes on with this data.</p>")
    failures = "".join(
        f"<li><b>{esc(c.split)}</b> split, {esc(c.column or 'table')}: {esc(c.description)}"
        + (f" &mdash; observed {esc(c.observed)}" if c.observed else "")
        + (f" (first bad rows {esc(', '.join(map(str, c.rows)))})" if c.rows else "")
        + "</li>"
        for c in report.failures()
    )
    return head + (
        f"{len(report.failures())} of {len(report.checks)} checks failed; the pipeline stopped here and "
        f"no later step saw this data.</p><ul>{failures}</ul>"
    )


def _class_table(report: ValidationReport) -> str:
    """One row per label, one column per split: rows and share, a share outside the bounds marked."""
    low, high = report.share_bounds
    splits = list(report.label_counts)
    if not splits:
        return "<p>No label column: class shares not counted.</p>"
    labels = sorted({label for counts in report.label_counts.values() for label in counts})
    header = "".join(f"<th>{esc(split)}<br><small>{report.rows.get(split, 0)} rows</small></th>" for split in splits)
    body = []
    for label in labels:
        cells = []
        for split in splits:
            count = report.label_counts[split].get(label, 0)
            share = count / max(sum(report.label_counts[split].values()), 1)
            bad = " bad" if not low <= share <= high else ""
            cells.append(f'<td class="num{bad}">{count} <small>({share:.1%})</small></td>')
        body.append(f"<tr><td>{esc(label)}</td>{''.join(cells)}</tr>")
    return (
        f"<p>Each label must hold {low:.0%} to {high:.0%} of every split's rows.</p>"
        f"<table><tr><th>label</th>{header}</tr>{''.join(body)}</table>"
    )


def _drift_section(report: ValidationReport) -> str:
    """The two KL figures with their thresholds, and the reference-versus-train chart of each distribution."""
    drift = report.drift
    if drift is None:
        return (
            "<p>No reference profile yet: drift not measured. This data becomes the reference "
            "if it passes (the pipeline's validate step, or <code>bertops validate --update-reference</code>).</p>"
        )
    kl = {c.column: c for c in report.checks if c.split == "train" and "kl_divergence" in c.expectation}
    rows = []
    for what, column, threshold in (
        ("label mix", drift.label_column, drift.max_label_drift),
        ("text lengths", drift.text_column, drift.max_length_drift),
    ):
        check = kl.get(column)
        value = "not measured" if check is None else "infinite" if check.value is None else f"{check.value:.4f}"
        ok = check is not None and check.success
        rows.append(
            f"<tr{'' if ok else ' class=bad'}><td>{what}</td><td class=num>{value}</td>"
            f"<td class=num>{threshold:g}</td><td>{'pass' if ok else 'FAIL'}</td></tr>"
        )
    bins = _length_bins(drift.length_edges)
    labels = list(drift.reference_labels | drift.train_labels)
    charts = _bars_svg("Label mix (share of train rows)", labels, drift.reference_labels, drift.train_labels)
    charts += _bars_svg(
        "Text length in characters (share of train rows)",
        bins,
        dict(zip(bins, drift.reference_lengths, strict=True)),
        dict(zip(bins, drift.train_lengths, strict=True)),
    )
    return (
        f"<p>The train split against the reference profile of <code>{esc(report.reference_version)}</code> "
        "(the last data that passed), as KL divergence (0: the same distribution).</p>"
        f"<table><tr><th>distribution</th><th>KL divergence</th><th>threshold (max)</th><th>result</th></tr>"
        f"{''.join(rows)}</table><div class=charts>{charts}</div>"
    )


def _length_bins(edges: list[float]) -> list[str]:
    """Names of the histogram bins between ``edges``; the last edge is an open upper bound."""
    inner = [f"{lo:.0f}-{hi:.0f}" for lo, hi in itertools.pairwise(edges[:-1])]
    return [*inner, f">= {edges[-2]:.0f}"]


def _bars_svg(title: str, categories: list[str], reference: dict[str, float], current: dict[str, float]) -> str:
    """A horizontal grouped bar chart (reference grey above, train blue below) as inline SVG."""
    label_width, bar_width, bar, gap = 110, 220, 9, 8
    height = len(categories) * (2 * bar + gap) + 30
    shapes = []
    for i, category in enumerate(categories):
        y = 24 + i * (2 * bar + gap)
        shapes.append(f'<text x="{label_width - 6}" y="{y + bar + 3}" text-anchor="end">{esc(category)}</text>')
        for j, (share, colour) in enumerate(
            ((reference.get(category, 0.0), REFERENCE_COLOUR), (current.get(category, 0.0), CURRENT_COLOUR))
        ):
            width = max(share, 0.0) * bar_width / max(*reference.values(), *current.values(), 1e-9)
            top = y + j * bar
            shapes.append(
                f'<rect x="{label_width}" y="{top}" width="{width:.1f}" height="{bar - 1}" fill="{colour}"/>'
                f'<text x="{label_width + width + 4:.1f}" y="{top + bar - 1}">{share:.1%}</text>'
            )
    legend = (
        f'<rect x="0" y="4" width="10" height="10" fill="{REFERENCE_COLOUR}"/><text x="14" y="13">reference</text>'
        f'<rect x="90" y="4" width="10" height="10" fill="{CURRENT_COLOUR}"/><text x="104" y="13">this train split</text>'
    )
    return (
        f'<figure><figcaption>{esc(title)}</figcaption><svg xmlns="http://www.w3.org/2000/svg" role="img" '
        f'aria-label="{esc(title)}" width="{label_width + bar_width + 60}" height="{height}" '
        f'font-size="11" font-family="system-ui,sans-serif">{legend}{"".join(shapes)}</svg></figure>'
    )


def _checks_table(report: ValidationReport) -> str:
    """Every check, failures first: what it wants, what it saw, and the bad rows where rows are bad."""
    ordered = sorted(report.checks, key=lambda c: c.success)
    return (
        "<table><tr><th>result</th><th>split</th><th>check</th><th>column</th><th>observed</th>"
        "<th>bad rows</th><th>first bad rows</th><th>examples</th></tr>"
        + "\n".join(_check_row(c) for c in ordered)
        + "</table>"
    )


def _check_row(check: CheckResult) -> str:
    result = '<span class="pass">pass</span>' if check.success else '<span class="fail">FAIL</span>'
    return (
        f"<tr{'' if check.success else ' class=bad'}><td>{result}</td><td>{esc(check.split)}</td>"
        f"<td>{esc(check.description)}<br><small>{esc(check.expectation)}</small></td>"
        f"<td>{esc(check.column or '(table)')}</td><td>{esc(check.observed)}</td>"
        f"<td class=num>{check.unexpected_count or ''}</td><td>{esc(', '.join(map(str, check.rows)))}</td>"
        f"<td>{esc('; '.join(check.examples))}</td></tr>"
    )
