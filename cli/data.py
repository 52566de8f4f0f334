"""``bertops data`` and ``bertops validate``: the DVC-versioned data and the data gate on any data."""

from __future__ import annotations

import argparse
from pathlib import Path

from bertops import config as cfg
from bertops.errors import BertopsError


def cmd_data(args: argparse.Namespace) -> None:
    """Pull, push or show the status of the default data (DVC)."""
    from bertops import dvc_data

    root = Path.cwd()
    if args.action == "pull" and args.remote:
        dvc_data.pull_from_remote(root / "data", args.remote)
        print(f"data: pulled from DVC remote {args.remote!r}")
    elif args.action == "pull":
        print(f"data: {dvc_data.pull(root)}")
    elif args.action == "push":
        print(dvc_data.push(root, args.remote) or "pushed")
    else:
        print(dvc_data.status(root))


# Where ``bertops validate`` writes under the state directory unless ``--out`` says otherwise: its
# own folder, apart from the pipeline's artifacts (``pipeline_root``) and its drift reference.
VALIDATE_OUT = "validate-cli"


def validate_out(out: str, state_dir: str) -> Path:
    """The directory ``bertops validate`` writes to; ``BertopsError`` for one inside the pipeline's artifacts."""
    state = Path(state_dir)
    chosen = Path(out) if out else state / VALIDATE_OUT
    pipeline_root = (state / "pipeline_root").resolve()
    if chosen.resolve().is_relative_to(pipeline_root):
        raise BertopsError(
            f"--out {chosen} is inside the pipeline's artifacts ({pipeline_root}): the report of a pipeline run "
            f"is never overwritten; leave --out unset (default: {state / VALIDATE_OUT}) or choose another directory"
        )
    return chosen


def cmd_validate(args: argparse.Namespace) -> None:
    """Run the pipeline's validation on a data directory or file and say where the report is."""
    from bertops.dvc_data import data_version
    from components.validate.validate import REFERENCE_PROFILE, ValidationFailed, validate_dataset

    config = cfg.from_namespace(args)
    data_path, out = Path(args.path), validate_out(args.out, config.registry.state_dir)
    profile = Path(config.registry.state_dir) / REFERENCE_PROFILE
    try:
        report = validate_dataset(
            data_path,
            out,
            data_version(data_path),
            config.data.text_column,
            config.data.label_column,
            config.validation,
            profile,
            update_reference=args.update_reference,
        )
    except ValidationFailed as exc:
        raise BertopsError(f"{exc} (report: {out / 'report.html'})") from exc
    print(f"{data_path}: {report.summary()}; report: {out / 'report.html'}, summary: {out / 'report.json'}")


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``data`` and ``validate``."""
    data = sub.add_parser("data", help="DVC-versioned default data: pull, status, push")
    data.add_argument("action", choices=["pull", "status", "push"])
    data.add_argument("--remote", default="", help="DVC remote (default: the local remote; 's3' for S3/MinIO)")
    data.set_defaults(func=cmd_data)

    val = sub.add_parser("validate", help="validate a data directory with the pipeline's expectation suite")
    val.add_argument("path", help="a directory with train/validation/test files, or one .jsonl/.csv/.parquet file")
    val.add_argument(
        "--out",
        default="",
        help=f"where the report and the validated splits go (default: {VALIDATE_OUT} in the state directory, "
        "apart from the pipeline's runs, whose reports it never overwrites)",
    )
    val.add_argument("--update-reference", action="store_true", help="make this data the drift reference if it passes")
    cfg.add_arguments(val, groups=(cfg.DataConfig, cfg.ValidationConfig, cfg.RegistryConfig))
    val.set_defaults(func=cmd_validate)
