"""The Great Expectations suite on its own: clean data, bring-your-own files, drift, the report."""

import json
import shutil
from collections.abc import Callable
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
    assert list(pd.read_parquet(validated / "train.parquet").columns) == ["text", "label"]


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_one_file_of_any_format_with_own_column_names_is_split_and_validated(
    bbc_data: Path, tmp_path: Path, fmt: str
) -> None:
    frame = pd.concat([pd.read_json(bbc_data / f"{s}.jsonl", lines=True) for s in ("train", "validation", "test")])
    # The BBC data holds one pair of articles that differ only in case ("Grand Slam"); this
    # split would put them in train and test, which the near-duplicate leakage check rejects.
    frame = frame[~frame["text"].str.casefold().duplicated()]
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
    assert report.rows == {"train": 1487, "validation": 212, "test": 425}  # stratified 70/10/20
    train = pd.read_parquet(tmp_path / "out" / "train.parquet")
    assert list(train.columns) == ["text", "label"] and len(train) == 1487 and train["label"].map(type).eq(str).all()


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
    assert len(drift) == 2 and all(c.value is not None and c.value < 0.01 for c in drift)

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


def _small_splits(tmp_path: Path, edit: Callable[[dict[str, pd.DataFrame]], None]) -> Path:
    """Three small clean JSON Lines splits (two balanced labels, distinct texts), edited, written."""
    frames = {
        split: pd.DataFrame(
            {
                "text": [f"{split} article {i} about {'markets' if i % 2 else 'football'}" for i in range(n)],
                "label": ["business" if i % 2 else "sport" for i in range(n)],
            }
        )
        for split, n in (("train", 20), ("validation", 6), ("test", 6))
    }
    edit(frames)
    data = tmp_path / "data"
    data.mkdir()
    for split, frame in frames.items():
        frame.to_json(data / f"{split}.jsonl", orient="records", lines=True)
    return data


def _set(frames: dict[str, pd.DataFrame], split: str, row: int, column: str, value: object) -> None:
    frames[split].loc[row - 1, column] = value  # row is 1-based, as the messages name rows


def _relabel(rows: dict[int, str]) -> Callable[[dict[str, pd.DataFrame]], None]:
    """An edit that sets the train label of each 1-based row."""

    def edit(frames: dict[str, pd.DataFrame]) -> None:
        for row, label in rows.items():
            _set(frames, "train", row, "label", label)

    return edit


def test_small_clean_splits_pass(tmp_path: Path) -> None:
    assert validate_dataset(_small_splits(tmp_path, lambda f: None), tmp_path / "out", "x").success


@pytest.mark.parametrize(
    ("edit", "fragments"),
    [
        (
            _relabel({3: "sport "}),
            ["train split, column 'label': label has no leading or trailing whitespace", "at rows 3", "'sport '"],
        ),
        (
            _relabel({5: "Sport", 7: "Sport"}),
            ["train split, column 'label': no label differs from another only in case or whitespace", "at rows 5, 7"],
        ),
        (
            _relabel({2: "0", 9: "1"}),
            ["train split, column 'label': labels are all numeric codes or all names", "at rows 2, 9", "'0'"],
        ),
    ],
    ids=["padded-label", "case-variant-label", "numeric-and-named-labels"],
)
def test_malformed_labels_are_rejected_with_rows_named(
    tmp_path: Path, edit: Callable[[dict[str, pd.DataFrame]], None], fragments: list[str]
) -> None:
    data = _small_splits(tmp_path, edit)
    with pytest.raises(ValidationFailed) as failure:
        validate_dataset(data, tmp_path / "out", "x")
    for fragment in fragments:
        assert fragment in str(failure.value), str(failure.value)
    assert not list((tmp_path / "out").glob("*.parquet*"))


def test_near_duplicate_leakage_is_its_own_check(tmp_path: Path) -> None:
    def leak(frames: dict[str, pd.DataFrame]) -> None:
        train = frames["train"]["text"]
        _set(frames, "test", 2, "text", "  " + train[0].upper().replace(" ", "\t "))
        _set(frames, "validation", 4, "text", train[5] + " ")

    data = _small_splits(tmp_path, leak)
    with pytest.raises(ValidationFailed) as failure:
        validate_dataset(data, tmp_path / "out", "x")
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    failed = {
        (c["split"], c["column"], c["description"], tuple(c["rows"])) for c in report["checks"] if not c["success"]
    }
    near = "no text equal to an earlier split's up to case and whitespace (near-duplicate leakage)"
    assert failed == {("validation", "text", near, (4,)), ("test", "text", near, (2,))}
    assert "near-duplicate leakage" in str(failure.value)


