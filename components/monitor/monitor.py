"""Compare a window of logged traffic with the champion's training reference profile.

The window is the newest ``window_texts`` records of the inference log (``bertops.inference_log``)
for the model, optionally only those of the last ``window_hours``, and only those answered by the
champion (records of other versions are counted and left out). Below ``min_window_texts`` the
verdict is "not enough traffic". Measures, each against its bound:

- predicted-label mix vs the training label mix: KL (``bertops.drift.label_kl``), ``max_label_drift``;
- text lengths vs the training length histogram: KL (``bertops.drift.length_kl``), ``max_length_drift``;
  the data gate's measures and bounds (``ValidationConfig``);
- out-of-vocabulary rate: the share of words not in the training vocabulary, against the same
  share on the held-out validation split, ``max_oov_increase``. Words, not the tokenizer's unknown
  token: a WordPiece tokenizer splits an unseen word into known pieces and almost never emits
  ``[UNK]``, so its unknown share stays near zero whatever the traffic is. Needs the texts: with
  a hashes-only log it is skipped, and the report says so;
- mean confidence (top-class probability) vs the champion's on its test split, ``max_confidence_drop``.

The verdict is "drift" when any measure passes its bound. Outputs: ``report.html`` (escaped,
inline charts, no external resources), ``verdict.json`` and ``metrics.prom`` (Prometheus text
format; ``push_metrics`` sends the same gauges to a Pushgateway).
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from bertops import drift
from bertops.config import MonitorConfig, ValidationConfig
from bertops.errors import BertopsError
from bertops.inference_log import read_records

DRIFT, OK, NOT_ENOUGH = "drift", "ok", "not enough traffic"
# bertops_drift_verdict's value for each verdict.
VERDICT_VALUES = {DRIFT: 1, OK: 0, NOT_ENOUGH: -1}
REPORT_FILES = ("report.html", "verdict.json", "metrics.prom")


@dataclass
class ChampionReference:
    """What the champion was trained and tested on: its version, data version, profile and mean confidence."""

    version: str
    data_version: str
    profile: dict[str, Any]
    mean_confidence: float
    profile_source: str


@dataclass
class Measure:
    """One drift measure of the window: its value, the reference it is held against, and its bound."""

    name: str
    value: float | None
    reference: float | None
    bound: float
    drifted: bool | None
    note: str = ""


@dataclass
class MonitorReport:
    """The verdict on one window and everything it rests on."""

    model: str
    champion_version: str
    data_version: str
    verdict: str
    window_texts: int
    first_ts: str
    last_ts: str
    other_versions: int
    hashes_only: bool
    measures: list[Measure]
    label_mix: dict[str, float] = field(default_factory=dict)
    length_weights: list[float] = field(default_factory=list)
    profile_source: str = ""
    generated: str = ""

    def measure(self, name: str) -> Measure:
        """The measure named ``name``."""
        return next(m for m in self.measures if m.name == name)


def _download(client: Any, run_id: str, name: str) -> Path | None:
    """A run artifact downloaded to a temporary folder, None when the run has no such artifact."""
    from mlflow.exceptions import MlflowException

    try:
        return Path(client.download_artifacts(run_id, name, tempfile.mkdtemp(prefix="bertops-monitor-")))
    except (MlflowException, OSError):
        return None


def champion_reference(model_name: str, state_dir: str, tracking_uri: str = "") -> ChampionReference:
    """The champion's reference: the profile logged with its version (the register step logs it).

    A version registered before profiles were logged falls back to the state directory's data
    gate profile when that profile is of the champion's data version; otherwise ``BertopsError``.
    """
    from mlflow.exceptions import MlflowException

    from bertops.registry import CHAMPION_ALIAS, open_client

    client = open_client(tracking_uri, state_dir)
    try:
        champion = client.get_model_version_by_alias(model_name, CHAMPION_ALIAS)
    except MlflowException as exc:
        raise BertopsError(f"{model_name}: no champion in the registry to monitor ({exc.message})") from exc
    data_version = champion.tags.get("data_version", "")
    run_id = str(champion.run_id)
    downloaded = _download(client, run_id, drift.PROFILE_FILE)
    source = f"run {run_id} artifact {drift.PROFILE_FILE}"
    if downloaded is None:
        downloaded = Path(state_dir) / drift.REFERENCE_PROFILE
        source = str(downloaded)
    profile = json.loads(downloaded.read_text(encoding="utf-8")) if downloaded.is_file() else {}
    if profile.get("data_version") != data_version:
        raise BertopsError(
            f"{model_name} version {champion.version}: no reference profile of its training data ({data_version}) "
            f"in the registry or in {Path(state_dir) / drift.REFERENCE_PROFILE}; retrain to record one"
        )
    evaluation = _download(client, run_id, "evaluation.json")
    confidence = math.nan
    if evaluation is not None and evaluation.is_file():
        confidence = float(json.loads(evaluation.read_text(encoding="utf-8"))["test"].get("mean_confidence", math.nan))
    return ChampionReference(str(champion.version), data_version, profile, confidence, source)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _kl_measure(name: str, value: float, bound: float, why_infinite: str) -> Measure:
    note = "" if math.isfinite(value) else f"infinite: {why_infinite}"
    return Measure(name, _finite(value), 0.0, bound, value > bound, note)


def measure_window(
    records: list[dict[str, Any]], reference: ChampionReference, config: MonitorConfig, gate: ValidationConfig
) -> list[Measure]:
    """The four measures of a non-empty window against the champion's reference."""
    profile = reference.profile
    counts: dict[str, int] = {}
    for record in records:
        counts[record["label"]] = counts.get(record["label"], 0) + 1
    measures = [
        _kl_measure(
            "label_kl",
            drift.label_kl(counts, profile["labels"]),
            gate.max_label_drift,
            "a label the training data lacks",
        ),
        _kl_measure(
            "length_kl",
            drift.length_kl(
                [float(r["text_chars"]) for r in records], profile["length_edges"], profile["length_weights"]
            ),
            gate.max_length_drift,
            "texts over ten times the longest training text",
        ),
    ]
    texts = [r.get("text") for r in records]
    if any(not isinstance(t, str) for t in texts):
        measures.append(
            Measure("oov_rate", None, None, config.max_oov_increase, None, "skipped: the log keeps only hashes")
        )
    elif "vocabulary" not in profile:
        measures.append(Measure("oov_rate", None, None, config.max_oov_increase, None, "skipped: no vocabulary"))
    else:
        rate, base = drift.oov_rate(texts, set(profile["vocabulary"])), float(profile["oov_rate"])  # type: ignore[arg-type]
        measures.append(Measure("oov_rate", rate, base, config.max_oov_increase, rate - base > config.max_oov_increase))
    mean = sum(float(r["confidence"]) for r in records) / len(records)
    base_confidence = reference.mean_confidence
    if math.isnan(base_confidence):
        measures.append(
            Measure("mean_confidence", mean, None, config.max_confidence_drop, None, "no test mean confidence recorded")
        )
    else:
        drop = base_confidence - mean > config.max_confidence_drop
        measures.append(Measure("mean_confidence", mean, base_confidence, config.max_confidence_drop, drop))
    return measures


