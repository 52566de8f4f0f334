"""``bertops compile`` and ``bertops submit``: the pipeline for a Kubeflow Pipelines server."""

from __future__ import annotations

import argparse
from pathlib import Path

from bertops import config as cfg
from bertops.cluster import PIPELINE_SERVICE_ACCOUNT, PROFILE_NAMESPACE
from cli import git
from pipelines.compile import DEFAULT_FINETUNE_RETRIES, DEFAULT_PARALLELISM
from pipelines.submit import POLL_SECONDS

COMPILED = "pipelines/compiled/bertops_pipeline.yaml"
COMPILED_BATCH_SCORE = "pipelines/compiled/bertops_batch_score.yaml"
PIPELINES = ("training", "batch-score")


def cmd_compile(args: argparse.Namespace) -> None:
    """Write the pipeline's IR YAML with the target's defaults."""
    from pipelines.compile import compile_batch_pipeline, compile_pipeline

    if args.pipeline == "batch-score":
        path = compile_batch_pipeline(Path(args.output or COMPILED_BATCH_SCORE), args.workspace_pvc, args.target)
    else:
        path = compile_pipeline(
            Path(args.output or COMPILED),
            args.workspace_pvc,
            args.finetune_retries,
            args.target,
            parallelism=args.parallelism,
            git_commit=git.commit(),
        )
    print(f"compiled pipeline: {path} (upload it in the Kubeflow UI or submit it with `kfp run create`)")


def run_arguments(args: argparse.Namespace) -> dict[str, object]:
    """The pipeline parameters given on the command line, as a run takes them (JSON settings decoded)."""
    given = {name: getattr(args, name) for name in cfg.parameter_names() if getattr(args, name, None) is not None}
    return {k: v for k, v in cfg.PipelineConfig().replace(**given).to_arguments().items() if k in given}


def pod_run(args: argparse.Namespace) -> cfg.PipelineConfig:
    """The run's settings (the target's defaults and the flags given), refused if they cannot work in pods."""
    given = {name: getattr(args, name) for name in cfg.parameter_names() if getattr(args, name, None) is not None}
    run = cfg.profile(args.target).replace(**given)
    cfg.validate_settings(run)
    cfg.check_run_settings(
        pod=True,
        finetune_gpus=run.placement.finetune_gpus,
        launcher=run.placement.launcher,
        workspace_pvc=args.workspace_pvc,
        deploy_target=run.serve.deploy_target,
        tracking_uri=run.registry.tracking_uri,
        state_dir=run.registry.state_dir,
        data_path=run.data.data_path,
    )
    return run


def compile_with_commit(args: argparse.Namespace) -> tuple[Path, str]:
    """Compile the pipeline with ``args``' compile-time options and this checkout's commit as the
    ``git_commit`` default; returns the compiled file and the commit (what ``submit`` and ``schedule`` send)."""
    from pipelines.compile import compile_pipeline

    commit = git.commit()
    options = {"parallelism": args.parallelism, "git_commit": commit}
    return compile_pipeline(
        Path(args.output), args.workspace_pvc, args.finetune_retries, args.target, **options
    ), commit


def cmd_submit(args: argparse.Namespace) -> None:
    """Compile the pipeline and submit a run of it with the given parameters; with ``--wait``, wait
    for the run to finish and fail unless it succeeded."""
    from pipelines.submit import submit, wait_for_run

    # The run's steps run in pods: refuse what cannot work there before compiling or submitting.
    run = pod_run(args)
    package, commit = compile_with_commit(args)
    arguments = {**run_arguments(args), "git_commit": commit}
    namespace = run.serve.namespace
    run_id = submit(args.host, package, arguments, args.experiment, args.run_name, args.service_account, namespace)
    print(f"submitted {package} to {args.host}: run {run_id} in experiment {args.experiment!r} (commit {commit})")
    if args.wait:
        state = wait_for_run(args.host, run_id, namespace, args.wait_timeout, args.wait_poll)
        print(f"run {run_id} {state}")