def test_normalised_text_is_pythons_casefolded_whitespace_collapse_for_any_text() -> None:
    import random
    import re

    from components.validate.validate import normalise_text

    alphabet = "aZ \t\n\v\f\r\x1c\x1f\u00a0\u2003\u3000ßẞİΣ\u03c3\u03c2ﬁÉé£日本0"
    rng = random.Random(0)
    texts = [
        "",
        " ",
        "Straße  MASSE",
        "\u00a0 x \u2003",
        "ﬁne\x1cFINE",
        *("".join(rng.choices(alphabet, k=rng.randint(0, 12))) for _ in range(3000)),
    ]
    got = normalise_text(pd.Series(texts, index=range(10, 10 + len(texts)))).tolist()
    assert got == [re.sub(r"\s+", " ", t).strip().casefold() for t in texts]


def _sections(page: str) -> list[str]:
    """The page's headings in order."""
    import re

    return re.findall(r"<h[12][^>]*>(.*?)</h[12]>", page)


def test_the_report_opens_with_the_verdict_the_splits_their_class_shares_and_the_drift(
    bbc_data: Path, tmp_path: Path
) -> None:
    profile = tmp_path / "reference_profile.json"
    validate_dataset(bbc_data, tmp_path / "a", "md5:first", profile_path=profile)
    report = validate_dataset(bbc_data, tmp_path / "b", "md5:second", profile_path=profile)
    page = (tmp_path / "b" / "report.html").read_text()

    headings = _sections(page)
    assert "PASSED" in headings[0]
    assert [h.split(" (")[0] for h in headings[1:]] == [
        "Splits and class shares",
        "Drift from the accepted data",
        "Checks",
    ]
    verdict = page[page.index("</h1>") : page.index("<h2>")]
    assert "train 1487, validation 212, test 426 rows" in verdict and "all 66 checks passed" in verdict
    # The class-share table: every label's rows and share in every split.
    assert report.label_counts["train"]["sports"] == 352 and report.label_counts["test"]["tech"] == 69
    assert "352 <small>(23.7%)</small>" in page and "69 <small>(16.2%)</small>" in page
    # The drift figures with their thresholds, and a chart of each compared distribution.
    drift = page[page.index("Drift from the accepted data") : page.index("<h2>Checks")]
    kl = {c.column: c.value for c in report.checks if "kl_divergence" in c.expectation}
    assert f"{kl['label']:.4f}</td><td class=num>0.1</td>" in drift
    assert f"{kl['text']:.4f}</td><td class=num>0.1</td>" in drift
    assert drift.count("<svg") == 2 and "Label mix" in drift and "Text length" in drift


def test_every_check_shows_what_it_observed_and_bad_rows_only_where_rows_are_bad(
    bbc_data: Path, tmp_path: Path
) -> None:
    report = validate_dataset(bbc_data, tmp_path / "out", "x")
    assert all(c.observed for c in report.checks), [c.description for c in report.checks if not c.observed]
    shares = [c for c in report.checks if "of rows" in c.description]
    assert len(shares) == 3 * 5 * 2
    # A class-share check's "unexpected" rows are the other labels' rows: no bad rows, no examples;
    # it shows the label's share instead.
    assert all(c.unexpected_count == 0 and c.rows == [] and c.examples == [] for c in shares)
    sport = next(c for c in shares if c.split == "train" and c.description.startswith("label 'sports' has at least"))
    assert sport.observed == "23.7% of 1487 rows" and sport.value == pytest.approx(352 / 1487)
    rows = next(
        c for c in report.checks if c.split == "validation" and c.expectation.endswith("row_count_to_be_between")
    )
    assert (rows.observed, rows.value) == ("212 rows", 212)
    page = (tmp_path / "out" / "report.html").read_text()
    assert "1135" not in page  # the other labels' rows of train's 'sports' check (1487 - 352)


def test_a_failed_report_names_the_failures_first_and_escapes_the_data(tmp_path: Path) -> None:
    hostile = "<script>alert(1)</script>"
    data = _small_splits(tmp_path, _relabel({3: hostile}))
    with pytest.raises(ValidationFailed):
        validate_dataset(data, tmp_path / "out", "x")
    page = (tmp_path / "out" / "report.html").read_text()
    assert "FAILED" in _sections(page)[0]
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    verdict = page[page.index("</h1>") : page.index("<h2>")]
    assert "checks failed" in verdict and "&lt;script&gt;" in verdict
    table = page[page.index("<h2>Checks") :]
    results = [cell for cell in table.split("<tr")[2:]]
    outcomes = ["FAIL" in row for row in results]
    assert outcomes == sorted(outcomes, reverse=True) and outcomes[0] and not outcomes[-1]
    # The train split's class table marks the hostile label's share (1 of 20 rows is above 2%: only
    # validation and test, where it is absent, fall below the minimum).
    assert page.count('class="num bad"') == 2
