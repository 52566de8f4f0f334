"""`bertops compile` writes IR YAML that kfp loads back and that parses strictly as a PipelineSpec."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from google.protobuf import json_format
from kfp import components
from kfp.pipeline_spec import pipeline_spec_pb2

from bertops.cluster import PROFILE_NAMESPACE
from bertops.config import parameter_help, parameter_names
from bertops.images import CPU_IMAGE, CUDA_IMAGE
from cli.main import main
from pipelines.compile import DEFAULT_PARALLELISM

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_compiled_pipeline_loads_and_parses_strictly(tmp_path: Path) -> None:
    out = tmp_path / "pipeline.yaml"
    assert main(["compile", "--output", str(out)]) == 0
    loaded = components.load_component_from_file(str(out))
    assert loaded.name == "bertops-text-classifier"
    spec = json_format.ParseDict(
        next(yaml.safe_load_all(out.read_text())), pipeline_spec_pb2.PipelineSpec(), ignore_unknown_fields=False
    )
    assert set(parameter_names()) <= set(spec.root.input_definitions.parameters)
    tasks = spec.root.dag.tasks
    assert {
        "validate",
        "tokenize",
        "plan-candidates",
        "for-loop-1",
        "select-winner",
        "promotion-gate",
        "register",
    } <= set(tasks)
    assert {"finetune", "evaluate"} <= set(spec.components["comp-for-loop-1"].dag.tasks)
    finetune_container = spec.deployment_spec["executors"]["exec-finetune"]["container"]
    assert finetune_container["image"] == CUDA_IMAGE
    # The deploy step only runs under the gate.
    assert "deploy" in spec.components["comp-condition-2"].dag.tasks


def _run_parameter(binding: dict) -> str:
    """The root pipeline parameter a finetune setting comes from (through the ParallelFor's inputs)."""
    name = binding["componentInputParameter"]
    assert name.startswith("pipelinechannel--"), binding
    return name.removeprefix("pipelinechannel--")


def test_compiled_pipeline_places_finetune_on_gpu_nodes_and_mounts_secrets(tmp_path: Path) -> None:
    out = tmp_path / "pipeline.yaml"
    assert main(["compile", "--output", str(out)]) == 0
    spec, platform = yaml.safe_load_all(out.read_text())
    defaults = {k: v.get("defaultValue") for k, v in spec["root"]["inputDefinitions"]["parameters"].items()}
    # GPU request: count and resource name are run parameters, defaulting to one nvidia.com/gpu;
    # the count reaches the pod as validate's string output (see test_kfp_backend).
    accelerator = spec["deploymentSpec"]["executors"]["exec-finetune"]["container"]["resources"]["accelerator"]
    assert accelerator == {
        "resourceCount": "{{$.inputs.parameters['pipelinechannel--validate-finetune_gpus']}}",
        "resourceType": "{{$.inputs.parameters['pipelinechannel--finetune_accelerator']}}",
    }
    assert (defaults["finetune_gpus"], defaults["finetune_accelerator"]) == (1, "nvidia.com/gpu")
    validate_inputs = spec["root"]["dag"]["tasks"]["validate"]["inputs"]["parameters"]
    assert validate_inputs["finetune_gpus"] == {"componentInputParameter": "finetune_gpus"}
    # Node selector and toleration: run parameters too, defaulting to the GPU node pool.
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    finetune = executors["exec-finetune"]
    assert _run_parameter(finetune["nodeSelector"]["nodeSelectorJson"]) == "finetune_node_selector"
    assert [_run_parameter(t["tolerationJson"]) for t in finetune["tolerations"]] == ["finetune_tolerations"]
    assert defaults["finetune_node_selector"] == {"nvidia.com/gpu.present": "true"}
    assert defaults["finetune_tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    # Without --workspace-pvc nothing is mounted and checkpoints live only as long as the task.
    assert "pvcMount" not in finetune
    assert defaults["checkpoint_dir"] == ""
    # `bertops compile` retries a failed (preempted) finetune task.
    loop_task = spec["components"]["comp-for-loop-1"]["dag"]["tasks"]["finetune"]
    assert loop_task["retryPolicy"]["maxRetryCount"] == 2
    validate_secret = executors["exec-validate"]["secretAsEnv"][0]
    assert validate_secret["secretNameParameter"]["runtimeValue"]["constant"] == "bertops-dvc-s3"
    assert {e["envVar"] for e in validate_secret["keyToEnv"]} == {
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_ENDPOINT_URL",
    }
    register_secret = executors["exec-register"]["secretAsEnv"][0]
    assert register_secret["secretNameParameter"]["runtimeValue"]["constant"] == "bertops-s3"
    gate_secret = executors["exec-promotion-gate"]["secretAsEnv"][0]
    assert gate_secret["secretNameParameter"]["runtimeValue"]["constant"] == "bertops-s3"
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images == {CPU_IMAGE, CUDA_IMAGE}


def test_workspace_pvc_mounts_the_volume_for_checkpoints_and_training_jobs(tmp_path: Path) -> None:
    out = tmp_path / "pipeline.yaml"
    assert main(["compile", "--output", str(out), "--workspace-pvc", "ft-ws", "--finetune-retries", "0"]) == 0
    spec, platform = yaml.safe_load_all(out.read_text())
    finetune = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-finetune"]
    assert finetune["pvcMount"] == [
        {"constant": "ft-ws", "mountPath": "/workspace", "pvcNameParameter": {"runtimeValue": {"constant": "ft-ws"}}}
    ]
    defaults = {k: v.get("defaultValue") for k, v in spec["root"]["inputDefinitions"]["parameters"].items()}
    assert defaults["checkpoint_dir"] == "/workspace/checkpoints"
    assert defaults["launcher"] == "local"
    loop_task = spec["components"]["comp-for-loop-1"]["dag"]["tasks"]["finetune"]
    assert "retryPolicy" not in loop_task
    # The finetune task gets the volume's name (for the job's pods), the run name and its candidate id.
    inputs = loop_task["inputs"]["parameters"]
    assert inputs["workspace_pvc"]["runtimeValue"]["constant"] == "ft-ws"
    assert inputs["run_name"]["runtimeValue"]["constant"] == "{{$.pipeline_job_name}}"
    assert inputs["candidate_id"]["parameterExpressionSelector"] == 'parseJson(string_value)["id"]'
    # Its share of one machine's CPUs comes from the plan, which knows how many train side by side.
    assert inputs["cpu_sharing"]["parameterExpressionSelector"] == 'parseJson(string_value)["cpu_sharing"]'
    plan_inputs = spec["root"]["dag"]["tasks"]["plan-candidates"]["inputs"]["parameters"]
    assert plan_inputs["parallelism"] == {"runtimeValue": {"constant": DEFAULT_PARALLELISM}}
    assert _run_parameter(inputs["launcher"]) == "launcher"
    # The first task knows the volume, so it refuses a TrainJob launcher in a pipeline without one.
    validate_inputs = spec["root"]["dag"]["tasks"]["validate"]["inputs"]["parameters"]
    assert validate_inputs["workspace_pvc"] == {"runtimeValue": {"constant": "ft-ws"}}
    assert validate_inputs["launcher"] == {"componentInputParameter": "launcher"}


def _defaults(spec: dict) -> dict:
    return {k: v.get("defaultValue") for k, v in spec["root"]["inputDefinitions"]["parameters"].items()}


def test_the_default_compile_keeps_local_defaults_and_the_cluster_target_compiles_cluster_ones(tmp_path: Path) -> None:
    local, cluster = tmp_path / "local.yaml", tmp_path / "cluster.yaml"
    assert main(["compile", "--output", str(local)]) == 0
    assert main(["compile", "--output", str(cluster), "--target", "cluster"]) == 0
    local_defaults = _defaults(next(yaml.safe_load_all(local.read_text())))
    cluster_defaults = _defaults(next(yaml.safe_load_all(cluster.read_text())))
    assert (local_defaults["deploy_target"], local_defaults["state_dir"], local_defaults["data_path"]) == (
        "local",
        ".bertops",
        "data",
    )
    assert cluster_defaults["deploy_target"] == "cluster"
    assert cluster_defaults["namespace"] == local_defaults["namespace"] == PROFILE_NAMESPACE
    assert cluster_defaults["data_path"] == "/home/bertops/project/data"
    assert cluster_defaults["data_remote"] == "s3"
    assert cluster_defaults["state_dir"].startswith("/")
    # No registry can live in a pod: the run must name one, and validate refuses to start without it.
    assert cluster_defaults["tracking_uri"] == ""
    changed = {k for k in local_defaults if local_defaults[k] != cluster_defaults[k]}
    assert changed == {"deploy_target", "data_path", "data_remote", "state_dir"}


def test_the_deploy_step_gets_mode_gpus_resources_and_lineage_as_run_parameters(tmp_path: Path) -> None:
    out = tmp_path / "pipeline.yaml"
    assert main(["compile", "--output", str(out), "--target", "cluster"]) == 0
    spec = next(yaml.safe_load_all(out.read_text()))
    defaults = _defaults(spec)
    assert defaults["deployment_mode"] == "Serverless"
    assert defaults["serving_gpus"] == 1
    assert defaults["serving_resources"] == {
        "requests": {"cpu": "1", "memory": "4Gi"},
        "limits": {"cpu": "4", "memory": "8Gi"},
    }
    declared = spec["root"]["inputDefinitions"]["parameters"]
    assert declared["serving_resources"]["parameterType"] == "STRUCT"
    deploy = spec["components"]["comp-condition-2"]["dag"]["tasks"]["deploy"]["inputs"]["parameters"]
    for name in ("deployment_mode", "serving_gpus", "serving_resources", "git_commit", "namespace"):
        assert deploy[name] == {"componentInputParameter": f"pipelinechannel--{name}"}
    assert deploy["pipeline_run"] == {"runtimeValue": {"constant": "{{$.pipeline_job_name}}"}}


def test_negative_retries_are_refused(tmp_path: Path, capsys) -> None:
    assert main(["compile", "--output", str(tmp_path / "p.yaml"), "--finetune-retries", "-1"]) != 0
    assert "--finetune-retries must be 0 or more" in capsys.readouterr().err


@pytest.mark.parametrize("target", ["local", "cluster"])
def test_every_run_parameter_is_described_on_the_run_form_from_the_config_help(tmp_path: Path, target: str) -> None:
    """The Kubeflow UI's run form shows each parameter's description: the config field's help text."""
    from pipelines.training_pipeline import EXTRA_HELP

    out = tmp_path / "pipeline.yaml"
    assert main(["compile", "--output", str(out), "--target", target]) == 0
    declared = next(yaml.safe_load_all(out.read_text()))["root"]["inputDefinitions"]["parameters"]
    undescribed = sorted(name for name, spec in declared.items() if not spec.get("description", "").strip())
    assert not undescribed, f"{len(undescribed)} of {len(declared)} parameters have no description: {undescribed}"
    expected = parameter_help() | EXTRA_HELP
    assert set(declared) == set(expected)
    assert {name: spec["description"] for name, spec in declared.items()} == expected


def _compile_in_a_fresh_process(out: Path, seed: str, *args: str) -> bytes:
    # kfp's header changed with each process's string hashing: each compile gets its own seed.
    env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(REPO_ROOT)}
    subprocess.run(
        [sys.executable, "-m", "cli", "compile", "--output", str(out), *args],
        check=True,
        capture_output=True,
        cwd=REPO_ROOT,
        env=env,
        timeout=300,
    )
    return out.read_bytes()


@pytest.mark.parametrize("target", ["local", "cluster"])
def test_compiling_twice_gives_byte_identical_yaml(tmp_path: Path, target: str) -> None:
    first = _compile_in_a_fresh_process(tmp_path / "a.yaml", "1", "--target", target, "--workspace-pvc", "ws")
    second = _compile_in_a_fresh_process(tmp_path / "b.yaml", "2", "--target", target, "--workspace-pvc", "ws")
    assert first == second
    header = [line for line in first.decode().splitlines() if line.startswith("#")]
    # The header says integer defaults as integers, and struct defaults with sorted keys.
    assert "#    batch_size: int [Default: 16]" in header
    assert "#    serving_resources: dict [Default: {'limits': {'cpu': '4', 'memory': '8Gi'}, " in "\n".join(header)


def test_tasks_have_display_names_and_the_candidate_loop_a_name_and_a_parallelism(tmp_path: Path) -> None:
    out = tmp_path / "pipeline.yaml"
    assert main(["compile", "--output", str(out), "--parallelism", "3"]) == 0
    spec = next(yaml.safe_load_all(out.read_text()))
    tasks = spec["root"]["dag"]["tasks"]
    shown = {name: task["taskInfo"]["name"] for name, task in tasks.items()}
    assert shown == {
        "validate": "Validate data",
        "tokenize": "Tokenize",
        "plan-candidates": "Plan candidates",
        "for-loop-1": "candidates",
        "select-winner": "Select the winner",
        "promotion-gate": "Promotion gate",
        "register": "Register",
        "condition-2": "promoted",
    }
    assert tasks["for-loop-1"]["iteratorPolicy"] == {"parallelismLimit": 3}
    loop = spec["components"]["comp-for-loop-1"]["dag"]["tasks"]
    assert {name: task["taskInfo"]["name"] for name, task in loop.items()} == {
        "finetune": "Fine-tune",
        "evaluate": "Evaluate",
    }
    assert spec["components"]["comp-condition-2"]["dag"]["tasks"]["deploy"]["taskInfo"]["name"] == "Deploy"
    assert main(["compile", "--output", str(out)]) == 0
    default_loop = next(yaml.safe_load_all(out.read_text()))["root"]["dag"]["tasks"]["for-loop-1"]
    assert default_loop["iteratorPolicy"] == {"parallelismLimit": DEFAULT_PARALLELISM}


def test_the_compiled_pipeline_records_the_commit_it_was_compiled_from(tmp_path: Path) -> None:
    """A run started from the uploaded YAML (no git_commit given) still knows its code."""
    out = tmp_path / "pipeline.yaml"
    assert main(["compile", "--output", str(out)]) == 0
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=REPO_ROOT
    ).stdout.strip()
    assert _defaults(next(yaml.safe_load_all(out.read_text())))["git_commit"].startswith(head)


def test_negative_parallelism_is_refused(tmp_path: Path, capsys) -> None:
    assert main(["compile", "--output", str(tmp_path / "p.yaml"), "--parallelism", "-1"]) != 0
    assert "--parallelism must be 0 (no limit) or more" in capsys.readouterr().err
