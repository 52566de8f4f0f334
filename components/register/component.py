"""KFP component: register the run's winner in MLflow and publish its model card."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Markdown, Model, Output

from bertops.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def register(
    model: Input[Model],
    evaluation: Input[Artifact],
    decision: Input[Artifact],
    data_version: str,
    promote: bool,
    max_length: int,
    model_name: str,
    state_dir: str,
    tracking_uri: str,
    git_commit: str,
    pipeline_run: str,
    deploy_target: str,
    namespace: str,
    model_card: Output[Markdown],
) -> str:
    """Register the winner with its metrics, parameters, lineage and the reasons it was chosen;
    returns the new version. The ``champion`` alias moves to it only if the gate said so and the
    champion is still the one the gate compared against (under the model's lock: a Lease in
    ``namespace`` when ``deploy_target`` is cluster, else the state directory's lock file)."""
    import json
    from pathlib import Path

    from bertops.artifacts import training_record
    from bertops.champion_lock import champion_lock
    from bertops.evaluation import load_evaluation
    from bertops.step import step
    from components.register.register import GATE_DECISION, GATE_REASON_TAG, Submission, register_model

    with step("register"):
        served = load_evaluation(Path(evaluation.path))
        metrics = served.flat()
        training = training_record(Path(model.path))
        metrics.update({f"train_{k}": float(v) for k, v in training.items() if isinstance(v, int | float)})
        params = {"max_length": max_length, **{k: v for k, v in model.metadata.items() if k != "framework"}}
        lineage = {
            "data_version": data_version,
            "git_commit": git_commit,
            "base_model": str(model.metadata.get("base_model", "")),
            "pipeline_run": pipeline_run,
            "candidate": str(model.metadata.get("candidate", "")),
        }
        gate = json.loads(Path(decision.path).read_text(encoding="utf-8"))
        decisions = {
            "Candidate selection": f"{evaluation.metadata.get('reason', '')}\n\n{evaluation.metadata.get('table', '')}",
            GATE_DECISION: f"{'Promoted' if promote else 'Not promoted'}: {gate['reason']}",
        }
        reasons = {"selection_reason": str(evaluation.metadata.get("reason", "")), GATE_REASON_TAG: str(gate["reason"])}
        submission = Submission(
            Path(model.path), model_name, metrics, params, lineage, decisions, reasons,
            files={"evaluation.json": Path(evaluation.path)}, serving=served.serving_record(),
        )  # fmt: skip
        what = f"register {model_name} for run {pipeline_run}"
        lock = champion_lock(model_name, state_dir, what, deploy_target, namespace) if promote else None
        # The gate's champion ('' for none): the alias moves only if it still holds it.
        expected = str(gate["champion_version"])
        result = register_model(submission, promote, state_dir, tracking_uri, expected, lock)
        Path(model_card.path).write_text(result.card, encoding="utf-8")
        return result.version
