"""Default data: deterministic materialization, the DVC pin, readable errors for unreadable files."""

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bertops import dvc_data
from bertops.dataio import find_split_file, read_table
from bertops.default_data import load_bbc_news, materialize
from bertops.errors import BertopsError


def _md5s(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_materialize_is_deterministic_stratified_and_leak_free(bbc_data: Path, tmp_path: Path) -> None:
    materialize(tmp_path / "again")
    assert _md5s(bbc_data) == _md5s(tmp_path / "again")
    splits = {s: read_table(bbc_data / f"{s}.jsonl") for s in ("train", "validation", "test")}
    assert sum(len(f) for f in splits.values()) == len(load_bbc_news()) == 2125
    for frame in splits.values():
        assert sorted(frame["label"].unique()) == ["business", "entertainment", "politics", "sports", "tech"]
    texts = [set(f["text"]) for f in splits.values()]
    assert not (texts[0] & texts[1]) and not (texts[0] & texts[2]) and not (texts[1] & texts[2])


def test_fresh_clone_pull_rebuilds_pinned_data_pushes_and_round_trips(repo_root: Path, tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    subprocess.run(["git", "init", "-q", str(clone)], check=True)
    shutil.copytree(repo_root / ".dvc", clone / ".dvc", ignore=shutil.ignore_patterns("cache", "tmp"))
    shutil.copy(repo_root / "data.dvc", clone / "data.dvc")
    how = dvc_data.pull(clone)
    assert "verified against data.dvc" in how
    assert dvc_data.is_clean(clone)
    assert (clone / "data.dvc").read_bytes() == (repo_root / "data.dvc").read_bytes()
    # Round trip: the local remote now holds the data; with data and cache gone, `dvc pull`
    # brings back the same bytes.
    pinned = _md5s(clone / "data")
    shutil.rmtree(clone / "data")
    shutil.rmtree(clone / ".dvc" / "cache")
    assert dvc_data.pull(clone) == "pulled from the DVC remote"
    assert _md5s(clone / "data") == pinned
    assert dvc_data.is_clean(clone)
    assert dvc_data.data_version(clone / "data") == "md5:" + dvc_data.pinned_md5(repo_root / "data.dvc")

    # A pod: the image's DVC project (data.dvc, .dvc/config, a config.local without git) pulls
    # from a remote the run names by URL, which no config file of the image knows.
    bucket = tmp_path / "bucket"
    subprocess.run([sys.executable, "-m", "dvc", "remote", "add", "bucket", str(bucket)], cwd=clone, check=True)
    dvc_data.push(clone, "bucket")
    pod = tmp_path / "pod"
    (pod / ".dvc").mkdir(parents=True)
    shutil.copy(repo_root / ".dvc" / "config", pod / ".dvc" / "config")
    shutil.copy(repo_root / "docker" / "dvc-config.local", pod / ".dvc" / "config.local")
    shutil.copy(repo_root / "data.dvc", pod / "data.dvc")
    dvc_data.pull_from_remote(pod / "data", str(bucket))
    assert _md5s(pod / "data") == pinned


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("train.jsonl", b"", "file is empty"),
        ("train.jsonl", b'{"text": "a", "label": "x"}\n{"text": "trunc', "line 2 is not valid JSON"),
        ("train.jsonl", b'{"text": "caf\xe9", "label": "x"}\n', "line 1 is not valid UTF-8"),
        ("train.csv", b"text,label\ncaf\xe9,x\n", "not valid UTF-8"),
        ("train.parquet", b"PAR1 not really", "cannot be read as parquet"),
    ],
)
def test_unreadable_files_name_the_file_and_problem(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(BertopsError, match=message) as exc:
        read_table(path)
    assert str(path) in str(exc.value)


def test_missing_split_and_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(BertopsError, match="does not exist"):
        find_split_file(tmp_path / "nope", "train")
    with pytest.raises(BertopsError, match="no test split"):
        find_split_file(tmp_path, "test")
