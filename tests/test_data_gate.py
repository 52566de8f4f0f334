"""Bad data stops the real pipeline at the validate step: the run fails, the error names the
problem, the registry gains no version, and the serving endpoint does not change."""

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest

from bertops import endpoints
from bertops.config import PipelineConfig
from bertops.errors import BertopsError
from bertops.registry import open_client
from components.deploy.deploy import deploy_local
from components.register.register import Submission, register_model
from components.validate.validate import validate_dataset
from pipelines.run_local import run_local

pytestmark = pytest.mark.slow

NAME = "gate-news"


def _frame(data: Path, split: str) -> pd.DataFrame:
    return pd.read_json(data / f"{split}.jsonl", lines=True)


def _save(frame: pd.DataFrame, data: Path, split: str) -> None:
    frame.to_json(data / f"{split}.jsonl", orient="records", lines=True, force_ascii=False)


def missing_column(data: Path) -> None:
    _save(_frame(data, "train").drop(columns=["label"]), data, "train")


def null_text(data: Path) -> None:
    frame = _frame(data, "train")
    frame.loc[3, "text"] = None
    _save(frame, data, "train")


def unknown_label(data: Path) -> None:
    frame = _frame(data, "test")
    frame.loc[0, "label"] = "weather"
    _save(frame, data, "test")


def empty_text(data: Path) -> None:
    frame = _frame(data, "validation")
    frame.loc[1, "text"] = "   "
    _save(frame, data, "validation")


def duplicate_texts(data: Path) -> None:
    frame = _frame(data, "train")
    _save(pd.concat([frame, frame.head(2)]), data, "train")


def leakage(data: Path) -> None:
    train, test = _frame(data, "train"), _frame(data, "test")
    _save(pd.concat([test, train.tail(3)]), data, "test")


def near_duplicate_leakage(data: Path) -> None:
    train, test = _frame(data, "train"), _frame(data, "test")
    copies = train.tail(2).assign(text=lambda f: " " + f["text"].str.upper() + "\n")
    _save(pd.concat([test, copies]), data, "test")


def padded_label(data: Path) -> None:
    frame = _frame(data, "train")
    frame.loc[6, "label"] = frame.loc[6, "label"] + " "
    _save(frame, data, "train")


def collapsed_class(data: Path) -> None:
    frame = _frame(data, "train")
    tech = frame.index[frame["label"] == "tech"]
    _save(frame.drop(tech[5:]), data, "train")


def not_utf8(data: Path) -> None:
    with (data / "train.jsonl").open("ab") as handle:
        handle.write(b'{"text": "caf\xe9 society", "label": "business"}\n')


def truncated_file(data: Path) -> None:
    raw = (data / "test.jsonl").read_bytes()
    (data / "test.jsonl").write_bytes(raw[: len(raw) // 2])


def empty_file(data: Path) -> None:
    (data / "validation.jsonl").write_bytes(b"")


def extreme_length(data: Path) -> None:
    frame = _frame(data, "train")
    frame.loc[0, "text"] = "word " * 40_000
    _save(frame, data, "train")


def text_not_a_string(data: Path) -> None:
    frame = _frame(data, "train").astype({"text": object})
    frame.loc[2, "text"] = 12345
    _save(frame, data, "train")


def length_drift(data: Path) -> None:
    frame = _frame(data, "train")
    frame["text"] = frame["text"].str[:200]
    _save(frame, data, "train")


CASES: list[tuple[Callable[[Path], None], list[str]]] = [
    (missing_column, ["train split", "required column 'label'"]),
    (null_text, ["train split, column 'text'", "no missing text", "at rows 4"]),
    (unknown_label, ["test split, column 'label'", "label in {business, entertainment", "'weather'"]),
    (empty_text, ["validation split, column 'text'", "text length in [1, 100000] characters", "at rows 2"]),
    (duplicate_texts, ["train split, column 'text'", "no duplicate texts"]),
    (leakage, ["test split, column 'text'", "no text shared with an earlier split (leakage)", "3 bad rows"]),
    (
        near_duplicate_leakage,
        ["test split, column 'text'", "(near-duplicate leakage)", "2 bad rows at rows 427, 428"],
    ),
    (padded_label, ["train split, column 'label'", "label has no leading or trailing whitespace", "at rows 7"]),
    (collapsed_class, ["train split, column 'label'", "label 'tech' has at least 2% of rows (class collapse)"]),
    (not_utf8, ["train.jsonl: line 1488 is not valid UTF-8"]),
    (truncated_file, ["test.jsonl: line", "is not valid JSON", "truncated"]),
    (empty_file, ["validation.jsonl: file is empty"]),
    (extreme_length, ["train split, column 'text'", "text length in [1, 100000] characters", "at rows 1"]),
    (text_not_a_string, ["train split, column 'text'", "text is a string"]),
    (length_drift, ["train split, column 'text'", "text lengths within KL 0.1 of the reference"]),
]


@pytest.fixture(scope="module")
def serving_state(trained_tiny: Path, bbc_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A state dir with a registered version, a live endpoint, and an accepted reference profile."""
    state = tmp_path_factory.mktemp("gate-state")
    lineage = {"data_version": "md5:x", "git_commit": "c", "base_model": "tiny", "pipeline_run": "r"}
    version = register_model(Submission(trained_tiny, NAME, {"accuracy": 0.7}, {}, lineage), True, str(state)).version
    deploy_local(NAME, version, str(state))
    validate_dataset(
        bbc_data, state / "accepted", "md5:accepted", profile_path=state / "validation" / "reference_profile.json"
    )
    yield state
    endpoints.delete(NAME, state)


@pytest.mark.parametrize(("corrupt", "fragments"), CASES, ids=[c.__name__ for c, _ in CASES])
def test_bad_data_fails_the_run_and_changes_nothing(
    corrupt: Callable[[Path], None], fragments: list[str], bbc_data: Path, serving_state: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    shutil.copytree(bbc_data, data)
    corrupt(data)
    client = open_client("", serving_state)
    versions_before = len(client.search_model_versions(f"name='{NAME}'"))
    endpoint_before = endpoints.get(NAME, serving_state)
    config = PipelineConfig().replace(data_path=str(data), state_dir=str(serving_state), model_name=NAME)

    with pytest.raises(BertopsError) as failure:
        run_local(config)

    message = str(failure.value)
    assert message.startswith("validate: ") and "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    assert len(client.search_model_versions(f"name='{NAME}'")) == versions_before
    assert endpoints.get(NAME, serving_state) == endpoint_before
    assert endpoint_before.is_ready()
