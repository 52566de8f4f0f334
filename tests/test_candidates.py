"""Candidate planning, winner selection and the promotion gate, as plain functions."""

import pytest

from bertops.errors import BertopsError
from bertops.evaluation import Evaluation, ModelEvaluation
from components.candidates.candidates import plan_candidates, select_winner
from components.gate.gate import decide

DEFAULTS = {"base_model": "m", "learning_rate": 1e-4, "batch_size": 16, "epochs": 1, "max_steps": 60}


def _evaluation(val_acc: float, val_f1: float = 0.5, test_acc: float = 0.9, test_f1: float = 0.9) -> ModelEvaluation:
    def split(acc: float, f1: float) -> Evaluation:
        return Evaluation(acc, f1, f1, f1, 0.05, 100, ["a", "b"], {}, [[50, 0], [0, 50]])

    return ModelEvaluation(split(val_acc, val_f1), split(test_acc, test_f1), 12.0)


def test_plan_fills_defaults_and_checks_entries() -> None:
    planned = plan_candidates([{"id": "x", "learning_rate": "2e-4"}, {}], DEFAULTS)
    assert planned[0] == {**DEFAULTS, "id": "x", "learning_rate": 2e-4, "cpu_sharing": 2}
    assert planned[1]["id"] == "candidate-1" and planned[1]["max_steps"] == 60
    with pytest.raises(BertopsError, match=r"candidate 0: unknown field\(s\) lr"):
        plan_candidates([{"lr": 1}], DEFAULTS)
    with pytest.raises(BertopsError, match="ids must be unique"):
        plan_candidates([{"id": "a"}, {"id": "a"}], DEFAULTS)
    with pytest.raises(BertopsError, match="max_steps must be int"):
        plan_candidates([{"id": "a", "max_steps": "many"}], DEFAULTS)
    with pytest.raises(BertopsError, match="non-empty JSON list"):
        plan_candidates([], DEFAULTS)


def test_candidates_side_by_side_get_their_share_of_the_cpus() -> None:
    """The local runner trains at most two loop iterations at once; a loop's parallelism may lower it."""
    assert [c["cpu_sharing"] for c in plan_candidates([{"id": "a"}], DEFAULTS)] == [1]
    three = [{"id": "a"}, {"id": "b"}, {"id": "c"}]
    assert {c["cpu_sharing"] for c in plan_candidates(three, DEFAULTS)} == {2}
    assert {c["cpu_sharing"] for c in plan_candidates(three, DEFAULTS, parallelism=1)} == {1}


def test_winner_by_metric_with_deterministic_tie_break() -> None:
    candidates = plan_candidates([{"id": "b"}, {"id": "a"}, {"id": "c"}], DEFAULTS)
    evaluations = [_evaluation(0.90, 0.80), _evaluation(0.90, 0.80), _evaluation(0.85, 0.99)]
    choice = select_winner(candidates, evaluations, "validation.accuracy")
    assert candidates[choice.winner]["id"] == "a"  # tie on accuracy and F1: smaller id
    assert "tie broken" in choice.reason
    choice = select_winner(candidates, evaluations, "validation.macro_f1")
    assert candidates[choice.winner]["id"] == "c"
    assert "'c' wins on validation.macro_f1 0.9900" in choice.reason
    assert choice.table.count("\n") == 4
    lower_is_better = select_winner(candidates, [_evaluation(0.9), _evaluation(0.9), _evaluation(0.9)], "test.ece")
    assert candidates[lower_is_better.winner]["id"] == "a"


def test_gate_promotes_only_a_better_model_that_clears_thresholds() -> None:
    first = decide(_evaluation(0.9, test_acc=0.90), None, min_accuracy=0.85)
    assert first.promote and "no champion yet" in first.reason
    assert not decide(_evaluation(0.9, test_acc=0.80), None, min_accuracy=0.85).promote
    champion = _evaluation(0.9, test_acc=0.90)
    worse = decide(_evaluation(0.9, test_acc=0.88), champion, "3", min_accuracy=0.5)
    assert not worse.promote and "does not beat champion v3 0.9000" in worse.reason
    better = decide(_evaluation(0.9, test_acc=0.93), champion, "3", margin=0.01)
    assert better.promote and "beats champion v3" in better.reason
    assert not decide(_evaluation(0.9, test_acc=0.905), champion, "3", margin=0.01).promote
    low_f1 = decide(_evaluation(0.9, test_acc=0.95, test_f1=0.2), champion, "3", min_macro_f1=0.5)
    assert not low_f1.promote and "macro F1" in low_f1.reason
