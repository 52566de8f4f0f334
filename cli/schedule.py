"""``bertops schedule``: retrain on a cron schedule, as a Kubeflow Pipelines recurring run."""

from __future__ import annotations

import argparse
import json

from bertops import config as cfg
from bertops import triggers
from bertops.cluster import PIPELINE_SERVICE_ACCOUNT
from cli.kubeflow import COMPILED, cluster_flags, compile_with_commit, pod_run, run_arguments


def cmd_schedule(args: argparse.Namespace) -> None:
    """Compile the pipeline and create a recurring run of it (``--dry-run``: print the request instead)."""
    from bertops.errors import BertopsError
    from pipelines.submit import RecurringRun, create_recurring_run, kfp_cron
    from pipelines.training_pipeline import PIPELINE_NAME

    if not args.dry_run and not args.host:
        raise BertopsError("bertops schedule needs --host (the KFP API endpoint), or --dry-run to print the request")
    cron = kfp_cron(args.cron)
    run = pod_run(args)
    package, commit = compile_with_commit(args)
    parameters = {**run_arguments(args), "git_commit": commit, "trigger": triggers.SCHEDULE}
    name = args.name or f"{PIPELINE_NAME}-schedule"
    recurring = RecurringRun(
        name, cron, package, parameters, args.experiment, args.service_account, run.serve.namespace
    )
    if args.dry_run:
        request = {"host": args.host, "experiment": args.experiment, "namespace": recurring.namespace}
        print(json.dumps(request | recurring.request(), indent=2))
        return
    recurring_id = create_recurring_run(args.host, recurring)
    print(
        f"created recurring run {recurring_id} ({name!r}, cron {cron!r}) of {package} on {args.host} "
        f"in experiment {args.experiment!r}"
    )


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``schedule``, with the flags of ``submit`` and the schedule's own."""
    schedule = sub.add_parser(
        "schedule",
        parents=[cluster_flags()],
        help="create a KFP recurring run that retrains on a cron schedule (trigger=schedule)",
    )
    schedule.add_argument(
        "--cron",
        required=True,
        help="when to run: a crontab line (minute hour day month weekday, e.g. '0 3 * * 1' for Mondays 03:00) "
        "or KFP's 6-field form with seconds first; in the KFP server's time zone (UTC unless configured)",
    )
    schedule.add_argument("--host", default="", help="KFP API endpoint, e.g. https://kubeflow.example.com/pipeline")
    schedule.add_argument(
        "--name", default="", help="the recurring run's name (default: bertops-text-classifier-schedule)"
    )
    schedule.add_argument("--dry-run", action="store_true", help="print the request as JSON, send nothing")
    schedule.add_argument("--target", choices=cfg.TARGETS, default="cluster", help="as for submit (default: cluster)")
    schedule.add_argument("--experiment", default="bertops")
    schedule.add_argument(
        "--service-account",
        default=PIPELINE_SERVICE_ACCOUNT,
        help=f"service account of the runs' pods, as for submit (default: {PIPELINE_SERVICE_ACCOUNT})",
    )
    schedule.add_argument("-o", "--output", default=COMPILED)
    cfg.add_arguments(schedule)
    schedule.set_defaults(func=cmd_schedule)
