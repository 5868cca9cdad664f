"""Requests being filled in, kept on the server: a description can be longer than a cookie can hold.

In memory, so a console restart loses drafts in progress (a practitioner starts again). Drafts
are bound to the user who started them and dropped after a day or when submitted.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

TTL_SECONDS = 24 * 3600
MAX_DRAFTS = 10_000


class Drafts:
    def __init__(self) -> None:
        self._items: dict[str, tuple[str, float, dict[str, Any]]] = {}

    def start(self, user_id: str) -> str:
        self._expire()
        draft_id = str(uuid.uuid4())
        self._items[draft_id] = (user_id, time.monotonic(), {})
        return draft_id

    def get(self, draft_id: str | None, user_id: str) -> dict[str, Any] | None:
        item = self._items.get(draft_id or "")
        if item is None or item[0] != user_id or time.monotonic() - item[1] > TTL_SECONDS:
            return None
        return item[2]

    def drop(self, draft_id: str) -> None:
        self._items.pop(draft_id, None)

    def _expire(self) -> None:
        now = time.monotonic()
        for key in [k for k, (_, at, _) in self._items.items() if now - at > TTL_SECONDS]:
            del self._items[key]
        while len(self._items) >= MAX_DRAFTS:  # oldest first: dicts keep insertion order
            del self._items[next(iter(self._items))]
