"""The compiled pipeline against the rules of the real KFP backend (kubeflow/pipelines 2.17.0).

No KFP server runs here, so each test encodes one rule read in the backend's source and checks
the compiled IR (and the kfp CLI's own argument parsing) against it:

- backend/src/v2/driver/resolve.go, ``resolveInputs`` / ``resolveInputParameter``: a task's
  inputs are resolved from its parent DAG's execution; a ``componentInputParameter`` that the
  parent DAG does not declare fails the task ("parent DAG does not have input parameter").
  A ParallelFor body is its own DAG (``comp-for-loop-N``). Kubernetes settings taken from
  parameters (``resolveK8sJsonParameter``) resolve the same way.
- backend/src/v2/driver/driver.go, ``initPodSpecPatch``, and resolve.go,
  ``resolvePodSpecInputRuntimeParameter``: a runtime accelerator count is the task input named in
  the placeholder, read with ``GetStringValue()``; a number reads as "" and the pod gets no GPU.
  A DAG input declared STRING is converted to text by ``handleParamTypeValidationAndConversion``.
- backend/src/apiserver/template/v2_template.go, ``validatePipelineJobInputs``: the API server
  refuses a run whose parameter value's JSON kind differs from the root input's declared type.
"""

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from kfp.cli.utils.parsing import parse_parameter_value

from bertops import cluster
from cli.main import main

_PLACEHOLDER = re.compile(r"\{\{\$\.inputs\.parameters\['([^']+)'\]\}\}")
# bertops compile's option sets: the default, the multi-GPU one, the cluster profile.
COMPILE_OPTIONS = {
    "default": [],
    "workspace-pvc": ["--workspace-pvc", "ft-ws"],
    "cluster": ["--target", "cluster", "--workspace-pvc", "ft-ws"],
}


def _compile(tmp_path: Path, *options: str) -> tuple[dict[str, Any], dict[str, Any]]:
    out = tmp_path / "pipeline.yaml"
    assert main(["compile", "--output", str(out), *options]) == 0
    spec, platform = yaml.safe_load_all(out.read_text(encoding="utf-8"))
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def _references(node: Any, key: str) -> list[str]:
    """Every value of ``key`` anywhere below ``node`` (the platform spec nests them in many shapes)."""
    if isinstance(node, dict):
        found = [node[key]] if isinstance(node.get(key), str) else []
        return found + [ref for value in node.values() for ref in _references(value, key)]
    if isinstance(node, list):
        return [ref for value in node for ref in _references(value, key)]
    return []


