# syntax=docker/dockerfile:1
# The meeting service. Build from the repository root:
#   docker build -f deploy/docker/meeting.Dockerfile -t rethink/meeting:0.1.0 .
# The same as intake.Dockerfile with the service's name changed (tests/deploy checks that they stay so).

FROM python:3.11.14-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY shared/ shared/
COPY services/ services/
# Every dependency, direct or not, at the version the tests passed with.
COPY deploy/docker/constraints.txt ./
# One wheel of the whole project, installed into a virtualenv with its pinned dependencies.
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
    && /opt/venv/bin/pip install --no-cache-dir --constraint constraints.txt /wheels/rethink-*.whl
# Only this service's code stays (the CLI imports a service by its name, never the others);
# the import proves nothing it needs went with them.
WORKDIR /opt/venv/lib/python3.11/site-packages/rethink
RUN find . -mindepth 1 -maxdepth 1 ! -name shared ! -name meeting -exec rm -rf {} + \
    && /opt/venv/bin/python -c "import rethink.meeting.app, rethink.shared.cli.main"

FROM python:3.11.14-slim-bookworm
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/rethink --create-home rethink \
    && mkdir /var/lib/rethink/mail && chown rethink:rethink /var/lib/rethink/mail
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    RETHINK_STATE_DIR=/var/lib/rethink \
    RETHINK_LOG_FORMAT=json \
    RETHINK_HEALTH_PORT=8080
USER 10001:10001
WORKDIR /var/lib/rethink
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]
CMD ["rethink", "service", "run", "meeting"]
