#!/bin/sh
# The one-shot job before the services start: streams and consumers, then database migrations.
# Both steps are idempotent, so the job may run again on every deploy or upgrade.
set -eu
rethink bootstrap
# `rethink migrate` (Alembic, one schema per service) arrives with the PostgreSQL work; until an
# image has it, say so rather than fail.
if rethink migrate --help >/dev/null 2>&1; then
    rethink migrate
else
    echo "this version has no 'rethink migrate': projections create their own tables"
fi
