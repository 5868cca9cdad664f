"""`rethink`: run the system, take each step of a case, and read a case back.

Every failure is one line on stderr and a non-zero exit; no tracebacks for people.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import sys
from collections.abc import Callable, Coroutine, Iterator
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console

from rethink.shared.natsserver import NatsServerError
from rethink.shared.settings import Settings

from . import render
from .client import Client, CliError

app = typer.Typer(help="Re-think: neutrally facilitated resolution of professional disagreement.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
request_app = typer.Typer(help="Requests from agencies.", no_args_is_help=True)
meeting_app = typer.Typer(help="Schedule and record meetings.", no_args_is_help=True)
action_app = typer.Typer(help="Follow up actions.", no_args_is_help=True)
escalation_app = typer.Typer(help="The HIPS escalation protocol.", no_args_is_help=True)
case_app = typer.Typer(help="Read a case.", no_args_is_help=True)
service_app = typer.Typer(help="Run one service (what `rethink up` starts).", no_args_is_help=True)
audit_app = typer.Typer(help="For auditors: read-only views of the event log.", no_args_is_help=True)
projections_app = typer.Typer(help="Operate on the services' projections.", no_args_is_help=True)
contract_app = typer.Typer(help="The contract agencies build against (docs/schemas, docs/asyncapi.yaml).",
                           no_args_is_help=True)
auth_app = typer.Typer(help="NATS users and what each may do.", no_args_is_help=True)
keys_app = typer.Typer(help="The key store's backup: every case's data key, to a file and back.",
                       no_args_is_help=True)
agencies_app = typer.Typer(help="Agencies' credentials: who may submit as whom.", no_args_is_help=True)
deadletter_app = typer.Typer(help="Events a service could never apply, parked with their reason.",
                             no_args_is_help=True)
users_app = typer.Typer(help="Local accounts of the web console (the embedded default; production uses OpenID "
                                  "Connect).", no_args_is_help=True)
notifications_app = typer.Typer(help="Emails (invitations, reminders): what was sent, what failed, send again.",
                                no_args_is_help=True)
for sub, name in ((request_app, "request"), (meeting_app, "meeting"), (action_app, "action"),
                  (escalation_app, "escalation"), (case_app, "case"), (service_app, "service"),
                  (audit_app, "audit"), (projections_app, "projections"),
                  (auth_app, "auth"), (deadletter_app, "deadletter"), (notifications_app, "notifications"),
                  (agencies_app, "agencies"), (contract_app, "contract"), (users_app, "users"), (keys_app, "keys")):
    app.add_typer(sub, name=name)
# Operators coming from other message systems look for "dlq": the same commands under that name.
app.add_typer(deadletter_app, name="dlq", help="Same as `deadletter`: parked events, show, retry.")

# Piped output (CI logs, files) gets room for the history table instead of 80 columns.
out = Console() if sys.stdout.isatty() else Console(width=160)
err = Console(stderr=True)
T = TypeVar("T")
Actor = Annotated[str, typer.Option(help="Who is acting (work email or role).")]
ReadReason = Annotated[str | None, typer.Option(
    "--reason", help="Why you are reading this case; kept in its access record (`rethink audit access`)")]


def friendly(fn: Callable[..., T]) -> Callable[..., T]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except (CliError, NatsServerError, ValueError) as exc:
            msg = _settings_error(exc) if isinstance(exc, ValidationError) else str(exc)
            err.print(f"[red]error:[/red] {msg}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
    return wrapper


def _settings_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    return f"configuration RETHINK_{'_'.join(str(p) for p in first['loc']).upper()}: {first['msg']}"


def settings() -> Settings:
    return Settings()


def call(coro_fn: Callable[[Client], Coroutine[Any, Any, T]]) -> T:
    async def go() -> T:
        async with Client(settings()) as client:
            return await coro_fn(client)
    return asyncio.run(go())


def load_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CliError(f"{path}: no such file") from None
    except json.JSONDecodeError as exc:
        raise CliError(f"{path}: malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    if not isinstance(data, dict):
        raise CliError(f"{path}: expected a JSON object")
    return data


def show(reply: dict[str, Any]) -> None:
    render.print_json(out, reply)


# --- running the system -------------------------------------------------------------------

@app.command()
@friendly
def up() -> None:
    """Start the embedded nats-server (unless RETHINK_NATS_URL is set), the stream, the four services and the console."""
    from .demo import console_lines
    from .supervisor import running_system, watch

    s = settings()
    with running_system(s) as procs:
        for line in console_lines(s):
            out.print(line, highlight=False, soft_wrap=True)
        out.print(f"Re-think is up on {s.printable_nats_url()} (state in {s.state_dir}). Ctrl-C stops it.")
        watch(procs, s, out.print)
    out.print("stopped")


@app.command()
@friendly
def demo(keep_running: Annotated[bool, typer.Option(
        "--keep-running", help="Leave the system and the console up afterwards, until Ctrl-C.")] = False) -> None:
    """Run three realistic cases through a fresh embedded system and print each chronology."""
    from .demo import run_demo

    run_demo(settings(), out, keep_running=keep_running)


@app.command("bootstrap")
@friendly
def bootstrap_cmd(
    migrations: Annotated[bool, typer.Option(help="Also migrate every service's projection to head")] = True,
) -> None:
    """Create the event stream and the services' consumers, then migrate the projections (idempotent)."""
    from rethink.shared.migrations import DATABASES

    from .supervisor import run_bootstrap

    s = settings()
    done = asyncio.run(run_bootstrap(s))
    out.print("\n".join(done) or "nothing to do: stream and consumers exist", highlight=False)
    if migrations:
        _print_migrated(_migrate(s, list(DATABASES)))


