"""Real X.509 certificates for the tunnel tests, made with ``cryptography`` (EC P-256: fast to make).

``make`` builds a self-signed certificate with the validity window and ``basicConstraints`` asked
for; ``key_pem`` writes a key in each PEM form a user might paste by mistake.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class Made:
    pem: str
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def make(
    *,
    ca: bool | None = True,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    name: str = "orgwarden test CA",
) -> Made:
    """``ca=None`` leaves basicConstraints out entirely (a plain leaf certificate)."""
    now = datetime.now(UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - timedelta(days=1))
        .not_valid_after(not_after or now + timedelta(days=365))
    )
    if ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    certificate = builder.sign(key, hashes.SHA256())
    return Made(certificate.public_bytes(serialization.Encoding.PEM).decode(), certificate, key)


def expired() -> Made:
    now = datetime.now(UTC)
    return make(not_before=now - timedelta(days=30), not_after=now - timedelta(days=1))


@cache
def _rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def key_pem(made: Made, form: str) -> str:
    """The private key as ``PRIVATE KEY`` (PKCS#8), ``EC PRIVATE KEY``, ``ENCRYPTED PRIVATE KEY`` or
    ``RSA PRIVATE KEY`` (an RSA key of its own: a CA's key could be either kind)."""
    encoding, none = serialization.Encoding.PEM, serialization.NoEncryption()
    if form == "PRIVATE KEY":
        data = made.key.private_bytes(encoding, serialization.PrivateFormat.PKCS8, none)
    elif form == "EC PRIVATE KEY":
        data = made.key.private_bytes(encoding, serialization.PrivateFormat.TraditionalOpenSSL, none)
    elif form == "ENCRYPTED PRIVATE KEY":
        encrypted = serialization.BestAvailableEncryption(b"passphrase")
        data = made.key.private_bytes(encoding, serialization.PrivateFormat.PKCS8, encrypted)
    elif form == "RSA PRIVATE KEY":
        data = _rsa_key().private_bytes(encoding, serialization.PrivateFormat.TraditionalOpenSSL, none)
    else:  # pragma: no cover - a test asked for a form this helper does not know
        raise ValueError(form)
    text = data.decode()
    assert f"-----BEGIN {form}-----" in text, text[:40]
    return text


def fingerprint(made: Made) -> str:
    return made.certificate.fingerprint(hashes.SHA256()).hex()
