"""Tampering seen from the console: an event altered behind orgwarden's back (as a DBA could, with
the append-only triggers out of the way) makes ``/console/audit/verify`` name the broken link.

It breaks the chain for good, so it has a world of its own (``tamper_world``), never the worker's
shared ``console_world``."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from orgwarden.config import load_settings
from orgwarden.storage.tables import AuditEvent
from tests.audit.test_tamper_evidence import as_dba
from tests.console.conftest import (
    ADMIN,
    ConsoleWorld,
    assert_accessible,
    running_world,
    shot,
    sign_in,
    wait_for,
)


@pytest.fixture(scope="module")
def tamper_world() -> Iterator[ConsoleWorld]:
    with running_world() as world:
        yield world


def test_verify_names_the_event_that_was_altered_in_the_database(
    tamper_world: ConsoleWorld, browser: WebDriver
) -> None:
    console_world = tamper_world
    with console_world.admin() as api:
        created = api.post("/v1/organizations/workspaces", json={"name": f"tampered-{uuid.uuid4().hex[:6]}"})
        assert created.status_code == 200, created.text
        listed = api.get("/v1/organizations/audit_logs", params={"target_id": created.json()["id"]})
    (event,) = listed.json()["data"]
    settings = load_settings(**console_world.server.db.settings_kwargs)
    table = AuditEvent.__table__
    as_dba(settings, sa.update(table).where(table.c.id == event["id"]).values(outcome="failure"))

    sign_in(browser, console_world, ADMIN, "/console/audit/verify")
    browser.find_element(By.CSS_SELECTOR, "main form button[type=submit]").click()
    result = wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".verify-result"), "the verification")
    text = result[0].text
    assert "Broken:" in text, text
    assert f"event {event['id']} (seq {event['seq']})" in text
    assert "hash_mismatch" in text
    shot(browser, "audit-verify-broken")
    assert_accessible(browser, "/console/audit/verify (broken chain)")

    browser.find_element(By.LINK_TEXT, event["id"]).click()
    wait_for(browser, lambda d: d.current_url.endswith(event["id"]), "the altered event's page")
    assert "failure" in browser.find_element(By.CSS_SELECTOR, "table.fields").text
