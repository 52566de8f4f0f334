"""KFP component: tokenize the validated splits."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from bertops.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def tokenize(
    dataset: Input[Dataset],
    base_model: str,
    max_length: int,
    max_train_samples: int,
    max_eval_samples: int,
    seed: int,
    tokenized: Output[Dataset],
) -> None:
    """Turn the validated text splits into unpadded token ids (Parquet) plus the label names."""
    from pathlib import Path

    from bertops.step import step
    from components.tokenize.tokenization import tokenize_dataset

    with step("tokenize"):
        counts = tokenize_dataset(
            Path(dataset.path), Path(tokenized.path), base_model, max_length, max_train_samples, max_eval_samples, seed
        )
        tokenized.metadata.update({"rows": counts, "max_length": max_length, "base_model": base_model})
