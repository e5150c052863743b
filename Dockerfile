# syntax=docker/dockerfile:1
#
# Herald gateway image (issue 6).
#
#   docker build -t herald:0.1.0 .
#   docker run --rm -p 8080:8080 herald:0.1.0                   # memory engine, auth off (dev)
#   docker run --rm -p 8080:8080 -e HERALD_ENGINE=redis \
#       -e HERALD_REDIS_URL=redis://redis:6379/0 -e HERALD_JWT_SECRET=... herald:0.1.0
#
# Every setting is a HERALD_* environment variable (SPEC §6); `herald serve --help`
# lists the matching flags. The same image runs examples/worker.py:
#   docker run --rm --entrypoint python -e HERALD_URL=http://herald:8080 \
#       -e HERALD_API_KEY=... herald:0.1.0 /app/examples/worker.py
#
# Base image: python:3.11.14-slim-bookworm in both stages. Pin it by digest
# (FROM python:3.11.14-slim-bookworm@sha256:...) in the release pipeline and
# let renovate/dependabot keep it fresh.

# ---------------------------------------------------------------------------
# build: resolve and install Herald and its dependencies into /opt/venv.
# Every pinned dependency ships manylinux wheels for amd64 and arm64, so no
# compiler is needed; if a future dependency is sdist-only, install its build
# tools here (this stage never reaches the final image).
# ---------------------------------------------------------------------------
FROM python:3.11.14-slim-bookworm AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src

# Dependencies first, from pyproject.toml alone, so that a code change does not
# invalidate this (slow) layer.
COPY pyproject.toml ./
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; open('/tmp/requirements.txt', 'w').write('\n'.join(deps) + '\n')" \
 && pip install --no-cache-dir -r /tmp/requirements.txt

# Then the project itself (.dockerignore keeps only what the wheel needs).
COPY . .
# herald-client (clients/python) too: `herald tail` and examples/worker.py use it.
RUN pip install --no-cache-dir --no-deps . ./clients/python \
 && herald --help > /dev/null \
 && python -m compileall -q /opt/venv/lib

# ---------------------------------------------------------------------------
# runtime: slim base + the venv. No compiler, no source tree, no pip cache.
# ---------------------------------------------------------------------------
FROM python:3.11.14-slim-bookworm AS runtime

LABEL org.opencontainers.image.title="herald" \
      org.opencontainers.image.description="Real-time WebSocket pub/sub gateway with durable queues" \
      org.opencontainers.image.licenses="Apache-2.0"

# Fixed high UID/GID (>10000) so Kubernetes runAsNonRoot/runAsUser can be checked
# against a number and never collides with a host account.
RUN groupadd --system --gid 10001 herald \
 && useradd --system --uid 10001 --gid herald --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin herald \
 && install -d -o herald -g herald -m 0750 /var/lib/herald

COPY --from=build /opt/venv /opt/venv
COPY --chown=root:root examples/worker.py /app/examples/worker.py
# Served at GET /client/herald.js (gateway/client_js.py looks in ./clients/js).
COPY --chown=root:root clients/js/herald.js /app/clients/js/herald.js

# The root filesystem may be mounted read-only (k8s/): bytecode is precompiled
# above, Herald's data lives in HERALD_DATA_DIR and temp files in /tmp — mount
# writable volumes there.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HERALD_ENGINE=memory \
    HERALD_HOST=0.0.0.0 \
    HERALD_PORT=8080 \
    HERALD_DATA_DIR=/var/lib/herald

WORKDIR /app
USER 10001:10001
EXPOSE 8080

# slim has no curl/wget: probe /healthz with the standard library.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('HERALD_PORT', '8080'), timeout=2)"]

# SIGTERM starts the graceful drain (reconnect notice, then close 1012) that
# HERALD_DRAIN_TIMEOUT bounds; give `docker stop -t` at least that long.
STOPSIGNAL SIGTERM
ENTRYPOINT ["herald"]
CMD ["serve"]
