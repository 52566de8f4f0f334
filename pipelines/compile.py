"""Compile the pipeline to the IR YAML that the Kubeflow UI uploads and ``kfp run create`` submits."""

from __future__ import annotations

from pathlib import Path

DEFAULT_OUTPUT = Path("pipelines/compiled/bertops_pipeline.yaml")


def compile_pipeline(output: Path = DEFAULT_OUTPUT) -> Path:
    """Write the compiled pipeline to ``output`` and check it loads back; returns the path."""
    from kfp import compiler

    from pipelines.training_pipeline import training_pipeline

    output.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(training_pipeline, package_path=str(output))
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
