"""``bertops run``: the whole pipeline on this machine (kfp.local), then its summary."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from bertops import config as cfg
from bertops.redact import redact_credentials
from cli import git
from cli.endpoints import predict_v1

if TYPE_CHECKING:
    from pipelines.run_local import LocalRunResult

log = logging.getLogger("bertops")

SAMPLE_TEXT = "The central bank raised interest rates again as inflation stayed well above its target."


def _absolute(config: cfg.PipelineConfig) -> cfg.PipelineConfig:
    """Resolve relative paths now: the pipeline's tasks run in other processes."""
    return config.replace(
        data_path=str(Path(config.data.data_path).resolve()), state_dir=str(Path(config.registry.state_dir).resolve())
    )


def _settings(args: argparse.Namespace) -> cfg.PipelineConfig:
    """The flags over the defaults; a run resumed (``--resume``, or the name of an unfinished run) starts
    from the settings that run was started with, with the flags given now applied over them."""
    from pipelines.run_records import resumed_config

    config = cfg.from_namespace(args)
    # The run name names files: a bad one (like any bad flag) fails before any is read.
    cfg.validate_settings(config)
    state_dir, run_name = Path(config.registry.state_dir).resolve(), config.train.checkpoint_name
    if not (args.resume or run_name):
        return config
    resumed = resumed_config(state_dir, run_name, required=args.resume)
    if resumed is None:
        return config
    log.info("resuming run %s with its settings", resumed.train.checkpoint_name)
    return cfg.from_namespace(args, base=resumed)


def cmd_run(args: argparse.Namespace) -> None:
    """Run the pipeline with the flags' settings; serve a promoted winner; print the summary."""
    config = _absolute(_settings(args))
    if args.runner == "docker" and config.serve.deploy_target == "local":
        # A server started inside a step's container would die with it.
        config = config.replace(deploy_target="docker")
    # A flag that makes no sense (or malformed JSON) fails here, before any work, state or slow import.
    cfg.validate_settings(config)

    from bertops import dvc_data
    from bertops.private_state import private_dir
    from bertops.registry import open_client, version_metrics
    from pipelines.run_local import run_local

    root = Path.cwd()
    started = time.perf_counter()
    default_data = Path(config.data.data_path) == root / "data" and (root / "data.dvc").is_file()
    if default_data and not config.data.data_remote and not dvc_data.is_clean(root):
        log.info("data: %s", dvc_data.pull(root))
    log.info("running the pipeline on the embedded runtime (kfp.local, %s runner)", args.runner)
    # Private from the start: the run log and the artifacts land in it before the registry opens.
    private_dir(config.registry.state_dir, config.registry.state_dir)
    result = run_local(
        config, git_commit=git.commit(root), verbose=args.verbose, runner=args.runner, parallelism=args.parallelism
    )
    name, state = config.registry.model_name, config.registry.state_dir
    client = open_client(config.registry.tracking_uri, state)
    metrics = version_metrics(client, name, result.version)
    tags: dict[str, str] = client.get_model_version(name, result.version).tags
    if tags.get("promoted") == "true" and config.serve.deploy_target == "docker":
        from components.deploy.champion_deploy import deploy_docker_champion

        log.info("serving version %s from the serving image", result.version)
        deploy_docker_champion(name, result.version, state, config.registry.tracking_uri)
    from pipelines.local_reports import collect_reports

    reports = collect_reports(state, tags.get("pipeline_run", ""))
    print(summary(config, result, metrics, tags, (time.perf_counter() - started) / 60, reports))


def summary(
    config: cfg.PipelineConfig,
    result: LocalRunResult,
    metrics: dict[str, float],
    tags: dict[str, str],
    minutes: float,
    reports: Path | None = None,
) -> str:
    """The end-of-run summary: data, winner, metrics, registration, promotion, the endpoint's answer
    and where the run's reports are."""
    from bertops import endpoints
    from pipelines.step_times import split_line

    name, state = config.registry.model_name, config.registry.state_dir
    promoted = tags.get("promoted") == "true"
    registry = redact_credentials(config.registry.tracking_uri) or f"local registry in {state}"
    lines = [
        "",
        "bertops run: summary",
        f"  data version      {result.data_version}",
        f"  validation        {result.validation}",
        f"  winner            candidate {result.winner!r} of {len(config.to_arguments()['candidates'])}",
        f"  test accuracy     {metrics['test_accuracy']:.4f} (macro F1 {metrics['test_macro_f1']:.4f}, "
        f"ECE {metrics['test_ece']:.4f}, {metrics['batch_latency_ms']:.0f} ms per batch of 32)",
        f"  registered        {name} version {result.version} ({registry})",
        f"  promotion         {'champion' if promoted else 'not promoted'}: {tags.get('gate_reason', '')}",
    ]
    endpoint = next((e for e in endpoints.list_endpoints(state) if e.name == name), None)
    if endpoint is not None and endpoint.model_version == result.version:
        label, probs = predict_v1(endpoint, SAMPLE_TEXT)
        lines += [
            f"  endpoint          {endpoint.url} (V1 {endpoint.v1_predict_url}, V2 {endpoint.v2_infer_url})",
            f"  prediction        {SAMPLE_TEXT!r} -> {label} ({probs[label]:.2f})",
        ]
    elif endpoint is not None:
        lines.append(
            f"  endpoint          {endpoint.url} still serves version {endpoint.model_version} "
            "(this run's version was not deployed: see promotion)"
        )
    else:
        lines.append("  endpoint          none (this run's version was not deployed: see promotion)")
    if reports is not None:
        lines.append(f"  reports           {reports} (validation, curves per candidate, the winner's error analysis)")
    if result.log_file.is_file():
        lines.append(f"  step times        {split_line(result.log_file)}")
    lines.append(f"  wall time         {minutes:.1f} min (full log: {result.log_file})")
    return "\n".join(lines)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``run``: the runner and every pipeline setting as a flag."""
    run = sub.add_parser("run", help="run the whole pipeline on this machine (kfp.local) and deploy locally")
    run.add_argument(
        "--runner",
        choices=["subprocess", "docker"],
        default="subprocess",
        help="subprocess: every step in this Python environment (default); docker: every step in its "
        "container image (build them with `make images`), and the winner served from the serving image",
    )
    run.add_argument(
        "--resume",
        action="store_true",
        help="continue the newest unfinished run (killed or failed) in the state directory: its name and "
        "settings (flags given now override them); fine-tuning resumes from its last checkpoint",
    )
    run.add_argument(
        "--parallelism",
        type=_not_negative,
        default=0,
        help="candidates fine-tuned at once (0: one per CPU this process may use; kfp.local runs at most two); "
        "each takes its share of the CPUs",
    )
    cfg.add_arguments(run)
    run.set_defaults(func=cmd_run)


def _not_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value
