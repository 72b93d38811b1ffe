"""``gateway.egress``: which proxy the upstream is reached through, and the client going through one.

The rules (``NO_PROXY`` syntax, which variable wins, the explicit setting) are checked as a table; the
client is checked against raw asyncio proxies that show every byte: a plain-http upstream gets an
absolute-form target and ``Proxy-Authorization``, an https one a ``CONNECT`` tunnel with TLS inside,
verified with the CA bundle; a proxy that refuses (407, 502) or cannot be reached is ``ConnectFailed``
naming the proxy, never its credentials. The spend-alert webhooks follow the environment's proxy
variables too (not ``ORGWARDEN_UPSTREAM_PROXY``), checked here as rules and through a raw proxy. The
same through a real proxy (mitmproxy) is in ``tests/e2e/test_upstream_proxy.py`` and
``tests/e2e/test_webhook_proxy.py``.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import ssl
from pathlib import Path

import pytest

from orgwarden.config import Settings, load_settings
from orgwarden.errors import ConfigError
from orgwarden.gateway.egress import Proxy, bypassed, parse_proxy_url, proxy_for, tls_context
from orgwarden.gateway.http1 import ConnectFailed, Pool
from orgwarden.gateway.webhooks import WebhookSender
from tests.conftest import free_port
from tests.e2e.mitm import make_certificates
from tests.gateway.webhook_receiver import until

# --------------------------------------------------------------------------------------------------
# the rules


@pytest.mark.parametrize(
    ("host", "port", "no_proxy", "expected"),
    [
        ("api.anthropic.com", 443, "", False),
        ("api.anthropic.com", 443, "*", True),
        ("api.anthropic.com", 443, "anthropic.com", True),
        ("api.anthropic.com", 443, ".anthropic.com", True),
        ("api.anthropic.com", 443, "*.anthropic.com", True),
        ("anthropic.com", 443, ".anthropic.com", True),
        ("api.anthropic.com", 443, "thropic.com", False),  # a suffix of a label is not a subdomain
        ("api.anthropic.com", 443, "internal.corp, API.Anthropic.COM.", True),  # spaces, case, trailing dot
        ("api.anthropic.com", 443, "api.anthropic.com:8443", False),  # another port
        ("api.anthropic.com", 443, "api.anthropic.com:443", True),
        ("10.1.2.3", 80, "10.0.0.0/8", True),
        ("10.1.2.3", 80, "10.1.2.3", True),
        ("10.1.2.3", 80, "10.1.2.4,192.168.0.0/16", False),
        ("10.1.2.3", 80, "10.1.2.3:8080", False),
        ("::1", 443, "::1", True),
        ("::1", 443, "[::1]:443", True),
        ("2001:db8::5", 443, "2001:db8::/32", True),
        ("example.com", 443, "10.0.0.0/8,not a cidr/x,,", False),
    ],
)
def test_no_proxy_follows_the_usual_rules(host: str, port: int, no_proxy: str, expected: bool) -> None:
    assert bypassed(host, port, no_proxy) is expected


def test_the_proxy_is_chosen_from_the_setting_else_the_scheme_s_variable_minus_no_proxy() -> None:
    corp = Proxy("proxy.corp", 3128)
    https = "https://api.anthropic.com"
    assert proxy_for(https, None, {}) is None
    assert proxy_for(https, None, {"HTTPS_PROXY": "http://proxy.corp:3128"}) == corp
    assert proxy_for(https, None, {"https_proxy": "proxy.corp:3128", "HTTPS_PROXY": "http://other:1"}) == corp
    assert proxy_for(https, None, {"HTTP_PROXY": "http://other:1"}) is None  # the other scheme's
    assert proxy_for(https, None, {"ALL_PROXY": "http://proxy.corp:3128"}) == corp
    assert proxy_for("http://10.0.0.7:8090", None, {"HTTP_PROXY": "http://proxy.corp:3128"}) == corp
    assert proxy_for(https, None, {"HTTPS_PROXY": "http://proxy.corp:3128", "NO_PROXY": "anthropic.com"}) is None
    assert proxy_for(https, None, {"HTTPS_PROXY": "http://proxy.corp:3128", "no_proxy": "*"}) is None
    # The setting wins over every variable, NO_PROXY included; "none" is a direct connection.
    environ = {"HTTPS_PROXY": "http://other:1", "NO_PROXY": "*"}
    assert proxy_for(https, "http://proxy.corp:3128", environ) == corp
    assert proxy_for(https, "none", {"HTTPS_PROXY": "http://proxy.corp:3128"}) is None
    assert parse_proxy_url("http://proxy.corp", "X") == Proxy("proxy.corp", 80)


def test_proxy_credentials_become_basic_authorization_and_never_appear_in_repr_or_messages() -> None:
    proxy = parse_proxy_url("http://alice%40corp:s%3Acret@proxy.corp:3128", "HTTPS_PROXY")
    assert proxy.authorization == b"Basic " + base64.b64encode(b"alice@corp:s:cret")
    assert "cret" not in repr(proxy)
    assert proxy.where == "proxy.corp:3128"
    for url, problem in [
        ("https://alice:s3cret@proxy.corp:3128", "https:// proxies are not supported"),
        ("socks5://alice:s3cret@proxy.corp:1080", "socks5:// proxies are not supported"),
        ("http://alice:s3cret@proxy.corp:notaport", "not a valid proxy URL"),
        ("http://alice:s3cret@:3128", "names no proxy host"),
    ]:
        with pytest.raises(ValueError, match=problem) as refused:
            parse_proxy_url(url, "HTTPS_PROXY")
        assert str(refused.value).startswith("HTTPS_PROXY")
        assert "s3cret" not in str(refused.value)


def test_a_bad_proxy_or_ca_bundle_stops_start_up_with_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError) as refused:
        load_settings(upstream_proxy="socks5://bob:hunter22@proxy.corp:1080")
    assert "ORGWARDEN_UPSTREAM_PROXY" in str(refused.value)
    assert "hunter22" not in str(refused.value)

    monkeypatch.setenv("HTTPS_PROXY", "https://bob:hunter22@proxy.corp:3128")
    with pytest.raises(ConfigError) as refused:
        load_settings()
    assert "HTTPS_PROXY" in str(refused.value)
    assert "hunter22" not in str(refused.value)
    assert load_settings(upstream_proxy="none").upstream_proxy is not None  # the setting overrides it
    assert load_settings(upstream="simulator").upstream == "simulator"  # no upstream, no proxy needed
    monkeypatch.delenv("HTTPS_PROXY")

    with pytest.raises(ConfigError) as refused:
        load_settings(upstream_ca_bundle=str(tmp_path / "missing.pem"))
    assert "ORGWARDEN_UPSTREAM_CA_BUNDLE" in str(refused.value)
    assert "no such file" in str(refused.value)
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    with pytest.raises(ConfigError) as refused:
        load_settings(upstream_ca_bundle=str(tmp_path / "junk.pem"))
    assert "PEM file of CA certificates" in str(refused.value)


# --------------------------------------------------------------------------------------------------
# the client through raw proxies


async def read_head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


def test_a_plain_http_upstream_gets_absolute_form_targets_and_proxy_authorization() -> None:
    seen: list[bytes] = []

    async def forward_proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await read_head(reader)
            except asyncio.IncompleteReadError:
                break
            seen.append(head)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nproxied!")
            await writer.drain()
        writer.close()

    async def scenario() -> list[tuple[int, bytes]]:
        server = await asyncio.start_server(forward_proxy, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        proxy = parse_proxy_url(f"http://alice:s3cret@127.0.0.1:{port}", "HTTP_PROXY")
        pool = Pool("http://upstream.internal:8090/base", connect_timeout=5, read_timeout=5, proxy=proxy)
        got = []
        try:
            for _ in range(2):
                response = await pool.request("GET", "/v1/models?limit=2", [(b"accept", b"*/*")], b"")
                got.append((response.status, response.arrived() or b""))
                await response.aclose()
        finally:
            await pool.aclose()
            server.close()
        return got

    assert asyncio.run(scenario()) == [(200, b"proxied!")] * 2
    credentials = base64.b64encode(b"alice:s3cret")
    for head in seen:
        lines = head.split(b"\r\n")
        assert lines[0] == b"GET http://upstream.internal:8090/base/v1/models?limit=2 HTTP/1.1"
        assert b"host: upstream.internal:8090" in lines
        assert b"proxy-authorization: Basic " + credentials in lines


def test_a_407_from_the_proxy_of_a_plain_http_upstream_is_connect_failed_not_relayed() -> None:
    async def demanding_proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\nproxy-authenticate: Basic\r\n"
                     b"content-length: 0\r\n\r\n")  # fmt: skip
        await writer.drain()

    async def scenario() -> str:
        server = await asyncio.start_server(demanding_proxy, "127.0.0.1", 0)
        proxy = Proxy("127.0.0.1", server.sockets[0].getsockname()[1])
        pool = Pool("http://upstream.internal:8090", connect_timeout=5, read_timeout=5, proxy=proxy)
        try:
            with pytest.raises(ConnectFailed) as failed:
                await pool.request("POST", "/v1/messages", [], b"{}")
            return str(failed.value)
        finally:
            await pool.aclose()
            server.close()

    assert asyncio.run(scenario()).endswith("the proxy requires credentials (407)")


def test_an_https_upstream_is_reached_by_connect_with_tls_verified_by_the_ca_bundle(tmp_path: Path) -> None:
    certificates = make_certificates(tmp_path)
    connects: list[bytes] = []

    async def tls_upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                await read_head(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nsecret")
            await writer.drain()
        writer.close()

    async def connect_proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await read_head(reader)
        connects.append(head)
        target = head.split(b" ")[1].decode()
        host, _, port = target.rpartition(":")
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
            sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer), return_exceptions=True)

    async def scenario(ca_bundle: Path | None) -> list[tuple[int, bytes]]:
        server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_tls.load_cert_chain(certificates.server_cert, certificates.server_key)
        upstream = await asyncio.start_server(tls_upstream, "127.0.0.1", 0, ssl=server_tls)
        proxy_server = await asyncio.start_server(connect_proxy, "127.0.0.1", 0)
        up_port = upstream.sockets[0].getsockname()[1]
        proxy = parse_proxy_url(f"http://bob:pw@127.0.0.1:{proxy_server.sockets[0].getsockname()[1]}", "HTTPS_PROXY")
        pool = Pool(f"https://localhost:{up_port}", connect_timeout=5, read_timeout=5, proxy=proxy,
                    ssl_context=tls_context(ca_bundle))  # fmt: skip
        got = []
        try:
            for _ in range(2):
                response = await pool.request("POST", "/v1/messages", [], b"{}")
                got.append((response.status, b"".join([chunk async for chunk in response])))
                await response.aclose()
        finally:
            await pool.aclose()
            proxy_server.close()
            upstream.close()
        return got

    assert asyncio.run(scenario(certificates.ca)) == [(200, b"secret")] * 2
    assert len(connects) == 1  # one tunnel, kept alive for the second request
    lines = connects[0].split(b"\r\n")
    assert lines[0].startswith(b"CONNECT localhost:")
    assert lines[0].endswith(b" HTTP/1.1")
    assert b"proxy-authorization: Basic " + base64.b64encode(b"bob:pw") in lines

    with pytest.raises(ConnectFailed) as untrusted:  # without the bundle the test CA is not trusted
        asyncio.run(scenario(None))
    assert "CERTIFICATE_VERIFY_FAILED" in str(untrusted.value) or "certificate verify failed" in str(untrusted.value)


@pytest.mark.parametrize(
    "answer",
    [b"HTTP/1.1 407 Proxy Authentication Required\r\nproxy-authenticate: Basic\r\ncontent-length: 0\r\n\r\n",
     b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n"],
    ids=["407", "502"],
)  # fmt: skip
def test_a_proxy_that_refuses_the_tunnel_is_connect_failed_naming_it_not_its_credentials(answer: bytes) -> None:
    async def refusing_proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(answer)
        await writer.drain()
        writer.close()

    async def scenario() -> str:
        server = await asyncio.start_server(refusing_proxy, "127.0.0.1", 0)
        where = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
        proxy = parse_proxy_url(f"http://carol:t0psecret@{where}", "HTTPS_PROXY")
        pool = Pool("https://api.anthropic.com", connect_timeout=5, read_timeout=5, proxy=proxy)
        try:
            with pytest.raises(ConnectFailed) as failed:
                await pool.request("POST", "/v1/messages", [], b"{}")
            return str(failed.value).replace(where, "PROXY")
        finally:
            server.close()

    message = asyncio.run(scenario())
    status_line = answer.split(b"\r\n")[0].decode()
    assert message == (
        "could not connect to api.anthropic.com:443 through the proxy PROXY: "
        f"the proxy PROXY refused the tunnel to api.anthropic.com:443: {status_line}"
    )
    assert "t0psecret" not in message


def test_a_proxy_that_cannot_be_reached_is_connect_failed() -> None:
    port = free_port()  # nothing listens there

    async def scenario() -> str:
        pool = Pool("https://api.anthropic.com", connect_timeout=5, read_timeout=5, proxy=Proxy("127.0.0.1", port))
        with pytest.raises(ConnectFailed) as failed:
            await pool.request("POST", "/v1/messages", [], b"{}")
        return str(failed.value)

    assert f"could not connect to the proxy 127.0.0.1:{port}" in asyncio.run(scenario())


# --------------------------------------------------------------------------------------------------
# the webhooks

WEBHOOK_SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY",
                   "no_proxy")  # fmt: skip


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_webhooks_follow_the_environment_s_proxy_not_the_upstream_proxy_setting(
    clean_environment: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    plain = load_settings(
        upstream="simulator", webhook_url="http://hooks.corp.internal:8080/alerts", webhook_secret=WEBHOOK_SECRET
    )
    secure = load_settings(
        upstream="simulator", webhook_url="https://hooks.example.com/alerts", webhook_secret=WEBHOOK_SECRET
    )
    corp = Proxy("proxy.corp", 3128)
    caplog.set_level(logging.WARNING, logger="orgwarden.gateway")

    def route(settings: Settings, environ: dict[str, str]) -> Proxy | None:
        sender = WebhookSender.from_settings(settings, environ)
        assert sender is not None
        return sender.proxy

    assert route(plain, {}) is None
    assert route(plain, {"HTTP_PROXY": "http://proxy.corp:3128"}) == corp
    assert route(plain, {"HTTPS_PROXY": "http://proxy.corp:3128"}) is None  # the other scheme's
    assert route(plain, {"ALL_PROXY": "http://proxy.corp:3128"}) == corp
    assert route(plain, {"HTTP_PROXY": "http://proxy.corp:3128", "NO_PROXY": ".corp.internal"}) is None
    assert route(secure, {"https_proxy": "proxy.corp:3128", "NO_PROXY": ".corp.internal"}) == corp
    assert WebhookSender.from_settings(load_settings(upstream="simulator"), {"HTTP_PROXY": "http://p:1"}) is None

    # ORGWARDEN_UPSTREAM_PROXY is the upstream's: "none" there leaves the webhooks to the environment,
    # and a proxy there alone leaves them direct, which start-up warns about (never with credentials).
    direct_upstream = load_settings(
        upstream_proxy="none", webhook_url="http://hooks.corp.internal:8080/alerts", webhook_secret=WEBHOOK_SECRET
    )
    assert route(direct_upstream, {"HTTP_PROXY": "http://proxy.corp:3128"}) == corp
    assert "webhooks" not in caplog.text
    proxied_upstream = load_settings(
        upstream_proxy="http://bob:hunter22@proxy.corp:3128",
        webhook_url="https://hooks.example.com/alerts",
        webhook_secret=WEBHOOK_SECRET,
    )
    assert route(proxied_upstream, {}) is None
    assert (
        "spend alerts to hooks.example.com are delivered directly, not through ORGWARDEN_UPSTREAM_PROXY, which"
        " governs the upstream only; set HTTPS_PROXY (and NO_PROXY) for every outbound connection"
    ) in caplog.text
    assert "hunter22" not in caplog.text


def test_a_malformed_proxy_variable_for_the_webhooks_stops_start_up(clean_environment: pytest.MonkeyPatch) -> None:
    clean_environment.setenv("HTTP_PROXY", "socks5://bob:hunter22@proxy.corp:1080")
    assert load_settings(upstream="simulator").webhook_url is None  # nothing goes out over http
    with pytest.raises(ConfigError) as refused:
        load_settings(
            upstream="simulator", webhook_url="http://hooks.corp.internal/alerts", webhook_secret=WEBHOOK_SECRET
        )
    message = str(refused.value)
    assert message.startswith("invalid settings: HTTP_PROXY: socks5:// proxies are not supported")
    assert message.endswith("(the proxy of the webhooks)")
    assert "ORGWARDEN_UPSTREAM_PROXY" not in message  # it would not help: it does not govern the webhooks
    assert "hunter22" not in message


def test_a_webhook_to_a_plain_http_receiver_goes_through_the_proxy_with_its_credentials(
    clean_environment: pytest.MonkeyPatch,
) -> None:
    """The receiver's name is never resolved here (it does not exist): the proxy gets the absolute URL."""
    seen: list[tuple[bytes, bytes]] = []

    async def forward_proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await read_head(reader)
            except asyncio.IncompleteReadError:
                break
            length = next(
                int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.startswith(b"content-length")
            )
            seen.append((head, await reader.readexactly(length)))
            writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
            await writer.drain()
        writer.close()

    async def scenario() -> str:
        server = await asyncio.start_server(forward_proxy, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        settings = load_settings(
            upstream="simulator", webhook_url="http://hooks.invalid:8080/alerts?team=ml", webhook_secret=WEBHOOK_SECRET
        )
        sender = WebhookSender.from_settings(settings, {"http_proxy": f"http://alice:s3cret@127.0.0.1:{port}"})
        assert sender is not None
        try:
            await sender.start()
            message_id = sender.send("spend_limit.threshold_reached", {"threshold_percent": 80})
            await until(lambda: len(seen) == 1)
        finally:
            await sender.stop()
            server.close()
        return message_id

    message_id = asyncio.run(scenario())
    [(head, body)] = seen
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST http://hooks.invalid:8080/alerts?team=ml HTTP/1.1"
    assert b"host: hooks.invalid:8080" in lines
    assert b"proxy-authorization: Basic " + base64.b64encode(b"alice:s3cret") in lines
    assert b"webhook-id: " + message_id.encode() in lines
    assert b'"threshold_percent":80' in body
