"""The training loop's CUDA branches, forced on a CPU machine.

No GPU runs these tests. Each one patches the ``torch.cuda`` functions the code consults with
what PyTorch 2.13 returns on the GPU in question (source read in the installed torch, cited per
test) and asserts on the behaviour: the device and dtype chosen, what is refused and with
which one-line message, what a job or pod asks for.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import torch.distributed as dist

from bertops.device import DeviceClock, autocast_dtype, compile_toolchain_problem, pick_device
from bertops.errors import BertopsError
from components.finetune.__main__ import main as finetune_main
from components.finetune.config import LoopConfig
from components.finetune.distributed import DistContext, init_distributed
from components.finetune.finetune import TrainingRun, train


def fake_gpu(monkeypatch: pytest.MonkeyPatch, capability: tuple[int, int] = (9, 0)) -> None:
    """Make ``torch.cuda`` report one visible GPU of ``capability`` (nothing is ever run on it).

    The functions patched are the ones torch/cuda/__init__.py's ``is_available`` and
    ``is_bf16_supported`` read; ``_check_bf16_tensor_supported`` is the emulation probe, which
    succeeds on every CUDA GPU (a T4 can hold bf16 tensors).
    """
    major, minor = capability
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(
        torch.cuda, "get_device_properties", lambda device=None: SimpleNamespace(major=major, minor=minor)
    )
    monkeypatch.setattr(torch.cuda, "_check_bf16_tensor_supported", lambda device: True)


def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


# --- 7: automatic precision ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("capability", "expected"),
    [((7, 5), torch.float16), ((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16)],
)
def test_auto_precision_is_fp16_on_a_t4_and_bf16_from_ampere_on(
    monkeypatch: pytest.MonkeyPatch, capability: tuple[int, int], expected: torch.dtype
) -> None:
    """torch/cuda/__init__.py, ``is_bf16_supported(including_emulation=True)``: capability < 8 still
    answers True when a bf16 tensor can be created, which a T4 (7.5) can; every bf16 op there is
    emulated. Only ``including_emulation=False`` answers by the capability alone."""
    fake_gpu(monkeypatch, capability)
    assert autocast_dtype(torch.device("cuda"), "auto") == expected
    # What was asked explicitly is kept.
    assert autocast_dtype(torch.device("cuda"), "bf16") == torch.bfloat16
    assert autocast_dtype(torch.device("cuda"), "fp32") is None


# --- 4: a GPU that was asked for ---------------------------------------------------------------


def test_asking_for_cuda_without_one_fails_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch/cuda/__init__.py, ``is_available``: False with an old driver or a CPU-only build; only
    ``auto`` may then fall back to the CPU."""
    no_cuda(monkeypatch)
    assert pick_device("auto") == torch.device("cpu")
    with pytest.raises(BertopsError, match=r"device=cuda was asked for, but CUDA is not available") as caught:
        pick_device("cuda")
    assert "\n" not in str(caught.value)
    fake_gpu(monkeypatch)
    assert pick_device("cuda") == torch.device("cuda")


def test_the_cli_with_device_cuda_stops_before_training_on_a_cpu_machine(
    monkeypatch: pytest.MonkeyPatch, tokenized_small: Path, tiny_model: Path, tmp_path: Path
) -> None:
    no_cuda(monkeypatch)
    args = ["--tokenized", str(tokenized_small), "--out", str(tmp_path / "m"), "--base-model", str(tiny_model)]
    with pytest.raises(SystemExit) as caught:
        finetune_main([*args, "--device", "cuda", "--max-steps", "1"])
    assert caught.value.code == 2
    assert not (tmp_path / "m").exists()


def test_the_finetune_task_of_a_pod_given_gpus_requires_cuda(
    monkeypatch: pytest.MonkeyPatch, tokenized_small: Path, tiny_model: Path, tmp_path: Path
) -> None:
    """NVIDIA's images set NVIDIA_VISIBLE_DEVICES=all whether or not a GPU was given, so the task is
    told the pod's GPU count instead. Local runners ignore resource requests: off Kubernetes the
    same count leaves the device on ``auto``."""
    from kfp.dsl import HTML, Dataset, Metrics, Model

    from components.finetune.component import finetune

    no_cuda(monkeypatch)

    def run(pod_gpus: str, out: Path) -> None:
        finetune.python_func(
            tokenized=Dataset(name="tokenized", uri=str(tokenized_small)),
            base_model=str(tiny_model),
            batch_size=8,
            epochs=1,
            max_steps=1,
            learning_rate=1e-3,
            warmup_ratio=0.0,
            weight_decay=0.0,
            seed=0,
            namespace="bertops",
            model=Model(name="model", uri=str(out)),
            metrics=Metrics(name="metrics", uri=str(out) + ".metrics"),
            curves=HTML(name="curves", uri=str(out) + ".curves.html"),
            pod_gpus=pod_gpus,
        )

    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    with pytest.raises(BertopsError, match="device=cuda was asked for, but CUDA is not available"):
        run("1", tmp_path / "pod")
    run("0", tmp_path / "pod-cpu")
    assert (tmp_path / "pod-cpu" / "training.json").is_file()
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST")
    run("1", tmp_path / "local")
    assert (tmp_path / "local" / "training.json").is_file()


