"""Tenant restrictions end to end: the official SDK -> a real header-injecting HTTPS proxy -> orgwarden over TLS.

This is the deployment the spec describes: a corporate proxy intercepts TLS (the client machine trusts the
proxy's CA), injects ``anthropic-allowed-org-ids`` and talks TLS to the gateway, verifying the gateway's
certificate. Here:

* orgwarden serves HTTPS with a server certificate for 127.0.0.1/localhost signed by a throw-away test CA,
  both generated in the test with ``cryptography``;
* ``mitmdump`` (mitmproxy, in its own virtualenv: it needs Python >= 3.12, the tests run on 3.11) intercepts
  with its own CA, verifies orgwarden against the test CA only, and runs ``inject_header.py``, whose mode
  (overwrite / append / off) the test switches through a small control file;
* the client is the unmodified ``anthropic`` SDK configured the way a corporate machine is: ``HTTPS_PROXY``
  pointing at the proxy and ``SSL_CERT_FILE`` holding the proxy's CA, nothing else.

The mitmproxy virtualenv is cached in the system temp directory, keyed by the pinned version. When no
Python >= 3.12 exists or mitmproxy cannot be installed the module is skipped with a loud message, or fails
when ``ORGWARDEN_TEST_REQUIRE_MITMPROXY=1``.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import glob
import ipaddress
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.conftest import ORGWARDEN, Database, cli, free_port, make_database

MITMPROXY_VERSION = "12.2.3"  # 12.3.x needs a certifi newer than the package index here offers
MITMPROXY_VENV = Path(tempfile.gettempdir()) / f"orgwarden-mitmproxy-{MITMPROXY_VERSION}"
REQUIRE_MITMPROXY = os.environ.get("ORGWARDEN_TEST_REQUIRE_MITMPROXY") == "1"
ADDON = Path(__file__).with_name("inject_header.py")
HEADER = "anthropic-allowed-org-ids"
MODEL = "claude-sonnet-4-6"
RESTRICTED = "Access restricted by network policy. Contact IT Administrator."
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")
NO_PROXY_VARIABLES = ("NO_PROXY", "no_proxy")


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


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    tmp = tmp_path_factory.mktemp("certs")
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
# orgwarden over TLS


@dataclass
class TlsServer:
    db: Database
    base_url: str
    organization_id: str
    api_key: str
    log_path: Path


@pytest.fixture(scope="module")
def orgwarden_tls(certificates: Certificates, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    tmp = tmp_path_factory.mktemp("orgwarden")
    db = make_database("sqlite", tmp)
    db.env.update(
        {"ORGWARDEN_TLS_CERTFILE": str(certificates.server_cert), "ORGWARDEN_TLS_KEYFILE": str(certificates.server_key)}
    )
    init = json.loads(cli(db, "init", "--json", "--org-name", "Acme", "--admin-email", "root@acme.test").stdout)
    key = json.loads(cli(db, "keys", "create", "--name", "through the proxy", "--json").stdout)
    port = free_port()
    log_path = tmp / "orgwarden.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [ORGWARDEN, "serve", "--port", str(port)],
            env={**os.environ, **db.env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base_url = f"https://127.0.0.1:{port}"
    trust_test_ca = ssl.create_default_context(cafile=str(certificates.ca))

    def healthy() -> bool:
        try:
            return httpx.get(f"{base_url}/health", verify=trust_test_ca, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(healthy, process, "orgwarden serve over TLS", log_path)
        yield TlsServer(db, base_url, init["organization"]["id"], key["key"], log_path)
    finally:
        stop_process(process)
    text = log_path.read_text()
    assert "Traceback" not in text, f"orgwarden logged a traceback:\n{text}"


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


@pytest.fixture(scope="session")
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


@pytest.fixture(scope="module")
def proxy(
    mitmdump_executable: Path, certificates: Certificates, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Proxy]:
    started, process = start_mitmdump(mitmdump_executable, tmp_path_factory.mktemp("proxy"), certificates.ca)
    try:
        yield started
    finally:
        stop_process(process)


# --------------------------------------------------------------------------------------------------
# the client machine


@pytest.fixture
def client_machine(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Configure this process like a corporate client: a proxy in HTTPS_PROXY and one trusted CA file."""

    def configure(*, proxy_url: str | None, trusted_ca: Path) -> None:
        for name in (*PROXY_VARIABLES, *NO_PROXY_VARIABLES, "SSL_CERT_DIR"):
            monkeypatch.delenv(name, raising=False)
        if proxy_url is not None:
            monkeypatch.setenv("HTTPS_PROXY", proxy_url)
        monkeypatch.setenv("SSL_CERT_FILE", str(trusted_ca))

    return configure


