"""Egress through a real corporate proxy: orgwarden -> mitmproxy (TLS inspection) -> an HTTPS upstream.

The deployment this is for: outbound traffic must go through the company's proxy, which intercepts TLS
with its own CA. Here:

* the upstream is a second ``orgwarden serve`` over TLS (certificate from a throw-away test CA), answering
  with its built-in simulator, so the real Messages API shapes come back;
* ``mitmdump`` in regular proxy mode verifies that upstream against the test CA and presents its own
  certificate, signed by mitmproxy's CA; every flow it handles is in its log;
* the gateway under test is an ``orgwarden serve`` configured as an operator would: ``HTTPS_PROXY`` in its
  environment and ``ORGWARDEN_UPSTREAM_CA_BUNDLE`` holding mitmproxy's CA.

The client is the official SDK against the gateway. The request must arrive at the upstream through the
proxy (the proxy's log shows it), and ``NO_PROXY`` must send it around the proxy.
"""

from __future__ import annotations

import json
import ssl
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import anthropic
import pytest

from tests.conftest import Server, cli, make_database, spawn_serve, start_server, stop_server
from tests.e2e.mitm import Certificates, Proxy

MODEL = "claude-sonnet-4-6"


@dataclass
class Upstream:
    url: str
    api_key: str  # the upstream's key: what the gateway sends as its organization's upstream key
    port: int


@pytest.fixture(scope="module")
def tls_upstream(certificates: Certificates, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    tmp = tmp_path_factory.mktemp("upstream")
    db = make_database("sqlite", tmp)
    db.env.update(
        {"ORGWARDEN_TLS_CERTFILE": str(certificates.server_cert), "ORGWARDEN_TLS_KEYFILE": str(certificates.server_key),
         "ORGWARDEN_UPSTREAM": "simulator"}
    )  # fmt: skip
    cli(db, "init", "--json", "--org-name", "Upstream", "--admin-email", "root@upstream.test")
    key = json.loads(cli(db, "keys", "create", "--name", "the gateway", "--json").stdout)["key"]
    trust = ssl.create_default_context(cafile=str(certificates.ca))
    served = spawn_serve(db.env, tmp, scheme="https", verify=trust)
    try:
        yield Upstream(served.base_url, key, int(served.base_url.rsplit(":", 1)[1]))
    finally:
        stop_server(served)


@contextmanager
def gateway(upstream: Upstream, **environment: str) -> Iterator[tuple[Server, str]]:
    """An ``orgwarden serve`` forwarding to ``upstream``, with ``environment`` (proxy variables and
    settings) and nothing inherited about proxies, plus an API key of its own."""
    unset = {name: "" for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY",
                                   "all_proxy", "NO_PROXY", "no_proxy")}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="orgwarden-test-") as tmp:
        db = make_database("sqlite", Path(tmp))
        db.env.update(
            {**unset, "ORGWARDEN_UPSTREAM": upstream.url, "ORGWARDEN_UPSTREAM_API_KEY": upstream.api_key, **environment}
        )
        served = start_server(db, Path(tmp))
        key = json.loads(cli(db, "keys", "create", "--name", "a developer", "--json").stdout)["key"]
        try:
            yield served, key
        finally:
            stop_server(served)


def flows_to(proxy: Proxy, upstream: Upstream) -> int:
    """How many requests for the upstream the proxy has logged."""
    return proxy.log_path.read_text().count(f"https://127.0.0.1:{upstream.port}/v1/messages")


def ask(served: Server, key: str) -> anthropic.types.Message:
    client = anthropic.Anthropic(api_key=key, base_url=served.base_url, max_retries=0, timeout=30)
    return client.messages.create(model=MODEL, max_tokens=16, messages=[{"role": "user", "content": "hello"}])


def test_the_gateway_reaches_an_https_upstream_through_https_proxy_trusting_its_ca_bundle(
    tls_upstream: Upstream, corporate_proxy: Proxy
) -> None:
    before = flows_to(corporate_proxy, tls_upstream)
    with gateway(
        tls_upstream,
        HTTPS_PROXY=corporate_proxy.url,
        ORGWARDEN_UPSTREAM_CA_BUNDLE=str(corporate_proxy.ca_cert),
    ) as (served, key):
        message = ask(served, key)
        assert message.id.startswith("msg_")
        assert message.usage.output_tokens > 0

        client = anthropic.Anthropic(api_key=key, base_url=served.base_url, max_retries=0, timeout=30)
        with client.messages.stream(
            model=MODEL, max_tokens=16, messages=[{"role": "user", "content": "stream through the proxy"}]
        ) as stream:
            text = "".join(stream.text_stream)
            final = stream.get_final_message()
        assert text
        assert final.stop_reason is not None
    assert flows_to(corporate_proxy, tls_upstream) == before + 2  # both went through the proxy


def test_no_proxy_sends_the_upstream_around_the_proxy(
    tls_upstream: Upstream, corporate_proxy: Proxy, certificates: Certificates, tmp_path: Path
) -> None:
    both = tmp_path / "both-cas.pem"  # trusts the upstream directly, and the proxy: only the route differs
    both.write_text(certificates.ca.read_text() + corporate_proxy.ca_cert.read_text())
    before = flows_to(corporate_proxy, tls_upstream)
    with gateway(
        tls_upstream,
        HTTPS_PROXY=corporate_proxy.url,
        NO_PROXY="localhost,127.0.0.0/8",
        ORGWARDEN_UPSTREAM_CA_BUNDLE=str(both),
    ) as (served, key):
        assert ask(served, key).usage.output_tokens > 0
    assert flows_to(corporate_proxy, tls_upstream) == before  # not through the proxy


def test_without_the_proxys_ca_the_intercepted_upstream_is_refused_with_502(
    tls_upstream: Upstream, corporate_proxy: Proxy
) -> None:
    with gateway(tls_upstream, HTTPS_PROXY=corporate_proxy.url) as (served, key):
        with pytest.raises(anthropic.InternalServerError) as failed:
            ask(served, key)
        assert failed.value.status_code == 502
        assert isinstance(failed.value.body, dict)
        assert failed.value.body["error"] == {"type": "api_error", "message": "the upstream could not be reached"}
        proxy_address = corporate_proxy.url.removeprefix("http://")
        log = served.log()
        assert f"could not connect to 127.0.0.1:{tls_upstream.port} through the proxy {proxy_address}" in log
        assert "CERTIFICATE_VERIFY_FAILED" in log  # the proxy's certificate, not trusted without the bundle
