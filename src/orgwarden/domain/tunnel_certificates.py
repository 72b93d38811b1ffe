"""Reading a tunnel's CA certificate from PEM, and refusing what must not be registered (no I/O).

The spec asks for exactly one X.509 certificate and no private-key material. The PEM block labels are
read first, so that a private key is refused by its label, before any parsing, and without its body
ever reaching an error message. Then the one ``CERTIFICATE`` block is parsed by ``cryptography``; it
must be a CA (``basicConstraints`` CA:TRUE: Anthropic verifies the gateway's server certificate
against it) and not expired. A CA that is not valid *yet* is accepted: registering a successor before
it takes over is what the second certificate slot of a tunnel is for.

The fingerprint is the SHA-256 of the DER encoding, in lowercase hex. ``expires_at`` is the
certificate's ``notAfter``, or ``None`` for RFC 5280's "no well-defined expiration"
(99991231235959Z).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

from orgwarden.domain.clock import rfc3339

MAX_PEM_BYTES = 8192  # the SDK documents "Maximum 8KB"
FIELD = "ca_certificate_pem"
_BEGIN = re.compile(r"-----BEGIN ([^-\r\n]*)-----")
_NO_EXPIRY = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class CaCertificate:
    pem: str  # re-encoded from the parsed certificate: exactly one block, nothing else
    fingerprint: str
    expires_at: datetime | None


def parse_ca_certificate(text: str, now: datetime) -> CaCertificate:
    """The one CA certificate in ``text``; ``ValueError`` naming the problem otherwise."""
    size = len(text.encode())
    if size > MAX_PEM_BYTES:
        raise ValueError(f"{FIELD}: must be at most {MAX_PEM_BYTES} bytes, got {size}")
    if not text.strip():
        raise ValueError(f"{FIELD}: must not be empty: send one PEM-encoded X.509 CA certificate")
    labels = [label.strip() for label in _BEGIN.findall(text)]
    keys = [label for label in labels if "PRIVATE KEY" in label]
    if keys:
        raise ValueError(
            f"{FIELD}: contains private-key material (a {keys[0]} block); send only the CA certificate, never a key"
        )
    others = [label for label in labels if label != "CERTIFICATE"]
    if others:
        raise ValueError(f"{FIELD}: contains a {others[0]} block; only one CERTIFICATE block is accepted")
    if not labels:
        raise ValueError(f"{FIELD}: no PEM certificate found (expected a -----BEGIN CERTIFICATE----- block)")
    if len(labels) > 1:
        raise ValueError(f"{FIELD}: must contain exactly one certificate, found {len(labels)}")
    try:
        certificates = x509.load_pem_x509_certificates(text.encode())
    except ValueError:
        raise ValueError(f"{FIELD}: is not a valid PEM-encoded X.509 certificate") from None
    if len(certificates) != 1:  # pragma: no cover - the labels were counted above
        raise ValueError(f"{FIELD}: must contain exactly one certificate, found {len(certificates)}")
    certificate = certificates[0]
    _require_ca(certificate)
    not_after = certificate.not_valid_after_utc
    if not_after <= now:
        raise ValueError(f"{FIELD}: the certificate expired at {rfc3339(not_after)}")
    return CaCertificate(
        pem=certificate.public_bytes(Encoding.PEM).decode(),
        fingerprint=certificate.fingerprint(hashes.SHA256()).hex(),
        expires_at=None if not_after >= _NO_EXPIRY else not_after,
    )


def _require_ca(certificate: x509.Certificate) -> None:
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    except ValueError:
        raise ValueError(f"{FIELD}: the certificate's extensions cannot be read") from None
    if constraints is None or not constraints.ca:
        raise ValueError(
            f"{FIELD}: is not a CA certificate (basicConstraints CA:TRUE is required); register the CA that "
            "issued your gateway's server certificate, not the server certificate itself"
        )
