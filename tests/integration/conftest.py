from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator

import nats
import pytest
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from rethink.intake.app import build as intake
from rethink.shared.auth import Registry, inbox_prefix, url_with
from rethink.shared.bootstrap import bootstrap
from rethink.shared.clock import Clock, SystemClock
from rethink.shared.eventlog import EventLog, Subjects
from rethink.shared.natsserver import EmbeddedNats, free_port
from rethink.shared.privacy import personal_data
from rethink.shared.runtime import Factory, RunningService
from rethink.shared.settings import Settings
from tests.support import Refusals, ask, request_payload, wait_for


async def _answers_ping(nc, subject: str) -> None:
    """A service is up when its subscriptions answer, not merely when start() returned."""

    async def probe():
        try:
            return await ask(nc, subject, {}, timeout=1)
        except (NoRespondersError, NatsTimeout):
            return None  # not subscribed yet, or slow to answer on a busy machine: ask again

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
    return EventLog(nc.jetstream(), settings.stream, Subjects(settings.subject_prefix),
                    personal=personal_data(nc.jetstream(), settings))


@pytest.fixture
def subjects(settings: Settings) -> Subjects:
    return Subjects(settings.subject_prefix)


class RecordingSmtpHandler:
    """An aiosmtpd handler that keeps what it accepted and can refuse (451, or 550) a number of times."""

    def __init__(self) -> None:
        self.received: list[tuple[str, list[str], bytes]] = []  # (MAIL FROM, RCPT TO, data) per accepted message
        self.refusals_left = 0
        self.refusal = "451 4.3.0 Try again later"
        self.attempts = 0

    async def handle_DATA(self, server, session, envelope) -> str:
        self.attempts += 1
        if self.refusals_left:
            self.refusals_left -= 1
            return self.refusal
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.content)))
        return "250 OK"


@contextlib.contextmanager
def running_smtp(**options) -> Iterator[tuple[RecordingSmtpHandler, int]]:
    """A real SMTP server (aiosmtpd) on a free port of 127.0.0.1, in its own thread; ``options``
    go to aiosmtpd (TLS, authentication)."""
    from aiosmtpd.controller import Controller

    handler = RecordingSmtpHandler()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port(), **options)
    controller.start()
    try:
        yield handler, controller.port
    finally:
        controller.stop()


@pytest.fixture
def smtp_server() -> Iterator[tuple[RecordingSmtpHandler, int]]:
    with running_smtp() as server:
        yield server


@pytest.fixture
async def agency(run_services, nc, settings, subjects):
    """Intake running; helpers to send as an agency and to count what is in the log."""
    await run_services(intake)
    js = nc.jetstream()

    async def listening():
        # run_services waits for the query subject; also wait until the agency subject answers
        # (an unknown command writes nothing).
        try:
            return await ask(nc, subjects.intake("police", "ready"), {}, timeout=2)
        except (NoRespondersError, NatsTimeout):
            return None

    await wait_for(listening, what="intake listening on agency subjects")

    class Agency:
        async def messages(self) -> int:
            return (await js.stream_info(settings.stream)).state.messages

        async def send(self, payload, agency: str = "police", command: str = "submit") -> dict:
            return await ask(nc, subjects.intake(agency, command), payload)

        async def refused(self, payload, agency: str = "police", command: str = "submit") -> dict:
            """Send, expect a refusal, and prove nothing was written."""
            before = await self.messages()
            reply = await self.send(payload, agency, command)
            assert reply["status"] == "rejected", reply
            assert await self.messages() == before
            return reply

        async def still_serves(self) -> None:
            before = await self.messages()
            reply = await self.send(request_payload())
            assert reply["status"] == "accepted", reply
            assert await self.messages() > before

        async def applied(self, seq: int) -> None:
            """Wait until intake has handled the log up to ``seq`` (so its reactions are written)."""
            await wait_for(lambda: ask(nc, subjects.query("intake", "ping"), {}),
                           lambda p: p["last_applied_seq"] >= seq, what=f"intake to apply seq {seq}")

    return Agency()


class Secured:
    """A nats-server of its own, started with the generated authorization config, and intake
    running as the services user; agencies police and school have credentials."""

    def __init__(self, settings, tmp_path):
        self.settings = settings
        self.registry = Registry(tmp_path / "auth", settings)
        self.core = self.registry.ensure_core()
        self.agencies = {name: self.registry.add_agency(name) for name in ("police", "school")}
        self.port = free_port()
        self.server = EmbeddedNats(self.port, tmp_path / "js", extra_args=["-c", str(self.registry.config_file)])
        self.clients: list[nats.NATS] = []

    async def connect(self, name: str, password: str, refusals: Refusals | None = None, **kw) -> nats.NATS:
        nc = await nats.connect(url_with(name, password, port=self.port), max_reconnect_attempts=1,
                                allow_reconnect=False, error_cb=(refusals or Refusals()).record, **kw)
        self.clients.append(nc)
        return nc

    async def agency(self, name: str, refusals: Refusals | None = None) -> nats.NATS:
        return await self.connect(name, self.agencies[name], refusals, inbox_prefix=inbox_prefix(name))

    async def messages(self) -> int:
        return (await self.services.jetstream().stream_info(self.settings.stream)).state.messages


@pytest.fixture
async def secured(settings, tmp_path):
    s = Secured(settings, tmp_path)
    s.server.start()
    service = None
    try:
        s.services = await s.connect("rethink-services", s.core["rethink-services"])
        await bootstrap(s.services.jetstream(), settings)
        service_settings = settings.model_copy(update={"nats_url": url_with(
            "rethink-services", s.core["rethink-services"], port=s.port)})
        service = RunningService(intake, service_settings)
        await service.start()
        yield s
    finally:
        if service is not None:
            await service.stop()
        for nc in s.clients:
            with contextlib.suppress(Exception):
                await nc.close()
        s.server.stop()


@pytest.fixture
async def own_nats(settings: Settings, tmp_path) -> AsyncIterator[tuple[EmbeddedNats, Settings]]:
    """A bootstrapped nats-server of this test's own, which it may stop and start again (same
    port, same store), and the settings that point at it. The shared test server is never touched."""
    server = EmbeddedNats(free_port(), tmp_path / "own-nats").start()
    own = settings.model_copy(update={"nats_url": server.url})
    nc = await nats.connect(server.url)
    await bootstrap(nc.jetstream(), own)
    await nc.close()
    yield server, own
    server.stop()
