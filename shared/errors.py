"""Errors a decision can raise. Pure Python: domains import this and nothing else of ours."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Reason:
    field: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


class Rejected(Exception):
    """A command that cannot be carried out; nothing is written. ``reasons`` say why, per field."""

    def __init__(self, *reasons: Reason | str, guidance: str | None = None) -> None:
        self.reasons = [r if isinstance(r, Reason) else Reason("", r) for r in reasons]
        self.guidance = guidance
        super().__init__("; ".join(f"{r.field}: {r.message}" if r.field else r.message for r in self.reasons))


def rejected(field: str, message: str, guidance: str | None = None) -> Rejected:
    return Rejected(Reason(field, message), guidance=guidance)


class NotFound(Rejected):
    pass
