"""Spend-alert webhooks leave through the corporate proxy, as the upstream does: gateway -> mitmproxy -> receiver.

The gateway under test is a real ``orgwarden serve`` (simulator upstream) configured as an operator would:
``ORGWARDEN_WEBHOOK_URL``, the proxy variables in its environment, ``ORGWARDEN_UPSTREAM_CA_BUNDLE`` holding
mitmproxy's CA. A four-cent spend limit's 25 % threshold is crossed by one request through the Messages API,
so the gateway sends a real ``spend_limit.threshold_reached`` delivery; the receiver
(``tests/gateway/webhook_receiver.py``, https with a certificate of the test CA, or plain http) verifies it
with the Standard Webhooks library, and mitmproxy's log shows whether it went through the proxy.
"""

from __future__ import annotations

import base64
import ssl
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from standardwebhooks import Webhook

from tests.conftest import Server, make_database, start_server, stop_server
from tests.e2e.mitm import Certificates, Proxy
from tests.gateway.webhook_receiver import Receiver, running_receiver

MODEL = "claude-haiku-4-5"  # $5 per million output tokens: 2000 are a cent
SECRET = "whsec_" + base64.b64encode(b"orgwarden-test-webhook-secret-32b").decode()
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY",
                   "no_proxy", "ORGWARDEN_UPSTREAM_PROXY")  # fmt: skip


@contextmanager
def https_receiver(certificates: Certificates) -> Iterator[Receiver]:
    """A receiver over TLS with a certificate of the test CA (which mitmproxy trusts, the system does not)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificates.server_cert, certificates.server_key)
    with running_receiver(tls=context) as receiver:
        yield receiver


@contextmanager
def gateway(receiver: Receiver, **environment: str) -> Iterator[Server]:
    """An ``orgwarden serve`` delivering spend alerts to ``receiver``, with ``environment`` (proxy variables
    and settings) and nothing inherited about proxies."""
    with tempfile.TemporaryDirectory(prefix="orgwarden-test-") as tmp:
        db = make_database("sqlite", Path(tmp))
        db.env.update({name: "" for name in PROXY_VARIABLES})
        db.env.update({"ORGWARDEN_WEBHOOK_URL": receiver.url, "ORGWARDEN_WEBHOOK_SECRET": SECRET, **environment})
        served = start_server(db, Path(tmp))
        try:
            yield served
        finally:
            stop_server(served)


def cross_a_threshold(served: Server) -> str:
    """A 4-cent daily limit alerting at 25 %, and a request that spends a cent: the id of the limit."""
    with served.http() as http:
        created = http.post(
            "/v1/organizations/spend_limits",
            json={"amount": "4", "period": "daily", "scope": {"type": "organization"}, "alert_thresholds": [25]},
        )
        assert created.status_code == 200, created.text
        key = http.post("/v1/organizations/api_keys", json={"name": "a developer"}).json()["key"]
    time.sleep(1.0)  # the gateway's workers pick the new limit up (cache poll)
    headers = {"x-api-key": key, "anthropic-version": "2023-06-01", "anthropic-simulator-output-tokens": "2000"}
    body = {"model": MODEL, "max_tokens": 2000, "messages": [{"role": "user", "content": "hi"}]}
    answer = httpx.post(f"{served.base_url}/v1/messages", json=body, headers=headers, timeout=30)
    assert answer.status_code == 200, answer.text
    return str(created.json()["id"])


def delivered_alert(receiver: Receiver, limit_id: str) -> None:
    [delivery] = receiver.wait_for(1, timeout=20)
    payload = Webhook(SECRET).verify(delivery.body, delivery.headers)  # signed, and unchanged on the way
    assert payload["type"] == "spend_limit.threshold_reached"
    assert payload["data"]["spend_limit_id"] == limit_id
    assert payload["data"]["threshold_percent"] == 25


def flows_to(proxy: Proxy, receiver: Receiver) -> int:
    """How many deliveries for the receiver the proxy has logged."""
    return proxy.log_path.read_text().count(receiver.url.split("?")[0].split("://", 1)[1])


def test_a_spend_alert_reaches_an_https_receiver_through_https_proxy_trusting_the_ca_bundle(
    corporate_proxy: Proxy, certificates: Certificates
) -> None:
    with https_receiver(certificates) as receiver:
        with gateway(
            receiver, HTTPS_PROXY=corporate_proxy.url, ORGWARDEN_UPSTREAM_CA_BUNDLE=str(corporate_proxy.ca_cert)
        ) as served:
            delivered_alert(receiver, cross_a_threshold(served))
        assert flows_to(corporate_proxy, receiver) == 1  # the proxy relayed it (and inspected its TLS)


def test_no_proxy_sends_the_webhook_around_the_proxy(
    corporate_proxy: Proxy, certificates: Certificates, tmp_path: Path
) -> None:
    both = tmp_path / "both-cas.pem"  # trusts the receiver directly, and the proxy: only the route differs
    both.write_text(certificates.ca.read_text() + corporate_proxy.ca_cert.read_text())
    with https_receiver(certificates) as receiver:
        with gateway(
            receiver,
            HTTPS_PROXY=corporate_proxy.url,
            NO_PROXY="localhost,127.0.0.0/8",
            ORGWARDEN_UPSTREAM_CA_BUNDLE=str(both),
        ) as served:
            delivered_alert(receiver, cross_a_threshold(served))
        assert flows_to(corporate_proxy, receiver) == 0  # not through the proxy


def test_a_plain_http_receiver_goes_through_http_proxy_whatever_the_upstream_proxy_setting(
    corporate_proxy: Proxy,
) -> None:
    """``ORGWARDEN_UPSTREAM_PROXY`` governs the upstream only: ``none`` there leaves the webhooks to the
    environment's ``HTTP_PROXY``."""
    with running_receiver() as receiver:
        with gateway(receiver, HTTP_PROXY=corporate_proxy.url, ORGWARDEN_UPSTREAM_PROXY="none") as served:
            delivered_alert(receiver, cross_a_threshold(served))
        assert flows_to(corporate_proxy, receiver) == 1