def judge(
    model_name: str,
    records: list[dict[str, Any]],
    reference: ChampionReference,
    config: MonitorConfig,
    gate: ValidationConfig,
) -> MonitorReport:
    """The report on the window ``records`` (already read) of ``model_name``'s traffic."""
    served = [r for r in records if str(r.get("model_version", "")) in ("", reference.version)]
    measures = measure_window(served, reference, config, gate) if served else []
    if len(served) < max(config.min_window_texts, 1):
        verdict = NOT_ENOUGH
    else:
        verdict = DRIFT if any(m.drifted for m in measures) else OK
    counts: dict[str, int] = {}
    for record in served:
        counts[record["label"]] = counts.get(record["label"], 0) + 1
    histogram, _ = np.histogram([float(r["text_chars"]) for r in served], bins=reference.profile["length_edges"])
    return MonitorReport(
        model=model_name,
        champion_version=reference.version,
        data_version=reference.data_version,
        verdict=verdict,
        window_texts=len(served),
        first_ts=served[0]["ts"] if served else "",
        last_ts=served[-1]["ts"] if served else "",
        other_versions=len(records) - len(served),
        hashes_only=any("text" not in r for r in served),
        measures=measures,
        label_mix={k: v / len(served) for k, v in sorted(counts.items())},
        length_weights=[int(c) / len(served) for c in histogram] if served else [],
        profile_source=reference.profile_source,
        generated=datetime.now(UTC).isoformat(),
    )


def read_window(
    log_dir: Path, model_name: str, config: MonitorConfig, now: datetime | None = None
) -> list[dict[str, Any]]:
    """The window's records: the newest ``window_texts`` of the last ``window_hours`` (0: any age)."""
    since = None
    if config.window_hours > 0:
        since = (now or datetime.now(UTC)) - timedelta(hours=config.window_hours)
    return read_records(log_dir, model_name, limit=config.window_texts, since=since).records


def verdict_json(report: MonitorReport) -> str:
    """The report as JSON (infinite measures are null with a note)."""
    return json.dumps(asdict(report), indent=2, allow_nan=False)


def write_outputs(report: MonitorReport, reference: ChampionReference, out_dir: Path) -> None:
    """``report.html``, ``verdict.json`` and ``metrics.prom`` in ``out_dir``."""
    from components.monitor.report import prometheus_text, render_html

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.html").write_text(render_html(report, reference.profile), encoding="utf-8")
    (out_dir / "verdict.json").write_text(verdict_json(report), encoding="utf-8")
    (out_dir / "metrics.prom").write_text(prometheus_text(report), encoding="utf-8")


def run_monitor(
    model_name: str,
    log_dir: Path,
    out_dir: Path,
    state_dir: str = ".bertops",
    tracking_uri: str = "",
    config: MonitorConfig | None = None,
    gate: ValidationConfig | None = None,
) -> MonitorReport:
    """The monitor: read the window, judge it against the champion's reference, write the outputs."""
    config, gate = config or MonitorConfig(), gate or ValidationConfig()
    if config.window_texts < 0 or config.min_window_texts < 0 or config.window_hours < 0:
        raise BertopsError("window_texts, window_hours and min_window_texts must be >= 0")
    if config.window_texts and config.min_window_texts > config.window_texts:
        raise BertopsError(
            f"min_window_texts ({config.min_window_texts}) is larger than window_texts ({config.window_texts}): "
            "the verdict could never be anything but 'not enough traffic'"
        )
    reference = champion_reference(model_name, state_dir, tracking_uri)
    report = judge(model_name, read_window(log_dir, model_name, config), reference, config, gate)
    write_outputs(report, reference, out_dir)
    return report


def retrain_decision(report: MonitorReport, newest_data_version: str) -> tuple[bool, str]:
    """Whether a drift verdict should start training on ``newest_data_version``, and why (not)."""
    if report.verdict != DRIFT:
        return False, f"verdict {report.verdict!r}: no retraining"
    if newest_data_version == report.data_version:
        return False, (
            f"the newest data version is the champion's ({newest_data_version}): retraining on the same data "
            "would fail the gate again; add data that looks like the traffic, then retrain"
        )
    return True, f"drift: retraining on {newest_data_version} (the champion was trained on {report.data_version})"
