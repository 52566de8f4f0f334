"""Bad input to any command: one line on stderr that names the problem, non-zero exit."""

import subprocess
import sys
from pathlib import Path

import pytest


def _bertops(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bertops.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["predict", "hello", "--endpoint", "ghost"], "no local endpoint named 'ghost'"),
        (["endpoints", "delete", "ghost"], "no local endpoint named 'ghost'"),
        (["endpoints", "delete"], "needs the endpoint NAME"),
        (["validate", "no/such/dir"], "no/such/dir does not exist"),
        (["run", "--data-path", "no/such/dir", "--base-model", "/no/model"], "does not exist"),
        (["submit", "--host", "http://127.0.0.1:9", "-o", "p.yaml"], "cannot submit to KFP at http://127.0.0.1:9"),
        (["run", "--finetune-node-selector", "[1]"], "--finetune-node-selector must be an object in JSON, got '[1]'"),
        (["run", "--finetune-tolerations", "{oops"], "--finetune-tolerations is not valid JSON"),
    ],
)
def test_bad_input_gives_one_line_error(tmp_path: Path, args: list[str], fragment: str) -> None:
    result = (
        _bertops(*args, "--state-dir", str(tmp_path))
        if args[0] in ("predict", "endpoints")
        else _bertops(*args, cwd=tmp_path)
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("bertops: error: ") and fragment in lines[-1], result.stderr
    assert "Traceback" not in result.stderr


def test_validate_reports_a_broken_file(tmp_path: Path) -> None:
    for split in ("train", "validation", "test"):
        (tmp_path / f"{split}.jsonl").write_text('{"text": "a", "label": "x"}\n')
    (tmp_path / "test.jsonl").write_bytes(b'{"text": "trunc')
    result = _bertops("validate", str(tmp_path), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "test.jsonl: line 1 is not valid JSON" in result.stderr


def test_unknown_hub_model_offline_names_the_model(tmp_path: Path) -> None:
    from bertops.errors import BertopsError
    from bertops.model_source import load_tokenizer

    with pytest.raises(BertopsError, match="base model 'no-such-org/no-such-model': cannot load it"):
        load_tokenizer("no-such-org/no-such-model")
