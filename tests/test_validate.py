"""The Great Expectations gate: clean data passes with a report; broken data fails naming the problem."""

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from components.validate.validate import ValidationFailed, validate_dataset


def _copy_with(bbc_data: Path, tmp_path: Path, split: str, change: Callable[[pd.DataFrame], pd.DataFrame]) -> Path:
    data = tmp_path / "data"
    shutil.copytree(bbc_data, data)
    frame = pd.read_json(data / f"{split}.jsonl", lines=True)
    change(frame).to_json(data / f"{split}.jsonl", orient="records", lines=True, force_ascii=False)
    return data


def test_clean_data_passes_and_writes_report_and_splits(validated: Path) -> None:
    report = json.loads((validated / "report.json").read_text())
    assert report["success"] is True
    assert report["rows"] == {"train": 1487, "validation": 212, "test": 426}
    assert all(check["success"] for check in report["checks"])
    html = (validated / "report.html").read_text()
    assert "PASSED" in html and "<style>" in html and "http" not in html  # self-contained, no CDN
    assert (validated / "train.jsonl").is_file()


@pytest.mark.parametrize(
    ("split", "change", "expected"),
    [
        ("train", lambda f: f.drop(columns=["label"]), ["expect_column_to_exist", "'label'"]),
        (
            "train",
            lambda f: f.assign(text=f["text"].where(f.index != 3, None)),
            ["expect_column_values_to_not_be_null", "'text'", "at rows 4"],
        ),
        (
            "test",
            lambda f: f.assign(label=f["label"].where(f.index != 0, "weather")),
            ["expect_column_values_to_be_in_set", "'weather'"],
        ),
        (
            "validation",
            lambda f: f.assign(text=f["text"].where(f.index != 1, "")),
            ["expect_column_value_lengths_to_be_between"],
        ),
        ("train", lambda f: pd.concat([f, f.head(2)]), ["expect_column_values_to_be_unique", "'text'"]),
    ],
    ids=["missing-column", "null-text", "unknown-label", "empty-text", "duplicate-text"],
)
def test_broken_data_fails_naming_expectation_column_and_rows(
    bbc_data: Path, tmp_path: Path, split: str, change: Callable[[pd.DataFrame], pd.DataFrame], expected: list[str]
) -> None:
    data = _copy_with(bbc_data, tmp_path, split, change)
    out = tmp_path / "out"
    with pytest.raises(ValidationFailed) as exc:
        validate_dataset(data, out, "md5:test")
    message = str(exc.value)
    assert f"{split} split" in message
    for fragment in expected:
        assert fragment in message
    # Nothing downstream can consume the data: no split is written, only the report.
    assert not list(out.glob("*.jsonl"))
    assert json.loads((out / "report.json").read_text())["success"] is False
