#!/bin/sh
# The one-shot job before the services start: streams and consumers, then database migrations
# (`rethink bootstrap` runs `rethink migrate --all` after the streams; see docs/operations.md).
# Both steps are idempotent, so the job may run again on every deploy or upgrade.
set -eu
rethink bootstrap
