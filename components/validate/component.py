"""KFP component: validate the data, publish the validated splits, the HTML report and a JSON summary."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Output

from bertops.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def validate(
    data_path: str,
    data_remote: str,
    text_column: str,
    label_column: str,
    labels: str,
    min_text_chars: int,
    max_text_chars: int,
    min_train_rows: int,
    min_eval_rows: int,
    max_rows: int,
    min_class_share: float,
    max_class_share: float,
    max_label_drift: float,
    max_length_drift: float,
    state_dir: str,
    dataset: Output[Dataset],
    report: Output[HTML],
    summary_json: Output[Artifact],
) -> NamedTuple("ValidateOutputs", [("data_version", str), ("summary", str)]):  # type: ignore[valid-type]
    """Run the Great Expectations suite on ``data_path``; fail the pipeline on any broken expectation.

    Returns the data version (``md5:...`` from the ``.dvc`` file, or ``untracked``) so later
    steps can record lineage, and a one-line summary of the checks. Drift is measured against
    ``<state_dir>/validation/reference_profile.json``, which a passing run replaces.
    """
    import shutil
    from collections import namedtuple
    from pathlib import Path

    from bertops.config import ValidationConfig
    from bertops.dvc_data import data_version, pull_from_remote
    from bertops.step import step
    from components.validate.validate import validate_dataset

    with step("validate"):
        source = Path(data_path)
        if data_remote:
            pull_from_remote(source, data_remote)
        version = data_version(source)
        config = ValidationConfig(
            labels=labels,
            min_text_chars=min_text_chars,
            max_text_chars=max_text_chars,
            min_train_rows=min_train_rows,
            min_eval_rows=min_eval_rows,
            max_rows=max_rows,
            min_class_share=min_class_share,
            max_class_share=max_class_share,
            max_label_drift=max_label_drift,
            max_length_drift=max_length_drift,
        )
        out = Path(dataset.path)
        profile = Path(state_dir) / "validation" / "reference_profile.json"
        try:
            result = validate_dataset(source, out, version, text_column, label_column, config, profile)
        finally:
            if (out / "report.html").is_file():
                shutil.copyfile(out / "report.html", report.path)
                shutil.copyfile(out / "report.json", summary_json.path)
        dataset.metadata.update({"data_version": version, "rows": result.rows, "labels": result.labels})
        ValidateOutputs = namedtuple("ValidateOutputs", ["data_version", "summary"])
        return ValidateOutputs(version, result.summary())
