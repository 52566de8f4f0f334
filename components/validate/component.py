"""KFP component: validate the data, publish the validated splits and the HTML report."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Dataset, Output

from bertops.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def validate(
    data_dir: str,
    text_column: str,
    label_column: str,
    dataset: Output[Dataset],
    report: Output[HTML],
) -> NamedTuple("ValidateOutputs", [("data_version", str), ("summary", str)]):  # type: ignore[valid-type]
    """Run the Great Expectations suite on ``data_dir``; fail the pipeline on any broken expectation.

    Returns the data version (``md5:...`` from ``data.dvc``) so later steps can record lineage,
    and a one-line summary of the checks.
    """
    import shutil
    from collections import namedtuple
    from pathlib import Path

    from bertops.dvc_data import data_version
    from bertops.step import step
    from components.validate.validate import validate_dataset

    with step("validate"):
        version = data_version(Path(data_dir))
        out = Path(dataset.path)
        try:
            result = validate_dataset(Path(data_dir), out, version, text_column, label_column)
        finally:
            if (out / "report.html").is_file():
                shutil.copyfile(out / "report.html", report.path)
        dataset.metadata.update({"data_version": version, "rows": result.rows, "labels": result.labels})
        ValidateOutputs = namedtuple("ValidateOutputs", ["data_version", "summary"])
        return ValidateOutputs(version, result.summary())
