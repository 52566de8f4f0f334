"""KFP component: score a dataset with a registered version into Parquet, with a summary the Kubeflow UI shows."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Markdown, Metrics, Output

from bertops.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def batch_score(
    data_path: str,
    data_remote: str,
    text_column: str,
    model_name: str,
    model_version: str,
    state_dir: str,
    tracking_uri: str,
    batch_size: int,
    chunk_rows: int,
    resume_dir: str,
    pipeline_run: str,
    predictions: Output[Dataset],
    summary: Output[Artifact],
    report: Output[Markdown],
    metrics: Output[Metrics],
) -> str:
    """Score ``data_path`` (a file or a folder of .jsonl/.csv/.parquet files, pulled from
    ``data_remote`` first when set) with ``model_version`` of ``model_name`` ('' : the champion),
    through the predictor the server runs; returns the version that scored.

    ``predictions``: one Parquet file (source file, row, label, confidence, each class's
    probability, model name and version). ``summary``: JSON (rows, label mix, mean confidence,
    rows/s, version, data version); ``report``: the same as Markdown. With ``resume_dir`` (a
    persistent volume) the chunks of this run live in ``resume_dir/<pipeline_run>``, so a retried
    task scores only the chunks its predecessor did not finish.
    """
    import json
    import shutil
    import tempfile
    from pathlib import Path

    from bertops.step import step
    from components.batch_score.batch_score import SUMMARY_JSON, SUMMARY_MD, pull_input
    from components.batch_score.batch_score import batch_score as score
    from components.batch_score.chunks import PREDICTIONS
    from components.batch_score.config import BatchScoreConfig

    with step("batch-score"):
        config = BatchScoreConfig(
            data_path, data_remote, text_column, model_name, model_version, state_dir, tracking_uri, batch_size,
            chunk_rows, resume_dir,
        )  # fmt: skip
        if data_remote:
            pull_input(Path(data_path), data_remote)
        with tempfile.TemporaryDirectory(prefix="bertops-batch-score-") as scratch:
            out = Path(resume_dir) / pipeline_run if resume_dir else Path(scratch) / "out"
            result = score(config, out)
            shutil.copyfile(out / PREDICTIONS, predictions.path)
            shutil.copyfile(out / SUMMARY_JSON, summary.path)
            shutil.copyfile(out / SUMMARY_MD, report.path)
        for name in ("rows", "mean_confidence", "rows_per_s"):
            metrics.log_metric(name, float(result[name]))
        predictions.metadata.update(
            {"model_name": model_name, "model_version": result["model_version"], "rows": result["rows"]}
        )
        summary.metadata["label_counts"] = json.dumps(result["label_counts"])
        return str(result["model_version"])
