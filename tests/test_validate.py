"""The Great Expectations suite on its own: clean data, bring-your-own files, drift, the report."""

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from bertops.config import ValidationConfig
from components.validate.validate import ValidationFailed, validate_dataset


def test_clean_data_passes_and_writes_report_and_splits(validated: Path) -> None:
    report = json.loads((validated / "report.json").read_text())
    assert report["success"] is True
    assert report["rows"] == {"train": 1487, "validation": 212, "test": 426}
    assert all(check["success"] for check in report["checks"])
    kinds = {check["expectation"] for check in report["checks"]}
    assert {"expect_column_values_to_be_unique", "expect_column_values_to_not_be_in_set"} <= kinds
    html = (validated / "report.html").read_text()
    assert "PASSED" in html and "<style>" in html and "http" not in html  # self-contained, no CDN
    assert (validated / "train.jsonl").is_file()


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_one_file_of_any_format_with_own_column_names_is_split_and_validated(
    bbc_data: Path, tmp_path: Path, fmt: str
) -> None:
    frame = pd.concat([pd.read_json(bbc_data / f"{s}.jsonl", lines=True) for s in ("train", "validation", "test")])
    frame = frame.rename(columns={"text": "body", "label": "topic"})
    path = tmp_path / f"news.{fmt}"
    if fmt == "csv":
        frame.to_csv(path, index=False)
    elif fmt == "jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_parquet(path)
    report = validate_dataset(path, tmp_path / "out", "untracked", "body", "topic")
    assert report.success
    assert report.rows == {"train": 1487, "validation": 212, "test": 426}  # stratified 70/10/20
    first = json.loads((tmp_path / "out" / "train.jsonl").read_text().splitlines()[0])
    assert set(first) == {"text", "label"}


def test_configured_label_set_and_shares_apply(bbc_data: Path, tmp_path: Path) -> None:
    config = ValidationConfig(labels="business,politics,sports,tech")
    with pytest.raises(ValidationFailed, match=r"label in \{business, politics, sports, tech\} failed"):
        validate_dataset(bbc_data, tmp_path / "out", "x", config=config)


def test_drift_is_measured_against_the_last_accepted_profile(bbc_data: Path, tmp_path: Path) -> None:
    profile = tmp_path / "reference_profile.json"
    first = validate_dataset(bbc_data, tmp_path / "a", "md5:first", profile_path=profile)
    assert first.reference_version == "" and profile.is_file()
    second = validate_dataset(bbc_data, tmp_path / "b", "md5:second", profile_path=profile)
    assert second.reference_version == "md5:first"
    drift = [c for c in second.checks if "KLDivergence".lower() in c.expectation.replace("_", "").lower()]
    assert len(drift) == 2 and all(float(c.observed) < 0.01 for c in drift)

    shifted = tmp_path / "shifted"
    shutil.copytree(bbc_data, shifted)
    train = pd.read_json(shifted / "train.jsonl", lines=True)
    train["text"] = train["text"].str[:300]
    train.to_json(shifted / "train.jsonl", orient="records", lines=True)
    before = profile.read_bytes()
    with pytest.raises(ValidationFailed, match=r"text lengths within KL 0.1 of the reference \(md5:second\) failed"):
        validate_dataset(shifted, tmp_path / "c", "md5:third", profile_path=profile)
    assert profile.read_bytes() == before  # a rejected dataset never becomes the reference


def test_splits_sliced_from_one_frame_keep_their_rows(bbc_data: Path) -> None:
    from components.validate.validate import validate_frames

    whole = pd.concat([pd.read_json(bbc_data / f"{s}.jsonl", lines=True) for s in ("train", "validation", "test")])
    whole = whole.reset_index(drop=True)
    frames = {"train": whole.iloc[:1487], "validation": whole.iloc[1487:1699], "test": whole.iloc[1699:]}
    report, _ = validate_frames(frames, "x")
    assert report.success, [c.description for c in report.failures()]
