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

from sqlalchemy import Dialect, Engine

# Prefixes of psycopg's own messages about the connection's socket (psycopg.waiting, psycopg.pq).
GONE = ("connection socket closed", "sending query failed", "consuming input failed")


def means_gone(dialect: Dialect, error: BaseException) -> bool:
    """``error`` (a DB-API error) is psycopg saying the socket is unusable."""
    if dialect.name != "postgresql" or dialect.driver != "psycopg":
        return False
    return isinstance(error, dialect.loaded_dbapi.OperationalError) and str(error).startswith(GONE)


def notice_gone(engine: Engine) -> Engine:
    """Have ``engine``'s dialect judge psycopg's socket messages a disconnect, besides what it judges
    so itself: the engine then invalidates the connection (the pool drops it, the error says
    ``connection_invalidated``, what the delivery layer and the tests look for), as do the paths
    that run on the DB-API cursor (``sqlwriter``), which ask the same dialect. The judgement is the
    dialect's own method, replaced on this engine's dialect alone (each engine has its own): an
    event listener would do it too, but would make every live write ask which listeners there are."""
    dialect = engine.dialect
    judged = dialect.is_disconnect

    def is_disconnect(error: Any, connection: Any, cursor: Any) -> bool:
        return judged(error, connection, cursor) or means_gone(dialect, error)

    dialect.is_disconnect = is_disconnect  # type: ignore[method-assign]
    return engine
