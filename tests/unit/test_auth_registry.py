from __future__ import annotations

import json
import stat

import bcrypt
import pytest

from rethink.shared.auth import AuthError, Registry
from rethink.shared.settings import Settings


@pytest.fixture
def registry(tmp_path):
    return Registry(tmp_path / "auth", Settings(state_dir=tmp_path))


def test_core_users_are_made_once_and_only_hashes_are_kept(registry):
    made = registry.ensure_core()
    assert set(made) == {"rethink-services", "auditor"}
    assert registry.ensure_core() == {}  # a second run makes nothing new
    stored = registry.users_file.read_text()
    assert all(password not in stored for password in made.values())
    entry = next(e for e in json.loads(stored) if e["name"] == "auditor")
    assert bcrypt.checkpw(made["auditor"].encode(), entry["password_hash"].encode())
    assert stat.S_IMODE(registry.users_file.stat().st_mode) == 0o600


def test_an_agency_gets_only_its_own_subjects_and_inbox_in_the_rendered_config(registry):
    registry.ensure_core()
    registry.add_agency("police")
    config = json.loads(registry.config_file.read_text().removeprefix("authorization "))
    police = next(u for u in config["users"] if u["user"] == "police")
    assert police["permissions"] == {
        "publish": {"allow": ["rethink.intake.police.>", "rethink.inbound.police.>",
                              # its own receipt consumer: read its info, pull, ack; never create one
                              "$JS.API.CONSUMER.INFO.RETHINK_RECEIPTS.police",
                              "$JS.API.CONSUMER.MSG.NEXT.RETHINK_RECEIPTS.police",
                              "$JS.ACK.RETHINK_RECEIPTS.police.>"]},
        "subscribe": {"allow": ["_INBOX_police.>"]}}
    services = next(u for u in config["users"] if u["user"] == "rethink-services")
    assert "permissions" not in services


@pytest.mark.parametrize("name", ["Police", "a", "po.lice", "po*", "x" * 41, "-police", "police>"])
def test_agency_names_that_would_break_subjects_are_refused(registry, name):
    with pytest.raises(AuthError, match="lower-case letters"):
        registry.add_agency(name)


def test_an_agency_cannot_be_added_twice_or_take_a_reserved_name_and_revoking_an_unknown_one_fails(registry):
    registry.add_agency("police")
    with pytest.raises(AuthError, match="exists"):
        registry.add_agency("police")
    with pytest.raises(AuthError, match="reserved"):
        registry.add_agency("auditor")
    with pytest.raises(AuthError, match="no agency school"):
        registry.revoke("school")
    registry.revoke("police")
    assert registry.agencies() == []
