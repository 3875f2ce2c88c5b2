# syntax=docker/dockerfile:1
#
# ghcr.io/morphtune/morphtune-service: the results service (`morphtune serve`: gRPC on
# 50051, Prometheus /metrics on 9464) and the query CLI, without torch or Ray.
#
# Build from the repository root (the context .dockerignore lets in only what is copied):
#   docker build -f deploy/service.Dockerfile -t ghcr.io/morphtune/morphtune-service:0.1.0 .
#
# The service reads the results store and never imports torch or Ray, but morphtune's
# package metadata requires both; so the wheel goes in with --no-deps and the service's
# own dependencies come from deploy/service-requirements.txt (checked by
# tests/deploy/test_service_deps.py against every import of a running server).
#
# Runs as uid/gid 10001 and writes nothing outside /tmp and /results, so it runs with a
# read-only root filesystem (bytecode is compiled at build time).

FROM python:3.11.15-slim-trixie AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/morphtune

COPY deploy/service-requirements.txt /build/service-requirements.txt
RUN /opt/morphtune/bin/pip install -r /build/service-requirements.txt \
 && /opt/morphtune/bin/pip check

COPY pyproject.toml README.md /build/project/
COPY src/ /build/project/src/
RUN /opt/morphtune/bin/pip wheel --no-deps --wheel-dir /build/dist /build/project \
 && /opt/morphtune/bin/pip install --no-deps /build/dist/morphtune-*.whl \
 && /opt/morphtune/bin/python -c "import importlib.util, sys; sys.exit('torch is installed in the service image' if importlib.util.find_spec('torch') else 0)" \
 && /opt/morphtune/bin/python -c "import morphtune.cli, morphtune.service" \
 && /opt/morphtune/bin/pip uninstall --yes pip \
 && /opt/morphtune/bin/python -m compileall -q /opt/morphtune

FROM python:3.11.15-slim-trixie

LABEL org.opencontainers.image.title="morphtune-service" \
      org.opencontainers.image.description="morphtune results service (gRPC + Prometheus metrics), no torch" \
      org.opencontainers.image.licenses="Apache-2.0"

RUN groupadd --system --gid 10001 morphtune \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin morphtune \
 && mkdir -p /results \
 && chown 10001:10001 /results

COPY --from=build /opt/morphtune /opt/morphtune

ENV PATH=/opt/morphtune/bin:/usr/local/bin:/usr/bin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp

USER 10001:10001
WORKDIR /tmp

# 50051: gRPC (morphtune.v1, grpc.health.v1, reflection); 9464: Prometheus /metrics.
EXPOSE 50051 9464

ENTRYPOINT ["morphtune"]
CMD ["serve", "--results", "/results", "--host", "0.0.0.0", "--port", "50051", "--metrics-port", "9464"]
