"""KFP component: the promotion gate."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Output

from bertops.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def promotion_gate(
    winner_evaluation: Input[Artifact],
    tokenized: Input[Dataset],
    model_name: str,
    state_dir: str,
    tracking_uri: str,
    promotion_metric: str,
    promotion_margin: float,
    min_accuracy: float,
    min_macro_f1: float,
    decision: Output[Artifact],
    report: Output[Markdown],
) -> bool:
    """Score the registry's champion on this run's test split and decide whether the winner replaces it.

    A single output on purpose: the local runner resolves ``dsl.If`` only on a task's ``Output``.
    """
    import json
    from pathlib import Path

    from bertops.evaluation import load_evaluation
    from bertops.step import step
    from components.gate.gate import decide, evaluate_champion

    with step("gate"):
        winner = load_evaluation(Path(winner_evaluation.path))
        champion = evaluate_champion(model_name, Path(tokenized.path), state_dir, tracking_uri)
        version, scores = champion if champion else ("", None)
        result = decide(winner, scores, version, promotion_metric, promotion_margin, min_accuracy, min_macro_f1)
        Path(decision.path).write_text(json.dumps(result.as_dict(), indent=2), encoding="utf-8")
        decision.metadata.update(result.as_dict())
        verdict = "PROMOTE" if result.promote else "KEEP THE CHAMPION"
        Path(report.path).write_text(f"# Promotion gate: {verdict}\n\n{result.reason}\n", encoding="utf-8")
        return result.promote
