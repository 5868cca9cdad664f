"""Which database errors mean the connection is gone, beyond what SQLAlchemy's dialect knows.

SQLAlchemy's psycopg dialect calls an error a disconnect only when the connection says it is closed
or broken. When the server ends a backend while psycopg is sending or waiting, psycopg raises
"connection socket closed" (or "sending query failed: ..." on the next command) before it has marked
the connection bad: SQLAlchemy then tries a ``ROLLBACK`` on it, that fails too, and the dead
connection is not invalidated (CI met it now and then: issue 7, after the sixth round). These
messages come from libpq and psycopg about the socket itself, never from the server about a
statement, so a connection that raised one is of no further use.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Dialect, Engine, event
from sqlalchemy.engine import ExceptionContext

# Prefixes of psycopg's own messages about the connection's socket (psycopg.waiting, psycopg.pq).
GONE = ("connection socket closed", "sending query failed", "consuming input failed")


def means_gone(dialect: Dialect, error: BaseException) -> bool:
    """``error`` (a DB-API error) is psycopg saying the socket is unusable."""
    if dialect.name != "postgresql" or dialect.driver != "psycopg":
        return False
    return isinstance(error, dialect.loaded_dbapi.OperationalError) and str(error).startswith(GONE)


def is_disconnect(dialect: Dialect, error: BaseException, dbapi_conn: Any, cursor: Any) -> bool:
    """The dialect's own judgement, or one of psycopg's messages about the socket: for code that runs
    on the DB-API connection itself (``sqlwriter``), as the engine judges with ``notice_gone``."""
    return dialect.is_disconnect(error, dbapi_conn, cursor) or means_gone(dialect, error)


def notice_gone(engine: Engine) -> Engine:
    """Have ``engine`` invalidate a connection on psycopg's socket messages as on any disconnect:
    the pool drops it and the error says ``connection_invalidated`` (what the delivery layer and the
    tests look for)."""
    event.listen(engine, "handle_error", mark_gone)
    return engine


def mark_gone(context: ExceptionContext) -> None:
    if not context.is_disconnect and context.dialect is not None and context.original_exception is not None \
            and means_gone(context.dialect, context.original_exception):
        context.is_disconnect = True
