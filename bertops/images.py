"""Container images of the pipeline steps: the one place their names and tags are set.

Override at compile time with ``BERTOPS_CPU_IMAGE`` / ``BERTOPS_CUDA_IMAGE`` (for a private
registry); the values are read when the components are defined.
"""

import os

from bertops import __version__

CPU_IMAGE = os.environ.get("BERTOPS_CPU_IMAGE", f"ghcr.io/bertops/bertops-cpu:{__version__}")
CUDA_IMAGE = os.environ.get("BERTOPS_CUDA_IMAGE", f"ghcr.io/bertops/bertops-cuda:{__version__}")
