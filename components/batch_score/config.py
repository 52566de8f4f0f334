"""The batch-score step's settings: the ``bertops score`` flags and the batch-score pipeline's parameters."""

from __future__ import annotations

from dataclasses import dataclass, field

from bertops.config import RegistryConfig

# Texts per forward pass: the server's default batch (serving.config.ServingConfig.max_batch_size).
DEFAULT_BATCH_SIZE = 32
# Rows per resumable chunk: a kill loses at most this much work (about a minute of MiniLM on two CPU cores).
DEFAULT_CHUNK_ROWS = 4096


@dataclass
class BatchScoreConfig:
    """What to score, with which registered version, and how the work is cut up."""

    data_path: str = field(
        default="data/test.jsonl",
        metadata={
            "help": "a .jsonl/.csv/.parquet file, or a directory whose files of those kinds are scored in name order"
        },
    )
    data_remote: str = field(
        default="",
        metadata={"help": "DVC remote to pull the DVC-tracked data holding data_path from first (empty: use it as is)"},
    )
    text_column: str = field(default="text", metadata={"help": "column with the text to classify"})
    model_name: str = field(default=RegistryConfig.model_name, metadata={"help": "registered model to score with"})
    model_version: str = field(default="", metadata={"help": "registry version number or alias (empty: the champion)"})
    state_dir: str = field(default=RegistryConfig.state_dir, metadata={"help": "local state: registry, outputs"})
    tracking_uri: str = field(default="", metadata={"help": "MLflow tracking URI (empty: sqlite under state_dir)"})
    batch_size: int = field(default=DEFAULT_BATCH_SIZE, metadata={"help": "most texts in one forward pass"})
    chunk_rows: int = field(
        default=DEFAULT_CHUNK_ROWS,
        metadata={"help": "rows per chunk, each written when done: a killed run loses at most one chunk"},
    )
    resume_dir: str = field(
        default="",
        metadata={
            "help": "directory on a persistent volume for the chunks of unfinished runs (one folder per pipeline "
            "run), so a retried task resumes (empty: the task's own scratch space)"
        },
    )

    def __post_init__(self) -> None:
        from bertops.errors import BertopsError

        for name in ("batch_size", "chunk_rows"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise BertopsError(f"--{name.replace('_', '-')} must be a whole number >= 1, got {value!r}")
        for name in ("data_path", "text_column", "model_name", "state_dir"):
            if not getattr(self, name):
                raise BertopsError(f"--{name.replace('_', '-')} must not be empty")
