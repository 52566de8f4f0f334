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
    finetune_gpus: int,
    launcher: str,
    workspace_pvc: str,
    deploy_target: str,
    tracking_uri: str,
    dataset: Output[Dataset],
    report: Output[HTML],
    summary_json: Output[Artifact],
) -> NamedTuple(  # type: ignore[valid-type]
    "ValidateOutputs", [("data_version", str), ("summary", str), ("finetune_gpus", str)]
):
    """Check the run's settings, then run the Great Expectations suite on ``data_path``; fail the
    pipeline on a setting that cannot work or on any broken expectation, before any other work.

    Settings: ``workspace_pvc`` is the volume the pipeline was compiled with (a TrainJob or
    PyTorchJob launcher needs one); in a pod, values that only work on one machine are refused.
    Returns the data version (``md5:...`` from the ``.dvc`` file, or ``untracked``) so later
    steps can record lineage, a one-line summary of the checks, and the finetune GPU count as
    the string the KFP driver reads an accelerator count as. Drift is measured against
    the reference profile under ``state_dir`` (``REFERENCE_PROFILE``), which a passing run replaces.
    """
    import shutil
    from collections import namedtuple
    from pathlib import Path

    from bertops.step import step
    from components.validate.validate import validate_run

    settings = dict(locals())
    with step("validate"):
        out = Path(dataset.path)
        try:
            version, result = validate_run(settings, out)
        finally:
            if (out / "report.html").is_file():
                shutil.copyfile(out / "report.html", report.path)
                shutil.copyfile(out / "report.json", summary_json.path)
        dataset.metadata.update({"data_version": version, "rows": result.rows, "labels": result.labels})
        ValidateOutputs = namedtuple("ValidateOutputs", ["data_version", "summary", "finetune_gpus"])
        return ValidateOutputs(version, result.summary(), str(finetune_gpus))
