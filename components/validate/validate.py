"""Validate the dataset splits with a Great Expectations suite; only validated data goes on.

The suite runs on each split with a few derived columns computed once with vectorized pandas
(stripped text length, an exact text id, whether a text already appeared in an earlier
split), so uniqueness, leakage and length checks are numeric and fast. Drift is measured
against the reference profile of the last accepted data (label mix and text-length
histogram, KL divergence). Great Expectations takes 3-10 s to import, so it is imported
inside the functions that use it and nowhere else in the project.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bertops import drift, dvc_data
from bertops.artifacts import write_validated_split
from bertops.config import ValidationConfig, check_run_settings, in_pod, run_setting_problems
from bertops.dataio import SPLITS, load_dataset
from bertops.errors import BertopsError
from components.validate.report_html import render_html

if TYPE_CHECKING:
    import great_expectations as gx
    import pandas as pd

log = logging.getLogger(__name__)

REFERENCE_PROFILE = drift.REFERENCE_PROFILE

LENGTH, STRING, HASH, SEEN = "__length", "__is_string", "__text_id", "__seen_in_earlier_split"
# A text equal to an earlier split's text only after normalise_text (the exact match is SEEN's).
NEAR_SEEN = "__near_duplicate_of_earlier_split"
# Label rows flagged as malformed: padded with whitespace, a case/whitespace variant of a more
# common label, or of the minority kind in a column that mixes numeric codes and names.
PADDED, VARIANT, MIXED = "__padded", "__case_variant", "__mixed_kind"
# The meta key of the class-share checks: their "unexpected" rows are the other labels' rows,
# which are not bad rows, so the report shows the label's share instead.
SHARE_OF = "share_of"
# How a missing label is counted in the report's class-share table.
MISSING_LABEL = "(missing)"


class ValidationFailed(BertopsError):
    """The data broke at least one expectation; the message names which, where, and examples."""


@dataclass
class CheckResult:
    """One expectation on one split."""

    split: str
    expectation: str
    description: str
    column: str | None
    success: bool
    unexpected_count: int = 0
    observed: str = ""
    examples: list[str] = field(default_factory=list)
    # 1-based data rows of the split (the line number in a JSON Lines file).
    rows: list[int] = field(default_factory=list)
    # The number ``observed`` shows: a share (0-1), a KL divergence or a count; None where there is none.
    value: float | None = None


@dataclass
class DriftFigures:
    """What the drift checks compared: the reference profile's and this train split's distributions.

    Shares sum to 1; ``length_edges`` bound the text-length bins (in characters after stripping)
    that ``reference_lengths`` and ``train_lengths`` share out.
    """

    reference_labels: dict[str, float]
    train_labels: dict[str, float]
    length_edges: list[float]
    reference_lengths: list[float]
    train_lengths: list[float]
    max_label_drift: float
    max_length_drift: float
    # The columns the label-mix and the text-length checks name.
    label_column: str = "label"
    text_column: str = "text"


@dataclass
class ValidationReport:
    """What the validate step found; written as JSON beside the HTML page."""

    success: bool
    data_version: str
    rows: dict[str, int]
    labels: list[str]
    reference_version: str
    checks: list[CheckResult]
    # Rows per label in each split (a missing label counts under MISSING_LABEL).
    label_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    # The class-share bounds every label of every split must keep (min_class_share, max_class_share).
    share_bounds: tuple[float, float] = (0.0, 1.0)
    drift: DriftFigures | None = None

    def failures(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.success]

    def summary(self) -> str:
        failed = len(self.failures())
        text = f"{len(self.checks) - failed}/{len(self.checks)} expectations passed"
        return text + (f", {failed} failed" if failed else "")


# The ASCII characters Python's ``\s`` and ``str.strip`` count as whitespace (RE2's ``\s`` lacks \v and \x1c-\x1f).
_ASCII_SPACE_RUN = r"[\t\n\v\f\r\x1c-\x1f ]+"
# What an ASCII text needs beyond lower-casing to be normalised: whitespace other than single inner spaces.
_ASCII_SPACE_TO_FIX = r"[\t\n\v\f\r\x1c-\x1f]|  |^ | $"
# Every character ``str.isspace`` (so ``str.strip``) counts as whitespace; a test checks it against Python.
PYTHON_SPACES = (
    "\t\n\v\f\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)


def normalise_text(values: pd.Series) -> pd.Series:
    r"""Casefold, collapse runs of whitespace to one space, and strip: the key for near duplicates.

    Nulls become empty keys. See ``_normalised_keys`` for how it is computed fast.
    """
    import pandas as pd

    keys = _normalised_keys(_as_arrow(values)).to_numpy(zero_copy_only=False)
    return pd.Series(keys, index=values.index, dtype=object)


def _as_arrow(values: pd.Series) -> Any:
    """A string Series as one pyarrow ``large_string`` array, nulls as empty strings (zero-copy when arrow-backed)."""
    import pandas as pd
    import pyarrow as pa

    if isinstance(values.dtype, pd.ArrowDtype):
        array = pa.chunked_array(pa.array(values)).combine_chunks()
    else:
        array = pa.array(values.to_numpy(dtype=object), type=pa.large_string(), from_pandas=True)
    return array.cast(pa.large_string()).fill_null("")


def _normalised_keys(texts: Any) -> Any:
    r"""``normalise_text`` of a pyarrow string array without nulls.

    ASCII texts (where casefolding is lowercasing) go through pyarrow's vectorised kernels, and only
    those with whitespace to fix through its (slow) regex replace; the rest through Python's own
    ``\s``/``casefold``, so the key is the same either way.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    keys = pc.ascii_lower(texts)
    to_fix = pc.match_substring_regex(texts, _ASCII_SPACE_TO_FIX)
    if pc.any(to_fix).as_py():
        fixed = pc.utf8_trim(pc.replace_substring_regex(pc.filter(keys, to_fix), _ASCII_SPACE_RUN, " "), " ")
        keys = pc.replace_with_mask(keys, to_fix, fixed)
    other = pc.invert(pc.string_is_ascii(texts))
    if pc.any(other).as_py():
        slow = [re.sub(r"\s+", " ", text).strip().casefold() for text in pc.filter(texts, other).to_pylist()]
        keys = pc.replace_with_mask(keys, other, pa.array(slow, type=keys.type))
    return keys


