"""`python -m rethink.console`: serve the console on 127.0.0.1 (the supervisor runs it for `rethink up`)."""

from __future__ import annotations

import sys

import uvicorn

from rethink.shared.settings import Settings

from .app import build_app


def main() -> int:
    settings = Settings()
    if not settings.console_port:
        print("RETHINK_CONSOLE_PORT is 0: the console is switched off", file=sys.stderr)
        return 0
    uvicorn.run(build_app(settings), host="127.0.0.1", port=settings.console_port,
                log_level=settings.log_level.lower(), proxy_headers=False, server_header=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
