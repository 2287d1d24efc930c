# tailship agent image: `docker build -t tailship:0.1.0 .` (not built in CI: no Docker engine
# runs there; tests/e2e/test_daemonset.py lints this file with hadolint instead).

# Pinned: the base image by its full version, every Python package by constraints.txt.

# -- build: the package as a wheel (and wheels of its dependencies) ---------------------------
FROM python:3.11.11-slim-bookworm AS build
WORKDIR /src
COPY constraints.txt pyproject.toml README.md LICENSE ./
COPY agent ./agent
COPY pipelines ./pipelines
# every dependency at its pinned version, the build backend too (pip applies PIP_CONSTRAINT to
# its isolated build environment as well)
ENV PIP_CONSTRAINT=/src/constraints.txt
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# -- run: slim Python with the wheels installed, nothing else ---------------------------------
FROM python:3.11.11-slim-bookworm
# the package's version (agent/__init__.py; tests/e2e/test_daemonset.py checks they agree)
ARG VERSION=0.1.0
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels "tailship==${VERSION}" \
    && rm -rf /wheels \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin tailship
COPY config/agent.toml /etc/tailship/agent.toml
# Non-root by default (a local run tails files the user can read). On a node the kubelet's log
# files are root's and mode 0640, so daemonset.yaml runs the container as uid 0 with every
# capability dropped: the owner may read them without CAP_DAC_OVERRIDE, and nothing else.
USER 10001
EXPOSE 2021
ENTRYPOINT ["tailship", "run", "--config", "/etc/tailship/agent.toml"]
