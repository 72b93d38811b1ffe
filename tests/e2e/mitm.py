"""Shared by the end-to-end tests that need TLS or a real proxy: throw-away certificates (a test CA
and a server certificate for 127.0.0.1/localhost, made with ``cryptography``), ``mitmdump`` from a
cached virtualenv, and starting/stopping processes.

``mitmdump`` needs Python >= 3.12 (the tests run on 3.11): its virtualenv is cached in the system temp
directory, keyed by the pinned version. When no Python >= 3.12 exists or mitmproxy cannot be installed,
a test that needs it is skipped with a loud message, or fails when ``ORGWARDEN_TEST_REQUIRE_MITMPROXY=1``.
The fixtures over these helpers are in ``conftest.py``.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import glob
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.conftest import free_port

MITMPROXY_VERSION = "12.2.3"  # 12.3.x needs a certifi newer than the package index here offers
MITMPROXY_VENV = Path(tempfile.gettempdir()) / f"orgwarden-mitmproxy-{MITMPROXY_VERSION}"
REQUIRE_MITMPROXY = os.environ.get("ORGWARDEN_TEST_REQUIRE_MITMPROXY") == "1"
ADDON = Path(__file__).with_name("inject_header.py")


# --------------------------------------------------------------------------------------------------
# processes


def stop_process(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def wait_until(ready: Callable[[], bool], process: subprocess.Popen[Any], what: str, log: Path) -> None:
    deadline = time.monotonic() + 30
    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            stop_process(process)
            raise AssertionError(f"{what} did not start (exit code {process.returncode}):\n{log.read_text()}")
        time.sleep(0.1)


# --------------------------------------------------------------------------------------------------
# certificates


@dataclass
class Certificates:
    ca: Path  # the test CA that signed orgwarden's certificate
    server_cert: Path
    server_key: Path
    other_ca: Path  # an unrelated CA that signed nothing here


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "orgwarden tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _write_pem(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def key_usage(**allowed: bool) -> x509.KeyUsage:
    flags = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment", "key_agreement",
             "key_cert_sign", "crl_sign", "encipher_only", "decipher_only")  # fmt: skip
    return x509.KeyUsage(**{flag: allowed.get(flag, False) for flag in flags})


def make_ca(common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def make_server_cert(ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey) -> tuple[x509.Certificate, Any]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def make_certificates(tmp: Path) -> Certificates:
    """A test CA, a server certificate it signed for 127.0.0.1/localhost, and an unrelated CA."""
    ca, ca_key = make_ca("orgwarden test CA")
    server_cert, server_key = make_server_cert(ca, ca_key)
    other_ca, _ = make_ca("unrelated test CA")
    key_path = tmp / "server-key.pem"
    key_path.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return Certificates(
        ca=_write_pem(tmp / "ca.pem", ca),
        server_cert=_write_pem(tmp / "server.pem", server_cert),
        server_key=key_path,
        other_ca=_write_pem(tmp / "other-ca.pem", other_ca),
    )


# --------------------------------------------------------------------------------------------------
# mitmproxy in its own virtualenv


def _python_version(executable: str) -> tuple[int, int] | None:
    try:
        result = subprocess.run(
            [executable, "-c", "import sys, venv, ssl; print(*sys.version_info[:2])"],
            capture_output=True, text=True, timeout=20, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:  # e.g. a pyenv shim for a version that is not active
        return None
    major, minor = result.stdout.split()
    return int(major), int(minor)


def find_python_312() -> str | None:
    """The newest Python >= 3.12 on this machine (PATH, pyenv, /usr/local, /usr)."""
    candidates: list[str] = []
    for name in ("python3.14", "python3.13", "python3.12"):
        if found := shutil.which(name):
            candidates.append(found)
    for pattern in (
        "/root/.pyenv/versions/3.1[2-9]*/bin/python3",
        os.path.expanduser("~/.pyenv/versions/3.1[2-9]*/bin/python3"),
        "/usr/local/bin/python3.1[2-9]",
        "/usr/bin/python3.1[2-9]",
    ):
        candidates.extend(sorted(glob.glob(pattern), reverse=True))
    best: tuple[tuple[int, int], str] | None = None
    for candidate in dict.fromkeys(candidates):
        version = _python_version(candidate)
        if version is not None and version >= (3, 12) and (best is None or version > best[0]):
            best = (version, candidate)
    return best[1] if best else None


def _mitmdump_works(mitmdump: Path) -> bool:
    try:
        result = subprocess.run([str(mitmdump), "--version"], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0 and f"Mitmproxy: {MITMPROXY_VERSION}" in result.stdout


def _no_mitmproxy(reason: str) -> None:
    message = f"mitmproxy {MITMPROXY_VERSION} is unavailable, the TLS-proxy end-to-end tests cannot run: {reason}"
    sys.stderr.write(f"\n\n*** {message} ***\n\n")
    if REQUIRE_MITMPROXY:
        pytest.fail(message + " (ORGWARDEN_TEST_REQUIRE_MITMPROXY=1)")
    pytest.skip(message)


def mitmdump_executable() -> Path:
    """``mitmdump`` from a cached virtualenv (built once, under a lock, reused while it works)."""
    venv = MITMPROXY_VENV
    mitmdump = venv / "bin" / "mitmdump"
    ready_marker = venv / ".orgwarden-ready"
    with open(f"{venv}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another pytest process may be building it right now
        if ready_marker.exists() and _mitmdump_works(mitmdump):
            return mitmdump
        python = find_python_312()
        if python is None:
            _no_mitmproxy(
                "no Python >= 3.12 found (tried python3.1x on PATH, ~/.pyenv/versions, /usr/local/bin, /usr/bin)"
            )
        shutil.rmtree(venv, ignore_errors=True)
        steps = [
            [str(python), "-m", "venv", str(venv)],
            [str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", "--quiet",
             f"mitmproxy=={MITMPROXY_VERSION}"],
        ]  # fmt: skip
        for step in steps:
            try:
                result = subprocess.run(step, capture_output=True, text=True, timeout=300, check=False)
            except subprocess.TimeoutExpired:
                _no_mitmproxy(f"`{' '.join(step)}` timed out")
            if result.returncode != 0:
                _no_mitmproxy(f"`{' '.join(step)}` exited {result.returncode}:\n{result.stderr[-3000:]}")
        if not _mitmdump_works(mitmdump):
            _no_mitmproxy(f"{mitmdump} --version does not report {MITMPROXY_VERSION}")
        ready_marker.write_text(f"{python}\n")
        return mitmdump


@dataclass
class Proxy:
    url: str
    ca_cert: Path  # mitmproxy's own CA: what the client machine trusts
    control: Path
    log_path: Path

    def inject(self, mode: str, value: str = "") -> None:
        staged = self.control.with_suffix(".tmp")
        staged.write_text(json.dumps({"mode": mode, "value": value}))
        staged.replace(self.control)  # atomic: the addon never reads half a file


def start_mitmdump(mitmdump: Path, tmp: Path, upstream_ca: Path) -> tuple[Proxy, subprocess.Popen[bytes]]:
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    confdir = tmp / "mitmproxy"
    proxy = Proxy(
        f"http://127.0.0.1:{port}", confdir / "mitmproxy-ca-cert.pem", tmp / "inject.json", tmp / "mitmdump.log"
    )
    proxy.inject("off")
    with proxy.log_path.open("w") as log:
        process = subprocess.Popen(
            [str(mitmdump), "--listen-host", "127.0.0.1", "--listen-port", str(port),
             "--set", f"confdir={confdir}",
             "--set", f"ssl_verify_upstream_trusted_ca={upstream_ca}",
             "--set", "stream_large_bodies=1",  # pass SSE through as it comes, like a production proxy
             "-s", str(ADDON), "--set", f"inject_control={proxy.control}"],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        )  # fmt: skip

    def listening() -> bool:
        if not proxy.ca_cert.exists():
            return False
        try:
            with httpx.Client(timeout=1) as http:
                http.get(f"{proxy.url}/")  # a plain request to the proxy itself: any answer means it listens
            return True
        except httpx.HTTPError:
            return False

    wait_until(listening, process, "mitmdump", proxy.log_path)
    return proxy, process
