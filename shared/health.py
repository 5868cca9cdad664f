"""The operator's window on one service process: /healthz, /readyz and /metrics over HTTP.

A thin edge on asyncio streams (three GET routes need no web framework):
- ``/healthz``: 200 while the process runs its event loop (liveness: restart me if this fails);
- ``/readyz``: 200 when the service is connected to NATS *and* its database answers
  ``SELECT 1``, 503 with the failing part otherwise (readiness: send me no work);
- ``/metrics``: Prometheus text format (``rethink.shared.metrics``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST

from .logs import get_logger

log = get_logger("rethink.health")

Readiness = Callable[[], Awaitable[dict[str, str]]]  # each part: "ok", or what is wrong
Exposition = Callable[[], Awaitable[bytes]]
REQUEST_TIMEOUT = 5.0


class HealthServer:
    def __init__(self, readiness: Readiness, metrics: Exposition, host: str = "0.0.0.0", port: int = 8080) -> None:
        self._readiness = readiness
        self._metrics = metrics
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> HealthServer:
        try:
            self._server = await asyncio.start_server(self._handle, self.host, self.port)
        except OSError as exc:
            raise ValueError(f"cannot serve health on {self.host}:{self.port} ({exc.strerror}); "
                             "set RETHINK_HEALTH_PORT to a free port, or 0 to turn it off") from None
        self.port = self._server.sockets[0].getsockname()[1]  # the real one when asked for port 0
        log.info("health_serving", port=self.port)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT)
            method, _, rest = head.split(b"\r\n", 1)[0].decode("latin-1").partition(" ")
            path = rest.split(" ", 1)[0].split("?", 1)[0]
            status, ctype, body = await self._route(method, path)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, UnicodeDecodeError):
            status, ctype, body = 400, "text/plain", b"bad request\n"
        except Exception as exc:  # a probe must get an answer, and the service must keep running
            log.exception("health_request_failed")
            status, ctype, body = 500, "text/plain", f"{type(exc).__name__}\n".encode()
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
                  500: "Internal Server Error", 503: "Service Unavailable"}[status]
        writer.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                     "Connection: close\r\n\r\n".encode() + body)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    async def _route(self, method: str, path: str) -> tuple[int, str, bytes]:
        if method != "GET":
            return 405, "text/plain", b"GET only\n"
        if path == "/healthz":
            return 200, "application/json", b'{"status": "ok"}\n'
        if path == "/readyz":
            parts = await self._readiness()
            ready = all(v == "ok" for v in parts.values())
            body: dict[str, Any] = {"status": "ready" if ready else "not ready", **parts}
            return (200 if ready else 503), "application/json", (json.dumps(body) + "\n").encode()
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, await self._metrics()
        return 404, "text/plain", b"try /healthz, /readyz or /metrics\n"
