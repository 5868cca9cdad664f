"""A projection rebuilt from the log equals the live one, for every service, on SQLite and PostgreSQL.

The ``backend`` parameter puts the services' projections on that database (see conftest).
"""

from __future__ import annotations

import pytest
from sqlalchemy import select, text

from rethink.escalation.app import build as escalation
from rethink.intake.app import build as intake
from rethink.meeting.app import build as meeting
from rethink.scheduling.app import build as scheduling
from rethink.shared.cli.client import Client
from rethink.shared.cli.demo import drive
from rethink.shared.migrations import current, head
from rethink.shared.rebuild import projection_store, rebuild_plan, replay_into
from rethink.shared.settings import SERVICES
from tests.support import ask, wait_for

pytestmark = pytest.mark.nats


# On PostgreSQL a replay writes in turn when the database is near, beside (a thread) when it is far
# (``rebuild._writes_beside``); the tests' database is near, so both ways are asked for by name.
BOTH_WAYS = [("sqlite", None), ("postgresql", "in turn"), ("postgresql", "beside")]


def _writing(monkeypatch, writes: str | None) -> list[bool]:
    """Make the replays write ``writes`` ("in turn", "beside", or None: as they choose); notes each choice."""
    from rethink.shared import rebuild

    choose, chosen = rebuild._writes_beside, []

    def writes_beside(store) -> bool:
        chosen.append(choose(store) if writes is None else writes == "beside")
        return chosen[-1]

    monkeypatch.setattr(rebuild, "_writes_beside", writes_beside)
    return chosen


def _rows(store):
    with store.engine.connect() as conn:
        return {name: sorted(map(tuple, conn.execute(select(table)).all()), key=repr)
                for name, table in sorted(store.metadata.tables.items())}


async def _caught_up(nc, subjects, js, stream):
    last = (await js.stream_info(stream)).state.last_seq
    pings = [await ask(nc, subjects.query(n, "ping"), {}) for n in SERVICES]
    return all(p["last_applied_seq"] == last for p in pings)


@pytest.mark.parametrize(("backend", "writes"), BOTH_WAYS)
async def test_every_rebuilt_projection_equals_the_live_one(backend, writes, run_services, settings, nc, subjects,
                                                            monkeypatch):
    assert settings.db_url("meeting").startswith(backend)
    chosen = _writing(monkeypatch, writes)
    running = await run_services(intake, scheduling, meeting, escalation)
    async with Client(settings) as client:
        case_ids = await drive(client, lambda _: None)
    js = nc.jetstream()
    await wait_for(lambda: _caught_up(nc, subjects, js, settings.stream), what="all projections caught up")
    for svc in running:
        await svc.stop()

    for service in SERVICES:
        live = _live(settings, service)
        before = _rows(live)
        assert before[f"{service}_cases" if service != "intake" else "intake_requests"], service
        plan = rebuild_plan(settings, service)  # beside the live one: a side file, or a side schema
        rebuilt = plan.store()
        result = await replay_into(js, settings, rebuilt)
        assert result.applied == result.events_read > 0 and result.skipped_unreadable == 0
        assert _rows(rebuilt) == before, service
        assert _rows(_live(settings, service)) == before  # untouched until the swap
        rebuilt.engine.dispose()
        live.engine.dispose()
        plan.swap()
        assert _rows(_live(settings, service)) == before
        assert current(_live(settings, service).engine) == head(service)
    assert len(case_ids) == 3
    assert chosen == [writes == "beside"] * len(SERVICES)


def _live(settings, service):
    return projection_store(service, settings.db_url(service), settings.db_schema(service))


async def test_a_rebuild_swaps_in_beside_the_live_sqlite_file_and_survives_a_wiped_projection(
        run_services, settings, nc, subjects):
    [svc] = await run_services(intake)
    async with Client(settings) as client:
        from tests.support import request_payload
        receipt = await client.agency_command("police", "submit", request_payload())
    await wait_for(lambda: ask(nc, subjects.query("intake", "case"), {"case_id": receipt["case_id"]}),
                   lambda r: r.get("result", {}).get("status") == "checks_confirmed")
    await svc.stop()
    before = _rows(projection_store("intake", settings.db_url("intake")))

    live = projection_store("intake", settings.db_url("intake"))
    live.reset()  # the projection is lost or corrupt
    live.engine.dispose()
    assert _rows(projection_store("intake", settings.db_url("intake")))["intake_requests"] == []

    plan = rebuild_plan(settings, "intake")
    assert plan.url.endswith(".rebuild.db")
    store = plan.store()
    await replay_into(nc.jetstream(), settings, store)
    store.engine.dispose()
    plan.swap()
    assert _rows(projection_store("intake", settings.db_url("intake"))) == before


