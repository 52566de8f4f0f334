"""The drift monitor's outputs: a self-contained HTML page and the Prometheus gauges.

The page has no external resources (the Kubeflow UI shows it as is): inline CSS and inline SVG
bar charts, every value from the log or the registry escaped. The gauges (label ``model``):
``bertops_drift_label_kl``, ``bertops_drift_length_kl``, ``bertops_drift_oov_rate``,
``bertops_drift_mean_confidence``, ``bertops_drift_window_texts`` and ``bertops_drift_verdict``
(1 drift, 0 ok, -1 not enough traffic); a measure not taken is left out.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from components.monitor.monitor import Measure, MonitorReport

# Gauge name -> (help, measure it reads, or None for the window's own figures).
GAUGES: dict[str, tuple[str, str | None]] = {
    "bertops_drift_label_kl": ("KL of the predicted-label mix from the training label mix", "label_kl"),
    "bertops_drift_length_kl": ("KL of text lengths from the training length histogram", "length_kl"),
    "bertops_drift_oov_rate": ("Share of words not in the training vocabulary", "oov_rate"),
    "bertops_drift_mean_confidence": ("Mean top-class probability over the window", "mean_confidence"),
    "bertops_drift_window_texts": ("Texts in the monitored window", None),
    "bertops_drift_verdict": ("Drift verdict: 1 drift, 0 ok, -1 not enough traffic", None),
}
JOB = "bertops-monitor"


def _gauge_value(measure: Measure) -> float | None:
    """A measure's gauge value: +Inf for an infinite KL, None for a measure not taken."""
    if measure.value is not None:
        return measure.value
    return float("inf") if measure.note.startswith("infinite") else None


def metrics_registry(report: MonitorReport) -> CollectorRegistry:
    """A registry holding the monitor's gauges for ``report`` (a measure not taken is left out)."""
    from prometheus_client import CollectorRegistry, Gauge

    from components.monitor.monitor import VERDICT_VALUES

    registry = CollectorRegistry()
    values: dict[str | None, float | None] = {m.name: _gauge_value(m) for m in report.measures}
    for name, (help_text, measure_name) in GAUGES.items():
        if measure_name is not None:
            value = values.get(measure_name)
        elif name == "bertops_drift_window_texts":
            value = float(report.window_texts)
        else:
            value = float(VERDICT_VALUES[report.verdict])
        if value is not None:
            Gauge(name, help_text, ["model"], registry=registry).labels(report.model).set(value)
    return registry


def prometheus_text(report: MonitorReport) -> str:
    """The gauges in Prometheus' text format (node exporter's textfile collector reads it)."""
    from prometheus_client import generate_latest

    return generate_latest(metrics_registry(report)).decode()


def push_metrics(report: MonitorReport, gateway: str) -> None:
    """Push the gauges to the Pushgateway at ``gateway`` (job ``bertops-monitor``, grouped by model)."""
    from prometheus_client import push_to_gateway

    push_to_gateway(gateway, job=JOB, registry=metrics_registry(report), grouping_key={"model": report.model})


def _bars(title: str, names: list[str], observed: list[float], expected: list[float]) -> str:
    """An inline SVG of paired bars: the window (dark) beside the training reference (light)."""
    width, height, top = max(60 * len(names), 240), 150, 10
    peak = max([*observed, *expected, 1e-9])
    slot = width / max(len(names), 1)
    parts = []
    for i, name in enumerate(names):
        for j, (value, colour) in enumerate(((observed[i], "#2b5797"), (expected[i], "#a9c4eb"))):
            bar = (height - 40) * value / peak
            x = i * slot + 6 + j * (slot - 12) / 2
            parts.append(
                f'<rect x="{x:.1f}" y="{top + height - 40 - bar:.1f}" width="{(slot - 12) / 2:.1f}" '
                f'height="{bar:.1f}" fill="{colour}"><title>{html.escape(name)}: {value:.3f}</title></rect>'
            )
        parts.append(
            f'<text x="{i * slot + slot / 2:.1f}" y="{top + height - 22}" font-size="10" '
            f'text-anchor="middle">{html.escape(name[:14])}</text>'
        )
    return (
        f"<figure><figcaption>{html.escape(title)} (dark: window, light: training reference)</figcaption>"
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height + top}" role="img">'
        + "".join(parts)
        + "</svg></figure>"
    )


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def _measure_rows(report: MonitorReport) -> str:
    rows = []
    for m in report.measures:
        result = {True: "DRIFT", False: "ok", None: "not judged"}[m.drifted]
        rows.append(
            f"<tr class={'bad' if m.drifted else 'ok'}><td>{html.escape(m.name)}</td><td>{_number(m.value)}</td>"
            f"<td>{_number(m.reference)}</td><td>{m.bound:g}</td><td>{result}</td><td>{html.escape(m.note)}</td></tr>"
        )
    return "\n".join(rows)


def _charts(report: MonitorReport, profile: dict[str, Any]) -> str:
    if not report.window_texts:
        return ""
    labels = sorted(set(profile["labels"]) | set(report.label_mix))
    edges = profile["length_edges"]
    bins = [f"{edges[i]:.0f}-{edges[i + 1]:.0f}" for i in range(len(edges) - 1)]
    return _bars(
        "Predicted labels vs training labels",
        labels,
        [report.label_mix.get(n, 0.0) for n in labels],
        [profile["labels"].get(n, 0.0) for n in labels],
    ) + _bars("Text length (characters)", bins, report.length_weights, list(profile["length_weights"]))


def render_html(report: MonitorReport, profile: dict[str, Any]) -> str:
    """The report page: the verdict, the window, each measure against its bound, and two charts."""
    colour = {"drift": "#b00020", "ok": "#17702f"}.get(report.verdict, "#8a6d00")
    privacy = (
        "<p>The log keeps only hashes and lengths of the texts: the out-of-vocabulary rate was not measured.</p>"
        if report.hashes_only
        else ""
    )
    window = (
        f"{report.window_texts} texts answered by version {html.escape(report.champion_version)}, "
        f"{html.escape(report.first_ts)} to {html.escape(report.last_ts)}"
        if report.window_texts
        else "no logged texts"
    )
    others = f" ({report.other_versions} texts of other versions left out)" if report.other_versions else ""
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>bertops drift: {html.escape(report.verdict)}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:1.5rem;color:#222}}
table{{border-collapse:collapse}}th,td{{border:1px solid #ccc;padding:.3rem .6rem;text-align:left;font-size:.9rem}}
th{{background:#f3f3f3}}tr.bad td{{background:#fde8e8}}.verdict{{font-weight:bold;color:{colour}}}
figure{{display:inline-block;margin:1rem 2rem 0 0}}figcaption{{font-size:.85rem;color:#555}}
</style></head><body>
<h1>Drift of {html.escape(report.model)}: <span class="verdict">{html.escape(report.verdict)}</span></h1>
<p>Window: {window}{others}. Reference: the training data <code>{html.escape(report.data_version)}</code> of the
champion (profile from {html.escape(report.profile_source)}). Generated {html.escape(report.generated)}.</p>
{privacy}
<table><tr><th>measure</th><th>window</th><th>reference</th><th>bound</th><th>result</th><th>note</th></tr>
{_measure_rows(report)}
</table>
<p><small>KL measures: the data gate's KL divergence and bounds (reference 0). oov_rate: drift when it
exceeds the held-out rate by more than the bound. mean_confidence: drift when it falls below the
champion's test mean by more than the bound.</small></p>
{_charts(report, profile)}
</body></html>
"""
