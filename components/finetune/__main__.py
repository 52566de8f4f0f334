"""Command line of the fine-tuning loop, for ``torchrun`` and the Kubeflow Trainer's pods.

    python -m components.finetune --tokenized DIR --out DIR [--max-steps 60 ...]
    python -m torch.distributed.run --nproc-per-node 2 -m components.finetune --tokenized DIR --out DIR

Every ``LoopConfig`` field is a flag. Rank 0 logs at INFO, the other ranks only warnings.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from bertops.config import add_dataclass_arguments
from bertops.env import configure_process
from bertops.errors import BertopsError
from components.finetune.config import LoopConfig
from components.finetune.finetune import train


def parser() -> argparse.ArgumentParser:
    """``--tokenized``, ``--out`` and one flag per ``LoopConfig`` field."""
    cli = argparse.ArgumentParser(prog="python -m components.finetune", description=__doc__.split("\n")[0])
    cli.add_argument("--tokenized", type=Path, required=True, help="output directory of the tokenize step")
    cli.add_argument("--out", type=Path, required=True, help="where the fine-tuned model is saved")
    add_dataclass_arguments(cli, LoopConfig, title="training")
    return cli


def main(argv: list[str] | None = None) -> None:
    """Parse the flags and train; a ``BertopsError`` exits with status 2 and one line."""
    args = vars(parser().parse_args(argv))
    tokenized, out = args.pop("tokenized"), args.pop("out")
    main_rank = os.environ.get("RANK", "0") == "0"
    logging.basicConfig(
        level=logging.INFO if main_rank else logging.WARNING,
        format=f"%(asctime)s finetune[rank {os.environ.get('RANK', '0')}] %(levelname)s %(message)s",
    )
    configure_process()
    try:
        train(tokenized, out, LoopConfig(**args))
    except BertopsError as exc:
        logging.getLogger("bertops.finetune").error("%s", exc)
        raise SystemExit(2) from exc


if __name__ == "__main__":
    main()