def unresolvable_inputs(spec: dict[str, Any], platform: dict[str, Any]) -> list[str]:
    """What the KFP driver could not resolve: one line per reference, empty when the IR is sound.

    For every DAG (the root and each component with a ``dag``), every task's parameter and artifact
    inputs, its loop items, the Kubernetes settings of its executor and the placeholders of its
    container resources must resolve from that DAG's declared inputs or the task's own inputs.
    """
    problems: list[str] = []
    executors = spec["deploymentSpec"]["executors"]
    dags = {"root": spec["root"], **{n: c for n, c in spec["components"].items() if "dag" in c}}
    for dag_name, dag in dags.items():
        declared = dag.get("inputDefinitions", {})
        params, artifacts = set(declared.get("parameters", {})), set(declared.get("artifacts", {}))
        tasks = dag["dag"]["tasks"]
        for task_name, task in tasks.items():
            where = f"{dag_name}/{task_name}"
            inputs = task.get("inputs", {})
            task_params = inputs.get("parameters", {})
            for name, binding in task_params.items():
                ref = binding.get("componentInputParameter")
                if ref is not None and ref not in params:
                    problems.append(f"{where}: input {name} <- {ref}, not an input of {dag_name}")
                producer = binding.get("taskOutputParameter", {}).get("producerTask")
                if producer is not None and producer not in tasks:
                    problems.append(f"{where}: input {name} <- task {producer}, not in {dag_name}")
                constant = str(binding.get("runtimeValue", {}).get("constant", ""))
                for placeholder in _PLACEHOLDER.findall(constant):
                    if placeholder not in task_params:
                        problems.append(f"{where}: input {name} uses {placeholder}, not an input of the task")
            for name, binding in inputs.get("artifacts", {}).items():
                ref = binding.get("componentInputArtifact")
                if ref is not None and ref not in artifacts:
                    problems.append(f"{where}: artifact {name} <- {ref}, not an input of {dag_name}")
            items = task.get("parameterIterator", {}).get("items", {}).get("inputParameter")
            if items is not None and items not in task_params:
                problems.append(f"{where}: loop items {items} are not an input of the task")
            label = spec["components"][task["componentRef"]["name"]].get("executorLabel")
            if label is None:
                continue
            for ref in _references(platform.get(label, {}), "componentInputParameter"):
                if ref not in params:
                    problems.append(f"{where}: Kubernetes setting of {label} <- {ref}, not an input of {dag_name}")
            for ref in _references(platform.get(label, {}), "producerTask"):
                if ref not in tasks:
                    problems.append(f"{where}: Kubernetes setting of {label} <- task {ref}, not in {dag_name}")
            resources = executors[label].get("container", {}).get("resources", {})
            for placeholder in _PLACEHOLDER.findall(yaml.safe_dump(resources)):
                if placeholder not in task_params:
                    problems.append(f"{where}: resources of {label} use {placeholder}, not an input of the task")
    return problems


@pytest.mark.parametrize("option_set", sorted(COMPILE_OPTIONS))
def test_every_task_input_is_declared_by_its_parent_dag(tmp_path: Path, option_set: str) -> None:
    """The driver's rule (resolve.go, resolveInputParameter) for every DAG of every compile variant."""
    spec, platform = _compile(tmp_path, *COMPILE_OPTIONS[option_set])
    assert unresolvable_inputs(spec, platform) == []


@pytest.mark.parametrize("option_set", sorted(COMPILE_OPTIONS))
def test_the_finetune_pod_gets_memory_backed_shared_memory(tmp_path: Path, option_set: str) -> None:
    """DataLoader workers pass batches through /dev/shm (64 MiB in a container by default). The
    driver (backend/src/v2/driver/k8s.go, ``GetEmptyDirMounts``) makes each ``emptyDirMounts``
    entry a pod volume with its medium and size limit, mounted in the task's container."""
    _, platform = _compile(tmp_path, *COMPILE_OPTIONS[option_set])
    assert platform["exec-finetune"]["emptyDirMounts"] == [
        {"volumeName": "dshm", "mountPath": "/dev/shm", "medium": "Memory", "sizeLimit": "2Gi"}
    ]


def test_the_checker_sees_an_undeclared_loop_input(tmp_path: Path) -> None:
    """kfp 2.17's set_accelerator_* with run parameters in a ParallelFor: the shape the driver refuses."""
    from kfp import compiler, dsl

    @dsl.component
    def work(x: int) -> int:
        return x

    @dsl.pipeline
    def loop(gpus: str = "1") -> None:
        with dsl.ParallelFor([1, 2]) as item:
            work(x=item).set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(gpus)

    out = tmp_path / "loop.yaml"
    compiler.Compiler().compile(loop, str(out))
    spec = next(yaml.safe_load_all(out.read_text(encoding="utf-8")))
    assert unresolvable_inputs(spec, {}) == [
        "comp-for-loop-2/work: input pipelinechannel--gpus <- pipelinechannel--gpus, not an input of comp-for-loop-2"
    ]