# --- under torchrun: the GPU is chosen before NCCL starts ----------------------------------------


def test_each_rank_takes_its_local_gpu_before_the_nccl_group_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch/distributed/distributed_c10d.py, ``barrier``: without ``device_ids`` or a bound
    ``device_id``, NCCL uses "the device under current context"; a rank that has not called
    ``set_device`` first puts its communicator (and a context) on GPU 0, beside rank 0's."""
    fake_gpu(monkeypatch)
    calls: list[tuple[str, Any]] = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.append(("set_device", device)))
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda backend=None, **kw: calls.append(("init", backend)))
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    ctx, device = init_distributed("cuda")
    assert device == torch.device("cuda", 1)
    assert (ctx.rank, ctx.world_size, ctx.local_rank, ctx.owns_group) == (3, 4, 1, True)
    assert calls == [("set_device", torch.device("cuda", 1)), ("init", "nccl")]


# --- 1: torch.compile needs a compiler at run time ---------------------------------------------


def test_compile_on_cuda_without_a_c_compiler_is_refused_up_front(
    monkeypatch: pytest.MonkeyPatch, tokenized_small: Path, tiny_model: Path, tmp_path: Path
) -> None:
    """triton/runtime/build.py, ``_build``: the launcher of every kernel is compiled with ``$CC``,
    else ``gcc``, else ``clang``, else "Failed to find C compiler" at the first step."""
    fake_gpu(monkeypatch)
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    config = LoopConfig(base_model=str(tiny_model), device="cuda", compile=True, max_steps=1)
    with pytest.raises(BertopsError, match=r"compile=true on cuda needs gcc or clang on PATH") as caught:
        train(tokenized_small, tmp_path / "m", config)
    assert "\n" not in str(caught.value)


def test_the_compiler_lookup_follows_triton_and_inductor(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Triton honours ``$CC`` (build.py); Inductor's CPU code generator ``$CXX`` or ``g++``
    (torch/_inductor/config.py, ``cpp.cxx``)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.delenv("CXX", raising=False)
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert "gcc or clang" in str(compile_toolchain_problem(cuda))
    assert "needs g++" in str(compile_toolchain_problem(cpu))
    for name in ("clang", "g++"):
        (bin_dir / name).write_text("#!/bin/sh\n")
        (bin_dir / name).chmod(0o755)
    assert compile_toolchain_problem(cuda) is None and compile_toolchain_problem(cpu) is None
    monkeypatch.setenv("CC", "/opt/none/cc")
    assert "CC=/opt/none/cc" in str(compile_toolchain_problem(cuda))


# --- 5: fp32 master weights whatever the checkpoint's dtype --------------------------------------


def test_an_fp16_checkpoint_trains_with_fp32_weights(tokenized_small: Path, tiny_model: Path, tmp_path: Path) -> None:
    """transformers/modeling_utils.py, ``from_pretrained``: ``dtype`` defaults to "auto" in
    transformers 5, and ``_get_dtype`` then takes the config's (or the weights') dtype: an fp16
    checkpoint loads as fp16. GradScaler.unscale_ then raises "Attempting to unscale FP16
    gradients" and bf16 autocast trains half-precision weights."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    half = tmp_path / "fp16-base"
    AutoModelForMaskedLM.from_pretrained(tiny_model, dtype=torch.float16).save_pretrained(half)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(half)
    assert AutoModelForMaskedLM.from_pretrained(half).dtype == torch.float16  # the default keeps fp16

    config = LoopConfig(base_model=str(half), max_steps=2, learning_rate=1e-3)
    run = TrainingRun(tokenized_small, tmp_path / "m", config, DistContext(), torch.device("cpu"))
    assert {p.dtype for p in run.model.parameters()} == {torch.float32}
    for _ in run.steps():
        pass
    assert {p.dtype for p in run.model.parameters()} == {torch.float32}


# --- 6: a checkpoint of another resolved precision ------------------------------------------------


def test_a_checkpoint_of_another_resolved_precision_is_not_resumed(
    monkeypatch: pytest.MonkeyPatch, tokenized_small: Path, tiny_model: Path, tmp_path: Path
) -> None:
    """torch/amp/grad_scaler.py, ``GradScaler.load_state_dict``: a bf16 run's scaler is disabled
    and saves ``{}``; an fp16 run's enabled scaler raises "The source state dict is empty" on it.
    The same ``precision=auto`` resolves to bf16 on one machine and fp32 or fp16 on another, so
    the resolved precision is part of the checkpoint's settings; a mismatch is refused with the
    one-line error every other changed setting gets."""
    out = tmp_path / "m"
    # A CPU with native bf16 (torch/cpu's feature probes) resolves "auto" to bf16.
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    first = train(tokenized_small, out, LoopConfig(base_model=str(tiny_model), max_steps=2, checkpoint_every=1))
    assert first.precision == "bfloat16"
    monkeypatch.undo()

    for precision in ("fp16", "fp32"):
        config = LoopConfig(base_model=str(tiny_model), max_steps=2, checkpoint_every=1, precision=precision)
        with pytest.raises(BertopsError, match=r"other settings \(precision\)"):
            train(tokenized_small, out, config)


# --- 10: step timing on an asynchronous device --------------------------------------------------


def test_the_clock_waits_for_the_gpu_only_where_a_stretch_starts_and_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch/cuda/__init__.py, ``synchronize``: CUDA calls return once queued, so a host clock read
    without it measures the queueing. The loop calls ``start()`` before every step and ``stop()``
    at evaluations, checkpoints and progress reports only."""
    synced: list[Any] = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: synced.append(device))
    gpu = torch.device("cuda", 0)
    clock = DeviceClock(gpu)
    for _ in range(50):  # fifty steps
        clock.start()
    assert synced == [gpu]  # once, at the start of the stretch
    clock.stop()
    clock.stop()
    assert synced == [gpu, gpu] and clock.seconds > 0

    cpu_clock = DeviceClock(torch.device("cpu"))
    cpu_clock.start()
    cpu_clock.stop()
    assert synced == [gpu, gpu]  # CPU work is synchronous: nothing to wait for


