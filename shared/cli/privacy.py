"""`rethink privacy erase|sweep` and `rethink audit access`: erasure, retention and access records."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from rethink.shared.access import who_is_reading
from rethink.shared.erasure import erase_case, sweep

from .client import Client, CliError

privacy_app = typer.Typer(help="Personal data: erase a case's, and the retention sweep.", no_args_is_help=True)


def register(app: typer.Typer, audit_app: typer.Typer, friendly: Any, call: Any, settings: Any, out: Any) -> None:
    app.add_typer(privacy_app, name="privacy")

    @privacy_app.command("erase")
    @friendly
    def erase(case_id: str,
              reason: Annotated[str, typer.Option(help="Why (the rule or request; no personal data)")]) -> None:
        """Destroy the case's key: its personal fields read as erased everywhere from now on."""
        s = settings()

        async def run(c: Client):
            return await erase_case(c.log, case_id, who_is_reading(s), reason, datetime.now(UTC))

        done = call(run)
        what = "recorded PersonalDataErased" if done.recorded else "erasure already recorded"
        key = "key destroyed" if done.key_destroyed else "no key left to destroy"
        out.print(f"{case_id}: {what}; {key}", highlight=False)

    @privacy_app.command("sweep")
    @friendly
    def sweep_cmd(apply: Annotated[bool, typer.Option("--apply", help="Erase; without it, only report")] = False,
                  as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
        """Find closed cases past the retention period (RETHINK_RETENTION_YEARS); erase them with --apply."""
        s = settings()
        now = datetime.now(UTC)
        items = call(lambda c: sweep(c.log, s.retention_years, now.date(), apply, who_is_reading(s), now))
        if as_json:
            typer.echo(json.dumps([{**i.__dict__, "closed_on": _d(i.closed_on), "due_on": _d(i.due_on)}
                                   for i in items], indent=2))
            return
        acted = [i for i in items if i.action in ("erased", "due")]
        verb = "erased" if apply else "due for erasure (dry run: add --apply to erase)"
        out.print(f"retention {s.retention_years} years after closing: {len(acted)} of {len(items)} cases {verb}",
                  highlight=False)
        for i in items:
            if i.action != "kept":
                out.print(f"  {i.case_id}: closed {_d(i.closed_on)}, due {_d(i.due_on)}: {i.action}", highlight=False)

    @audit_app.command("access")
    @friendly
    def access(case_id: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
        """Who read a case through the CLI, when, with which command and why."""
        async def run(c: Client):
            try:
                return await c.access.list(case_id)
            except ValueError:
                raise
            except Exception as exc:
                raise CliError(f"cannot read the access records ({type(exc).__name__}: {exc})") from None

        records = call(run)
        if as_json:
            typer.echo(json.dumps([r.as_dict() for r in records], indent=2))
            return
        table = Table(title=f"{case_id}: {len(records)} reads")
        for col in ("when", "who", "how", "why"):
            table.add_column(col, overflow="fold")
        for r in records:
            table.add_row(r.at, escape(r.who), r.what, escape(r.reason))
        out.print(table)


def _d(day: Any) -> str | None:
    return day.isoformat() if day else None
