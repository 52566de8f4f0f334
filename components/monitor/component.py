"""KFP component: the drift monitor over the inference log, with its HTML report and verdict."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Metrics, Output

from bertops.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def monitor(
    model_name: str,
    state_dir: str,
    tracking_uri: str,
    inference_log_dir: str,
    window_texts: int,
    window_hours: float,
    min_window_texts: int,
    max_oov_increase: float,
    max_confidence_drop: float,
    max_label_drift: float,
    max_length_drift: float,
    pushgateway_url: str,
    report: Output[HTML],
    verdict_json: Output[Artifact],
    drift_metrics: Output[Metrics],
) -> NamedTuple(  # type: ignore[valid-type]
    "MonitorOutputs", [("verdict", str), ("drifted", bool), ("champion_data_version", str)]
):
    """Compare the newest logged traffic of ``model_name`` (``inference_log_dir``: the local endpoint's
    log, or the inference sink's volume on a cluster) with the champion's training reference profile.

    Returns the verdict (``drift``, ``ok`` or ``not enough traffic``), whether it is drift (the
    condition of a retrain-if-drifted branch) and the champion's training data version (retraining
    on that same version would fail the gate again). The report is the HTML artifact the Kubeflow
    UI shows; the gauges go to ``pushgateway_url`` when it is set.
    """
    import shutil
    import tempfile
    from collections import namedtuple
    from pathlib import Path

    from bertops.config import MonitorConfig, ValidationConfig
    from bertops.inference_log import local_log_dir
    from bertops.step import step
    from components.monitor.monitor import DRIFT, run_monitor
    from components.monitor.report import push_metrics

    with step("monitor"):
        config = MonitorConfig(window_texts, window_hours, min_window_texts, max_oov_increase, max_confidence_drop)
        gate = ValidationConfig(max_label_drift=max_label_drift, max_length_drift=max_length_drift)
        log_dir = Path(inference_log_dir) if inference_log_dir else local_log_dir(state_dir, model_name)
        out = Path(tempfile.mkdtemp(prefix="bertops-monitor-"))
        result = run_monitor(model_name, log_dir, out, state_dir, tracking_uri, config, gate)
        shutil.copyfile(out / "report.html", report.path)
        shutil.copyfile(out / "verdict.json", verdict_json.path)
        for measure in result.measures:
            if measure.value is not None:
                drift_metrics.log_metric(measure.name, measure.value)
        drift_metrics.log_metric("window_texts", result.window_texts)
        if pushgateway_url:
            push_metrics(result, pushgateway_url)
        MonitorOutputs = namedtuple("MonitorOutputs", ["verdict", "drifted", "champion_data_version"])
        return MonitorOutputs(result.verdict, result.verdict == DRIFT, result.data_version)
