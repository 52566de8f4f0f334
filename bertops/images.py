"""Container images of the pipeline steps: the one place their names and tags are set.

Override at compile time with ``BERTOPS_CPU_IMAGE`` / ``BERTOPS_CUDA_IMAGE`` (for a private
registry); the values are read when the components are defined. ``docker/build.sh`` builds
each image from its Dockerfile under these names (``python -m bertops.images`` lists them).
"""

import os

from bertops import __version__

CPU_IMAGE = os.environ.get("BERTOPS_CPU_IMAGE", f"ghcr.io/bertops/bertops-cpu:{__version__}")
CUDA_IMAGE = os.environ.get("BERTOPS_CUDA_IMAGE", f"ghcr.io/bertops/bertops-cuda:{__version__}")

# The Dockerfile of each image, relative to the repository root (the build context).
DOCKERFILES = {CPU_IMAGE: "docker/cpu.Dockerfile", CUDA_IMAGE: "docker/cuda.Dockerfile"}

if __name__ == "__main__":
    for image, dockerfile in DOCKERFILES.items():
        print(image, dockerfile)
