"""Escalation policies: the built-in HIPS default, a partnership's own file, and broken files."""

from __future__ import annotations

from pathlib import Path

import pytest

from rethink.escalation.policy import PolicyError, default_policy, load_policy

TWO_STAGES = """
name: Example partnership policy
stages:
  - stage: 1
    name: Worker to worker
    holder: The workers involved
    working_days: 1
  - stage: 2
    name: Heads of service
    holder: Heads of service
    working_days: 0
    description: Same day, by phone.
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_default_policy_is_the_four_hips_stages():
    policy = load_policy(None)
    assert [(s.stage, s.name, s.holder, s.working_days) for s in policy.stages] == [
        (1, "Practitioner to practitioner", "The practitioners involved", 2),
        (2, "Manager to manager", "Line managers of each practitioner", 5),
        (3, "Senior managers", "Senior managers / designated safeguarding leads", 2),
        (4, "Independently chaired partnership meeting", "Partnership (PSCP) independent chair", 10),
    ]
    assert policy.last_stage == 4
    assert policy.stage(2).name == "Manager to manager"
    assert policy == default_policy()


def test_the_default_policy_file_names_its_source():
    text = (Path(__file__).parents[2] / "services" / "escalation" / "default_policy.yaml").read_text()
    assert "HIPS" in text and "7.3" in text and "indicative" in text


def test_a_partnership_policy_file_replaces_the_default(tmp_path):
    policy = load_policy(write(tmp_path, TWO_STAGES))
    assert policy.name == "Example partnership policy"
    assert [(s.stage, s.name, s.working_days) for s in policy.stages] == [
        (1, "Worker to worker", 1), (2, "Heads of service", 0)]
    assert policy.stage(2).description == "Same day, by phone."
    assert policy.last_stage == 2


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (TWO_STAGES.replace("stage: 2", "stage: 3"), "stages must be numbered 1..2 in order without gaps; found 1, 3"),
        (TWO_STAGES.replace("stage: 1", "stage: 9").replace("stage: 2", "stage: 1").replace("stage: 9", "stage: 2"),
         "found 2, 1"),
        (TWO_STAGES.replace("name: Worker to worker", "name: '  '"),
         "stages.0.name: String should have at least 1 character"),
        (TWO_STAGES.replace("working_days: 1", "working_days: -1"),
         "stages.0.working_days: Input should be greater than or equal to 0"),
        (TWO_STAGES.replace("working_days: 1", "working_days: two"), "stages.0.working_days"),
        (TWO_STAGES.replace("holder: Heads of service", "owner: Heads of service"), "stages.1.holder: Field required"),
        ("stages: []", "stages: List should have at least 1 item"),
        ("- stage: 1", "must be a mapping with a 'stages' list, not list"),
        ("stages: [stage: 1\n", "is not valid YAML"),
    ],
)
def test_a_broken_policy_file_is_refused_naming_the_file_and_the_problem(tmp_path, text, problem):
    path = write(tmp_path, text)
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert str(path) in str(caught.value)
    assert problem in str(caught.value)


def test_a_missing_policy_file_is_refused_naming_it(tmp_path):
    missing = tmp_path / "nowhere.yaml"
    with pytest.raises(PolicyError, match="nowhere.yaml cannot be read"):
        load_policy(missing)


def test_the_service_refuses_to_start_with_a_broken_policy_file(tmp_path):
    from rethink.escalation.app import build
    from rethink.shared.clock import SystemClock
    from rethink.shared.settings import Settings

    path = write(tmp_path, TWO_STAGES.replace("working_days: 0", "working_days: -2"))
    settings = Settings(state_dir=tmp_path / "state", escalation_policy_file=path)
    with pytest.raises(PolicyError, match="stages.1.working_days"):
        build(settings, log=None, clock=SystemClock())
    assert not (tmp_path / "state").exists()  # refused before any database was made
