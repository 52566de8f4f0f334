"""GPU smoke run: the training loop and the predictor on one GPU, checked and measured in a few minutes.

    python bench/gpu_smoke.py [--out bench/results/gpu_smoke.json] [--base-batch-size 128]
    python bench/gpu_smoke.py --dry-run     # CPU, toy sizes, device-only checks skipped (CI runs it)

Written for the first GPU machine, which may be bare: PyTorch, transformers, tokenizers and
onnxruntime preinstalled, nothing else, and nothing to install from. So nothing here needs
the project's other dependencies or a download: the models are built from a ``BertConfig``,
the tokenizer is built in code with ``tokenizers``, the data is synthetic and handed to the
loop in memory (the loop's own reader needs pandas and pyarrow), and without matplotlib the
loop's curves are not drawn. Everything else is the project's code: device and precision
choice (``bertops.device``), the training loop (``components.finetune``) and the predictor
(``serving.predictor``).

Rows (name: what passes):

- ``device``: ``pick_device`` finds CUDA; ``precision=auto`` is bf16 from compute capability
  8.0 on, fp16 below.
- ``setup``: the tokenizer and the models are built.
- ``nccl``: a one-rank NCCL group (init, all_reduce, destroy) in a child process. Single-GPU
  training does not need it, so a failure is reported, not failed.
- ``train_bf16``: 30 bf16 steps of a small BERT on a separable synthetic task: finite loss,
  validation accuracy >= 0.75 (chance: 0.5).
- ``train_fp16``: the same in fp16: the grad scaler on, fp32 master weights.
- ``resume``: a run stopped at step 15 and started again resumes there and ends with the
  uninterrupted bf16 run's loss.
- ``compile``: 10 steps with ``compile=true`` where a C compiler is found (else SKIP).
- ``serve_parity``: the predictor's probabilities on the GPU (auto precision) against CPU fp32:
  max abs difference < 2e-2, argmax agreement >= 99%.
- ``onnx_cuda``: not checkable with the CPU build of onnxruntime: reported.
- ``bert_base_train``: BERT-base (hidden 768, 12 layers, from config), length 128, bf16:
  training samples/s through the loop and MFU against the card's dense bf16 peak.
- ``serve_latency``: the predictor on BERT-base at batch 1 and 32 (texts of 128 tokens).

Prints one table and writes the rows as JSON. Exit status 1 when a row failed.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import logging
import math
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):
    # Run as a file: its own folder is first on sys.path; the project's packages are in the root.
    sys.path[0] = str(ROOT)
# After the path fix: run as a file, the project's packages are importable only from here on.
from bertops.env import apply_env_defaults  # noqa: E402

apply_env_defaults()

DEFAULT_OUT = ROOT / "bench" / "results" / "gpu_smoke.json"
PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"

# The goal for the first GPU run (issue 12): BERT-base, length 128, bf16, one H100-class GPU.
GOAL_SAMPLES_PER_S = 4000
MIN_ACCURACY = 0.75
PARITY_MAX_DIFF = 2e-2
PARITY_MIN_AGREEMENT = 0.99
# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s from NVIDIA's datasheets. The first
# entry whose key is in the device name wins, so the more specific names come first.
BF16_PEAK_TFLOPS = (
    ("H200 NVL", 835.0),
    ("H100 NVL", 835.0),
    ("H100 PCIe", 756.0),
    ("H200", 989.0),  # GH200 too
    ("H100", 989.0),  # SXM ("NVIDIA H100 80GB HBM3")
    ("B200", 2250.0),
    ("A100", 312.0),
    ("A30", 165.0),
    ("L40S", 362.0),
    ("L40", 181.0),
    ("A10", 125.0),
    ("L4", 121.0),
)


@dataclass(frozen=True)
class Sizes:
    """Model, data and repetition sizes of one run."""

    # The small BERT of the loop checks.
    hidden: int = 128
    layers: int = 2
    batch: int = 32
    steps: int = 30
    train_rows: int = 960
    val_rows: int = 256
    compile_steps: int = 10
    parity_texts: int = 512
    # The throughput model (BERT-base) and its serving latency.
    base_hidden: int = 768
    base_layers: int = 12
    base_vocab: int = 30522
    base_length: int = 128
    base_batch: int = 128
    base_warmup: int = 10
    base_steps: int = 60
    latency_reps: int = 50


DRY_RUN_SIZES = Sizes(
    hidden=32,
    layers=2,
    batch=16,
    train_rows=480,
    val_rows=128,
    parity_texts=128,
    base_hidden=64,
    base_layers=2,
    base_vocab=1000,
    base_length=32,
    base_batch=8,
    base_warmup=2,
    base_steps=3,
    latency_reps=3,
)


@dataclass
class Row:
    """One line of the table."""

    name: str
    status: str
    detail: str
    seconds: float = 0.0
    data: dict[str, Any] = field(default_factory=dict)


# --- synthetic task, tokenizer and models ----------------------------------------------------

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
CLASS_WORDS = {name: [f"{name}{i}" for i in range(20)] for name in ("blue", "red")}
SHARED_WORDS = [f"w{i}" for i in range(60)]


def synthetic_texts(count: int, seed: int, words: tuple[int, int] = (6, 30)) -> tuple[list[str], list[str]]:
    """Texts and labels of a separable task: each word is one of its class's words with probability 1/2.

    Any class word gives the class away; a text of n words has none with probability 2^-n.
    """
    rng = random.Random(seed)
    names = sorted(CLASS_WORDS)
    texts, labels = [], []
    for i in range(count):
        label = names[i % len(names)]
        length = rng.randint(*words)
        texts.append(
            " ".join(
                rng.choice(CLASS_WORDS[label]) if rng.random() < 0.5 else rng.choice(SHARED_WORDS)
                for _ in range(length)
            )
        )
        labels.append(label)
    return texts, labels


def build_tokenizer() -> Any:
    """A BERT-style WordPiece tokenizer over the task's words, built in code (nothing to download)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = [*SPECIAL_TOKENS, *SHARED_WORDS, *(w for name in sorted(CLASS_WORDS) for w in CLASS_WORDS[name])]
    vocab = {word: i for i, word in enumerate(words)}
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=512,
    )


