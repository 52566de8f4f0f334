"""`bertops compile` writes IR YAML that kfp loads back and that parses strictly as a PipelineSpec."""

from pathlib import Path

import yaml
from google.protobuf import json_format
from kfp import components
from kfp.pipeline_spec import pipeline_spec_pb2

from bertops.cli import main
from bertops.config import parameter_names


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
    assert finetune_container["resources"]["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert finetune_container["image"].startswith("ghcr.io/bertops/bertops-cuda:")
    # The deploy step only runs under the gate.
    assert "deploy" in spec.components["comp-condition-2"].dag.tasks


def test_compiled_pipeline_places_finetune_on_gpu_nodes_and_mounts_secrets(tmp_path: Path) -> None:
    out = tmp_path / "pipeline.yaml"
    assert main(["compile", "--output", str(out)]) == 0
    spec, platform = yaml.safe_load_all(out.read_text())
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    finetune = executors["exec-finetune"]
    assert finetune["nodeSelector"]["labels"] == {"nvidia.com/gpu.present": "true"}
    assert finetune["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    validate_secret = executors["exec-validate"]["secretAsEnv"][0]
    assert validate_secret["secretNameParameter"]["runtimeValue"]["constant"] == "bertops-dvc-s3"
    assert {e["envVar"] for e in validate_secret["keyToEnv"]} == {
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_ENDPOINT_URL",
    }
    register_secret = executors["exec-register"]["secretAsEnv"][0]
    assert register_secret["secretNameParameter"]["runtimeValue"]["constant"] == "bertops-s3"
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images == {"ghcr.io/bertops/bertops-cpu:0.1.0", "ghcr.io/bertops/bertops-cuda:0.1.0"}
