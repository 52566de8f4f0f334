"""The ``bertops`` command: run the pipeline locally, compile it, manage data and endpoints."""

from __future__ import annotations

import argparse
import logging
import sys

from bertops import config as cfg
from bertops.env import configure_process
from bertops.errors import BertopsError
from bertops.redact import redact_credentials
from cli import data, endpoints, kubeflow, models, monitor, run, schedule, score, ui

# What `bertops --help` opens with: plain text, not the module docstring's reStructuredText.
DESCRIPTION = (
    "bertops: validate, fine-tune, evaluate, register and serve BERT-style text classifiers. "
    "Run the whole pipeline on this machine (run), compile or submit it to Kubeflow (compile, submit), "
    "check data (data, validate), classify texts with a local endpoint (predict, endpoints) and manage "
    "registered versions (models)."
)


def build_parser() -> argparse.ArgumentParser:
    """Every subcommand with its flags; each sets ``func``, the function that runs it."""
    parser = argparse.ArgumentParser(prog="bertops", description=DESCRIPTION)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    run.add_parser(sub)
    kubeflow.add_parsers(sub)
    schedule.add_parser(sub)
    data.add_parsers(sub)
    state = argparse.ArgumentParser(add_help=False)
    state.add_argument("--state-dir", default=cfg.RegistryConfig.state_dir)
    endpoints.add_parsers(sub, state)
    models.add_parser(sub, state)
    ui.add_parser(sub, state)
    monitor.add_parser(sub)
    score.add_parser(sub, state)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``bertops`` console command."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(name)s %(message)s"
    )
    configure_process()
    try:
        args.func(args)
    except BertopsError as exc:
        # A tracking URI with its token can be part of a message (an MLflow error names the URI).
        print(f"bertops: error: {redact_credentials(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bertops: interrupted", file=sys.stderr)
        return 130
    return 0
