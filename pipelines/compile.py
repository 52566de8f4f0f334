"""Compile the pipeline to the IR YAML that the Kubeflow UI uploads and ``kfp run create`` submits."""

from __future__ import annotations

from pathlib import Path

DEFAULT_OUTPUT = Path("pipelines/compiled/bertops_pipeline.yaml")
BATCH_SCORE_OUTPUT = Path("pipelines/compiled/bertops_batch_score.yaml")
# A preempted GPU node fails the finetune task; on a cluster it is started again this often.
DEFAULT_FINETUNE_RETRIES = 2


def compile_pipeline(
    output: Path = DEFAULT_OUTPUT,
    workspace_pvc: str = "",
    finetune_retries: int = DEFAULT_FINETUNE_RETRIES,
    target: str = "local",
) -> Path:
    """Write the compiled pipeline to ``output`` and check it loads back; returns the path.

    ``workspace_pvc``, ``finetune_retries`` and ``target`` (whose defaults the run parameters
    get) are the compile-time options of ``pipelines.training_pipeline.build_pipeline``.
    """
    from kfp import compiler

    from bertops.errors import BertopsError
    from pipelines.training_pipeline import build_pipeline

    if finetune_retries < 0:
        raise BertopsError(f"--finetune-retries must be 0 or more, got {finetune_retries}")
    output.parent.mkdir(parents=True, exist_ok=True)
    pipeline = build_pipeline(workspace_pvc=workspace_pvc, finetune_retries=finetune_retries, target=target)
    compiler.Compiler().compile(pipeline, package_path=str(output))
    check_compiled(output)
    return output


def compile_batch_pipeline(output: Path = BATCH_SCORE_OUTPUT, workspace_pvc: str = "", target: str = "local") -> Path:
    """Write the compiled batch-score pipeline (``pipelines.batch_score_pipeline``) to ``output``; returns the path."""
    from kfp import compiler

    from pipelines.batch_score_pipeline import build_batch_pipeline

    output.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_batch_pipeline(workspace_pvc, target), package_path=str(output))
    check_compiled(output)
    return output


def check_compiled(path: Path) -> None:
    """Load ``path`` through kfp and parse it strictly as a ``PipelineSpec``; raise if either fails."""
    import yaml
    from google.protobuf import json_format
    from kfp import components
    from kfp.pipeline_spec import pipeline_spec_pb2

    components.load_component_from_file(str(path))
    documents = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
    json_format.ParseDict(documents[0], pipeline_spec_pb2.PipelineSpec(), ignore_unknown_fields=False)
