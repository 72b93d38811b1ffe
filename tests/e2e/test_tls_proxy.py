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

The mitmproxy virtualenv, the certificates and the process helpers are in ``mitm.py`` (shared with the
upstream-egress test). When no Python >= 3.12 exists or mitmproxy cannot be installed the module is skipped
with a loud message, or fails when ``ORGWARDEN_TEST_REQUIRE_MITMPROXY=1``.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest

from tests.conftest import ORGWARDEN, Database, cli, free_port, make_database
from tests.e2e.mitm import Certificates, Proxy, start_mitmdump, stop_process, wait_until

HEADER = "anthropic-allowed-org-ids"
MODEL = "claude-sonnet-4-6"
RESTRICTED = "Access restricted by network policy. Contact IT Administrator."
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")
NO_PROXY_VARIABLES = ("NO_PROXY", "no_proxy")


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
