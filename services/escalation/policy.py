"""An escalation policy: ordered stages, who holds each, and a working-day deadline per stage.

Policies are data a partnership configures; the HIPS default ships in this package as
``default_policy.yaml``. Pure except :func:`load_policy`, which reads the one file it is given.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

DEFAULT_POLICY_RESOURCE = "default_policy.yaml"

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Description = Annotated[str, StringConstraints(strip_whitespace=True, max_length=2000)]


class PolicyError(ValueError):
    """A policy file that cannot be used; the message names the file and the problem."""


class Stage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    stage: int = Field(ge=1)
    name: Name
    holder: Name = Field(description="Who holds the disagreement at this stage (a role, never a person).")
    working_days: int = Field(ge=0, description="Indicative deadline, in working days after the stage starts.")
    description: Description | None = None


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name = "Escalation policy"
    description: Description | None = None
    stages: list[Stage] = Field(min_length=1)

    @model_validator(mode="after")
    def _numbered_in_order(self) -> Policy:
        numbers = [s.stage for s in self.stages]
        if numbers != list(range(1, len(numbers) + 1)):
            found = ", ".join(str(n) for n in numbers)
            raise ValueError(f"stages must be numbered 1..{len(numbers)} in order without gaps; found {found}")
        return self

    @property
    def last_stage(self) -> int:
        return len(self.stages)

    def stage(self, number: int) -> Stage:
        return self.stages[number - 1]


def parse_policy(text: str, source: str) -> Policy:
    """Read a policy from YAML text; ``source`` names it in error messages."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyError(f"escalation policy {source} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise PolicyError(f"escalation policy {source} must be a mapping with a 'stages' list, "
                          f"not {type(data).__name__}")
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(policy)'}: {err['msg']}"
            for err in exc.errors(include_url=False, include_input=False)
        )
        raise PolicyError(f"escalation policy {source} is invalid: {problems}") from None


def default_policy() -> Policy:
    return parse_policy(_default_policy_text(), f"(built-in {DEFAULT_POLICY_RESOURCE})")


def _default_policy_text() -> str:
    try:
        return resources.files(__package__).joinpath(DEFAULT_POLICY_RESOURCE).read_text(encoding="utf-8")
    except NotADirectoryError:
        # Python 3.11 cannot list a namespace package whose path holds setuptools' editable
        # placeholder (an editable install made before __init__.py existed; fixed in 3.12).
        # The file is package data beside this module either way.
        return Path(__file__).with_name(DEFAULT_POLICY_RESOURCE).read_text(encoding="utf-8")


def load_policy(path: Path | None) -> Policy:
    """The policy in ``path``, or the built-in HIPS default when ``path`` is None."""
    if path is None:
        return default_policy()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"escalation policy {path} cannot be read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise PolicyError(f"escalation policy {path} is not UTF-8 text") from None
    return parse_policy(text, str(path))