def _string_at(spec: dict[str, Any], dag_name: str, task_name: str, placeholder: str) -> str:
    """The declared type the driver holds ``placeholder`` in when it builds the task's pod."""
    dag = spec["root"] if dag_name == "root" else spec["components"][dag_name]
    binding = dag["dag"]["tasks"][task_name]["inputs"]["parameters"][placeholder]
    if "componentInputParameter" in binding:
        return str(dag["inputDefinitions"]["parameters"][binding["componentInputParameter"]]["parameterType"])
    producer = binding["taskOutputParameter"]
    outputs = spec["components"][dag["dag"]["tasks"][producer["producerTask"]]["componentRef"]["name"]]
    return str(outputs["outputDefinitions"]["parameters"][producer["outputParameterKey"]]["parameterType"])


def test_the_gpu_count_reaches_the_pod_as_a_string(tmp_path: Path) -> None:
    """driver.go reads the accelerator count with GetStringValue(): it must be a STRING all the way."""
    spec, _ = _compile(tmp_path)
    accelerator = spec["deploymentSpec"]["executors"]["exec-finetune"]["container"]["resources"]["accelerator"]
    (count,) = _PLACEHOLDER.findall(accelerator["resourceCount"])
    (kind,) = _PLACEHOLDER.findall(accelerator["resourceType"])
    for placeholder in (count, kind):
        assert _string_at(spec, "comp-for-loop-1", "finetune", placeholder) == "STRING"
        # Into the loop from the root DAG: the loop's declared input, fed by a root input or a task output.
        loop_input = spec["root"]["dag"]["tasks"]["for-loop-1"]["inputs"]["parameters"][placeholder]
        assert "componentInputParameter" in loop_input or "taskOutputParameter" in loop_input
        assert _string_at(spec, "root", "for-loop-1", placeholder) == "STRING"


# The line an operator copies to start a run with the kfp CLI; README.md and the docs may carry
# more, and each of those is checked too.
KFP_RUN_CREATE = (
    "kfp run create -e bertops -f pipelines/compiled/bertops_pipeline.yaml "
    "finetune_gpus=1 finetune_accelerator=nvidia.com/gpu launcher=local max_steps=60 serving_gpus=0"
)
_API_KINDS: dict[str, Any] = {
    "STRING": str,
    "NUMBER_INTEGER": (int, float),
    "NUMBER_DOUBLE": (int, float),
    "BOOLEAN": bool,
    "LIST": list,
    "STRUCT": dict,
}


def _documented_run_create_lines() -> list[str]:
    root = Path(__file__).resolve().parents[1]
    lines = [KFP_RUN_CREATE]
    for doc in (root / "README.md", *sorted((root / "docs").rglob("*.md"))):
        text = doc.read_text(encoding="utf-8").replace("\\\n", " ")
        lines += [line.strip() for line in text.splitlines() if line.strip().startswith("kfp run create")]
    return lines


@pytest.mark.parametrize("option_set", ["default", "cluster"])
def test_kfp_run_create_lines_pass_the_api_servers_type_check(tmp_path: Path, option_set: str) -> None:
    """kfp/cli/run.py `create` JSON-parses each key=value (parse_parameter_value); v2_template.go's
    validatePipelineJobInputs refuses a value whose kind differs from the root input's type."""
    spec, _ = _compile(tmp_path, *COMPILE_OPTIONS[option_set])
    declared = spec["root"]["inputDefinitions"]["parameters"]
    for line in _documented_run_create_lines():
        for arg in (a for a in shlex.split(line) if re.match(r"^\w+=", a)):
            key, value = arg.split("=", 1)
            parsed = parse_parameter_value(value)
            expected = declared[key]["parameterType"]
            kind_ok = isinstance(parsed, _API_KINDS[expected])
            assert kind_ok and not (expected.startswith("NUMBER") and isinstance(parsed, bool)), (
                f"{line}: {key}={value} arrives as {type(parsed).__name__}, the API server wants {expected}"
            )


