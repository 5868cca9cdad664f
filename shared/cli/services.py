"""Which factory builds which service. Imported lazily: the CLI must not load every service to run one."""

from __future__ import annotations

import importlib

from rethink.shared.runtime import Factory
from rethink.shared.settings import SERVICES


def factory(name: str) -> Factory:
    if name not in SERVICES:
        raise ValueError(f"unknown service {name!r}; choose one of {', '.join(SERVICES)}")
    return importlib.import_module(f"rethink.{name}.app").build
