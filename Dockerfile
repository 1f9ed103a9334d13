# syntax=docker/dockerfile:1
#
# Vigil operator image. Two stages:
#   builder  builds the vigil-operator wheel and a wheelhouse of its runtime dependencies, at the
#            versions of requirements/runtime.lock (the ones the tests ran: `make lock`);
#   runtime  installs ONLY that wheel with its runtime dependencies (no extras: never scikit-learn,
#            no compilers, no build tools), runs as UID 10001 on a read-only root filesystem.
# tests/chart/test_image.py reproduces these steps without Docker (wheel -> fresh venv) and parses
# this file, so keep the `pip wheel` / `pip install` lines in the shape it expects.
# Size target and how to measure it: docs/image.md.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# The build context is an allow-list (.dockerignore): pyproject.toml, README.md, operator/,
# requirements/runtime.lock and requirements/build.lock. The runtime lock constrains the wheelhouse, so
# the runtime stage, which installs offline from it, gets exactly the locked versions. The build lock
# pins the backends (setuptools, wheel) pip puts in the wheel's isolated build environment, with the
# pip `make bootstrap` pins (scripts/bootstrap.sh; tests/chart/test_image.py checks they agree): the
# base image's pip may predate --build-constraint, and without it the build used the newest of the day.
COPY . .
RUN pip install pip==26.3 \
 && pip wheel --no-deps --build-constraint requirements/build.lock --wheel-dir /wheels . \
 && pip wheel --wheel-dir /wheels --constraint requirements/runtime.lock /wheels/vigil_operator-*.whl

FROM ${PYTHON_IMAGE} AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="vigil" \
      org.opencontainers.image.description="Kubernetes operator for AIOps auto-remediation: ONNX anomaly detection on Prometheus, guarded AWS actions." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="Vigil" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/tmp
RUN groupadd --system --gid 10001 vigil \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin vigil
# Runtime dependencies only: the wheel without extras, from the builder's wheelhouse, offline.
# pip, setuptools and wheel are removed afterwards: nothing installs anything at run time.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels /wheels/vigil_operator-*.whl \
 && vigil run --help >/dev/null \
 && vigil version \
 && python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('sklearn') is not None)" \
 && pip uninstall --yes pip setuptools wheel \
 && rm -rf /root/.cache /tmp/*
USER 10001:10001
WORKDIR /tmp
EXPOSE 8080
ENTRYPOINT ["vigil", "run"]
