"""KFP component: register the run's winner in MLflow and publish its model card."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Model, Output

from bertops.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def register(
    model: Input[Model],
    evaluation: Input[Artifact],
    decision: Input[Artifact],
    validation_report: Input[HTML],
    dataset: Input[Dataset],
    data_version: str,
    data_path: str,
    data_remote: str,
    promote: bool,
    max_length: int,
    model_name: str,
    state_dir: str,
    tracking_uri: str,
    git_commit: str,
    trigger: str,
    pipeline_run: str,
    deploy_target: str,
    namespace: str,
    model_card: Output[Markdown],
    mlflow_run: str = "",
) -> str:
    """Register the winner with its metrics, parameters, lineage and the reasons it was chosen;
    returns the new version. The ``champion`` alias moves to it only if the gate said so and the
    champion is still the one the gate compared against (under the model's lock: a Lease in
    ``namespace`` when ``deploy_target`` is cluster, else the state directory's lock file). The version
    points at the winner's MLflow run, a child of the pipeline's run (``mlflow_run``, else the one the winner's
    metadata names), which ends here; the ``dataset``'s reference profile (the drift monitor's) is logged too."""
    import json
    import tempfile
    from pathlib import Path

    from bertops.champion_lock import champion_lock
    from bertops.evaluation import load_evaluation
    from bertops.step import step
    from components.register.register import Submission, decisions, lineage, register_model, run_files, scored

    with step("register"), tempfile.TemporaryDirectory() as scratch:
        scores = load_evaluation(Path(evaluation.path))
        metrics = scored(scores, Path(model.path))
        internal = ("framework", "mlflow_run_id", "mlflow_parent_run_id")
        params = {"max_length": max_length, **{k: v for k, v in model.metadata.items() if k not in internal}}
        origin = lineage(data_version, git_commit, pipeline_run, model.metadata, trigger)
        gate = json.loads(Path(decision.path).read_text(encoding="utf-8"))
        why, reasons = decisions(evaluation.metadata, gate, promote)
        files = run_files(
            scores, Path(evaluation.path), Path(validation_report.path), Path(dataset.path), Path(scratch)
        )
        submission = Submission(
            Path(model.path), model_name, metrics, params, origin, why, reasons, files,
            run_id=str(model.metadata.get("mlflow_run_id", "")), parent_run_id=mlflow_run or str(model.metadata.get("mlflow_parent_run_id", "")),
            data_source=data_remote or str(Path(data_path).resolve()), serving=scores.serving_record(),
        )  # fmt: skip
        what = f"register {model_name} for run {pipeline_run}"
        lock = champion_lock(model_name, state_dir, what, deploy_target, namespace) if promote else None
        # The gate's champion ('' for none): the alias moves only if it still holds it.
        expected = str(gate["champion_version"])
        result = register_model(submission, promote, state_dir, tracking_uri, expected, lock)
        Path(model_card.path).write_text(result.card, encoding="utf-8")
        return result.version
