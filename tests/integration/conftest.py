from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

import pytest

from rethink.shared.clock import Clock, SystemClock
from rethink.shared.eventlog import EventLog, Subjects
from rethink.shared.runtime import Factory, RunningService
from rethink.shared.settings import Settings


@pytest.fixture
async def run_services(settings: Settings, stream: str) -> AsyncIterator[Callable[..., object]]:
    """Start services in this process against the real server; stopped at teardown."""
    running: list[RunningService] = []

    async def start(*factories: Factory, clock: Clock | None = None) -> list[RunningService]:
        out = []
        for factory in factories:
            svc = RunningService(factory, settings, clock or SystemClock())
            await svc.start()
            running.append(svc)
            out.append(svc)
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
