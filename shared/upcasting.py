"""Reading old events with today's models: one small function per version step.

When an event's schema changes, bump its model's ``schema_version`` and register how to turn
the previous version's data into the new one. The log is never rewritten (the hash chain
covers the stored bytes); events are upcast as they are read.

Adding an optional field needs no upcaster (old data validates as is); renaming, removing or
changing the meaning of a field does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Data = dict[str, Any]
Upcaster = Callable[[Data], Data]

# (event type, version it reads) -> function returning that data at version + 1
UPCASTERS: dict[tuple[str, int], Upcaster] = {}


class CannotUpcast(ValueError):
    pass


def upcaster(event_type: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
    def register(fn: Upcaster) -> Upcaster:
        UPCASTERS[(event_type, from_version)] = fn
        return fn

    return register


def upcast(event_type: str, version: int, data: Data, current: int,
           registry: dict[tuple[str, int], Upcaster] | None = None) -> Data:
    steps = UPCASTERS if registry is None else registry
    if version > current:
        raise CannotUpcast(f"{event_type} v{version} was written by a newer Re-think (this one reads v{current})")
    while version < current:
        step = steps.get((event_type, version))
        if step is None:
            raise CannotUpcast(f"no upcaster for {event_type} v{version} -> v{version + 1}")
        data = step(dict(data))
        version += 1
    return data
