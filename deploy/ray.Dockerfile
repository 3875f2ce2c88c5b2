# syntax=docker/dockerfile:1
#
# ghcr.io/morphtune/morphtune-ray: Ray 2.60 (Python 3.11, CUDA 12.8) with CUDA PyTorch and
# morphtune, for the KubeRay head, the GPU workers and the RayJob submitter.
#
# Build from the repository root (the context .dockerignore lets in only what is copied):
#   docker build -f deploy/ray.Dockerfile -t ghcr.io/morphtune/morphtune-ray:0.1.0 .
#
# Build arguments (defaults are the tested combination):
#   TORCH_VERSION    torch release inside pyproject's range torch>=2.4,<3 (tests run 2.13.0)
#   TORCH_INDEX_URL  the PyTorch wheel index of one CUDA build (cu128 matches the base image)
#   TORCH_CUDA       the CUDA version that build must report; the build fails otherwise
# GPU nodes need an NVIDIA driver that supports CUDA 12.8 (R570 or newer).
#
# Runs as the base image's `ray` user (uid 1000, gid 100) with its sudo rights removed.
# Ray writes to /tmp/ray (give it an emptyDir); results go to /results (the shared PVC)
# or to object storage.

FROM python:3.11.15-slim-trixie AS wheel

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

COPY pyproject.toml README.md /build/project/
COPY src/ /build/project/src/
RUN pip wheel --no-deps --wheel-dir /build/dist /build/project

FROM rayproject/ray:2.60.0-py311-cu128

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
ARG TORCH_CUDA=12.8

LABEL org.opencontainers.image.title="morphtune-ray" \
      org.opencontainers.image.description="Ray 2.60 + CUDA PyTorch + morphtune" \
      org.opencontainers.image.licenses="Apache-2.0"

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# The base image gives `ray` password-less sudo; a pod never needs it.
USER root
RUN sed -i '/^ray ALL=NOPASSWD: ALL$/d' /etc/sudoers \
 && if id -nG ray | grep -qw sudo; then gpasswd --delete ray sudo; fi \
 && mkdir -p /results /specs \
 && chown 1000:100 /results

USER 1000:100
WORKDIR /home/ray

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RAY_USAGE_STATS_ENABLED=0

RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}" \
 && python -c "import sys, torch; want = sys.argv[1]; got = torch.version.cuda or 'none'; sys.exit(0 if got.startswith(want) else f'torch {torch.__version__} is built for CUDA {got}, expected {want}')" "${TORCH_CUDA}"

# morphtune's own requirements, holding Ray and torch at the versions already installed
# (pip would otherwise be free to swap the base image's Ray or the CUDA torch build).
COPY --from=wheel --chown=1000:100 /build/dist/ /tmp/morphtune-dist/
RUN python -c "import ray, torch; print(f'ray=={ray.__version__}'); print(f'torch=={torch.__version__}')" > /tmp/morphtune-pins.txt \
 && pip install --constraint /tmp/morphtune-pins.txt /tmp/morphtune-dist/morphtune-*.whl \
 && rm -rf /tmp/morphtune-dist /tmp/morphtune-pins.txt \
 && python -c "import morphtune, morphtune.runner, morphtune.trainables, morphtune.service; print('morphtune', morphtune.__version__)"

# 6379 GCS, 8265 dashboard and Jobs API, 10001 Ray client, 8080 Ray metrics: reachable
# inside the cluster only (see k8s/ and docs/operations.md).
EXPOSE 6379 8265 10001 8080
