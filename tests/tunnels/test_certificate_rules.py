"""``domain.tunnel_certificates`` alone: what the API cannot show cheaply (a CA without expiry, one
not valid yet, the stored PEM being only the certificate). Every refusal is tested through the API
in ``test_tunnels_api``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from orgwarden.domain.tunnel_certificates import parse_ca_certificate
from tests.tunnels import certs


def test_a_ca_is_read_with_its_sha256_fingerprint_and_expiry() -> None:
    made = certs.make()
    parsed = parse_ca_certificate(made.pem, datetime.now(UTC))
    assert parsed.fingerprint == certs.fingerprint(made)
    assert len(parsed.fingerprint) == 64
    assert parsed.fingerprint == parsed.fingerprint.lower()
    assert parsed.expires_at == made.certificate.not_valid_after_utc


def test_rfc5280s_no_expiration_date_reads_as_no_expiry() -> None:
    made = certs.make(not_after=datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC))
    assert parse_ca_certificate(made.pem, datetime.now(UTC)).expires_at is None


def test_a_ca_not_valid_yet_is_accepted_so_a_successor_can_be_registered_ahead() -> None:
    start = datetime.now(UTC) + timedelta(days=30)
    made = certs.make(not_before=start, not_after=start + timedelta(days=365))
    assert parse_ca_certificate(made.pem, datetime.now(UTC)).fingerprint == certs.fingerprint(made)


def test_the_stored_pem_is_the_certificate_alone_without_surrounding_text() -> None:
    made = certs.make()
    parsed = parse_ca_certificate(f"subject=CN = orgwarden test CA\n{made.pem}\n\n", datetime.now(UTC))
    assert parsed.pem == made.pem