def save_bert(out_dir: Path, tokenizer: Any, hidden: int, layers: int, vocab_size: int) -> Path:
    """A randomly initialized BERT classifier (heads of 64 dims, FFN 4x hidden) and the tokenizer, saved."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=max(vocab_size, len(tokenizer)),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 64),
        intermediate_size=4 * hidden,
        max_position_embeddings=512,
    )
    # Two labels: the config's default.
    BertForSequenceClassification(config).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


class MemorySplits:
    """Tokenized splits kept in memory and served to the loop in place of its parquet reader."""

    def __init__(self) -> None:
        self.splits: dict[tuple[str, str], tuple[list[list[int]], list[int], list[str]]] = {}

    def add(self, directory: Path, split: str, ids: list[list[int]], labels: list[int], names: list[str]) -> None:
        """Register one split of the (never written) tokenized directory ``directory``."""
        self.splits[(str(directory), split)] = (ids, labels, names)

    def load(self, data_dir: Path, split: str) -> tuple[list[list[int]], list[int], list[str]]:
        """What ``components.tokenize.tokenization.load_tokenized`` returns for a written directory."""
        return self.splits[(str(data_dir), split)]


def use_memory_splits(store: MemorySplits) -> None:
    """Point the loop at ``store`` for its data; skip its curves when matplotlib is missing (a bare machine)."""
    from components.finetune import finetune as loop

    loop.load_tokenized = store.load
    if importlib.util.find_spec("matplotlib") is None:
        loop.plot_curves = lambda history, path: None


# --- the checks --------------------------------------------------------------------------------


def bf16_peak_tflops(device_name: str) -> float | None:
    """The card's dense bf16 peak from ``BF16_PEAK_TFLOPS``; None for a card not in the table."""
    return next((peak for key, peak in BF16_PEAK_TFLOPS if key in device_name), None)