class LeaderMoves:
    """The real JetStream context, except that the first replay consumer is lost after one batch
    (what a clustered stream's leader change does to an ephemeral consumer): it is deleted, so the
    next pull request finds no one to answer it (a 503)."""

    def __init__(self, js) -> None:
        self._js = js
        self.consumers: list[str] = []

    def __getattr__(self, name):
        return getattr(self._js, name)

    async def add_consumer(self, *args, **kwargs):
        info = await self._js.add_consumer(*args, **kwargs)
        self.consumers.append(info.name)
        return info

    def lose_the_first_consumer_after_one_batch(self, monkeypatch, rebuild) -> None:
        real_fetch, fetched = rebuild.Batches.fetch, []

        async def fetch(batches, *a, **k):
            msgs = await real_fetch(batches, *a, **k)
            if not fetched:
                fetched.append(1)
                await self._js.delete_consumer(*batches._next.rsplit(".", 2)[-2:])
            return msgs
        monkeypatch.setattr(rebuild.Batches, "fetch", fetch)


async def _one_lifecycle_then_stopped(run_services, settings, nc, subjects):
    """A case driven through its lifecycle, every projection caught up, then the services stopped."""
    running = await run_services(intake, scheduling, meeting, escalation)
    async with Client(settings) as client:
        await drive(client, lambda _: None)
    js = nc.jetstream()
    await wait_for(lambda: _caught_up(nc, subjects, js, settings.stream), what="all projections caught up")
    for svc in running:
        await svc.stop()
    return js


async def test_a_replay_interrupted_by_a_leader_change_resumes_where_it_stopped(
        run_services, settings, nc, subjects, tmp_path, monkeypatch):
    import rethink.shared.rebuild as rebuild

    js = await _one_lifecycle_then_stopped(run_services, settings, nc, subjects)

    monkeypatch.setattr(rebuild, "BATCH", 5)  # several batches, so the loss lands mid-replay
    moving = LeaderMoves(js)
    moving.lose_the_first_consumer_after_one_batch(monkeypatch, rebuild)
    rebuilt = projection_store("meeting", f"sqlite:///{tmp_path / 'meeting-rebuilt.db'}")
    result = await replay_into(moving, settings, rebuilt)
    assert len(moving.consumers) == 2
    total = (await js.stream_info(settings.stream)).state.messages
    assert result.events_read == total  # nothing read twice, nothing skipped
    assert _rows(rebuilt) == _rows(projection_store("meeting", settings.db_url("meeting")))


async def test_a_message_lost_on_its_way_to_the_replay_is_read_again_from_a_fresh_consumer(
        run_services, settings, nc, subjects, tmp_path, monkeypatch):
    """The consumer counts what it delivered; a gap in that count (a message that reached an inbox
    already gone) must not become an event missing from the rebuilt projection."""
    import rethink.shared.rebuild as rebuild

    js = await _one_lifecycle_then_stopped(run_services, settings, nc, subjects)

    monkeypatch.setattr(rebuild, "BATCH", 5)
    real_fetch, fetched = rebuild.Batches.fetch, []

    async def fetch(batches, *a, **k):
        msgs = await real_fetch(batches, *a, **k)
        if not fetched:
            fetched.append(1)
            return msgs[:-1]  # the first batch's last message never arrives
        return msgs
    monkeypatch.setattr(rebuild.Batches, "fetch", fetch)
    counting = LeaderMoves(js)
    rebuilt = projection_store("scheduling", f"sqlite:///{tmp_path / 'scheduling-rebuilt.db'}")
    result = await replay_into(counting, settings, rebuilt)
    assert len(counting.consumers) == 2
    assert result.events_read == (await js.stream_info(settings.stream)).state.messages
    assert _rows(rebuilt) == _rows(projection_store("scheduling", settings.db_url("scheduling")))


async def test_a_pull_request_left_unanswered_is_asked_again_of_a_fresh_consumer(
        run_services, settings, nc, subjects, tmp_path, monkeypatch):
    """A request the server never answers (lost with its consumer, say) must not end the replay, nor
    skip what it would have brought: the replay goes on from the same sequence on a fresh consumer."""
    import rethink.shared.rebuild as rebuild

    js = await _one_lifecycle_then_stopped(run_services, settings, nc, subjects)

    monkeypatch.setattr(rebuild, "BATCH", 5)
    monkeypatch.setattr(rebuild, "FETCH_TIMEOUT", 0.5)
    real_subscribe, muted = rebuild.subscribe_raw, []

    async def subscribe(client, subject, handler):
        if not muted:  # the first request's answer never arrives
            muted.append(subject)
            return await real_subscribe(client, subject, lambda *_: None)
        return await real_subscribe(client, subject, handler)
    monkeypatch.setattr(rebuild, "subscribe_raw", subscribe)
    counting = LeaderMoves(js)
    rebuilt = projection_store("intake", f"sqlite:///{tmp_path / 'intake-rebuilt.db'}")
    result = await replay_into(counting, settings, rebuilt)
    assert muted and len(counting.consumers) == 2
    assert result.events_read == (await js.stream_info(settings.stream)).state.messages
    assert _rows(rebuilt) == _rows(projection_store("intake", settings.db_url("intake")))


