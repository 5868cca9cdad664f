"""SMTP as a partnership's relay runs it: STARTTLS or implicit TLS, a login, a verified certificate.

A real aiosmtpd server with a certificate made for this test session (its own CA file, as a
private relay has), on a free port of 127.0.0.1.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from collections.abc import Iterator
from email import message_from_bytes
from pathlib import Path

import aiosmtplib
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from rethink.scheduling.mail import PermanentFailure, SmtpTransport
from tests.integration.conftest import RecordingSmtpHandler, running_smtp

USER, PASSWORD = "rethink@example.org", "relay-password-for-tests"
SENDER, RECIPIENT = "rethink@example.org", "sw@council.example.org"
MESSAGE = (b"From: rethink@example.org\r\nTo: sw@council.example.org\r\nSubject: Re-think RT-ABCDEFGHJK\r\n"
           b"Message-ID: <tls-test@example.org>\r\n\r\nYour Re-think meeting.\r\n")


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1: (certificate = the CA file clients trust, key)."""
    folder = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "smtp.example.org")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = folder / "relay.pem", folder / "relay.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def _authenticator(server, session, envelope, mechanism, auth_data):
    from aiosmtpd.smtp import AuthResult, LoginPassword

    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        USER.encode(), PASSWORD.encode())
    return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd sends the 535 itself


def _server(certificate, implicit: bool) -> Iterator[tuple[RecordingSmtpHandler, int]]:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(*map(str, certificate))
    # With implicit TLS the whole connection is encrypted before SMTP starts; aiosmtpd only knows
    # about STARTTLS, so it must be told that AUTH is fine on this connection.
    tls = ({"ssl_context": ctx, "auth_require_tls": False} if implicit
           else {"tls_context": ctx, "require_starttls": True})
    with running_smtp(authenticator=_authenticator, auth_required=True, **tls) as server:
        yield server


@pytest.fixture
def starttls_server(certificate):
    yield from _server(certificate, implicit=False)


@pytest.fixture
def tls_server(certificate):
    yield from _server(certificate, implicit=True)


def transport(port: int, security: str, ca: Path | None, password: str = PASSWORD) -> SmtpTransport:
    return SmtpTransport("127.0.0.1", port, security, USER, password, timeout=10,
                         ca_file=str(ca) if ca else None)


async def test_starttls_with_a_login_delivers_over_a_verified_connection(starttls_server, certificate):
    handler, port = starttls_server
    await transport(port, "starttls", certificate[0]).deliver("k1", SENDER, RECIPIENT, MESSAGE)
    [(mail_from, rcpt, data)] = handler.received
    assert (mail_from, rcpt) == (SENDER, [RECIPIENT])
    assert message_from_bytes(data)["Message-ID"] == "<tls-test@example.org>"


# aiosmtpd warns that AUTH without STARTTLS is unsafe; here the connection is TLS from its first byte.
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
async def test_implicit_tls_with_a_login_delivers(tls_server, certificate):
    handler, port = tls_server
    await transport(port, "tls", certificate[0]).deliver("k1", SENDER, RECIPIENT, MESSAGE)
    assert [r[1] for r in handler.received] == [[RECIPIENT]]


async def test_a_certificate_that_does_not_verify_stops_the_send(starttls_server):
    handler, port = starttls_server
    with pytest.raises((ssl.SSLError, aiosmtplib.SMTPException), match="CERTIFICATE_VERIFY_FAILED"):
        await transport(port, "starttls", ca=None).deliver("k1", SENDER, RECIPIENT, MESSAGE)  # system CAs only
    assert handler.received == []


async def test_a_relay_that_requires_tls_is_never_sent_to_in_plain_text(starttls_server, certificate):
    handler, port = starttls_server
    with pytest.raises(aiosmtplib.SMTPException):
        await transport(port, "none", certificate[0]).deliver("k1", SENDER, RECIPIENT, MESSAGE)
    assert handler.received == []


async def test_a_wrong_password_fails_the_message_visibly(starttls_server, certificate):
    handler, port = starttls_server
    with pytest.raises(PermanentFailure, match="535"):
        await transport(port, "starttls", certificate[0], password="wrong").deliver("k1", SENDER, RECIPIENT, MESSAGE)
    assert handler.received == []