def _secrets(executor: dict[str, Any]) -> dict[str, set[str]]:
    return {
        s["secretNameParameter"]["runtimeValue"]["constant"]: {e["envVar"] for e in s["keyToEnv"]}
        for s in executor.get("secretAsEnv", [])
    }


# The steps of bertops.cluster's table and their executors in the compiled pipeline.
STEP_EXECUTORS = {"validate": "exec-validate", "gate": "exec-promotion-gate", "register": "exec-register"}


@pytest.mark.parametrize("option_set", sorted(COMPILE_OPTIONS))
def test_each_step_gets_the_secrets_of_the_cluster_table(tmp_path: Path, option_set: str) -> None:
    """kfp-kubernetes secretAsEnv per executor, as bertops.cluster's SecretSpecs say: the gate
    downloads the champion from the artifact store, so it needs that Secret as much as register."""
    _, platform = _compile(tmp_path, *COMPILE_OPTIONS[option_set])
    wanted: dict[str, dict[str, set[str]]] = {executor: {} for executor in STEP_EXECUTORS.values()}
    for secret in cluster.SECRETS:
        for reader in secret.readers:
            if reader in STEP_EXECUTORS:
                wanted[STEP_EXECUTORS[reader]][secret.name] = set(secret.keys)
    assert wanted["exec-promotion-gate"], "the table names no Secret for the gate"
    for executor, secrets in wanted.items():
        assert _secrets(platform.get(executor, {})) == secrets, executor
        assert all(s["optional"] for s in platform[executor]["secretAsEnv"]), executor
    others = set(platform) - set(STEP_EXECUTORS.values())
    assert not any(_secrets(platform[e]) for e in others)


def _run_validate_task(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pod: bool, **overrides: Any) -> str:
    """Run the pipeline's first task alone on kfp.local, as a pod would (KUBERNETES_SERVICE_HOST set)
    or not; returns the one-line error it recorded ('' when it got past its checks)."""
    import inspect

    from kfp import local

    from bertops.config import profile
    from components.validate.component import validate

    if pod:
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    else:
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    error_file = tmp_path / "error.txt"
    monkeypatch.setenv("BERTOPS_ERROR_FILE", str(error_file))
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    arguments = {**profile("local").to_arguments(), "workspace_pvc": "", **overrides}
    wanted = inspect.signature(validate.python_func).parameters
    with pytest.raises(RuntimeError):
        validate(**{k: v for k, v in arguments.items() if k in wanted})
    return error_file.read_text(encoding="utf-8") if error_file.is_file() else ""


def test_the_first_task_refuses_local_only_values_in_a_pod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An uploaded pipeline run with the local defaults would keep its registry in a vanishing pod."""
    error = _run_validate_task(tmp_path, monkeypatch, pod=True, data_path=str(tmp_path / "none"))
    assert error.startswith("validate: this run cannot work in a Kubernetes pod: ") and "\n" not in error
    for fragment in (
        "deploy_target=local",
        "set deploy_target=cluster",
        "tracking_uri=''",
        "set tracking_uri to the MLflow server",
        "state_dir='.bertops'",
        "set an absolute path",
    ):
        assert fragment in error


def test_the_first_task_passes_cluster_settings_in_a_pod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = {"deploy_target": "cluster", "tracking_uri": "http://mlflow.mlflow:5000", "state_dir": str(tmp_path)}
    error = _run_validate_task(tmp_path, monkeypatch, pod=True, data_path=str(tmp_path / "none"), **settings)
    # Past the settings, the task fails on the missing data, as it should.
    assert "cannot work" not in error and "does not exist" in error


def test_the_first_task_refuses_a_training_job_without_the_workspace_volume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    error = _run_validate_task(tmp_path, monkeypatch, pod=False, launcher="TrainJob", finetune_gpus=-1)
    assert "launcher=TrainJob needs the workspace volume" in error
    assert "--workspace-pvc NAME" in error
    assert "finetune_gpus=-1: give a GPU count of 0 or more" in error
