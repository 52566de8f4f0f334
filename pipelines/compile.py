"""Compile the pipeline to the IR YAML that the Kubeflow UI uploads and ``kfp run create`` submits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

DEFAULT_OUTPUT = Path("pipelines/compiled/bertops_pipeline.yaml")
BATCH_SCORE_OUTPUT = Path("pipelines/compiled/bertops_batch_score.yaml")
# A preempted GPU node fails the finetune task; on a cluster it is started again this often.
DEFAULT_FINETUNE_RETRIES = 2
# Candidates fine-tuned at once by default: each is a GPU pod (or a TrainJob of several), so a run
# with a long candidate list does not claim the whole GPU pool. 0 lifts the limit.
DEFAULT_PARALLELISM = 4


def compile_pipeline(
    output: Path = DEFAULT_OUTPUT,
    workspace_pvc: str = "",
    finetune_retries: int = DEFAULT_FINETUNE_RETRIES,
    target: str = "local",
    **options: Any,
) -> Path:
    """Write the compiled pipeline to ``output`` and check it loads back; returns the path.

    ``workspace_pvc``, ``finetune_retries``, ``target`` (whose defaults the run parameters get)
    and ``options`` (``parallelism``, ``git_commit``) are the compile-time options of
    ``pipelines.training_pipeline.build_pipeline``. The same options give the same bytes.
    """
    from kfp import compiler

    from bertops.errors import BertopsError
    from pipelines.training_pipeline import build_pipeline

    if finetune_retries < 0:
        raise BertopsError(f"--finetune-retries must be 0 or more, got {finetune_retries}")
    if options.get("parallelism", 0) < 0:
        raise BertopsError(f"--parallelism must be 0 (no limit) or more, got {options['parallelism']}")
    output.parent.mkdir(parents=True, exist_ok=True)
    pipeline = build_pipeline(workspace_pvc=workspace_pvc, finetune_retries=finetune_retries, target=target, **options)
    compiler.Compiler().compile(pipeline, package_path=str(output))
    output.write_text(stable_header(output.read_text(encoding="utf-8"), pipeline.description), encoding="utf-8")
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


def stable_header(text: str, description: str | None) -> str:
    """``text`` with its ``#`` header comment written again from the YAML below it.

    kfp prints each default of the header from the protobuf ``Struct`` it compiled, whose map order
    follows Python's per-process string hashing, so two compiles of the same pipeline differ there
    (the YAML itself is written with sorted keys). The header written again from the sorted YAML
    is the same every time, and says ``int`` defaults as integers rather than ``16.0``.
    """
    import yaml
    from kfp.compiler.pipeline_spec_builder import extract_comments_from_pipeline_spec

    lines = text.splitlines(keepends=True)
    body = "".join(lines[next(i for i, line in enumerate(lines) if not line.startswith("#")) :])
    spec = next(yaml.safe_load_all(body))
    for parameter in spec["root"].get("inputDefinitions", {}).get("parameters", {}).values():
        if parameter["parameterType"] == "NUMBER_INTEGER" and "defaultValue" in parameter:
            parameter["defaultValue"] = int(parameter["defaultValue"])
    return extract_comments_from_pipeline_spec(spec, description or "") + body


def check_compiled(path: Path) -> None:
    """Load ``path`` through kfp and parse it strictly as a ``PipelineSpec``; raise if either fails."""
    import yaml
    from google.protobuf import json_format
    from kfp import components
    from kfp.pipeline_spec import pipeline_spec_pb2

    components.load_component_from_file(str(path))
    documents = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
    json_format.ParseDict(documents[0], pipeline_spec_pb2.PipelineSpec(), ignore_unknown_fields=False)
