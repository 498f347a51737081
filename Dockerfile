# syntax=docker/dockerfile:1
# One image for every Pixelshop process; the command picks which:
#   python -m services.identity   (or services.assets, services.presets, ...)
#   python -m gateway             (the Python gateway; production uses Envoy)
#   python -m tools.provision --service identity   (roles, schema, migrations)
# It runs as UID 10001 on a read-only root file system: nothing is written outside /tmp.
#
#   docker build -t pixelshop/backend:0.1.0 .

# Pin the digest as well in CI: python:3.11-slim-bookworm@sha256:...
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /build
COPY pyproject.toml requirements.lock ./
# pyproject.toml's runtime dependencies at exactly the versions of requirements.lock
# (given as constraints): the lock also pins the dev tools (pytest, mypy, moto, ...),
# which have no place in a production image. pip compiles the bytecode here, because the
# running container cannot write it.
RUN python -m venv /opt/venv \
 && python -c 'import tomllib; deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]; print("\n".join(deps))' \
      > runtime-requirements.txt \
 && /opt/venv/bin/pip install --constraint requirements.lock --requirement runtime-requirements.txt

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="pixelshop-backend" \
      org.opencontainers.image.description="Pixelshop gRPC services, Python gateway and provisioning tools"
# PYTHONPATH: the repository root (runtime, services, gateway, tools) and gen/ (the
# generated `pixelshop.*` packages), as the Makefile's .pth file does in the venv.
# HOME: libraries that cache under it get the one writable place.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app:/app/gen \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
RUN groupadd --system --gid 10001 pixelshop \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin pixelshop
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
# Owned by root, so the service user cannot change its own code even where the root
# file system is not mounted read-only.
COPY runtime/ runtime/
COPY services/ services/
COPY gateway/ gateway/
COPY gen/ gen/
COPY tools/ tools/
RUN python -m compileall -q /app
USER 10001:10001
# gRPC services 50051-50055, the Python gateway 8080, metrics 9090 (deploy/k8s sets
# PIXELSHOP_<SERVICE>_METRICS_PORT).
EXPOSE 50051 50052 50053 50054 50055 8080 9090
CMD ["python", "-m", "gateway"]
