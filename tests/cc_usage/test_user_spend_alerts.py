"""A user's spend limit warns before the wall: a real server on SQLite with ``ORGWARDEN_WEBHOOK_URL``
pointing at a real receiver, a user access token's traffic through the gateway (the simulator,
answers of a chosen length), and the alert webhooks at the user default thresholds (75 / 95 / 100 %,
``ORGWARDEN_USER_SPEND_ALERT_THRESHOLDS``), each once, signed as Standard Webhooks and verified with
their library. 100 % fires at the wall: the first request refused, when the spend is short of the
amount by less than that request's worst case."""

from __future__ import annotations

import base64
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select
from standardwebhooks import Webhook

from orgwarden.storage.tables import AuditEvent
from orgwarden.storage.uow import UnitOfWork
from tests.attrib.test_user_tokens_data_plane import new_team
from tests.conftest import TLS, drop_database, make_database, query_db, start_server, stop_server
from tests.gateway.webhook_receiver import Receiver, running_receiver

SECRET = "whsec_" + base64.b64encode(b"orgwarden-user-alert-secret-32by").decode()
MODEL = "claude-opus-5-5"  # $4 / $20 per million tokens: 500 output tokens cost a cent


def ask(base_url: str, token: str, output_tokens: int) -> httpx.Response:
    """A request of the user's (Claude Code's bearer) whose answer is ``output_tokens`` long."""
    body = {"model": MODEL, "max_tokens": output_tokens, "messages": [{"role": "user", "content": "hi"}]}
    headers = {"authorization": f"Bearer {token}", "anthropic-version": "2023-06-01",
               "anthropic-simulator-output-tokens": str(output_tokens)}  # fmt: skip
    with httpx.Client(base_url=base_url, timeout=60, verify=TLS) as http:
        return http.post("/v1/messages", json=body, headers=headers)


def test_a_user_spend_limit_alerts_at_75_95_and_100_percent_once_each(tmp_path: Path) -> None:
    with running_receiver() as receiver:
        db = make_database("sqlite", tmp_path)
        db.env.update({"ORGWARDEN_WEBHOOK_URL": receiver.url, "ORGWARDEN_WEBHOOK_SECRET": SECRET})
        server = start_server(db, tmp_path)
        try:
            team = new_team(server)
            user_id = team.user["id"]
            with server.http() as admin:
                created = admin.post(
                    "/v1/organizations/spend_limits",
                    json={"amount": "100", "period": "daily", "scope": {"type": "user", "user_id": user_id}},
                )  # $1.00 a day, thresholds not given: the user defaults
            assert created.status_code == 200, created.text
            limit = created.json()
            assert limit["alert_thresholds"] == [75, 95, 100]
            time.sleep(1.0)  # the gateway reloads limits within a second

            # Each request's worst case is its answer plus ~1.7 cents of input (body + 4096 tokens).
            first = ask(server.base_url, team.token, 38_000)  # 76 cents: past 75 %
            assert first.status_code == 200, first.text
            assert _thresholds(_wait(receiver, 1)) == [75]
            second = ask(server.base_url, team.token, 10_000)  # 20 more: 96 cents, past 95 %
            assert second.status_code == 200, second.text
            assert _thresholds(_wait(receiver, 2)) == [75, 95]
            for _ in range(2):  # 96 + ~21.7 > 100: the wall, refused the way Claude Code expects
                refused = ask(server.base_url, team.token, 10_000)
                assert refused.status_code == 400, refused.text
                assert "reached your specified user API usage limits" in refused.json()["error"]["message"]
            deliveries = _wait(receiver, 3)
            time.sleep(0.5)  # and nothing more: each threshold once
            assert len(receiver.snapshot()) == 3

            assert _thresholds(deliveries) == [75, 95, 100]
            for delivery in deliveries:
                assert delivery["type"] == "spend_limit.threshold_reached"
                data = delivery["data"]
                assert data["spend_limit_id"] == limit["id"]
                assert data["organization_id"] == server.organization["id"]
                assert data["scope"] == {"type": "user", "id": user_id}
                assert (data["amount_cents"], data["period"]) == (100, "daily")
            spent = [Decimal(d["data"]["spent_cents"]) for d in deliveries]
            assert Decimal(76) <= spent[0] < Decimal(77)
            assert Decimal(96) <= spent[1] < Decimal(97)
            assert spent[2] == spent[1]  # the wall: what was spent when the request was refused

            async def alerts(uow: UnitOfWork) -> list[AuditEvent]:
                stmt = select(AuditEvent).where(AuditEvent.action == "spend_limit.alert").order_by(AuditEvent.seq)
                return list((await uow.audit.session.scalars(stmt)).all())

            events = query_db(db, alerts)
            assert [e.details["threshold_percent"] for e in events] == [75, 95, 100]
            assert {(e.target_id, e.actor_type) for e in events} == {(limit["id"], "system")}
            assert {e.details["scope"]["type"] for e in events} == {"user"}
        finally:
            stop_server(server)
            drop_database(db)


def _wait(receiver: Receiver, count: int) -> list[dict[str, Any]]:
    """The first ``count`` deliveries, each verified (signature, timestamp), in arrival order."""
    return [dict(Webhook(SECRET).verify(r.body, r.headers)) for r in receiver.wait_for(count)[:count]]


def _thresholds(deliveries: list[dict[str, Any]]) -> list[int]:
    return [d["data"]["threshold_percent"] for d in deliveries]