def _seen_before(texts: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Per split, an exact id for each text and whether that text appeared in an earlier split.

    ``texts`` holds pyarrow string arrays without nulls. Ids are the codes of pyarrow's
    ``dictionary_encode`` over all splits in order (exact, no hash collisions, numbered in order
    of first appearance like ``pandas.factorize``): a text whose id is below the count of
    distinct texts before its split appeared earlier.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    whole = pa.concat_arrays(list(texts.values())) if texts else pa.array([], type=pa.large_string())
    ids = pc.dictionary_encode(whole).indices.to_numpy(zero_copy_only=False).astype(np.int64)
    start, distinct_before = 0, 0
    out = {}
    for split, array in texts.items():
        split_ids = ids[start : start + len(array)]
        out[split] = (split_ids, split_ids < distinct_before)
        start += len(array)
        distinct_before = int(ids[:start].max()) + 1 if start else 0
    return out


def _label_flags(label: pd.Categorical) -> dict[str, Any]:
    """Rows whose label is malformed, one boolean array per kind (nulls are never flagged here).

    These are rejected, not normalised: silently merging ``"sport "`` into ``"sport"`` or
    mapping ``3`` to a name would change what the data says without anyone seeing it. Of a
    group of case/whitespace variants, the rows of the most common spelling are left unflagged
    so the rows named are the odd ones out; likewise for the minority kind of a mixed column.
    Each test runs once per distinct label and reaches the rows through the codes.
    """
    import numpy as np
    import pandas as pd

    codes = np.asarray(label.codes)
    present = codes >= 0
    names = pd.Series(np.asarray(label.categories, dtype=object), dtype=object)

    def per_row(flags: Any) -> Any:
        return present & np.append(np.asarray(flags, dtype=bool), False)[codes]

    padded = per_row(names != names.str.strip())
    counts = pd.Series(names.to_numpy()[codes[present]], dtype=object).value_counts()
    keys = normalise_text(counts.index.to_series())
    # Within each normalised group the first (most common) spelling is the accepted one.
    variant = per_row(names.isin(set(counts.index[keys.duplicated().to_numpy()])))
    numeric = per_row(names.str.strip().str.fullmatch(r"[+-]?\d+(\.\d+)?"))
    n_numeric, n_named = int(numeric.sum()), int((~numeric & present).sum())
    mixed = np.zeros(len(codes), dtype=bool)
    if n_numeric and n_named:
        mixed = present & (numeric if n_numeric <= n_named else ~numeric)
    return {PADDED: padded, VARIANT: variant, MIXED: mixed}


def _text_columns(text: pd.Series) -> tuple[Any, Any, Any]:
    """A text column as (pyarrow strings, nulls as empty and other values as ``str``; is-a-string flags;
    stripped lengths as floats, NaN where the text is missing)."""
    import numpy as np
    import pandas as pd
    import pyarrow.compute as pc

    missing = text.isna().to_numpy()
    if isinstance(text.dtype, pd.ArrowDtype) or pd.api.types.infer_dtype(text, skipna=True) == "string":
        array = _as_arrow(text)
        is_str = ~missing
    else:
        is_str = text.map(lambda v: isinstance(v, str)).to_numpy(dtype=bool)
        array = _as_arrow(text.map(lambda v: "" if v is None or v is pd.NA else str(v)))
    length = pc.utf8_length(pc.utf8_trim(array, PYTHON_SPACES)).to_numpy(zero_copy_only=False).astype(np.float64)
    length[missing] = np.nan
    return array, is_str, length


def derive_columns(frames: dict[str, pd.DataFrame], text_column: str, label_column: str) -> dict[str, pd.DataFrame]:
    """The frames the suite runs on: the label (as strings) and compact columns derived from the text.

    Great Expectations fingerprints and copies its input frame, which costs seconds on a
    million long texts; on these numeric columns it costs milliseconds. A derived column exists
    exactly when its source column does, so existence checks still see a missing column.
    Texts are identified exactly (see ``_seen_before``), once as given and once normalised
    (``normalise_text``) for near-duplicate leakage. Each text column becomes one pyarrow array
    once, and every derived column comes from it with vectorised kernels.
    """
    import pandas as pd

    texts: dict[str, Any] = {}
    out: dict[str, pd.DataFrame] = {}
    for split in SPLITS:
        frame = frames[split]
        columns: dict[str, Any] = {}
        if label_column in frame.columns:
            label = frame[label_column]
            # Plain arrays from here on: the input's index (a slice, say) must not realign rows.
            as_text = label.astype(str).where(label.notna(), None)
            columns[label_column] = pd.Categorical(as_text.to_numpy(dtype=object))
            for suffix, flags in _label_flags(columns[label_column]).items():
                columns[label_column + suffix] = flags
        if text_column in frame.columns:
            texts[split], is_str, length = _text_columns(frame[text_column])
            columns[text_column + LENGTH] = length
            columns[text_column + STRING] = is_str
        out[split] = pd.DataFrame(columns, index=pd.RangeIndex(len(frame)))
    if texts:
        exact = _seen_before(texts)
        near = _seen_before({split: _normalised_keys(array) for split, array in texts.items()})
        for split, (split_ids, seen) in exact.items():
            out[split][text_column + HASH] = split_ids
            out[split][text_column + SEEN] = seen
            # Exact repeats are the leakage check's; this one names only the rows it alone catches.
            out[split][text_column + NEAR_SEEN] = near[split][1] & ~seen
    return out


def build_profile(
    frames: dict[str, pd.DataFrame],
    prepared: dict[str, pd.DataFrame],
    text_column: str,
    label_column: str,
    data_version: str,
) -> dict[str, Any]:
    """The reference profile of accepted data (``bertops.drift.build_profile``): the train split's label
    mix, stripped text lengths and vocabulary, and the validation split's out-of-vocabulary rate."""
    train = prepared["train"]
    return drift.build_profile(
        train[text_column + LENGTH].dropna().to_numpy(),
        train[label_column].astype(str).tolist(),
        data_version,
        _as_arrow(frames["train"][text_column]),
        _as_arrow(frames["validation"][text_column]),
    )


def build_suite(
    split: str,
    columns: list[str],
    text_column: str,
    label_column: str,
    labels: list[str],
    config: ValidationConfig,
    reference: dict[str, Any] | None,
) -> gx.ExpectationSuite:
    """The expectation suite for one split, built in code so it is versioned with the project."""
    import great_expectations as gx

    exp = gx.expectations
    suite = gx.ExpectationSuite(name=f"bertops-{split}")
    min_rows = config.min_train_rows if split == "train" else config.min_eval_rows
    expectations: list[Any] = [
        exp.ExpectTableRowCountToBeBetween(
            min_value=min_rows, max_value=config.max_rows, description=f"row count in [{min_rows}, {config.max_rows}]"
        ),
        *(
            exp.ExpectColumnToExist(column=present_as, description=f"required column {column!r}")
            for column, present_as in ((text_column, text_column + LENGTH), (label_column, label_column))
        ),
    ]
    if text_column + LENGTH in columns and label_column in columns:
        expectations += _text_expectations(split, text_column, config)
        expectations += _label_expectations(split, label_column, labels, config)
        if split == "train" and reference is not None:
            expectations += _drift_expectations(text_column, label_column, config, reference)
    for expectation in expectations:
        suite.add_expectation(expectation)
    return suite


def _text_expectations(split: str, text: str, config: ValidationConfig) -> list[Any]:
    """Text present, a string, of a sane length, unique, and (outside train) not leaked from an earlier split."""
    import great_expectations as gx

    exp = gx.expectations
    checks: list[Any] = [
        exp.ExpectColumnValuesToNotBeNull(column=text + LENGTH, description="no missing text"),
        exp.ExpectColumnValuesToBeInSet(column=text + STRING, value_set=[True], description="text is a string"),
        exp.ExpectColumnValuesToBeBetween(
            column=text + LENGTH,
            min_value=config.min_text_chars,
            max_value=config.max_text_chars,
            description=f"text length in [{config.min_text_chars}, {config.max_text_chars}] characters",
        ),
        exp.ExpectColumnValuesToBeUnique(column=text + HASH, description="no duplicate texts"),
    ]
    if split != "train":
        checks += [
            exp.ExpectColumnValuesToBeInSet(
                column=text + SEEN, value_set=[False], description="no text shared with an earlier split (leakage)"
            ),
            exp.ExpectColumnValuesToBeInSet(
                column=text + NEAR_SEEN,
                value_set=[False],
                description="no text equal to an earlier split's up to case and whitespace (near-duplicate leakage)",
            ),
        ]
    return checks


def _label_expectations(split: str, label: str, labels: list[str], config: ValidationConfig) -> list[Any]:
    """Labels present, well-formed (train), in the label set, and each class within its share bounds."""
    import great_expectations as gx

    exp = gx.expectations
    checks: list[Any] = [exp.ExpectColumnValuesToNotBeNull(column=label, description="no missing label")]
    if split == "train":
        # The label set comes from train (or --labels), so a malformed label in another split
        # is already an unknown label there; checking train names the rows at their source.
        checks += [
            exp.ExpectColumnValuesToBeInSet(column=label + suffix, value_set=[False], description=description)
            for suffix, description in (
                (PADDED, "label has no leading or trailing whitespace"),
                (VARIANT, "no label differs from another only in case or whitespace"),
                (MIXED, "labels are all numeric codes or all names, not a mix"),
            )
        ]
    checks.append(
        exp.ExpectColumnValuesToBeInSet(column=label, value_set=labels, description=f"label in {{{', '.join(labels)}}}")
    )
    for name in labels:
        checks += [
            exp.ExpectColumnValuesToBeInSet(
                column=label,
                value_set=[name],
                mostly=config.min_class_share,
                description=f"label {name!r} has at least {config.min_class_share:.0%} of rows (class collapse)",
                meta={SHARE_OF: name, "bound": "min"},
            ),
            exp.ExpectColumnValuesToNotBeInSet(
                column=label,
                value_set=[name],
                mostly=round(1 - config.max_class_share, 6),
                description=f"label {name!r} has at most {config.max_class_share:.0%} of rows",
                meta={SHARE_OF: name, "bound": "max"},
            ),
        ]
    return checks


def _drift_expectations(text: str, label: str, config: ValidationConfig, reference: dict[str, Any]) -> list[Any]:
    """The train split's label mix and text lengths within KL bounds of the accepted reference profile."""
    import great_expectations as gx

    exp = gx.expectations
    return [
        exp.ExpectColumnKLDivergenceToBeLessThan(
            column=label,
            partition_object={"values": list(reference["labels"]), "weights": list(reference["labels"].values())},
            threshold=config.max_label_drift,
            description=f"label mix within KL {config.max_label_drift} of the reference ({reference['data_version']})",
        ),
        exp.ExpectColumnKLDivergenceToBeLessThan(
            column=text + LENGTH,
            partition_object={"bins": reference["length_edges"], "weights": reference["length_weights"]},
            threshold=config.max_length_drift,
            description=f"text lengths within KL {config.max_length_drift} of the reference ({reference['data_version']})",
        ),
    ]


def _run_suite(
    context: Any,
    split: str,
    derived: pd.DataFrame,
    original: pd.DataFrame,
    suite: gx.ExpectationSuite,
    text_column: str,
    label_column: str,
) -> list[CheckResult]:
    asset = context.data_sources.add_pandas(f"pandas-{split}").add_dataframe_asset(name=split)
    batch = asset.add_batch_definition_whole_dataframe("all").get_batch(batch_parameters={"dataframe": derived})
    result = batch.validate(suite, result_format={"result_format": "SUMMARY", "partial_unexpected_count": 3})
    return [_check_result(split, item, derived, original, (text_column, label_column)) for item in result.results]


def _check_result(
    split: str, item: Any, derived: pd.DataFrame, original: pd.DataFrame, sources: tuple[str, str]
) -> CheckResult:
    """One expectation's result as the report shows it: the observed value, and bad rows only where rows are bad."""
    config = item.expectation_config
    details = item.result or {}
    column = config.kwargs.get("column")
    # Derived columns hold hashes and flags; show the text or label they came from instead.
    source = next((base for base in sources if column and column.startswith(base + "__")), column)
    observed, value = _observed(config, details, derived.get(column) if column else None, bool(item.success))
    share_check = SHARE_OF in (config.meta or {})
    rows = [] if share_check else [int(i) for i in details.get("partial_unexpected_index_list", [])[:3]]
    examples = [_example(original[source], i) for i in rows] if source in original.columns else []
    if not item.success and item.exception_info and item.exception_info.get("raised_exception"):
        examples.append(str(item.exception_info.get("exception_message", ""))[:160])
    return CheckResult(
        split=split,
        expectation=config.type,
        description=config.description or config.type,
        column=source,
        success=bool(item.success),
        unexpected_count=0 if share_check else int(details.get("unexpected_count") or 0),
        observed=observed,
        examples=examples,
        rows=[i + 1 for i in rows],
        value=value,
    )


def _example(values: pd.Series, row: int) -> str:
    """One value as the report quotes it; a pyarrow-backed column's missing value reads ``None`` as in any other."""
    import pandas as pd

    value = values.iloc[row]
    return repr(None if value is pd.NA and isinstance(values.dtype, pd.ArrowDtype) else value)[:80]


def _observed(
    config: Any, details: dict[str, Any], column: pd.Series | None, success: bool
) -> tuple[str, float | None]:
    """What a check saw, in words and as a number: a label's share, a KL divergence, a row count, or bad rows of all."""
    meta = config.meta or {}
    value = details.get("observed_value")
    if config.type == "expect_column_to_exist":
        return ("present" if success else "missing"), None
    if "threshold" in config.kwargs:
        limit = f"max {config.kwargs['threshold']:g}"
        if isinstance(value, float | int):
            return f"KL {float(value):.4f} ({limit})", float(value)
        # GX reports an infinite divergence as None: mass where the reference has none.
        return f"KL infinite: values the reference never had ({limit})", None
    if isinstance(value, float | int):
        return f"{int(value)} rows", float(value)
    if "unexpected_count" not in details:
        return ("" if value is None else str(value)), None
    present = int(details.get("element_count") or 0) - int(details.get("missing_count") or 0)
    unexpected = int(details.get("unexpected_count") or 0)
    if SHARE_OF in meta:
        share = (unexpected if meta.get("bound") == "max" else present - unexpected) / max(present, 1)
        return f"{share:.1%} of {present} rows", share
    text = f"{unexpected} of {int(details.get('element_count') or 0)} rows bad"
    if config.type == "expect_column_values_to_be_between" and column is not None and column.notna().any():
        text += f"; lengths {column.min():.0f}-{column.max():.0f}"
    return text, float(unexpected)


def validate_frames(
    frames: dict[str, pd.DataFrame],
    data_version: str,
    text_column: str = "text",
    label_column: str = "label",
    config: ValidationConfig | None = None,
    reference: dict[str, Any] | None = None,
) -> tuple[ValidationReport, dict[str, pd.DataFrame]]:
    """Run the suite on in-memory splits; returns the report and the derived frames it ran on."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    config = config or ValidationConfig()
    # Some GX modules set their own logger to INFO when imported (one announces the temporary
    # directory of every ephemeral context): quiet them all, not only the package's logger.
    for name in [n for n in logging.root.manager.loggerDict if n.split(".")[0] == "great_expectations"]:
        logging.getLogger(name).setLevel(logging.WARNING)
    prepared = derive_columns(frames, text_column, label_column)
    train = prepared["train"]
    if config.labels:
        labels = sorted({name.strip() for name in config.labels.split(",") if name.strip()})
    elif label_column in train.columns:
        labels = sorted(str(v) for v in train[label_column].dropna().unique())
    else:
        labels = []
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    checks: list[CheckResult] = []
    for split, derived in prepared.items():
        suite = build_suite(split, list(derived.columns), text_column, label_column, labels, config, reference)
        checks.extend(_run_suite(context, split, derived, frames[split], suite, text_column, label_column))
    report = ValidationReport(
        success=all(c.success for c in checks),
        data_version=data_version,
        rows={split: len(frame) for split, frame in frames.items()},
        labels=labels,
        reference_version=reference["data_version"] if reference else "",
        checks=checks,
        label_counts=_label_counts(frames, label_column),
        share_bounds=(config.min_class_share, config.max_class_share),
        drift=_drift_figures(train, text_column, label_column, config, reference),
    )
    return report, prepared


def _label_counts(frames: dict[str, pd.DataFrame], label_column: str) -> dict[str, dict[str, int]]:
    """Rows per label in each split that has the label column, labels as strings, missing ones as ``MISSING_LABEL``."""
    counts = {}
    for split, frame in frames.items():
        if label_column in frame.columns:
            label = frame[label_column]
            labels = label.astype(str).where(label.notna(), MISSING_LABEL)
            counts[split] = {str(k): int(v) for k, v in labels.value_counts().sort_index().items()}
    return counts


def _drift_figures(
    train: pd.DataFrame, text_column: str, label_column: str, config: ValidationConfig, reference: dict[str, Any] | None
) -> DriftFigures | None:
    """The distributions the drift checks compared, for the report's chart; None without a reference or columns."""
    import numpy as np

    if reference is None or label_column not in train.columns or text_column + LENGTH not in train.columns:
        return None
    shares = train[label_column].astype(str).value_counts(normalize=True)
    lengths = train[text_column + LENGTH].dropna().to_numpy()
    counts, _ = np.histogram(lengths, bins=reference["length_edges"])
    return DriftFigures(
        reference_labels={str(k): float(v) for k, v in reference["labels"].items()},
        train_labels={str(k): float(v) for k, v in shares.sort_index().items()},
        length_edges=[float(e) for e in reference["length_edges"]],
        reference_lengths=[float(w) for w in reference["length_weights"]],
        train_lengths=[float(c) / max(int(counts.sum()), 1) for c in counts],
        max_label_drift=config.max_label_drift,
        max_length_drift=config.max_length_drift,
        label_column=label_column,
        text_column=text_column,
    )


def failure_message(report: ValidationReport, source: str) -> str:
    """One line naming the first broken expectations, their column, and example rows."""
    problems = []
    for check in report.failures()[:3]:
        where = f"column {check.column!r}" if check.column else "table"
        rows = f" at rows {', '.join(map(str, check.rows))}" if check.rows else ""
        count = (
            f"{check.unexpected_count} bad row{'' if check.unexpected_count == 1 else 's'}{rows}"
            if check.unexpected_count
            else ""
        )
        observed = f"observed {check.observed}" if check.observed else ""
        examples = f"e.g. {', '.join(check.examples)}" if check.examples else ""
        detail = "; ".join(part for part in (count, observed, examples) if part)
        problems.append(
            f"{check.split} split, {where}: {check.description} failed [{check.expectation}]"
            + (f" ({detail})" if detail else "")
        )
    more = len(report.failures()) - len(problems)
    return f"data validation failed for {source}: " + " | ".join(problems) + (f" | and {more} more" if more > 0 else "")


def validate_dataset(
    data_path: Path,
    out_dir: Path,
    data_version: str,
    text_column: str = "text",
    label_column: str = "label",
    config: ValidationConfig | None = None,
    profile_path: Path | None = None,
    update_reference: bool = True,
) -> ValidationReport:
    """Validate ``data_path`` (a split directory or one file); on success write the splits to ``out_dir``.

    Always writes ``report.json`` and ``report.html`` to ``out_dir``, and on success the data's
    reference profile (``bertops.drift.PROFILE_FILE``) beside the splits. On failure raises
    ``ValidationFailed`` naming the broken expectations, their column and example rows, and
    writes no split, so nothing downstream can consume bad data. ``profile_path`` holds the
    reference profile for drift checks; with ``update_reference`` it is created or replaced,
    only when validation passes.
    """
    frames = load_dataset(data_path, label_column, arrow_columns=(text_column,))
    reference = (
        json.loads(profile_path.read_text(encoding="utf-8")) if profile_path and profile_path.is_file() else None
    )
    report, prepared = validate_frames(frames, data_version, text_column, label_column, config, reference)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(asdict(report), indent=2), encoding="utf-8")
    (out_dir / "report.html").write_text(render_html(report), encoding="utf-8")
    if not report.success:
        raise ValidationFailed(failure_message(report, str(data_path)))
    for split, frame in frames.items():
        write_validated_split(out_dir, split, frame[text_column], frame[label_column])
    profile = json.dumps(build_profile(frames, prepared, text_column, label_column, data_version), indent=2)
    # The run's own profile travels with its data: the register step records it with the model version.
    (out_dir / drift.PROFILE_FILE).write_text(profile, encoding="utf-8")
    if profile_path is not None and update_reference:
        profile_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = profile_path.with_suffix(".tmp")
        tmp.write_text(profile, encoding="utf-8")
        tmp.replace(profile_path)
    log.info("validation passed: %s", report.summary())
    return report