# A one-rank process group in a child process: a hang or crash in NCCL cannot take the run with it.
PROCESS_GROUP_PROBE = r"""
import datetime, json, sys
import torch
import torch.distributed as dist

backend, store = sys.argv[1], sys.argv[2]
device = torch.device("cuda", 0) if backend == "nccl" else torch.device("cpu")
extra = {}
if device.type == "cuda":
    torch.cuda.set_device(device)
    extra["device_id"] = device
dist.init_process_group(
    backend, init_method="file://" + store, rank=0, world_size=1, timeout=datetime.timedelta(seconds=60), **extra
)
tensor = torch.tensor([1.0, 2.0], device=device)
dist.all_reduce(tensor)
summed = tensor.tolist()
dist.destroy_process_group()
nccl = ".".join(map(str, torch.cuda.nccl.version())) if backend == "nccl" else ""
print(json.dumps({"all_reduce": summed, "nccl": nccl}))
"""


class SmokeRun:
    """Runs the rows in order; a row that raises is a FAIL and the others still run."""

    def __init__(self, work: Path, dry_run: bool, sizes: Sizes) -> None:
        self.work, self.dry_run, self.sizes = work, dry_run, sizes
        self.rows: list[Row] = []
        # "cuda" once the device row found one; the loop and predictor are asked for it explicitly.
        self.device_request = "cpu" if dry_run else ""
        self.device_name = "cpu" if dry_run else ""
        self.fast_precision = "bf16"
        self.store = MemorySplits()
        self.small_model = self.small_data = self.base_model = Path()
        self.bf16_dir: Path | None = None
        self.bf16_loss = math.nan
        self.ready = False

    # --- bookkeeping

    def row(
        self,
        name: str,
        check: Callable[[], tuple[str, str, dict[str, Any]]],
        needs_gpu: bool = True,
        needs_models: bool = True,
    ) -> None:
        """Run ``check`` as row ``name``, skipped when the GPU or the models it needs are missing."""
        started = time.perf_counter()
        data: dict[str, Any]
        if needs_models and not self.ready:
            status, detail, data = SKIP, "no models to run (see the setup row)", {}
        elif needs_gpu and not self.device_request:
            status, detail, data = SKIP, "no usable CUDA device (see the device row)", {}
        else:
            try:
                status, detail, data = check()
            except Exception as exc:  # noqa: BLE001 - one broken check must not hide the others
                status, detail = FAIL, f"{type(exc).__name__}: {' '.join(str(exc).split())[:400]}"
                data = {"traceback": traceback.format_exc()}
        self.rows.append(Row(name, status, detail, round(time.perf_counter() - started, 1), data))
        print(f"  {name:<16} {status:<4}  {detail}", file=sys.stderr, flush=True)

    def loop_config(self, **overrides: Any) -> Any:
        """The small BERT's training settings; ``overrides`` are further ``LoopConfig`` fields."""
        from components.finetune.config import LoopConfig

        settings: dict[str, Any] = {
            "base_model": str(self.small_model),
            "batch_size": self.sizes.batch,
            "max_steps": self.sizes.steps,
            "learning_rate": 5e-3,
            "warmup_ratio": 0.1,
            "seed": 0,
            "device": self.device_request,
            "precision": "bf16",
            "checkpoint_every": 0,
            "eval_every": 0,
        }
        settings.update(overrides)
        return LoopConfig(**settings)

    # --- set-up

    def check_setup(self) -> tuple[str, str, dict[str, Any]]:
        """The tokenizer, the small and the BERT-base models (saved), the small task's splits."""
        tokenizer = build_tokenizer()
        s = self.sizes
        self.small_model = save_bert(self.work / "small-bert", tokenizer, s.hidden, s.layers, 0)
        self.base_model = save_bert(self.work / "bert-base", tokenizer, s.base_hidden, s.base_layers, s.base_vocab)
        names = sorted(CLASS_WORDS)
        self.small_data = self.work / "small-data"
        for split, count, seed in (("train", s.train_rows, 1), ("validation", s.val_rows, 2)):
            texts, labels = synthetic_texts(count, seed)
            ids = [list(x) for x in tokenizer(texts, truncation=True, max_length=64)["input_ids"]]
            self.store.add(self.small_data, split, ids, [names.index(label) for label in labels], names)
        use_memory_splits(self.store)
        self.ready = True
        base = "BERT-base" if (s.base_hidden, s.base_layers) == (768, 12) else "toy 'BERT-base'"
        detail = (
            f"tokenizer of {len(tokenizer)} words built in code; small BERT (hidden {s.hidden}, {s.layers} layers) "
            f"and {base} (hidden {s.base_hidden}, {s.base_layers} layers) built from BertConfig and saved"
        )
        return PASS, detail, {"vocab": len(tokenizer)}

    # --- rows

    def check_device(self) -> tuple[str, str, dict[str, Any]]:
        import torch

        from bertops.device import autocast_dtype, pick_device, precision_name

        if self.dry_run:
            device = pick_device("cpu")
            chosen = precision_name(autocast_dtype(device, "auto"))
            return SKIP, f"dry run: no GPU check ({device}: precision auto -> {chosen})", {"precision_auto": chosen}
        auto = pick_device("auto")
        # What a GPU job asks for; raises with the reason when CUDA is unusable.
        device = pick_device("cuda")
        index = device.index if device.index is not None else torch.cuda.current_device()
        name = torch.cuda.get_device_name(index)
        capability = torch.cuda.get_device_capability(index)
        memory = torch.cuda.get_device_properties(index).total_memory / 2**30
        amp = autocast_dtype(device, "auto")
        expected = torch.bfloat16 if capability >= (8, 0) else torch.float16
        self.device_request, self.device_name = "cuda", name
        self.fast_precision = "bf16" if amp == torch.bfloat16 else "fp16"
        data = {
            "name": name,
            "capability": f"{capability[0]}.{capability[1]}",
            "memory_gib": round(memory, 1),
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "auto_device": str(auto),
            "precision_auto": precision_name(amp),
        }
        detail = (
            f"{name} (sm {capability[0]}.{capability[1]}, {memory:.0f} GiB; torch {torch.__version__}, "
            f"CUDA {torch.version.cuda}): device auto -> {auto}, precision auto -> {precision_name(amp)}"
            f" (expected {precision_name(expected)})"
        )
        return (PASS if auto.type == "cuda" and amp == expected else FAIL), detail, data

    def check_process_group(self) -> tuple[str, str, dict[str, Any]]:
        backend = "gloo" if self.dry_run else "nccl"
        store = self.work / f"{backend}-store"
        result: dict[str, Any] | None
        try:
            done = subprocess.run(
                [sys.executable, "-c", PROCESS_GROUP_PROBE, backend, str(store)],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            lines = done.stdout.strip().splitlines()
            result = json.loads(lines[-1]) if done.returncode == 0 and lines else None
            problem = "" if result else (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        except subprocess.TimeoutExpired:
            result, problem = None, "no answer within 120 s"
        if result and result["all_reduce"] != [1.0, 2.0]:
            problem = f"all_reduce over one rank gave {result['all_reduce']}, not [1.0, 2.0]"
            result = None
        if self.dry_run:
            # The probe itself must not rot: over gloo it has to work on any CPU.
            if result is None:
                return FAIL, f"gloo probe on CPU failed: {problem}", {}
            return SKIP, "dry run: no NCCL; the same one-rank probe over gloo on CPU worked", {"backend": "gloo"}
        if result is None:
            # One GPU trains without a process group: reported, so that a multi-GPU run knows.
            return SKIP, f"NCCL did not work here (reported, not failed): {problem}", {"error": problem}
        return PASS, f"NCCL {result['nccl']}: init, all_reduce, destroy on one rank", {"nccl": result["nccl"]}

    def _accuracy_problems(self, result: Any, precision: str, steps: int) -> list[str]:
        problems = []
        if result.precision != precision:
            problems.append(f"trained in {result.precision}, not {precision}")
        if result.steps != steps:
            problems.append(f"{result.steps} steps, not {steps}")
        if not math.isfinite(result.final_train_loss):
            problems.append(f"loss {result.final_train_loss}")
        if result.validation_accuracy < MIN_ACCURACY:
            problems.append(f"validation accuracy {result.validation_accuracy:.3f} < {MIN_ACCURACY}")
        return problems

    def check_train_bf16(self) -> tuple[str, str, dict[str, Any]]:
        from components.finetune.finetune import train

        out = self.work / "bf16"
        result = train(self.small_data, out, self.loop_config())
        problems = self._accuracy_problems(result, "bfloat16", self.sizes.steps)
        if not problems:
            self.bf16_dir, self.bf16_loss = out, result.final_train_loss
        detail = (
            f"{result.steps} steps on {result.device}: final loss {result.final_train_loss:.4f}, validation accuracy "
            f"{result.validation_accuracy:.3f} (chance 0.5, needs >= {MIN_ACCURACY})"
        )
        return (FAIL if problems else PASS), "; ".join([*problems, detail]), _result_data(result)

    def check_train_fp16(self) -> tuple[str, str, dict[str, Any]]:
        import torch

        from components.finetune.distributed import init_distributed, shutdown
        from components.finetune.finetune import TrainingRun

        config = self.loop_config(precision="fp16")
        ctx, device = init_distributed(config.device)
        try:
            run = TrainingRun(self.small_data, self.work / "fp16", config, ctx, device)
            for _ in run.steps():
                pass
            result = run.finish()
        finally:
            shutdown(ctx)
        problems = self._accuracy_problems(result, "float16", self.sizes.steps)
        if not run.scaler.is_enabled():
            problems.append("the grad scaler is off")
        master = sorted({str(p.dtype) for p in run.model.parameters()})
        if master != [str(torch.float32)]:
            problems.append(f"master weights in {', '.join(master)}, not fp32")
        scale = run.scaler.get_scale() if run.scaler.is_enabled() else 0.0
        detail = (
            f"grad scaler on (scale {scale:g} at the end), fp32 master weights; final loss "
            f"{result.final_train_loss:.4f}, validation accuracy {result.validation_accuracy:.3f}"
        )
        return (FAIL if problems else PASS), "; ".join([*problems, detail]), {**_result_data(result), "scale": scale}

    def check_resume(self) -> tuple[str, str, dict[str, Any]]:
        from components.finetune.distributed import init_distributed, shutdown
        from components.finetune.finetune import TrainingRun, train

        if self.bf16_dir is None:
            return SKIP, "needs a passing train_bf16 run to compare with", {}
        stop_at = self.sizes.steps // 2
        # The bf16 run's settings (the fingerprint does not include the checkpoint interval).
        config = self.loop_config(checkpoint_every=stop_at)
        out = self.work / "resume"
        ctx, device = init_distributed(config.device)
        try:
            steps = TrainingRun(self.small_data, out, config, ctx, device).steps()
            for step in steps:
                if step == stop_at:
                    break
            steps.close()  # type: ignore[attr-defined]  # a generator; as if killed after the checkpoint
        finally:
            shutdown(ctx)
        result = train(self.small_data, out, config)
        # CUDA kernels (embedding backward) add in no fixed order: the resumed run matches closely, not exactly.
        tolerance = 2e-2 if self.device_request == "cuda" else 1e-4
        diff = abs(result.final_train_loss - self.bf16_loss)
        problems = []
        if result.resumed_from_step != stop_at:
            problems.append(f"resumed from step {result.resumed_from_step}, not {stop_at}")
        if result.steps != self.sizes.steps:
            problems.append(f"ended at step {result.steps}, not {self.sizes.steps}")
        if not diff <= tolerance:
            problems.append(f"final loss differs from the uninterrupted run by {diff:.2e} > {tolerance:g}")
        detail = (
            f"stopped at step {stop_at}, resumed from step {result.resumed_from_step} to {result.steps}: final loss "
            f"{result.final_train_loss:.4f} vs {self.bf16_loss:.4f} uninterrupted (abs diff {diff:.1e}, "
            f"tolerance {tolerance:g})"
        )
        return (FAIL if problems else PASS), "; ".join([*problems, detail]), {**_result_data(result), "diff": diff}

    def check_compile(self) -> tuple[str, str, dict[str, Any]]:
        import torch

        from bertops.device import compile_toolchain_problem
        from components.finetune.finetune import train

        device = torch.device(self.device_request)
        problem = compile_toolchain_problem(device)
        if self.dry_run:
            found = "a C++ compiler found" if problem is None else problem
            return SKIP, f"dry run: not run on CPU (Inductor's first step takes minutes there); {found}", {}
        if problem:
            return SKIP, problem, {}
        steps = self.sizes.compile_steps
        result = train(self.small_data, self.work / "compiled", self.loop_config(compile=True, max_steps=steps))
        problems = []
        if result.steps != steps or not math.isfinite(result.final_train_loss):
            problems.append(f"{result.steps} steps, final loss {result.final_train_loss}")
        detail = (
            f"{result.steps} compiled steps (kernel build included) in {result.train_seconds:.0f} s, final loss "
            f"{result.final_train_loss:.4f}"
        )
        return (FAIL if problems else PASS), "; ".join([*problems, detail]), _result_data(result)

    def check_serve_parity(self) -> tuple[str, str, dict[str, Any]]:
        import numpy as np

        from serving.config import ServingConfig
        from serving.predictor import TextClassifierPredictor

        if self.bf16_dir is None:
            return SKIP, "needs the model of a passing train_bf16 run", {}
        texts, _ = synthetic_texts(self.sizes.parity_texts, seed=3)
        # The dry run has no GPU: bf16 on CPU takes the served side's place (the same autocast path).
        served = TextClassifierPredictor(
            self.bf16_dir,
            ServingConfig(backend="torch", device=self.device_request, precision="bf16" if self.dry_run else "auto"),
        )
        reference = TextClassifierPredictor(
            self.bf16_dir, ServingConfig(backend="torch", device="cpu", precision="fp32")
        )
        got, want = served.probabilities(texts), reference.probabilities(texts)
        diff = float(np.abs(got - want).max())
        agreement = float((got.argmax(axis=1) == want.argmax(axis=1)).mean())
        ok = diff < PARITY_MAX_DIFF and agreement >= PARITY_MIN_AGREEMENT
        detail = (
            f"{served.backend.name} vs {reference.backend.name}, {len(texts)} texts: max abs diff {diff:.1e} "
            f"(< {PARITY_MAX_DIFF:g}), argmax agreement {agreement:.1%} (>= {PARITY_MIN_AGREEMENT:.0%})"
        )
        return (PASS if ok else FAIL), detail, {"max_abs_diff": diff, "argmax_agreement": agreement}

    def check_onnx_cuda(self) -> tuple[str, str, dict[str, Any]]:
        import onnxruntime as ort

        providers = ort.get_available_providers()
        detail = (
            f"not checked: onnxruntime {ort.__version__} offers {', '.join(providers)}; the server falls back to "
            "PyTorch without the CUDA provider (onnxruntime-gpu, the CUDA image)"
        )
        return SKIP, detail, {"providers": providers}

    def _time_base_train(self) -> tuple[float, int, Any]:
        """Samples/s of the loop on BERT-base-sized full-length rows, its non-embedding parameters, its device."""
        import torch

        from components.finetune.distributed import init_distributed, shutdown
        from components.finetune.finetune import TrainingRun

        s = self.sizes
        length, warmup, measured = s.base_length, s.base_warmup, s.base_steps
        data = self.work / "base-data"
        rng = random.Random(4)
        rows = s.base_batch * (warmup + measured + 1)
        # Full-length rows: every token is real, so samples/s and MFU mean the same at any padding policy.
        ids = [
            [2, *(rng.randrange(len(SPECIAL_TOKENS), s.base_vocab) for _ in range(length - 2)), 3] for _ in range(rows)
        ]
        self.store.add(data, "train", ids, [i % 2 for i in range(rows)], ["a", "b"])
        self.store.add(data, "validation", ids[: s.base_batch], [i % 2 for i in range(s.base_batch)], ["a", "b"])
        config = self.loop_config(
            base_model=str(self.base_model),
            batch_size=s.base_batch,
            # One step past the measured ones, never reached: no final evaluation or checkpoint.
            max_steps=warmup + measured + 1,
            learning_rate=1e-4,
            precision=self.fast_precision,
        )
        ctx, device = init_distributed(config.device)
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        try:
            run = TrainingRun(data, self.work / "base-out", config, ctx, device)
            steps = run.steps()
            started = ended = 0.0
            for step in steps:
                if step == warmup:
                    sync()
                    started = time.perf_counter()
                elif step == warmup + measured:
                    sync()
                    ended = time.perf_counter()
                    break
            steps.close()  # type: ignore[attr-defined]  # a generator: stops its DataLoader workers now
        finally:
            shutdown(ctx)
        rate = measured * s.base_batch / (ended - started)
        # Model FLOPs per token (PaLM, appendix B): 6 x the non-embedding parameters plus the
        # attention scores and weighted sums, 12 x layers x hidden x length, forward and backward.
        params = sum(
            p.numel() for n, p in run.model.named_parameters() if ".embeddings." not in n and "classifier" not in n
        )
        return rate, params, device

    def check_base_train(self) -> tuple[str, str, dict[str, Any]]:
        import torch

        s = self.sizes
        length, measured = s.base_length, s.base_steps
        rate, params, device = self._time_base_train()
        flops_per_token = 6 * params + 12 * s.base_layers * s.base_hidden * length
        tflops = rate * length * flops_per_token / 1e12
        peak = None if self.dry_run else bf16_peak_tflops(self.device_name)
        data_out: dict[str, Any] = {
            "samples_per_second": rate,
            "tflops": tflops,
            "peak_tflops": peak,
            "mfu": tflops / peak if peak else None,
            "goal_samples_per_second": GOAL_SAMPLES_PER_S,
            "precision": self.fast_precision,
            "batch_size": s.base_batch,
            "length": length,
            "non_embedding_params": params,
            "measured_steps": measured,
        }
        if device.type == "cuda":
            data_out["max_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 1)
        model = f"hidden {s.base_hidden}, {s.base_layers} layers, length {length}, batch {s.base_batch}"
        if self.dry_run:
            return SKIP, f"dry run: toy model ({model}) on CPU, code path only ({rate:.0f} samples/s)", data_out
        mfu = (
            f"{tflops / peak:.0%} MFU of {peak:g} TFLOP/s" if peak else f"MFU n/a ({self.device_name} not in the table)"
        )
        goal_mfu = f", ~{GOAL_SAMPLES_PER_S * length * flops_per_token / 1e12 / peak:.0%} MFU" if peak else ""
        verdict = "met" if rate >= GOAL_SAMPLES_PER_S else "NOT met"
        detail = (
            f"BERT-base ({model}), {self.fast_precision}: {rate:,.0f} samples/s, {tflops:.0f} TFLOP/s, {mfu}; "
            f"goal >= {GOAL_SAMPLES_PER_S:,} samples/s{goal_mfu}: {verdict}"
        )
        data_out["goal_met"] = rate >= GOAL_SAMPLES_PER_S
        return PASS, detail, data_out

    def check_serve_latency(self) -> tuple[str, str, dict[str, Any]]:
        from serving.config import ServingConfig
        from serving.predictor import TextClassifierPredictor

        s = self.sizes
        predictor = TextClassifierPredictor(
            self.base_model, ServingConfig(backend="torch", device=self.device_request, max_length=s.base_length)
        )
        # Texts longer than the limit: every one is truncated to base_length tokens.
        texts, _ = synthetic_texts(32, seed=5, words=(2 * s.base_length, 2 * s.base_length))
        for _ in range(3):
            predictor.probabilities(texts)
        data: dict[str, Any] = {"backend": predictor.backend.name, "length": s.base_length}
        parts = []
        for batch in (1, 32):
            seconds = []
            for _ in range(s.latency_reps):
                started = time.perf_counter()
                predictor.probabilities(texts[:batch])  # returns numpy: the device has finished
                seconds.append(time.perf_counter() - started)
            p50, p90 = (1000 * statistics.quantiles(seconds, n=10)[i] for i in (4, 8))
            data[f"batch{batch}_p50_ms"], data[f"batch{batch}_p90_ms"] = p50, p90
            parts.append(f"batch {batch}: p50 {p50:.1f} ms, p90 {p90:.1f} ms")
        detail = f"{predictor.backend.name}, BERT-base-sized model, {s.base_length} tokens per text; {'; '.join(parts)}"
        if self.dry_run:
            return SKIP, f"dry run: toy model on CPU, code path only ({'; '.join(parts)})", data
        return PASS, detail, data

    def run(self) -> None:
        """Every row, in order (later rows use earlier rows' models and findings)."""
        self.row("device", self.check_device, needs_gpu=False, needs_models=False)
        self.row("setup", self.check_setup, needs_gpu=False, needs_models=False)
        self.row("nccl", self.check_process_group)
        self.row("train_bf16", self.check_train_bf16)
        self.row("train_fp16", self.check_train_fp16)
        self.row("resume", self.check_resume)
        self.row("compile", self.check_compile)
        self.row("serve_parity", self.check_serve_parity)
        self.row("onnx_cuda", self.check_onnx_cuda, needs_gpu=False, needs_models=False)
        self.row("bert_base_train", self.check_base_train)
        self.row("serve_latency", self.check_serve_latency)


def _result_data(result: Any) -> dict[str, Any]:
    """A training result's numbers for the JSON, without its history."""
    data = {k: v for k, v in asdict(result).items() if k != "history"}
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in data.items()}


def table(rows: list[Row]) -> str:
    """The rows as a Markdown table."""
    lines = ["| check | status | seconds | detail |", "|---|---|---:|---|"]
    lines += [f"| {r.name} | {r.status} | {r.seconds:.1f} | {r.detail.replace('|', '/')} |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the smoke checks, print the table, write the JSON; 1 when a row failed."""
    from bertops.env import apply_env_defaults

    apply_env_defaults()
    cli = argparse.ArgumentParser(prog="python bench/gpu_smoke.py", description=__doc__.split("\n")[0])
    cli.add_argument("--dry-run", action="store_true", help="CPU, toy sizes, GPU-only checks skipped (for CI)")
    cli.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON result (default: {DEFAULT_OUT})")
    cli.add_argument("--base-batch-size", type=int, default=Sizes.base_batch, help="BERT-base training batch size")
    cli.add_argument("--verbose", action="store_true", help="the loop's and transformers' own logs too")
    args = cli.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    started = time.perf_counter()
    import torch
    import transformers
    from transformers.utils import logging as hf_logging

    if not args.verbose:
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    sizes = DRY_RUN_SIZES if args.dry_run else replace(Sizes(), base_batch=args.base_batch_size)
    print(f"gpu smoke run{' (dry run)' if args.dry_run else ''}: torch {torch.__version__}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="gpu-smoke-") as tmp:
        smoke = SmokeRun(Path(tmp), args.dry_run, sizes)
        smoke.run()
    total = time.perf_counter() - started
    report = {
        "dry_run": args.dry_run,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "device": smoke.device_name or None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "total_seconds": round(total, 1),
        "goal": {"bert_base_bf16_samples_per_second": GOAL_SAMPLES_PER_S},
        "rows": [asdict(r) for r in smoke.rows],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    print(table(smoke.rows))
    failed = [r.name for r in smoke.rows if r.status == FAIL]
    print(
        f"\n{len(smoke.rows)} rows, {len(failed)} failed{': ' + ', '.join(failed) if failed else ''}; "
        f"{total:.0f} s in all; goal: BERT-base length 128 bf16 >= {GOAL_SAMPLES_PER_S:,} samples/s on one "
        f"H100-class GPU (~30% MFU); JSON: {args.out}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
