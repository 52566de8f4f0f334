"""``bertops monitor``: live traffic against the champion's training data; retrain on drift if asked."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

from bertops import config as cfg

log = logging.getLogger("bertops")


def cmd_monitor(args: argparse.Namespace) -> None:
    """Judge the window, write the report, print the verdict; with ``--retrain`` act on a drift verdict."""
    from bertops.inference_log import local_log_dir
    from components.monitor.monitor import run_monitor
    from components.monitor.report import push_metrics

    registry = cfg.RegistryConfig(**cfg.fields_of(cfg.RegistryConfig, vars(args)))
    monitor_config = cfg.MonitorConfig(**cfg.fields_of(cfg.MonitorConfig, vars(args)))
    gate = dataclasses.replace(
        cfg.ValidationConfig(), max_label_drift=args.max_label_drift, max_length_drift=args.max_length_drift
    )
    log_dir = Path(args.log_dir) if args.log_dir else local_log_dir(registry.state_dir, registry.model_name)
    out = Path(args.out) if args.out else Path(registry.state_dir) / "monitor" / registry.model_name
    report = run_monitor(
        registry.model_name, log_dir, out, registry.state_dir, registry.tracking_uri, monitor_config, gate
    )
    if args.pushgateway:
        push_metrics(report, args.pushgateway)
    figures = ", ".join(
        f"{m.name} {'-' if m.value is None else f'{m.value:.4f}'}"
        + (f" (bound {m.bound:g}{', DRIFT' if m.drifted else ''})" if m.drifted is not None else f" ({m.note})")
        for m in report.measures
    )
    print(
        f"{registry.model_name} v{report.champion_version}: {report.verdict} over {report.window_texts} texts"
        + (f": {figures}" if figures else "")
        + f"\nreport: {out / 'report.html'}, verdict: {out / 'verdict.json'}, metrics: {out / 'metrics.prom'}"
    )
    if args.retrain:
        retrain(args, report, registry)


def retrain(args: argparse.Namespace, report: object, registry: cfg.RegistryConfig) -> None:
    """Run the training pipeline as ``bertops run`` does, on ``--data-path``, if the verdict and data call for it."""
    from bertops.dvc_data import data_version
    from cli.main import build_parser
    from components.monitor.monitor import MonitorReport, retrain_decision

    assert isinstance(report, MonitorReport)
    data_path = Path(args.data_path).resolve()
    go, why = retrain_decision(report, data_version(data_path))
    print(f"retrain: {why}")
    if not go:
        return
    run_args = [
        "run", "--data-path", str(data_path), "--model-name", registry.model_name,
        "--state-dir", registry.state_dir, "--tracking-uri", registry.tracking_uri,
    ]  # fmt: skip
    parsed = build_parser().parse_args(run_args)
    parsed.func(parsed)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``monitor``: where the log and the registry are, the window, the bounds, and what to do on drift."""
    monitor = sub.add_parser(
        "monitor",
        help="compare logged endpoint traffic with the champion's training data (drift report and verdict)",
    )
    monitor.add_argument(
        "--log-dir",
        default="",
        help="inference log directory (default: the local endpoint's, STATE_DIR/inference-logs/MODEL)",
    )
    monitor.add_argument("--out", default="", help="where report.html, verdict.json and metrics.prom go "
                         "(default: STATE_DIR/monitor/MODEL)")  # fmt: skip
    gate = cfg.ValidationConfig()
    monitor.add_argument(
        "--max-label-drift", type=float, default=gate.max_label_drift, help="the data gate's label-mix KL bound"
    )
    monitor.add_argument(
        "--max-length-drift", type=float, default=gate.max_length_drift, help="the data gate's text-length KL bound"
    )
    monitor.add_argument("--pushgateway", default="", help="Prometheus Pushgateway URL to push the drift gauges to")
    monitor.add_argument(
        "--retrain",
        action="store_true",
        help="on a drift verdict, run the training pipeline (as `bertops run`) on --data-path, unless its data "
        "version is the champion's",
    )
    monitor.add_argument("--data-path", default="data", help="the data to retrain on (its DVC version decides)")
    cfg.add_dataclass_arguments(monitor, cfg.RegistryConfig)
    cfg.add_dataclass_arguments(monitor, cfg.MonitorConfig)
    monitor.set_defaults(func=cmd_monitor)