def cluster_flags() -> argparse.ArgumentParser:
    """The flags that shape the compiled pipeline itself, shared by ``compile``, ``submit`` and ``schedule``."""
    cluster = argparse.ArgumentParser(add_help=False)
    cluster.add_argument(
        "--workspace-pvc",
        default="",
        help="ReadWriteMany PVC mounted at /workspace in the finetune pods: checkpoints there survive a preempted "
        "node, and launcher=TrainJob/PyTorchJob shares data through it (default: none)",
    )
    cluster.add_argument(
        "--finetune-retries",
        type=int,
        default=DEFAULT_FINETUNE_RETRIES,
        help=f"restarts of a failed finetune task (default: {DEFAULT_FINETUNE_RETRIES})",
    )
    cluster.add_argument(
        "--parallelism",
        type=int,
        default=DEFAULT_PARALLELISM,
        help="candidates fine-tuned at once, each a GPU pod or training job (0: no limit; "
        f"default: {DEFAULT_PARALLELISM})",
    )
    return cluster


def _add_compile(sub: argparse._SubParsersAction[argparse.ArgumentParser], cluster: argparse.ArgumentParser) -> None:
    comp = sub.add_parser("compile", parents=[cluster], help="compile the pipeline to IR YAML for Kubeflow")
    comp.add_argument(
        "--pipeline",
        choices=PIPELINES,
        default="training",
        help="training (validate ... deploy) or batch-score (score a dataset with the champion or a named version; "
        "--workspace-pvc keeps an unfinished run's chunks for the task's retry) (default: training)",
    )
    comp.add_argument(
        "-o", "--output", default="", help=f"default: {COMPILED}, or {COMPILED_BATCH_SCORE} for batch-score"
    )
    comp.add_argument(
        "--target",
        choices=cfg.TARGETS,
        default="local",
        help="defaults of the run parameters: local (this machine's paths and a local endpoint) or cluster "
        f"(the InferenceService in {PROFILE_NAMESPACE}, data from the S3 DVC remote, tracking_uri required)"
        " (default: local)",
    )
    comp.set_defaults(func=cmd_compile)


def _add_submit(sub: argparse._SubParsersAction[argparse.ArgumentParser], cluster: argparse.ArgumentParser) -> None:
    submit = sub.add_parser(
        "submit", parents=[cluster], help="compile and submit a run to a Kubeflow Pipelines server (CI)"
    )
    submit.add_argument(
        "--target",
        choices=cfg.TARGETS,
        default="cluster",
        help="defaults of the run parameters, as for compile (default: cluster: a submitted run runs in pods)",
    )
    submit.add_argument("--host", required=True, help="KFP API endpoint, e.g. https://kubeflow.example.com/pipeline")
    submit.add_argument("--experiment", default="bertops")
    submit.add_argument("--run-name", default=None)
    submit.add_argument(
        "--service-account",
        default=PIPELINE_SERVICE_ACCOUNT,
        help="service account of the run's pods, KFP's driver and launcher included "
        f"(default: {PIPELINE_SERVICE_ACCOUNT}, a Kubeflow profile's; pipeline-runner on standalone KFP)",
    )
    submit.add_argument("-o", "--output", default=COMPILED)
    submit.add_argument(
        "--wait", action="store_true", help="wait for the run to finish; exit non-zero unless it succeeded"
    )
    submit.add_argument(
        "--wait-timeout", type=float, default=0, help="with --wait: give up after this many seconds (default: 0, none)"
    )
    submit.add_argument("--wait-poll", type=float, default=POLL_SECONDS, help=argparse.SUPPRESS)
    cfg.add_arguments(submit)
    submit.set_defaults(func=cmd_submit)


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``compile`` and ``submit``, which share the flags that shape the compiled pipeline."""
    cluster = cluster_flags()
    _add_compile(sub, cluster)
    _add_submit(sub, cluster)
