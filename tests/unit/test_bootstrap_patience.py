"""Bootstrap waits out a cluster that is still forming, and fails at once on a real error."""

from __future__ import annotations

import nats.js.errors
import pytest

from rethink.shared import bootstrap as boot
from rethink.shared.settings import Settings


def placement_error(code: int) -> nats.js.errors.APIError:
    err = nats.js.errors.APIError(code=500, description="no suitable peers for placement", err_code=code)
    return err


async def test_a_placement_failure_while_peers_report_in_is_retried(monkeypatch, tmp_path):
    calls = []

    async def once(js, settings):
        calls.append(1)
        if len(calls) < 3:
            raise placement_error(10005)
        return ["stream created"]

    monkeypatch.setattr(boot, "_bootstrap_once", once)
    assert await boot.bootstrap(None, Settings(state_dir=tmp_path), patience=10) == ["stream created"]
    assert len(calls) == 3


async def test_any_other_error_fails_at_once(monkeypatch, tmp_path):
    calls = []

    async def once(js, settings):
        calls.append(1)
        raise nats.js.errors.BadRequestError(code=400, description="subjects overlap", err_code=10065)

    monkeypatch.setattr(boot, "_bootstrap_once", once)
    with pytest.raises(nats.js.errors.BadRequestError):
        await boot.bootstrap(None, Settings(state_dir=tmp_path), patience=10)
    assert len(calls) == 1


async def test_patience_runs_out(monkeypatch, tmp_path):
    async def once(js, settings):
        raise placement_error(10005)

    monkeypatch.setattr(boot, "_bootstrap_once", once)
    with pytest.raises(nats.js.errors.APIError):
        await boot.bootstrap(None, Settings(state_dir=tmp_path), patience=0.5)
