from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

import pytest
from nats.errors import NoRespondersError

from rethink.shared.clock import Clock, SystemClock
from rethink.shared.eventlog import EventLog, Subjects
from rethink.shared.runtime import Factory, RunningService
from rethink.shared.settings import Settings
from tests.support import ask, wait_for


async def _answers_ping(nc, subject: str) -> None:
    """A service is up when its subscriptions answer, not merely when start() returned."""

    async def probe():
        try:
            return await ask(nc, subject, {}, timeout=1)
        except NoRespondersError:
            return None

    await wait_for(probe, lambda r: bool(r) and r.get("status") == "ok", what=f"{subject} to answer")


@pytest.fixture
async def run_services(settings: Settings, stream: str, nc) -> AsyncIterator[Callable[..., object]]:
    """Start services in this process against the real server; stopped at teardown."""
    running: list[RunningService] = []

    async def start(*factories: Factory, clock: Clock | None = None) -> list[RunningService]:
        out = []
        for factory in factories:
            svc = RunningService(factory, settings, clock or SystemClock())
            await svc.start()
            running.append(svc)
            out.append(svc)
            await _answers_ping(nc, Subjects(settings.subject_prefix).query(svc.parts.name, "ping"))
        return out

    yield start
    for svc in reversed(running):
        with contextlib.suppress(Exception):
            await svc.stop()


@pytest.fixture
def event_log(nc, settings: Settings, stream: str) -> EventLog:
    return EventLog(nc.jetstream(), settings.stream, Subjects(settings.subject_prefix))


@pytest.fixture
def subjects(settings: Settings) -> Subjects:
    return Subjects(settings.subject_prefix)