def validate_source(
    data_path: str,
    data_remote: str,
    out_dir: Path,
    text_column: str,
    label_column: str,
    config: ValidationConfig,
    profile_path: Path,
) -> tuple[str, ValidationReport]:
    """Pull ``data_path`` from ``data_remote`` when one is given, version it, and validate it.

    Returns the data version (``md5:...`` from its ``.dvc`` file, or ``untracked``) and the report.
    """
    source = Path(data_path)
    if data_remote:
        dvc_data.pull_from_remote(source, data_remote)
    version = dvc_data.data_version(source)
    return version, validate_dataset(source, out_dir, version, text_column, label_column, config, profile_path)


def validate_run(settings: dict[str, Any], out_dir: Path) -> tuple[str, ValidationReport]:
    """The validate step: check the run's settings (``check_run_settings``), then ``validate_source``.

    ``settings`` holds the step's parameters by name: the ``ValidationConfig`` fields, the run
    settings ``run_setting_problems`` checks, ``data_path``, ``data_remote``, the column names
    and ``state_dir``, under which the drift reference lives (``REFERENCE_PROFILE``).
    """
    import dataclasses
    import inspect

    checked = inspect.signature(run_setting_problems).parameters
    check_run_settings(pod=in_pod(), **{name: settings[name] for name in checked if name != "pod"})
    config = ValidationConfig(**{f.name: settings[f.name] for f in dataclasses.fields(ValidationConfig)})
    profile = Path(settings["state_dir"]) / REFERENCE_PROFILE
    return validate_source(
        settings["data_path"],
        settings["data_remote"],
        out_dir,
        settings["text_column"],
        settings["label_column"],
        config,
        profile,
    )
