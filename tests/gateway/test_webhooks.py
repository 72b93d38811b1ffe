"""Webhook delivery against a real HTTP receiver, checked with the Standard Webhooks library.

The signatures are verified with ``standardwebhooks`` (not with our signing code), so a mistake in
the signed content, the key decoding or the header format fails here as it would at a receiver.
Backoffs are shortened to tens of milliseconds; the tests check their order of growth, not exact
values (they carry jitter).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any, TypeVar

import pytest
from standardwebhooks import Webhook

from orgwarden import __version__
from orgwarden.domain.clock import parse_rfc3339
from orgwarden.gateway.webhooks import WebhookSender
from tests.conftest import free_port
from tests.gateway.webhook_receiver import Received, running_receiver, until

SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()
T = TypeVar("T")


def run(body: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(body())


def verify(request: Received) -> dict[str, Any]:
    """The payload, as a receiver gets it after checking the signature (raises when it does not match)."""
    return dict(Webhook(SECRET).verify(request.body, request.headers))


def test_delivery_is_signed_in_the_standard_webhooks_format() -> None:
    with running_receiver() as receiver:

        async def main() -> str:
            sender = WebhookSender(receiver.url, SECRET)
            await sender.start()
            message_id = sender.send(
                "spend_limit.threshold_reached", {"threshold_percent": 80, "spent_cents": "8000.5"}
            )
            await until(lambda: len(receiver.answered()) == 1)
            await sender.stop()
            return message_id

        message_id = run(main)
    [request] = receiver.answered()
    payload = verify(request)
    assert payload["type"] == "spend_limit.threshold_reached"
    assert payload["data"] == {"threshold_percent": 80, "spent_cents": "8000.5"}
    sent_at = parse_rfc3339(payload["timestamp"])
    assert abs((datetime.now(UTC) - sent_at).total_seconds()) < 10
    assert request.path == "/hooks/orgwarden?source=test"
    assert request.headers["webhook-id"] == message_id
    assert message_id.startswith("msg_")
    assert request.headers["webhook-timestamp"].isdigit()
    assert abs(int(request.headers["webhook-timestamp"]) - time.time()) < 10
    assert request.headers["webhook-signature"].startswith("v1,")
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == f"orgwarden/{__version__}"
    # a different secret does not verify: the signature really depends on the key
    with pytest.raises(Exception, match="signature"):
        Webhook("whsec_" + base64.b64encode(os.urandom(32)).decode()).verify(request.body, request.headers)


def test_retries_5xx_and_429_with_backoff_keeping_the_message_id() -> None:
    with running_receiver(statuses=[500, 503, 429]) as receiver:

        async def main() -> None:
            sender = WebhookSender(receiver.url, SECRET, first_backoff_seconds=0.1)
            await sender.start()
            sender.send("test.event", {"n": 1})
            await until(lambda: len(receiver.answered()) == 4)
            await sender.stop()

        run(main)
    requests = receiver.answered()
    assert [r.status for r in requests] == [500, 503, 429, 200]
    assert len({r.headers["webhook-id"] for r in requests}) == 1
    for request in requests:  # every attempt is signed afresh, and verifies
        assert verify(request)["data"] == {"n": 1}
    gaps = [b.at - a.at for a, b in itertools.pairwise(requests)]
    # 0.1, 0.2, 0.4 seconds, each +-20 %
    for gap, nominal in zip(gaps, (0.1, 0.2, 0.4), strict=True):
        assert nominal * 0.8 <= gap < nominal * 1.2 + 0.5, gaps


def test_gives_up_after_max_attempts(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "orgwarden")
    with running_receiver(statuses=[500] * 20) as receiver:

        async def main() -> str:
            sender = WebhookSender(receiver.url, SECRET, max_attempts=3, first_backoff_seconds=0.02)
            await sender.start()
            message_id = sender.send("test.event", {})
            await until(lambda: "gave up" in caplog.text)
            await asyncio.sleep(0.3)  # nothing more arrives
            assert sender.pending == 0
            await sender.stop()
            return message_id

        message_id = run(main)
    assert len(receiver.snapshot()) == 3
    assert f"gave up on {message_id} (test.event) after 3 attempts" in caplog.text
    assert SECRET not in caplog.text
    assert SECRET.removeprefix("whsec_") not in caplog.text


def test_connection_errors_are_retried_until_the_receiver_comes_up() -> None:
    port = free_port()

    async def main() -> list[Received]:
        url = f"http://127.0.0.1:{port}/hook"
        sender = WebhookSender(url, SECRET, first_backoff_seconds=0.1, max_attempts=20)
        await sender.start()
        sender.send("test.event", {"late": True})
        await asyncio.sleep(0.3)  # a few refused connections
        from http.server import ThreadingHTTPServer

        from tests.gateway.webhook_receiver import Receiver, _handler

        receiver = Receiver(url=url)
        server = ThreadingHTTPServer(("127.0.0.1", port), _handler(receiver))
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        try:
            await until(lambda: len(receiver.answered()) == 1)
        finally:
            await sender.stop()
            server.shutdown()
            server.server_close()
        return receiver.answered()

    [request] = run(main)
    assert verify(request)["data"] == {"late": True}


def test_a_4xx_is_not_retried(caplog: pytest.LogCaptureFixture) -> None:
    with running_receiver(statuses=[400]) as receiver:

        async def main() -> str:
            sender = WebhookSender(receiver.url, SECRET, first_backoff_seconds=0.02)
            await sender.start()
            message_id = sender.send("test.event", {})
            await until(lambda: "not retrying" in caplog.text)
            await asyncio.sleep(0.2)
            await sender.stop()
            return message_id

        message_id = run(main)
    assert len(receiver.snapshot()) == 1
    assert f"refused {message_id} (test.event) with HTTP 400" in caplog.text


def test_a_timeout_is_retried_with_the_same_message_id() -> None:
    hold = threading.Event()
    with running_receiver(hold=hold) as receiver:

        async def main() -> None:
            sender = WebhookSender(receiver.url, SECRET, timeout_seconds=0.3, first_backoff_seconds=0.05)
            await sender.start()
            sender.send("test.event", {})
            await until(lambda: len(receiver.snapshot()) == 2)  # the first attempt timed out
            hold.set()
            await until(lambda: any(r.answered for r in receiver.snapshot()[1:]))
            await sender.stop()

        run(main)
    requests = receiver.snapshot()
    assert requests[0].headers["webhook-id"] == requests[1].headers["webhook-id"]
    assert requests[1].at - requests[0].at >= 0.3


def test_send_returns_at_once_while_the_receiver_hangs() -> None:
    hold = threading.Event()
    with running_receiver(hold=hold) as receiver:

        async def main() -> None:
            sender = WebhookSender(receiver.url, SECRET, timeout_seconds=5)
            await sender.start()
            sender.send("test.event", {"i": 0})
            await until(lambda: len(receiver.snapshot()) == 1)  # the worker is stuck in a request
            started = time.perf_counter()
            for i in range(1, 1001):
                sender.send("test.event", {"i": i})
            assert time.perf_counter() - started < 0.5  # about 20 µs each
            assert sender.pending == 1000
            hold.set()
            await until(lambda: len(receiver.answered()) == 1001, within=30)
            await sender.stop()

        run(main)
    # one at a time, in order
    assert [json.loads(r.body)["data"]["i"] for r in receiver.answered()] == list(range(1001))


def test_a_full_queue_drops_the_oldest(caplog: pytest.LogCaptureFixture) -> None:
    with running_receiver() as receiver:

        async def main() -> list[str]:
            sender = WebhookSender(receiver.url, SECRET, queue_size=2)
            ids = [sender.send("test.event", {"i": i}) for i in range(3)]  # not started: all queued
            assert sender.pending == 2
            await sender.start()
            await until(lambda: len(receiver.answered()) == 2)
            await sender.stop()
            return ids

        ids = run(main)
    assert f"dropped the oldest, {ids[0]} (test.event)" in caplog.text
    assert [r.headers["webhook-id"] for r in receiver.answered()] == ids[1:]


def test_stop_finishes_the_request_under_way() -> None:
    with running_receiver(delay=0.5) as receiver:

        async def main() -> float:
            sender = WebhookSender(receiver.url, SECRET)
            await sender.start()
            sender.send("test.event", {})
            await until(lambda: len(receiver.snapshot()) == 1)
            started = time.monotonic()
            await sender.stop()
            return time.monotonic() - started

        took = run(main)
        [request] = receiver.wait_for(1, timeout=1)
    assert request.status == 200
    assert took >= 0.3  # it waited for the answer instead of cutting the request off


def test_stop_tries_what_is_queued_once_and_logs_what_is_left(caplog: pytest.LogCaptureFixture) -> None:
    with running_receiver(statuses=[500, 500, 200]) as receiver:

        async def main() -> tuple[str, str, float]:
            sender = WebhookSender(receiver.url, SECRET, first_backoff_seconds=60)
            await sender.start()
            failing = sender.send("test.event", {"i": 0})
            await until(lambda: len(receiver.answered()) == 1)  # now waiting a minute to retry
            queued = sender.send("test.event", {"i": 1})
            started = time.monotonic()
            await sender.stop()  # one more try each: the first gets 500 again, the second 200
            return failing, queued, time.monotonic() - started

        failing, queued, took = run(main)
    assert took < 5
    statuses = {(r.headers["webhook-id"], r.status) for r in receiver.answered()}
    assert statuses == {(failing, 500), (queued, 200)}
    assert "stopping with 1 undelivered message(s)" in caplog.text
    assert f"{failing} (test.event)" in caplog.text
    assert queued not in caplog.text.split("undelivered", 1)[1]


def test_a_bad_secret_or_url_is_refused() -> None:
    with pytest.raises(ValueError, match="base64"):
        WebhookSender("https://example.test/hook", "whsec_not*base64")
    with pytest.raises(ValueError, match="http"):
        WebhookSender("ftp://example.test/hook", SECRET)