def test_the_callers_time_between_steps_is_left_out(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    clock = DeviceClock(torch.device("cuda", 0))
    clock.start()
    with clock.away():
        time.sleep(0.3)
    clock.stop()
    assert clock.seconds < 0.2


# --- 12: a divergence every rank agrees on ------------------------------------------------------

# Rank 1's loss turns NaN from its third training forward on; rank 0's stays finite at that step.
DIVERGING_RANK = """
import math, os, sys
from transformers import AutoModelForSequenceClassification

from components.finetune.__main__ import main

load = AutoModelForSequenceClassification.from_pretrained
forwards = []

def poisoned(output):
    forwards.append(1)
    if len(forwards) >= 3:
        output.loss = output.loss * math.nan
    return output

def load_and_poison(*args, **kwargs):
    model = load(*args, **kwargs)
    if os.environ["RANK"] == "1":
        model.register_forward_hook(lambda m, i, out: poisoned(out) if out.loss is not None else out)
    return model

AutoModelForSequenceClassification.from_pretrained = load_and_poison
main(sys.argv[1:])
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_divergence_seen_by_one_rank_stops_every_rank(
    tokenized_small: Path, tiny_model: Path, tmp_path: Path
) -> None:
    """Two ranks as two separate processes (as on two nodes, where no torchrun agent kills the
    others): a rank raising alone leaves the other in its next collective (NCCL: until the
    process group's timeout; gloo: a connection error). Both must stop with the divergence
    error themselves, promptly."""
    driver = tmp_path / "driver.py"
    driver.write_text(DIVERGING_RANK)
    args = [
        *("--tokenized", str(tokenized_small), "--out", str(tmp_path / "m"), "--base-model", str(tiny_model)),
        *("--batch-size", "8", "--max-steps", "20", "--checkpoint-every", "0", "--device", "cpu"),
    ]
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "WORLD_SIZE": "2",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
    }
    ranks = [
        subprocess.Popen(
            [sys.executable, str(driver), *args],
            env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    errors = []
    try:
        for process in ranks:
            _, err = process.communicate(timeout=180)
            errors.append(err)
    finally:
        for process in ranks:
            if process.poll() is None:
                process.kill()
                process.wait()
    for rank, (process, err) in enumerate(zip(ranks, errors, strict=True)):
        assert process.returncode == 2, f"rank {rank}: {err[-2000:]}"
        assert f"finetune[rank {rank}] ERROR training diverged at step 3" in err, err[-2000:]


def test_native_bf16_comes_from_the_cpus_feature_bits_not_the_dispatch_level(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch/cpu/__init__.py: ``_is_amx_tile_supported`` and ``_is_avx512_bf16_supported`` read CPUID;
    ``torch.backends.cpu.get_cpu_capability()`` says "AVX512" on an AMX Xeon. ``auto`` follows the bits."""
    from bertops.device import cpu_has_native_bf16

    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    for amx, avx512_bf16, native in ((True, False, True), (False, True, True), (False, False, False)):
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda amx=amx: amx, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda b=avx512_bf16: b, raising=False)
        assert cpu_has_native_bf16() is native
        assert autocast_dtype(torch.device("cpu")) == (torch.bfloat16 if native else None)
