"""RETHINK_NATS_URL for a cluster: several servers, one user, credentials kept out of the URLs."""

from __future__ import annotations

import pytest

from rethink.shared.settings import Settings


def test_a_single_url_without_credentials_is_passed_as_it_is():
    assert Settings(nats_url="nats://nats:4222").nats_connect_kwargs() == {"servers": ["nats://nats:4222"]}


def test_comma_separated_urls_become_a_server_pool_with_the_credentials_as_options():
    s = Settings(nats_url="nats://svc:s3cret@n1:4222, nats://svc:s3cret@n2:4222,nats://svc:s3cret@n3:4222")
    assert s.nats_connect_kwargs() == {"servers": ["nats://n1:4222", "nats://n2:4222", "nats://n3:4222"],
                                       "user": "svc", "password": "s3cret"}
    assert "s3cret" not in s.printable_nats_url()


def test_servers_with_different_credentials_are_refused():
    s = Settings(nats_url="nats://a:x@n1:4222,nats://b:y@n2:4222")
    with pytest.raises(ValueError, match="same user and password"):
        s.nats_connect_kwargs()
