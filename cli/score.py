"""``bertops score FILE|DIR``: classify a file or folder of texts with a registered version, in bulk."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from components.batch_score.config import BatchScoreConfig

# Where `bertops score` writes when no --out is given: <state dir>/scores/<input name>.
SCORES_DIR = "scores"


def _help(name: str) -> str:
    """A setting's help text and default, from ``BatchScoreConfig``."""
    found = next(f for f in dataclasses.fields(BatchScoreConfig) if f.name == name)
    return f"{found.metadata['help']} (default: {found.default!r})"


def default_out(state_dir: str, data_path: str) -> Path:
    """``<state_dir>/scores/<input file or folder name without its extension>``."""
    return Path(state_dir) / SCORES_DIR / Path(data_path).resolve().stem


class _Bar:
    """A terminal progress bar over rows, started at the rows an earlier run already scored."""

    def __init__(self) -> None:
        self.bar: Any = None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done, unit="rows", desc="scoring", dynamic_ncols=True)
        else:
            self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def cmd_score(args: argparse.Namespace) -> None:
    """Score the file or folder and print where the predictions and the summary are."""
    from components.batch_score.batch_score import SUMMARY_MD, batch_score
    from components.batch_score.chunks import PREDICTIONS

    config = BatchScoreConfig(
        data_path=args.path,
        text_column=args.text_column,
        model_name=args.model_name,
        model_version=args.version,
        state_dir=args.state_dir,
        tracking_uri=args.tracking_uri,
        batch_size=args.batch_size,
        chunk_rows=args.chunk_rows,
    )
    out = Path(args.out) if args.out else default_out(args.state_dir, args.path)
    bar = _Bar()
    try:
        summary = batch_score(config, out, bar)
    finally:
        bar.close()
    mix = ", ".join(f"{label} {share:.0%}" for label, share in summary["label_shares"].items())
    print(
        f"{summary['rows']} rows scored with {summary['model_name']} v{summary['model_version']}: {mix}; "
        f"mean confidence {summary['mean_confidence']:.3f}"
    )
    print(f"predictions: {out / PREDICTIONS}, summary: {out / SUMMARY_MD}")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], state: argparse.ArgumentParser) -> None:
    """``score``; ``state`` carries ``--state-dir``."""
    score = sub.add_parser(
        "score",
        parents=[state],
        help="classify a file or folder of texts with the champion (or --version) into Parquet, resumably",
    )
    score.add_argument(
        "path", metavar="FILE|DIR", nargs="?", default=BatchScoreConfig.data_path, help=_help("data_path")
    )
    score.add_argument("--version", default="", help=_help("model_version"))
    score.add_argument(
        "--out",
        default="",
        help=f"output folder; rerun with the same one to finish a killed run (default: STATE_DIR/{SCORES_DIR}/NAME)",
    )
    score.add_argument("--batch-size", type=int, default=BatchScoreConfig.batch_size, help=_help("batch_size"))
    score.add_argument("--chunk-rows", type=int, default=BatchScoreConfig.chunk_rows, help=_help("chunk_rows"))
    score.add_argument("--text-column", default=BatchScoreConfig.text_column, help=_help("text_column"))
    score.add_argument("--model-name", default=BatchScoreConfig.model_name, help=_help("model_name"))
    score.add_argument("--tracking-uri", default="", help=_help("tracking_uri"))
    score.set_defaults(func=cmd_score)