def sdk(server: TlsServer) -> anthropic.Anthropic:
    """The official SDK exactly as an application builds it: no custom HTTP client, settings from the environment."""
    return anthropic.Anthropic(api_key=server.api_key, base_url=server.base_url, max_retries=0, timeout=20)


@pytest.fixture
def corporate(client_machine: Callable[..., None], proxy: Proxy, orgwarden_tls: TlsServer) -> Iterator[Proxy]:
    client_machine(proxy_url=proxy.url, trusted_ca=proxy.ca_cert)
    yield proxy
    proxy.inject("off")


def create(client: anthropic.Anthropic, **extra: Any) -> Any:
    return client.messages.with_raw_response.create(
        model=MODEL, max_tokens=16, messages=[{"role": "user", "content": "hello through the proxy"}], **extra
    )


def other_org() -> str:
    return str(uuid.uuid4())


# --------------------------------------------------------------------------------------------------
# the tests


def test_the_allowed_organization_passes_the_proxy_with_messages_create_and_messages_stream(
    corporate: Proxy, orgwarden_tls: TlsServer
) -> None:
    corporate.inject("overwrite", orgwarden_tls.organization_id)
    client = sdk(orgwarden_tls)

    raw = create(client)
    assert raw.status_code == 200
    assert raw.headers["x-tenant-proxy"] == "overwrite"  # it really went through the proxy
    assert raw.headers["anthropic-organization-id"] == orgwarden_tls.organization_id
    message = raw.parse()
    assert message.id.startswith("msg_")
    assert message.usage.output_tokens > 0

    with client.messages.stream(
        model=MODEL, max_tokens=16, messages=[{"role": "user", "content": "stream through the proxy"}]
    ) as stream:
        assert stream.response.headers["x-tenant-proxy"] == "overwrite"
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text
    assert final.id.startswith("msg_")
    assert final.stop_reason is not None
    assert final.usage.output_tokens > 0


def test_an_allow_list_of_several_organizations_that_includes_the_keys_passes(
    corporate: Proxy, orgwarden_tls: TlsServer
) -> None:
    corporate.inject("overwrite", f"{other_org()},{orgwarden_tls.organization_id},{other_org()}")
    assert create(sdk(orgwarden_tls)).status_code == 200