@app.command("migrate")
@friendly
def migrate_cmd(
    service: Annotated[str | None, typer.Argument(help="One service (or outbox, scheduling's email outbox)")] = None,
    all_services: Annotated[bool, typer.Option("--all", help="Every service's projection, and the outbox")] = False,
    new: Annotated[str | None, typer.Option(
        "--new", help="For developers: autogenerate SERVICE's next revision with this message")] = None,
) -> None:
    """Bring projections' schemas to the head revision of their migrations (SQLite files or PostgreSQL)."""
    from rethink.shared.migrations import DATABASES

    if bool(service) == all_services:
        raise CliError("give one SERVICE or --all")
    if new is not None:
        from rethink.shared.migrations import new_revision

        if service is None:
            raise CliError("--new needs one SERVICE")
        out.print(f"wrote {new_revision(service, new)}: read it, adjust it, and test it", highlight=False)
        return
    _print_migrated(_migrate(settings(), list(DATABASES) if all_services else [service or ""]))


def _migrate(s: Settings, services: list[str]):
    from sqlalchemy.exc import SQLAlchemyError

    from rethink.shared.migrations import migrate

    try:
        return migrate(s, services)
    except SQLAlchemyError as exc:
        raise CliError(f"migration failed: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None


def _print_migrated(done) -> None:
    for m in done:
        change = f"{m.before or 'empty'} -> {m.after}" if m.before != m.after else f"already at {m.after}"
        out.print(f"{m.service}: {change} ({m.where})", highlight=False, markup=False)


@app.command()
@friendly
def catalogue(fmt: Annotated[str, typer.Option("--format", help="markdown or json")] = "markdown") -> None:
    """Print the event catalogue (every event, its fields, which are personal)."""
    from .catalogue import catalogue_json, catalogue_markdown

    typer.echo(catalogue_markdown() if fmt == "markdown" else catalogue_json())


@contract_app.command("write")
@friendly
def contract_write(docs: Annotated[Path, typer.Option(help="The docs folder to refresh")] = Path("docs")) -> None:
    """Regenerate the JSON Schemas, the AsyncAPI document and the rejection-code table from the code."""
    from rethink.shared.contract import write_contract

    for path in write_contract(docs):
        out.print(f"wrote {path}", highlight=False)


@service_app.command("run")
@friendly
def service_run(name: str) -> None:
    """Run one service in the foreground until SIGINT/SIGTERM."""
    from rethink.shared.logs import configure_logging
    from rethink.shared.runtime import serve_forever

    from .services import factory

    s = settings()
    configure_logging(s.log_level, s.log_format)
    asyncio.run(serve_forever(factory(name), s, name=name))


@projections_app.command("rebuild")
@friendly
def projections_rebuild(
    service: str,
    into: Annotated[str | None, typer.Option(help="Build into this SQLAlchemy URL instead of replacing the live one")] = None,
) -> None:
    """Replay the whole log into a fresh projection of SERVICE and swap it in (stop the service first)."""
    from rich.progress import Progress

    from rethink.shared.rebuild import projection_store, rebuild_plan, replay_into

    s = settings()

    async def go(c: Client):
        if into is None:
            try:
                alive = (await c.query(service, "ping", {})).get("status") == "ok"
            except CliError:
                alive = False
            if alive:
                raise CliError(f"the {service} service is running: stop it first, or build elsewhere with --into URL")
        plan = None if into else rebuild_plan(s, service)
        store = projection_store(service, into) if plan is None else plan.store()
        with Progress(console=err, transient=True) as bar:
            task = bar.add_task(f"replaying the log into {service}", total=None)
            result = await replay_into(c.nc.jetstream(), s, store, keys_js=c.keys_js,
                                       progress=lambda n, total: bar.update(task, completed=n, total=total))
        store.engine.dispose()
        if plan is not None:
            plan.swap()
        return result, plan is not None

    result, swapped = call(go)
    out.print(f"{service}: replayed {result.events_read} events up to seq {result.last_seq}, applied "
              f"{result.applied}, unreadable {result.skipped_unreadable}; "
              + ("swapped in" if swapped else f"projection at {result.target}"), highlight=False)


@auth_app.command("init")
@friendly
def auth_init() -> None:
    """Create the services and auditor users (once) and write <state>/auth/nats-auth.conf."""
    from rethink.shared.auth import Registry

    s = settings()
    registry = Registry(s.auth_dir, s)
    made = registry.ensure_core()
    for name, password in made.items():
        out.print(f"{name}: password {password}  (shown once; store it in your secrets manager)", highlight=False)
    out.print(f"wrote {registry.config_file}: include it in the nats-server config, then reload the server "
              "(nats-server --signal reload)", highlight=False)


@users_app.command("add")
@friendly
def users_add(
    name: Annotated[str, typer.Argument(help="The user name they sign in with, e.g. priya or j.smith")],
    role: Annotated[str, typer.Option(help="practitioner, facilitator, partnership_manager or auditor")],
    full_name: Annotated[str, typer.Option("--full-name", help="Shown on pages and recorded as who acted")],
    email: Annotated[str, typer.Option(help="Work email: the actor on every change they make")],
    agency: Annotated[str | None, typer.Option(help="A practitioner's agency id (its intake subject token)")] = None,
    agency_name: Annotated[str | None, typer.Option("--agency-name", help="The agency's name as people know it")] = None,
    job_title: Annotated[str, typer.Option("--job-title")] = "",
    replace: Annotated[bool, typer.Option("--replace", help="Change an existing account (and its password)")] = False,
    password: Annotated[str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True,
                                          help="Asked for if not given (at least 12 characters)")] = "",
) -> None:
    """Add a local console account; the password is stored only as an argon2 hash."""
    from email_validator import EmailNotValidError, validate_email

    from rethink.console.accounts import Accounts
    from rethink.console.users import Role, User
    from rethink.shared.events import NOT_ASCII_LOCAL_PART, deliverable

    try:
        role_value = Role(role)
    except ValueError:
        raise CliError(f"--role {role!r}: choose one of {', '.join(r.value for r in Role)}") from None
    try:
        email = validate_email(email, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise CliError(f"--email {email!r}: {exc}") from None
    if not deliverable(email):  # the requester's address of every request this account makes
        raise CliError(f"--email {email!r}: {NOT_ASCII_LOCAL_PART}")
    s = settings()
    user = User(id=name.strip().lower(), name=full_name.strip(), email=email, role=role_value, job_title=job_title,
                agency=agency, agency_name=(agency_name or agency) if agency else None)
    Accounts(s.console_users_path).add(user, password, replace=replace)
    out.print(f"user {user.id} ({role_value.value}) {'changed' if replace else 'added'} in {s.console_users_path}",
              highlight=False)


@users_app.command("list")
@friendly
def users_list() -> None:
    """The local console accounts (never their passwords)."""
    from rethink.console.accounts import Accounts

    for u in Accounts(settings().console_users_path).all():
        out.print(f"{u.id}\t{u.role.value}\t{u.name}\t{u.email}\t{u.agency or ''}", highlight=False)


@users_app.command("remove")
@friendly
def users_remove(name: str) -> None:
    """Remove a local account; its sessions end at their next request."""
    from rethink.console.accounts import Accounts

    s = settings()
    Accounts(s.console_users_path).remove(name)
    out.print(f"user {name} removed", highlight=False)


@auth_app.command("rotate")
@friendly
def auth_rotate(name: str) -> None:
    """Give a user (rethink-services, auditor or an agency) a new password; the old one is refused
    once every nats-server has reloaded the config."""
    from rethink.shared.auth import Registry

    s = settings()
    registry = Registry(s.auth_dir, s)
    password = registry.rotate(name)
    out.print(f"{name}: new password {password}  (shown once; store it in your secrets manager)\n"
              f"wrote {registry.config_file}: reload every nats-server (SIGHUP, or nats-server --signal reload); "
              "until then the old password still works, afterwards only the new one", highlight=False)


@agencies_app.command("add")
@friendly
def agencies_add(name: str) -> None:
    """Give an agency its own NATS user: it may publish only as itself and read only its own replies."""
    from rethink.shared.auth import Registry, inbox_prefix

    s = settings()
    registry = Registry(s.auth_dir, s)
    password = registry.add_agency(name)
    out.print(f"agency {name} added. Its connection settings (shown once):\n"
              f"  user {name}\n  password {password}\n  inbox prefix {inbox_prefix(name)}\n"
              f"  publishes to {s.subject_prefix}.intake.{name}.submit and .confirm_checks\n"
              f"Reload the nats-server to apply {registry.config_file}.", highlight=False)


@agencies_app.command("list")
@friendly
def agencies_list() -> None:
    """The agencies that have credentials."""
    from rethink.shared.auth import Registry

    s = settings()
    names = Registry(s.auth_dir, s).agencies()
    out.print("\n".join(names) if names else "no agencies yet: `rethink agencies add NAME`", highlight=False)


@agencies_app.command("revoke")
@friendly
def agencies_revoke(name: str) -> None:
    """Remove an agency's user; after the server reloads, it is refused."""
    from rethink.shared.auth import Registry

    s = settings()
    registry = Registry(s.auth_dir, s)
    registry.revoke(name)
    out.print(f"agency {name} revoked; reload the nats-server to apply {registry.config_file}", highlight=False)


@deadletter_app.command("list")
@friendly
def deadletter_list(service: Annotated[str | None, typer.Option(help="Only this service's")] = None,
                    as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """What was parked, by whom, why, after how many attempts."""
    from rich.markup import escape
    from rich.table import Table

    from rethink.shared.delivery import DeadLetters

    s = settings()
    parked = call(lambda c: DeadLetters(c.nc.jetstream(), s.dead_letter_stream, c.subjects).list(service))
    if as_json:
        typer.echo(json.dumps(parked, indent=2))
        return
    table = Table(title=f"{len(parked)} parked events")
    for col in ("id", "service", "seq", "parked at", "attempts", "reason"):
        table.add_column(col, overflow="fold")
    for p in parked:
        table.add_row(str(p["id"]), p["service"], str(p["seq"]), p["parked_at"], str(p["attempts"]),
                      escape(p["reason"]))
    out.print(table)


@notifications_app.command("list")
@friendly
def notifications_list(failed: Annotated[bool, typer.Option("--failed", help="Only those that could not be sent")] = False,
                       limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
                       as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The scheduling service's outbox, newest first: status, tries, and the last error."""
    from rich.markup import escape
    from rich.table import Table

    reply = call(lambda c: c.query("scheduling", "notifications", {"failed": failed, "limit": limit}))
    if reply.get("status") != "ok":
        raise CliError("; ".join(r["message"] for r in reply.get("reasons", [])) or "the query failed")
    rows = reply["result"]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    counts = ", ".join(f"{n} {status}" for status, n in sorted(reply.get("counts", {}).items())) or "none"
    table = Table(title=f"{len(rows)} {'failed ' if failed else ''}emails shown (all: {counts})")
    for col in ("id", "status", "kind", "to", "subject", "tries", "next try / sent", "last error"):
        table.add_column(col, overflow="fold")
    for r in rows:
        when = r["sent_at"] if r["status"] == "sent" else ("" if r["status"] == "failed" else r["next_attempt_at"])
        table.add_row(str(r["id"]), r["status"], r["kind"], r["recipient"], escape(r["subject"]), str(r["attempts"]),
                      when or "", escape(r["last_error"] or ""))
    out.print(table)


@notifications_app.command("retry")
@friendly
def notifications_retry(
    notification_id: Annotated[int | None, typer.Argument(metavar="ID", help="A failed email's id (from list)")] = None,
    all_failed: Annotated[bool, typer.Option("--all", help="Every failed email")] = False,
) -> None:
    """Send failed emails again (after fixing what made them fail), with a fresh set of tries."""
    if (notification_id is None) == (not all_failed):
        raise CliError("give the ID of one failed email, or --all")
    payload: dict[str, Any] = {"all": True} if all_failed else {"id": notification_id}
    reply = call(lambda c: c.command("scheduling", "retry_notifications", payload))
    ids = reply.get("retried", [])
    out.print(f"{len(ids)} email(s) queued to send again" + (f": {', '.join(map(str, ids))}" if ids else ""),
              highlight=False)



@deadletter_app.command("show")
@friendly
def deadletter_show(parked_id: Annotated[int, typer.Argument(metavar="ID", help="The id from `deadletter list`")]) -> None:
    """One parked event: who parked it, why, and the event as the log holds it."""
    from rethink.shared.delivery import DeadLetters

    s = settings()

    async def go(c: Client) -> dict[str, Any]:
        js = c.nc.jetstream()
        parked = await _parked_or_fail(DeadLetters(js, s.dead_letter_stream, c.subjects), parked_id)
        try:
            parked["event"] = json.loads((await js.get_msg(s.stream, parked["seq"])).data)
        except Exception:  # gone from the log, or never an event at all: the parked copy is all there is
            parked["event"] = None
        return parked

    typer.echo(json.dumps(call(go), indent=2))


@deadletter_app.command("retry")
@friendly
def deadletter_retry(
    parked_id: Annotated[int | None, typer.Argument(metavar="[ID]", help="The id from `deadletter list`")] = None,
    every: Annotated[bool, typer.Option("--all", help="Retry every parked event")] = False,
) -> None:
    """Apply parked events again, by the service that parked them (after fixing the cause).

    An event that now applies leaves the dead-letter stream; one that still fails stays, with
    the error printed. The service must be running.
    """
    from rethink.shared.delivery import DeadLetters

    if (parked_id is None) == (not every):
        raise CliError("give one parked event's ID, or --all")
    s = settings()

    async def go(c: Client) -> list[tuple[int, dict[str, Any]]]:
        dead = DeadLetters(c.nc.jetstream(), s.dead_letter_stream, c.subjects)
        targets = await dead.list() if every else [await _parked_or_fail(dead, parked_id)]
        results = []
        for p in targets:
            subject = f"{c.subjects.prefix}.ops.{p['service']}.retry_parked"
            results.append((p["id"], await c.request(subject, {"id": p["id"]}, p["service"])))
        return results

    results = call(go)
    failed = 0
    for pid, reply in results:
        if reply.get("status") == "accepted":
            out.print(f"{pid}: applied by {reply['service']} (seq {reply['seq']}); no longer parked", highlight=False)
        else:
            failed += 1
            reasons = "; ".join(r["message"] for r in reply.get("reasons", []))
            err.print(f"{pid}: {reply.get('status')}: {reasons}", highlight=False, soft_wrap=True)
    if not results:
        out.print("nothing is parked")
    if failed:
        raise typer.Exit(1)


async def _parked_or_fail(dead: Any, parked_id: int) -> dict[str, Any]:
    from rethink.shared.errors import NotFound

    try:
        return await dead.get(parked_id)
    except NotFound as exc:
        raise CliError(str(exc.reasons[0].message)) from None


# --- requests -----------------------------------------------------------------------------

@request_app.command("submit")
@friendly
def request_submit(file: Path, agency: Annotated[str, typer.Option(help="The submitting agency's id.")]) -> None:
    """Submit a request (JSON file) as AGENCY."""
    payload = load_json(file)
    show(call(lambda c: c.agency_command(agency, "submit", payload)))


@request_app.command("confirm-checks")
@friendly
def request_confirm(case_id: str, file: Path, agency: Annotated[str, typer.Option()], actor: Actor = "unspecified") -> None:
    """Confirm the three checks of a waiting request (JSON file with the three answers)."""
    checks = load_json(file)
    payload = {"case_id": case_id, "checks": checks.get("checks", checks), "actor": actor}
    show(call(lambda c: c.agency_command(agency, "confirm_checks", payload)))


# --- meetings -----------------------------------------------------------------------------

@meeting_app.command("schedule")
@friendly
def meeting_schedule(
    case_id: str,
    at: Annotated[datetime, typer.Option(help="Start, ISO 8601 with offset, e.g. 2026-12-01T10:00:00+00:00")],
    mode: Annotated[str, typer.Option(help="in_person or virtual")] = "in_person",
    venue: Annotated[str | None, typer.Option(help="Room and address, or the meeting link")] = None,
    duration: Annotated[int, typer.Option(help="Minutes")] = 90,
    actor: Actor = "unspecified",
) -> None:
    """Schedule the meeting of a case whose checks are confirmed."""
    payload = {"case_id": case_id, "starts_at": at.isoformat(), "duration_minutes": duration, "mode": mode,
               "venue": venue, "actor": actor}
    show(call(lambda c: c.command("scheduling", "schedule", payload)))


@meeting_app.command("reschedule")
@friendly
def meeting_reschedule(case_id: str, at: Annotated[datetime, typer.Option()],
                       reason: Annotated[str | None, typer.Option()] = None, actor: Actor = "unspecified") -> None:
    """Move the meeting."""
    payload = {"case_id": case_id, "starts_at": at.isoformat(), "reason": reason, "actor": actor}
    show(call(lambda c: c.command("scheduling", "reschedule", payload)))


@meeting_app.command("cancel")
@friendly
def meeting_cancel(case_id: str, reason: Annotated[str, typer.Option()], actor: Actor = "unspecified") -> None:
    """Cancel the meeting."""
    show(call(lambda c: c.command("scheduling", "cancel", {"case_id": case_id, "reason": reason, "actor": actor})))


@meeting_app.command("record")
@friendly
def meeting_record(case_id: str, file: Path, actor: Actor = "unspecified") -> None:
    """Record the held meeting: attendees, five stages, outcome, actions (JSON file)."""
    payload = {**load_json(file), "case_id": case_id, "actor": actor}
    show(call(lambda c: c.command("meeting", "record", payload)))


# --- actions ------------------------------------------------------------------------------

@action_app.command("complete")
@friendly
def action_complete(case_id: str, action_id: str, on: Annotated[str | None, typer.Option(help="YYYY-MM-DD")] = None,
                    note: Annotated[str | None, typer.Option()] = None, actor: Actor = "unspecified") -> None:
    """Mark an action complete."""
    payload: dict[str, Any] = {"case_id": case_id, "action_id": action_id, "note": note, "actor": actor}
    if on:
        payload["completed_on"] = on
    show(call(lambda c: c.command("meeting", "complete_action", payload)))


@action_app.command("check-overdue")
@friendly
def action_check_overdue(as_of: Annotated[str | None, typer.Option(help="YYYY-MM-DD; default today")] = None) -> None:
    """Report actions past their due date (normally run periodically by the meeting service)."""
    payload = {"as_of": as_of} if as_of else {}
    show(call(lambda c: c.command("meeting", "check_overdue", payload)))


# --- escalation ---------------------------------------------------------------------------

@escalation_app.command("raise")
@friendly
def escalation_raise(case_id: str, reason: Annotated[str, typer.Option()], actor: Actor = "unspecified") -> None:
    """Raise a HIPS escalation at stage 1."""
    show(call(lambda c: c.command("escalation", "raise", {"case_id": case_id, "reason": reason, "actor": actor})))


@escalation_app.command("advance")
@friendly
def escalation_advance(case_id: str, reason: Annotated[str, typer.Option()], actor: Actor = "unspecified") -> None:
    """Move the open escalation to its next stage."""
    show(call(lambda c: c.command("escalation", "advance", {"case_id": case_id, "reason": reason, "actor": actor})))


@escalation_app.command("resolve")
@friendly
def escalation_resolve(case_id: str, resolution: Annotated[str, typer.Option()], actor: Actor = "unspecified") -> None:
    """Resolve the open escalation (this closes the case)."""
    payload = {"case_id": case_id, "resolution": resolution, "actor": actor}
    show(call(lambda c: c.command("escalation", "resolve", payload)))


@case_app.command("close")
@friendly
def case_close(case_id: str, note: Annotated[str, typer.Option(help="What the network agreed")],
               actor: Actor = "unspecified") -> None:
    """Close a partly resolved case once its actions are complete and the network agrees nothing more is needed."""
    payload = {"case_id": case_id, "note": note, "actor": actor}
    show(call(lambda c: c.command("escalation", "close", payload)))


# --- reading ------------------------------------------------------------------------------

@case_app.command("show")
@friendly
def case_show(case_id: str, reason: ReadReason = None) -> None:
    """Current state of a case, from each service's own projection."""
    from .views import case_state

    async def run(c: Client) -> dict[str, Any]:
        await c.record_access(case_id, "case show", reason)
        return await case_state(c, case_id)

    show(call(run))


@case_app.command("history")
@friendly
def case_history(case_id: str, as_json: Annotated[bool, typer.Option("--json")] = False,
                 reason: ReadReason = None) -> None:
    """Every event of a case from the log, in order."""
    async def run(c: Client) -> list[Any]:
        await c.record_access(case_id, "case history", reason)
        return await c.history(case_id)

    history = call(run)
    if not history:
        raise CliError(f"no events for case {case_id}")
    if as_json:
        typer.echo(render.history_json(history))
    else:
        out.print(render.history_table(case_id, history))




# --- audit --------------------------------------------------------------------------------

@audit_app.command("verify")
@friendly
def audit_verify(
    case_id: Annotated[str | None, typer.Argument(help="One case; omit with --all")] = None,
    all_cases: Annotated[bool, typer.Option("--all", help="Every case in the log")] = False,
    anchors: Annotated[Path | None, typer.Option(help="Signed anchors file from `audit anchor`: also check each head")] = None,
    public_key: Annotated[Path | None, typer.Option(
        "--public-key", help="Public key that signed the anchors (default RETHINK_AUDIT_PUBLIC_KEY_FILE)")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Check each case's hash chain: intact, or the exact event where it breaks (exit 2 if any break)."""
    from rethink.shared.audit import verify_stored
    from rethink.shared.cli.chains import verify_all

    if bool(case_id) == all_cases:
        raise CliError("give one CASE or --all")
    held = _load_anchors(anchors, public_key or settings().audit_public_key_file) if anchors else {}

    async def run(c: Client) -> list[Any]:
        if case_id:
            return [verify_stored(case_id, await c.stored_history(case_id), held.get(case_id))]
        return await verify_all(c, held)

    reports = call(run)
    if as_json:
        typer.echo(json.dumps([r.as_dict() for r in reports], indent=2))
    else:
        for r in reports:
            out.print(r.one_line(), highlight=False, markup=False)
    if any(not r.intact for r in reports):
        raise typer.Exit(2)


@audit_app.command("keygen")
@friendly
def audit_keygen(folder: Annotated[Path, typer.Option("--out-dir", help="Folder for the key pair")]) -> None:
    """Make the Ed25519 key pair that signs anchors files (the private key stays with the auditors)."""
    from rethink.shared.anchors import generate_keypair

    private, public, kid = generate_keypair(folder)  # an AnchorsError is a ValueError: one line, exit 1
    out.print(f"key {kid}\n  signing key {private} (keep it with the auditors; mode 600)\n"
              f"  public key  {public} (give it to whoever verifies)", highlight=False)


@audit_app.command("anchor")
@friendly
def audit_anchor(
    out_file: Annotated[Path, typer.Option("--out", help="Anchors file to write, or an existing folder: "
                                                         "then anchors-<UTC time>.json in it (scheduled runs)")],
    key: Annotated[Path | None, typer.Option(
        "--key", help="Signing key from `audit keygen` (default RETHINK_AUDIT_SIGNING_KEY_FILE)")] = None,
) -> None:
    """Record every case's head (event id and digest) in a signed file outside the log, for later verifies."""
    from datetime import UTC
    from datetime import datetime as _dt

    from rethink.shared.anchors import load_private_key, signed_document, write_atomically
    from rethink.shared.audit import Anchor
    from rethink.shared.cli.chains import heads as case_heads

    s = settings()
    key_file = key or s.audit_signing_key_file
    if key_file is None:
        raise CliError("anchors are signed: give --key FILE or set RETHINK_AUDIT_SIGNING_KEY_FILE "
                       "(make a key pair with `rethink audit keygen --out-dir DIR`)")
    signing_key = load_private_key(key_file)
    now = _dt.now(UTC)
    stamp = now.isoformat(timespec="seconds")
    target = out_file / f"anchors-{now:%Y%m%dT%H%M%SZ}.json" if out_file.is_dir() else out_file

    async def run(c: Client) -> dict[str, Anchor]:
        return await case_heads(c, stamp)

    heads = call(run)
    try:
        write_atomically(target, signed_document(heads, stamp, s.stream, signing_key))
    except OSError as exc:
        raise CliError(f"{target}: cannot write ({exc.strerror})") from None
    out.print(f"anchored {len(heads)} cases in {target}; keep it where the log's writers cannot change it",
              highlight=False)


def _load_anchors(path: Path, public_key: Path | None) -> dict[str, Any]:
    from rethink.shared.anchors import AnchorsTampered, load_public_key, read_verified

    if public_key is None:
        raise CliError("anchors are trusted only once their signature checks out: give --public-key FILE "
                       "or set RETHINK_AUDIT_PUBLIC_KEY_FILE")
    try:
        return read_verified(path, load_public_key(public_key))
    except AnchorsTampered as exc:  # tamper evidence, like a broken chain: exit 2
        err.print(f"[red]BROKEN:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


@audit_app.command("export")
@friendly
def audit_export(out_file: Annotated[Path, typer.Option("--out", help="File to write (JSON lines)")]) -> None:
    """Copy the whole log, read-only, into a file: every message's sequence, subject, headers and bytes."""
    from rethink.shared.logcopy import export_log

    s = settings()

    async def go(c: Client):
        with _counter("exporting the log") as tick:
            return await export_log(c.nc.jetstream(), s, out_file, tick)

    done = call(go)
    out.print(f"exported {done.messages} messages (seq {done.first_seq}..{done.last_seq}) to {out_file}",
              highlight=False)


@keys_app.command("export")
@friendly
def keys_export(out_file: Annotated[Path, typer.Option("--out", help="File to write (it holds the keys: guard it)")]) -> None:
    """Back up every case's data key (the log's personal fields are unreadable without them)."""
    from rethink.shared.keycopy import export_keys

    s = settings()

    async def go(c: Client):
        return await export_keys((c.keys_nc or c.nc).jetstream(), s.keys_bucket, out_file)

    done = call(go)
    out.print(f"exported {done.keys} keys from {s.keys_bucket} to {out_file}", highlight=False)


@keys_app.command("import")
@friendly
def keys_import(file: Path) -> None:
    """Restore a key backup into the key store (after `rethink bootstrap`); never overwrites a key."""
    from rethink.shared.keycopy import KeyCopyError, import_keys

    s = settings()

    async def go(c: Client):
        return await import_keys((c.keys_nc or c.nc).jetstream(), s.keys_bucket, file)

    try:
        done = call(go)
    except KeyCopyError as exc:
        raise CliError(str(exc)) from None
    out.print(f"imported {done.keys} keys into {s.keys_bucket} ({done.skipped} were there already)", highlight=False)


@audit_app.command("import")
@friendly
def audit_import(file: Path) -> None:
    """Load an export into a new stream on a server of your own, keeping every stream sequence.

    Refuses a stream that exists, so it never writes into a live log.
    """
    from rethink.shared.logcopy import import_log

    s = settings()

    async def go(c: Client):
        with _counter(f"importing into {s.stream}") as tick:
            return await import_log(c.nc.jetstream(), s, file, tick)

    done = call(go)
    out.print(f"imported {done.messages} messages into {s.stream} on {s.printable_nats_url()} "
              f"(seq {done.first_seq}..{done.last_seq}, {done.gaps} deleted messages kept as gaps)", highlight=False)


@contextlib.contextmanager
def _counter(what: str) -> Iterator[Callable[[int], None]]:
    from rich.progress import Progress

    with Progress(console=err, transient=True) as bar:
        task = bar.add_task(what, total=None)
        yield lambda n: bar.update(task, completed=n)


@audit_app.command("history")
@friendly
def audit_history(
    case_id: str,
    fmt: Annotated[str, typer.Option("--format", help="table, json, csv or html")] = "table",
    as_of: Annotated[str | None, typer.Option(
        "--as-of", help="The case as it stood then, by domain time: an ISO date-time with offset, "
                        "or a date (the end of that day, UTC)")] = None,
    output: Annotated[Path | None, typer.Option("--output", help="Write to FILE instead of stdout")] = None,
    reason: ReadReason = None,
) -> None:
    """A case's chronology from the log (who, when, what changed) and its state, for auditors; read-only."""
    from datetime import UTC

    from . import report, report_html

    if fmt not in report.FORMATS:
        raise CliError(f"--format {fmt!r}: use one of {', '.join(report.FORMATS)}")
    moment = report.parse_as_of(as_of) if as_of is not None else None
    report.check_case_id(case_id)

    async def run(c: Client) -> list[Any]:
        await c.record_access(case_id, "audit history", reason)
        return await c.history(case_id)

    history = call(run)
    if not history:
        raise CliError(f"no events for case {case_id}")
    built = report.build_report(case_id, history, as_of=moment, today=datetime.now(UTC).date())
    if fmt == "table" and output is None:
        out.print(report.to_table(built))
        return
    text = {"table": lambda: report.table_text(built), "json": lambda: report.to_json(built.rows),
            "csv": lambda: report.to_csv(built.rows), "html": lambda: report_html.to_html(built)}[fmt]()
    if output is None:
        typer.echo(text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8", newline="")
    except OSError as exc:
        raise CliError(f"{output}: cannot write ({exc.strerror})") from None
    err.print(f"wrote {output}", highlight=False, markup=False)


@audit_app.command("search")
@friendly
def audit_search(
    agency: Annotated[str | None, typer.Option(help="Requesting agency (as on its subject)")] = None,
    since: Annotated[str | None, typer.Option("--from", help="Requested on or after YYYY-MM-DD")] = None,
    until: Annotated[str | None, typer.Option("--to", help="Requested on or before YYYY-MM-DD")] = None,
    outcome: Annotated[str | None, typer.Option(help="resolved, partly_resolved or unresolved")] = None,
    overdue: Annotated[bool, typer.Option("--overdue", help="Only cases with an overdue action")] = False,
    stage: Annotated[int | None, typer.Option(help="Only cases escalated to at least this stage")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Find cases by agency, request date, meeting outcome, overdue actions or escalation stage."""
    from datetime import date as _date

    from rich.table import Table

    from .search import Criteria, search

    if outcome is not None and outcome not in ("resolved", "partly_resolved", "unresolved"):
        raise CliError(f"--outcome must be resolved, partly_resolved or unresolved, not {outcome!r}")
    try:
        criteria = Criteria(agency, _date.fromisoformat(since) if since else None,
                            _date.fromisoformat(until) if until else None, outcome, overdue, stage)
    except ValueError as exc:
        raise CliError(f"--from/--to must be YYYY-MM-DD: {exc}") from None

    async def run(c: Client):
        assert c.nc is not None
        return await search(c.nc.jetstream(), c.settings, criteria)

    result = call(run)
    found = result.cases
    if result.unreadable:  # said, not hidden: a search that silently left events out would mislead
        n = len(result.unreadable)
        shown = ", ".join(str(seq) for seq in result.unreadable[:10]) + (f" and {n - 10} more" if n > 10 else "")
        said = "1 event could not be read and was left out" if n == 1 else f"{n} events could not be read and were left out"
        err.print(f"{said} (seq {shown}); `rethink deadletter list` and the services' logs say why",
                  highlight=False, markup=False)
    if as_json:
        typer.echo(json.dumps([f.as_dict() for f in found], indent=2))
        return
    table = Table(title=f"{len(found)} of {result.searched} cases match")
    for col in ("case", "agency", "reference", "requested", "status", "outcome", "stage", "overdue"):
        table.add_column(col)
    for f in found:
        table.add_row(f.case_id, f.agency or "", f.case_reference or "", f.requested_on or "", f.status,
                      f.outcome or "", str(f.highest_stage or ""), str(f.overdue_actions))
    out.print(table)


# --- personal data ------------------------------------------------------------------------

def _register_privacy() -> None:
    from . import privacy

    # Late-bound, so tests that replace this module's settings() reach these commands too.
    privacy.register(app, audit_app, friendly, lambda fn: call(fn), lambda: settings(), out)


_register_privacy()
