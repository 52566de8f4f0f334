"""Container images of the pipeline steps: the one place their names and tags are set.

Images are tagged by the git commit of the checkout that compiles the pipeline and builds the
images (``0.1.0-<12 hex digits>``, ``-dirty`` for uncommitted changes), so a node never runs an
old image cached under a reused tag. ``BERTOPS_IMAGE_TAG`` sets the tag, and
``BERTOPS_CPU_IMAGE`` / ``BERTOPS_CUDA_IMAGE`` whole names (a private registry); they are read
when the components are defined. ``docker/build.sh`` builds each image from its Dockerfile
under these names (``python -m bertops.images`` lists them).
"""

import os
import subprocess
from pathlib import Path

from bertops import __version__

REPOSITORY = "ghcr.io/bertops"
_ROOT = Path(__file__).resolve().parents[1]


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=_ROOT, capture_output=True, text=True, check=True).stdout.strip()


def source_tag() -> str:
    """``<version>-<commit>`` of this checkout (``-dirty`` if tracked files changed), else ``<version>``."""
    try:
        if Path(_git("rev-parse", "--show-toplevel")) != _ROOT:
            return __version__
        commit = _git("rev-parse", "--short=12", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        # An installed package (an image, a wheel) has no checkout: its version is its tag.
        return __version__
    return f"{__version__}-{commit}{'-dirty' if dirty else ''}"


TAG = os.environ.get("BERTOPS_IMAGE_TAG") or source_tag()
# docker/build.sh bakes both names into the images, so a step in a pod (the deploy step names
# the serving image) sees the names it was built under, not the bare version.
CPU_IMAGE = os.environ.get("BERTOPS_CPU_IMAGE") or f"{REPOSITORY}/bertops-cpu:{TAG}"
CUDA_IMAGE = os.environ.get("BERTOPS_CUDA_IMAGE") or f"{REPOSITORY}/bertops-cuda:{TAG}"

# The Dockerfile of each image, relative to the repository root (the build context).
DOCKERFILES = {CPU_IMAGE: "docker/cpu.Dockerfile", CUDA_IMAGE: "docker/cuda.Dockerfile"}

if __name__ == "__main__":
    for image, dockerfile in DOCKERFILES.items():
        print(image, dockerfile)