@pytest.mark.parametrize(("backend", "writes"), BOTH_WAYS)
async def test_unreadable_events_are_counted_and_skipped_however_they_are_decoded(backend, writes, settings, stream,
                                                                                   nc, subjects, monkeypatch):
    """An event that cannot be read is skipped and counted, whether it is decoded with its personal
    fields opened (on the event loop) or without (as the store takes it: in the writer's thread when
    the writes run beside, in turn otherwise)."""
    import importlib

    from tests.benchmarks.replay import fill

    chosen = _writing(monkeypatch, writes)
    js = nc.jetstream()
    await fill(js, settings, 2)
    garbage = {"RequestSubmitted": "RT-AAAAAAAAAA", "MeetingScheduled": "RT-BBBBBBBBBB"}  # scheduling: unopened, opened
    for kind, case_id in garbage.items():
        await js.publish(subjects.event(case_id, kind), b"not an event")
    for service in SERVICES:
        module = importlib.import_module(f"rethink.{service}.projection")
        unreadable = [k for k in garbage if module.HANDLES is None or k in module.HANDLES]
        plan = rebuild_plan(settings, service)  # a side file, or a side schema
        store = plan.store()
        result = await replay_into(js, settings, store)
        if plan.schema is not None:
            with store.engine.begin() as conn:
                conn.execute(text(f"DROP SCHEMA {plan.schema} CASCADE"))
        store.engine.dispose()
        assert result.skipped_unreadable == len(unreadable), service
        assert result.applied == result.events_read - len(unreadable) == 52 - len(unreadable), service
        if service == "scheduling":
            assert set(unreadable) == set(garbage) and "MeetingScheduled" not in module.UNOPENED
            assert "RequestSubmitted" in module.UNOPENED
    assert chosen == [writes == "beside"] * len(SERVICES)


@pytest.mark.parametrize(("backend", "writes"), BOTH_WAYS[1:])
async def test_a_rebuild_whose_database_connection_ends_fails_and_leaves_the_live_projection_untouched(
        backend, writes, settings, stream, nc, monkeypatch):
    """The backend of a batch's transaction terminated (``pg_terminate_backend``) while its writes run
    on the cursor: the replay fails with the error the delivery layer calls transient, the live
    projection is as it was, and the next rebuild completes and swaps in the same rows."""
    from sqlalchemy import exc

    from rethink.shared import projection
    from rethink.shared.delivery import is_transient
    from tests.benchmarks.replay import fill
    from tests.unit.test_batch_cursor import _terminate

    chosen = _writing(monkeypatch, writes)
    js = nc.jetstream()
    await fill(js, settings, 2)
    live = _live(settings, "meeting")
    await replay_into(js, settings, live)  # the live projection, as the service would have left it
    before = _rows(live)
    assert before["meeting_cases"]
    url = live.engine.url.render_as_string(hide_password=False)
    run_on_cursor, ended = projection.run_on_cursor, []

    def ending_first(conn, cursor, write, rows, *rest):
        if not ended:
            ended.append(conn.connection.dbapi_connection.info.backend_pid)
            _terminate(url, ended[0])
        return run_on_cursor(conn, cursor, write, rows, *rest)

    with monkeypatch.context() as m:
        m.setattr(projection, "run_on_cursor", ending_first)
        plan = rebuild_plan(settings, "meeting")
        rebuilt = plan.store()
        with pytest.raises(exc.OperationalError) as failed:
            await replay_into(js, settings, rebuilt)
        rebuilt.engine.dispose()
    assert ended and is_transient(failed.value)
    assert _rows(live) == before
    plan = rebuild_plan(settings, "meeting")  # the failed side schema dropped, built afresh
    rebuilt = plan.store()
    result = await replay_into(js, settings, rebuilt)
    assert result.applied == result.events_read == (await js.stream_info(settings.stream)).state.messages
    assert _rows(rebuilt) == before
    rebuilt.engine.dispose()
    live.engine.dispose()
    plan.swap()
    assert _rows(_live(settings, "meeting")) == before
    assert chosen == [writes == "beside"] * 3
