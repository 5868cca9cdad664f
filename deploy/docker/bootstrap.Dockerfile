# syntax=docker/dockerfile:1
# The one-shot bootstrap job: creates the JetStream streams and the services' durable consumers,
# then applies every service's database migrations. Build from the repository root:
#   docker build -f deploy/docker/bootstrap.Dockerfile -t rethink/bootstrap:0.1.0 .
# It holds every service's code (migrations belong to each service) and the operator's CLI, so
# it also serves for one-off commands: `docker compose run --rm bootstrap rethink audit verify --all`.

FROM python:3.11.14-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY shared/ shared/
COPY services/ services/
# Every dependency, direct or not, at the version the tests passed with.
COPY deploy/docker/constraints.txt ./
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
    && /opt/venv/bin/pip install --no-cache-dir --constraint constraints.txt /wheels/rethink-*.whl

FROM python:3.11.14-slim-bookworm
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/rethink --create-home rethink
COPY --from=build /opt/venv /opt/venv
COPY deploy/docker/bootstrap.sh /usr/local/bin/rethink-bootstrap
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    RETHINK_STATE_DIR=/var/lib/rethink \
    RETHINK_LOG_FORMAT=json
USER 10001:10001
WORKDIR /var/lib/rethink
# A job, not a server: it exits when done, so there is nothing to health-check.
HEALTHCHECK NONE
CMD ["rethink-bootstrap"]