def test_another_organization_gets_403_tenant_restriction_violation_through_the_proxy(
    corporate: Proxy, orgwarden_tls: TlsServer
) -> None:
    corporate.inject("overwrite", other_org())
    client = sdk(orgwarden_tls)

    with pytest.raises(anthropic.PermissionDeniedError) as refused:
        create(client)
    error = refused.value
    assert error.status_code == 403
    assert error.error_code == "tenant_restriction_violation"
    assert error.response.headers["x-tenant-proxy"] == "overwrite"
    assert isinstance(error.body, dict)
    assert error.body["error"]["type"] == "permission_error"
    assert error.body["error"]["message"] == RESTRICTED
    assert error.body["error"]["error_code"] == "tenant_restriction_violation"
    assert error.request_id is not None
    assert error.request_id.startswith("req_")

    stream = client.messages.stream(model=MODEL, max_tokens=16, messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(anthropic.PermissionDeniedError) as refused_stream, stream:  # refused before any SSE byte
        pass
    assert refused_stream.value.error_code == "tenant_restriction_violation"


def test_the_proxy_overwrites_a_client_sent_header_so_the_client_cannot_choose_the_policy(
    corporate: Proxy, orgwarden_tls: TlsServer
) -> None:
    client = sdk(orgwarden_tls)

    corporate.inject("overwrite", other_org())  # the client claims its own org is allowed: the proxy wins
    with pytest.raises(anthropic.PermissionDeniedError) as refused:
        create(client, extra_headers={HEADER: orgwarden_tls.organization_id})
    assert refused.value.error_code == "tenant_restriction_violation"

    corporate.inject("overwrite", orgwarden_tls.organization_id)  # and a bogus client copy cannot add a second one
    assert create(client, extra_headers={HEADER: other_org()}).status_code == 200


def test_a_proxy_that_appends_instead_of_overwriting_yields_400_multiple_headers(
    corporate: Proxy, orgwarden_tls: TlsServer
) -> None:
    corporate.inject("append", orgwarden_tls.organization_id)
    client = sdk(orgwarden_tls)

    with pytest.raises(anthropic.BadRequestError) as rejected:
        create(client, extra_headers={HEADER: orgwarden_tls.organization_id})
    error = rejected.value
    assert error.status_code == 400
    assert error.response.headers["x-tenant-proxy"] == "append"
    assert isinstance(error.body, dict)
    assert error.body["error"]["type"] == "invalid_request_error"
    assert error.body["error"]["message"].startswith("Multiple anthropic-allowed-org-ids headers"), error.body

    # The same proxy with a client that sends no header of its own: one copy, which passes.
    assert create(client).status_code == 200


def test_the_client_only_reaches_orgwarden_through_the_proxys_tls_interception(
    client_machine: Callable[..., None], proxy: Proxy, orgwarden_tls: TlsServer, certificates: Certificates
) -> None:
    proxy.inject("overwrite", orgwarden_tls.organization_id)
    # Trusting only the proxy's CA, a direct connection fails: orgwarden's certificate is not the proxy's ...
    client_machine(proxy_url=None, trusted_ca=proxy.ca_cert)
    with pytest.raises(anthropic.APIConnectionError) as direct:
        create(sdk(orgwarden_tls))
    assert "CERTIFICATE_VERIFY_FAILED" in repr(direct.value.__cause__)
    # ... and through the proxy, trusting only orgwarden's CA fails: the proxy presents its own certificate.
    client_machine(proxy_url=proxy.url, trusted_ca=certificates.ca)
    with pytest.raises(anthropic.APIConnectionError) as intercepted:
        create(sdk(orgwarden_tls))
    assert "CERTIFICATE_VERIFY_FAILED" in repr(intercepted.value.__cause__)
    proxy.inject("off")


def test_the_proxy_verifies_orgwardens_certificate_and_refuses_an_untrusted_one(
    client_machine: Callable[..., None],
    mitmdump_executable: Path,
    orgwarden_tls: TlsServer,
    certificates: Certificates,
    tmp_path: Path,
) -> None:
    untrusting, process = start_mitmdump(mitmdump_executable, tmp_path / "untrusting", certificates.other_ca)
    try:
        untrusting.inject("overwrite", orgwarden_tls.organization_id)
        client_machine(proxy_url=untrusting.url, trusted_ca=untrusting.ca_cert)
        with pytest.raises(anthropic.APIStatusError) as failed:
            create(sdk(orgwarden_tls))
        assert failed.value.status_code == 502, failed.value  # mitmproxy's answer when the upstream TLS fails
    finally:
        stop_process(process)
    log = untrusting.log_path.read_text()
    assert "certificate verify failed" in log.lower() or "certificate_verify_failed" in log.lower(), log
