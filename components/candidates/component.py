"""KFP components: expand the candidate list before the ParallelFor, pick the winner after it."""

from typing import Any

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Model, Output

from bertops.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def plan_candidates(
    candidates: list,
    base_model: str,
    learning_rate: float,
    batch_size: int,
    epochs: int,
    max_steps: int,
    pipeline_run: str,
    checkpoint_name: str,
    state_dir: str,
    tracking_uri: str,
    parallelism: int = 0,
) -> list:
    """Complete each candidate with the run's defaults; the ParallelFor iterates over the result.

    The pipeline's first step, it starts the pipeline's MLflow run, the parent of the candidates'
    runs, which register ends; each candidate carries its id as ``mlflow_run`` ('' when the tracking
    server does not answer). One list output, not a NamedTuple: kfp.local's loop resolves only a
    task's single ``Output`` (2.17, enhanced_dag_orchestrator). ``checkpoint_name`` is the run's name
    for ``bertops run`` (which marks the run FAILED if a step fails).
    """
    from bertops.step import step
    from bertops.tracking import start_pipeline_run
    from components.candidates.candidates import plan_candidates as plan

    with step("plan-candidates"):
        defaults: dict[str, Any] = {
            "base_model": base_model,
            "learning_rate": learning_rate,
            "batch_size": batch_size,
            "epochs": epochs,
            "max_steps": max_steps,
        }
        planned = plan(candidates, defaults, parallelism)
        mlflow_run = start_pipeline_run(pipeline_run, state_dir, tracking_uri, checkpoint_name)
        return [{**candidate, "mlflow_run": mlflow_run} for candidate in planned]


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def select_winner(
    candidates: list,
    models: Input[list[Model]],
    evaluations: Input[list[Artifact]],
    selection_metric: str,
    tokenized: Input[Dataset],
    winner: Output[Model],
    winner_evaluation: Output[Artifact],
    selection: Output[Markdown],
    error_analysis: Output[HTML],
) -> str:
    """Pick the run's best candidate on ``selection_metric``; returns its id and writes why, and the
    winner's error analysis on the test split of ``tokenized``."""
    import shutil
    from pathlib import Path

    from bertops.artifacts import load_texts
    from bertops.evaluation import load_evaluation
    from bertops.step import step
    from components.candidates.candidates import select_winner as select
    from components.candidates.error_analysis import error_analysis_html

    with step("select"):
        by_uri = {m.uri: m for m in models}
        paired = [(by_uri[e.metadata["model_uri"]], e) for e in evaluations]
        scores = [load_evaluation(Path(e.path)) for _, e in paired]
        # ParallelFor results follow the plan's order; the model URIs keep the pairs right.
        choice = select(candidates, scores, selection_metric)
        best_model, best_eval = paired[choice.winner]
        shutil.copytree(best_model.path, winner.path)
        shutil.copyfile(best_eval.path, winner_evaluation.path)
        chosen = candidates[choice.winner]
        winner.metadata.update({**best_model.metadata, "candidate": chosen["id"], **chosen})
        Path(selection.path).write_text(
            f"# Candidate selection\n\n{choice.reason}\n\n{choice.table}\n", encoding="utf-8"
        )
        winner_evaluation.metadata.update({"reason": choice.reason, "table": choice.table})
        page = error_analysis_html(
            str(chosen["id"]), scores[choice.winner].test, load_texts(Path(tokenized.path), "test")
        )
        Path(error_analysis.path).write_text(page, encoding="utf-8")
        return str(chosen["id"])
