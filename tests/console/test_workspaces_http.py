"""Workspace and limit pages over HTTP (httpx holding a real session cookie): refused forms answer
400/409 with the message on the page and the viewer's input kept, CSRF and permissions are enforced
on every action, and what the pages write is what the Admin API then reads."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator

import httpx
import pytest

from orgwarden import ids
from orgwarden.console.workspaces import PAGE_SIZE
from orgwarden.services.organizations import DEFAULT_WORKSPACE_NAME
from tests.console.conftest import ADMIN, ConsoleWorld, csrf_token, http_session

OUTSIDER = "outsider@acme.test"


@pytest.fixture(scope="module")
def admin(console_world: ConsoleWorld) -> Iterator[httpx.Client]:
    with http_session(console_world, ADMIN) as client:
        client.base_url = httpx.URL(console_world.base_url)
        yield client


def _workspace(world: ConsoleWorld, name: str) -> str:
    with world.admin() as api:
        response = api.post("/v1/organizations/workspaces", json={"name": name})
        assert response.status_code == 200, response.text
        return str(response.json()["id"])


def _post(client: httpx.Client, world: ConsoleWorld, path: str, form: dict[str, str]) -> httpx.Response:
    return client.post(path, data={"csrf_token": csrf_token(client, world), **form})


def _text(page: httpx.Response) -> str:
    return html.unescape(re.sub(r"\s+", " ", page.text))


def test_a_residency_the_service_refuses_re_renders_the_form_with_the_message(
    console_world: ConsoleWorld, admin: httpx.Client
) -> None:
    ws = _workspace(console_world, "Residency checks")
    form = {
        "name": "Kept Name",
        "display_color": "#112233",
        "tags": "team=data",
        "allowed": "listed",
        "geo_us": "on",
        "default_inference_geo": "global",
    }
    page = _post(admin, console_world, f"/console/workspaces/{ws}", form)
    assert page.status_code == 400, page.text
    assert "data_residency.default_inference_geo: 'global' is not in allowed_inference_geos ['us']" in _text(page)
    assert 'value="Kept Name"' in page.text  # the user's input is kept, not the stored name
    assert page.headers["content-security-policy"].startswith("default-src 'none'")
    with console_world.admin() as api:
        stored = api.get(f"/v1/organizations/workspaces/{ws}").json()
    assert stored["name"] == "Residency checks"  # nothing was changed
    assert stored["data_residency"]["allowed_inference_geos"] == "unrestricted"

    unknown = _post(
        admin, console_world, "/console/workspaces", {"name": "Mars", "allowed": "listed", "geo_mars": "on"}
    )
    assert unknown.status_code == 400
    assert "unknown inference geo 'mars'" in _text(unknown)
    assert 'value="Mars"' in unknown.text

    empty = _post(admin, console_world, "/console/workspaces", {"name": "Nowhere", "allowed": "listed"})
    assert empty.status_code == 400
    assert "must list at least one geo" in _text(empty)


def test_names_tags_and_colours_are_checked_by_the_service(console_world: ConsoleWorld, admin: httpx.Client) -> None:
    _workspace(console_world, "Taken")
    clash = _post(admin, console_world, "/console/workspaces", {"name": "taken"})
    assert clash.status_code == 409
    assert "a workspace named 'Taken' already exists" in _text(clash)
    bad_tag = _post(admin, console_world, "/console/workspaces", {"name": "Tagged", "tags": "anthropic_x=1"})
    assert bad_tag.status_code == 400
    assert "may not begin with 'anthropic'" in _text(bad_tag)
    no_equals = _post(admin, console_world, "/console/workspaces", {"name": "Tagged", "tags": "just words"})
    assert no_equals.status_code == 400
    assert "is not of the form key=value" in _text(no_equals)
    bad_color = _post(admin, console_world, "/console/workspaces", {"name": "Coloured", "display_color": "red"})
    assert bad_color.status_code == 400
    assert "display_color: 'red' is not a hex colour" in _text(bad_color)
    blank = _post(admin, console_world, "/console/workspaces", {"name": "   "})
    assert blank.status_code == 400
    assert "name: must not be empty" in _text(blank)


def test_limit_forms_refuse_bad_numbers_and_keep_the_input(console_world: ConsoleWorld, admin: httpx.Client) -> None:
    ws = _workspace(console_world, "Limit checks")
    amount = _post(
        admin, console_world, f"/console/workspaces/{ws}/spend-limits", {"amount": "12.345", "period": "monthly"}
    )
    assert amount.status_code == 400
    assert "amount: '12.345' is not an amount in US dollars" in _text(amount)
    assert 'value="12.345"' in amount.text
    period = _post(admin, console_world, f"/console/workspaces/{ws}/spend-limits", {"amount": "10", "period": "hourly"})
    assert period.status_code == 400
    assert "period: 'hourly' is not one of" in _text(period)
    thresholds = _post(
        admin,
        console_world,
        "/console/limits/spend",
        {"scope": "organization", "amount": "10", "alert_thresholds": "50, 5000"},
    )
    assert thresholds.status_code == 400
    assert "alert_thresholds: 5000 is not a percentage from 1 to 1000" in _text(thresholds)

    with console_world.admin() as api:
        entry = api.get("/v1/organizations/rate_limits").json()["data"][0]["id"]
    rate = _post(admin, console_world, f"/console/limits/rate/{entry}", {"requests_per_minute": "lots"})
    assert rate.status_code == 400
    assert "requests_per_minute: 'lots' is not a whole number" in _text(rate)
    assert 'value="lots"' in rate.text
    too_big = _post(
        admin, console_world, f"/console/workspaces/{ws}/rate-limits/{entry}", {"output_tokens_per_minute": "9" * 14}
    )
    assert too_big.status_code == 400
    assert "must be an integer from 1 to" in _text(too_big)
    unknown = _post(admin, console_world, "/console/limits/rate/rl_nonexistent", {"requests_per_minute": "5"})
    assert unknown.status_code == 404
    assert "rate limit 'rl_nonexistent' not found" in _text(unknown)

    default_ws = _default_workspace(console_world)
    refused = _post(
        admin, console_world, f"/console/workspaces/{default_ws}/rate-limits/{entry}", {"requests_per_minute": "5"}
    )
    assert refused.status_code == 400
    assert "the default workspace takes no rate-limit overrides" in _text(refused)


def _default_workspace(world: ConsoleWorld) -> str:
    with world.admin() as api:
        listed = api.get("/v1/organizations/workspaces", params={"include_default": "true", "limit": 100}).json()
    return next(str(w["id"]) for w in listed["data"] if w["name"] == DEFAULT_WORKSPACE_NAME)


def test_what_the_pages_write_the_admin_api_reads(console_world: ConsoleWorld, admin: httpx.Client) -> None:
    ws = _workspace(console_world, "Round trip")
    saved = _post(
        admin, console_world, f"/console/workspaces/{ws}",
        {"name": "Round trip 2", "display_color": "#aabbcc", "tags": "team=ml\ncost_center=42", "allowed": "listed",
         "geo_us": "on", "default_inference_geo": "us"},
    )  # fmt: skip
    assert saved.status_code == 303
    assert saved.headers["location"] == f"/console/workspaces/{ws}?notice=workspace_updated"
    with console_world.admin() as api:
        stored = api.get(f"/v1/organizations/workspaces/{ws}").json()
    assert stored["name"] == "Round trip 2"
    assert stored["display_color"] == "#AABBCC"
    assert stored["tags"] == {"team": "ml", "cost_center": "42"}
    assert stored["data_residency"]["allowed_inference_geos"] == ["us"]
    assert stored["data_residency"]["default_inference_geo"] == "us"

    # Removing a tag line deletes that tag.
    _post(
        admin,
        console_world,
        f"/console/workspaces/{ws}",
        {"name": "Round trip 2", "tags": "team=ml", "allowed": "unrestricted"},
    )
    with console_world.admin() as api:
        stored = api.get(f"/v1/organizations/workspaces/{ws}").json()
    assert stored["tags"] == {"team": "ml"}
    assert stored["data_residency"]["allowed_inference_geos"] == "unrestricted"

    spend = _post(admin, console_world, f"/console/workspaces/{ws}/spend-limits",
                  {"amount": "$1,234.5", "period": "weekly", "alert_thresholds": "25, 75"})  # fmt: skip
    assert spend.status_code == 303, spend.text
    with console_world.admin() as api:
        limits = api.get(
            "/v1/organizations/spend_limits", params={"scope_type": "workspace", "workspace_id": ws}
        ).json()
    (row,) = limits["data"]
    assert (row["amount"], row["period"], row["alert_thresholds"]) == ("123450", "weekly", [25, 75])
    assert row["scope"]["workspace_id"] == ws

    upstream = _post(
        admin, console_world, f"/console/workspaces/{ws}/upstream-key", {"api_key": "sk-ant-console-secret-0123"}
    )
    assert upstream.status_code == 303
    page = admin.get(f"/console/workspaces/{ws}")
    assert "sk-ant-console-secret-0123" not in page.text
    assert '<strong id="upstream-state">yes</strong>' in page.text
    bad_key = _post(admin, console_world, f"/console/workspaces/{ws}/upstream-key", {"api_key": "has spaces in it"})
    assert bad_key.status_code == 400
    assert "has spaces in it" not in bad_key.text  # a refused key is not echoed back either
    cleared = _post(admin, console_world, f"/console/workspaces/{ws}/upstream-key/clear", {})
    assert cleared.status_code == 303
    assert '<strong id="upstream-state">no</strong>' in admin.get(f"/console/workspaces/{ws}").text


def test_actions_need_the_csrf_token_and_the_permission(console_world: ConsoleWorld, admin: httpx.Client) -> None:
    ws = _workspace(console_world, "Guarded")
    assert 'id="create-form"' in admin.get("/console/workspaces").text  # the admin has the create form
    forged = admin.post(f"/console/workspaces/{ws}/archive", data={"csrf_token": "not-the-token"})
    assert forged.status_code == 403
    assert "CSRF" in forged.text
    missing = admin.post("/console/workspaces", data={"name": "No token"})
    assert missing.status_code == 403
    with console_world.admin() as api:
        assert api.get(f"/v1/organizations/workspaces/{ws}").json()["archived_at"] is None

    console_world.invite(OUTSIDER, "user")
    with http_session(console_world, OUTSIDER) as outsider:
        outsider.base_url = httpx.URL(console_world.base_url)
        # Not a member: the workspace does not exist for them, on every page and action.
        assert outsider.get(f"/console/workspaces/{ws}").status_code == 404
        assert _post(outsider, console_world, f"/console/workspaces/{ws}", {"name": "Mine"}).status_code == 404
        # Organization-wide actions their role does not have: 403, before any work.
        assert _post(outsider, console_world, "/console/workspaces", {"name": "Mine"}).status_code == 403
        assert _post(outsider, console_world, f"/console/workspaces/{ws}/archive", {}).status_code == 403
        assert (
            _post(
                outsider, console_world, "/console/limits/spend", {"scope": "organization", "amount": "1"}
            ).status_code
            == 403
        )
        listing = outsider.get("/console/workspaces")
        assert listing.status_code == 200
        assert "Guarded" not in listing.text
        assert 'id="create-form"' not in listing.text  # no create form
        limits = outsider.get("/console/limits")
        assert limits.status_code == 200
        assert "Organization spend limits" not in limits.text
    with console_world.admin() as api:
        assert api.get(f"/v1/organizations/workspaces/{ws}").json()["name"] == "Guarded"


def test_spend_limits_of_users_and_deleting_one_after_confirming(
    console_world: ConsoleWorld, admin: httpx.Client
) -> None:
    console_world.invite("spender@acme.test", "developer")
    with http_session(console_world, "spender@acme.test"):
        pass  # the first sign-in accepts the invite: the user exists from now on
    unknown = _post(
        admin, console_world, "/console/limits/spend", {"scope": "user", "user": "ghost@acme.test", "amount": "5"}
    )
    assert unknown.status_code == 400
    assert "nobody in the organization has the email address 'ghost@acme.test'" in _text(unknown)
    set_it = _post(admin, console_world, "/console/limits/spend",
                   {"scope": "user", "user": "spender@acme.test", "amount": "75", "period": "daily"})  # fmt: skip
    assert set_it.status_code == 303
    with console_world.admin() as api:
        rows = api.get("/v1/organizations/spend_limits", params={"scope_type": "user"}).json()["data"]
    (row,) = [r for r in rows if r["period"] == "daily"]
    assert row["amount"] == "7500"
    page = admin.get("/console/limits")
    assert "spender@acme.test" in page.text
    assert "$75.00" in page.text
    confirm = admin.get(f"/console/limits/spend/{row['id']}/delete")
    assert confirm.status_code == 200
    assert "This will delete the spend limit" in _text(confirm)
    done = _post(admin, console_world, f"/console/limits/spend/{row['id']}/delete", {})
    assert done.status_code == 303
    assert done.headers["location"] == "/console/limits?notice=spend_limit_deleted"
    with console_world.admin() as api:
        assert api.get(f"/v1/organizations/spend_limits/{row['id']}").status_code == 404


def test_members_are_added_by_email_or_id_changed_and_removed(console_world: ConsoleWorld, admin: httpx.Client) -> None:
    ws = _workspace(console_world, "Members")
    console_world.invite("member.one@acme.test", "user")
    console_world.invite("member.two@acme.test", "developer")
    with http_session(console_world, "member.one@acme.test"), http_session(console_world, "member.two@acme.test"):
        pass  # both signed in once: their invites are accepted
    with console_world.admin() as api:
        two = api.get("/v1/organizations/users", params={"email": "member.two@acme.test"}).json()["data"][0]["id"]
    members = f"/console/workspaces/{ws}/members"
    assert (
        _post(admin, console_world, members, {"user": "Member.One@acme.test", "role": "workspace_admin"}).status_code
        == 303
    )
    assert _post(admin, console_world, members, {"user": two, "role": "workspace_developer"}).status_code == 303
    again = _post(admin, console_world, members, {"user": two, "role": "workspace_user"})
    assert again.status_code == 409
    assert f"user {two} is already a member of workspace {ws}" in _text(again)
    billing = _post(admin, console_world, members, {"user": "member.one@acme.test", "role": "workspace_billing"})
    assert billing.status_code == 400
    assert "workspace_role: cannot be 'workspace_billing'" in _text(billing)
    assert 'value="member.one@acme.test"' in billing.text
    nobody = _post(admin, console_world, members, {"user": ids.new_id(ids.USER), "role": "workspace_user"})
    assert nobody.status_code == 400
    assert "user 'user_" in _text(nobody)
    assert "not found" in _text(nobody)

    changed = _post(admin, console_world, f"{members}/{two}", {"role": "workspace_billing"})  # allowed on a change
    assert changed.status_code == 303
    wrong = _post(admin, console_world, f"{members}/{two}", {"role": "owner"})
    assert wrong.status_code == 400
    assert "workspace_role: 'owner' is not one of" in _text(wrong)
    with console_world.admin() as api:
        listed = api.get(f"/v1/organizations/workspaces/{ws}/members").json()["data"]
    assert sorted(m["workspace_role"] for m in listed) == ["workspace_admin", "workspace_billing"]

    # A member who may read the members but not change them gets no confirmation page either.
    with http_session(console_world, "member.two@acme.test") as member_two:
        member_two.base_url = httpx.URL(console_world.base_url)
        _post(admin, console_world, f"{members}/{two}", {"role": "workspace_developer"})
        page = member_two.get(f"/console/workspaces/{ws}")
        assert page.status_code == 200
        assert "member.one@acme.test" in page.text
        assert "/remove" not in page.text
        assert member_two.get(f"{members}/{two}/remove").status_code == 403
        assert _post(member_two, console_world, f"{members}/{two}/remove", {}).status_code == 403

    confirm = admin.get(f"{members}/{two}/remove")
    assert confirm.status_code == 200
    assert "This will remove member.two@acme.test from the members of Members" in _text(confirm)
    assert _post(admin, console_world, f"{members}/{two}/remove", {}).status_code == 303
    with console_world.admin() as api:
        listed = api.get(f"/v1/organizations/workspaces/{ws}/members").json()["data"]
    assert [m["workspace_role"] for m in listed] == ["workspace_admin"]


def _listed(page_html: str) -> list[str]:
    return re.findall(r'<a href="/console/workspaces/(wrkspc_[^"]+)">', page_html)


def test_the_list_pages_forward_and_back(console_world: ConsoleWorld, admin: httpx.Client) -> None:
    for i in range(PAGE_SIZE + 5):
        _workspace(console_world, f"Paged {i:03d}")
    with console_world.admin() as api:
        everything = api.get("/v1/organizations/workspaces", params={"include_default": "true", "limit": 1000}).json()
    expected = [w["id"] for w in everything["data"]]
    assert len(expected) > PAGE_SIZE

    link = re.compile(r'<a href="(/console/workspaces\?(?:after|before)=[^"]+)" rel="(next|prev)">')
    shown: list[str] = []
    pages: list[str] = []
    url = "/console/workspaces"
    while url:
        page = admin.get(url)
        assert page.status_code == 200
        assert 0 < len(_listed(page.text)) <= PAGE_SIZE
        shown += _listed(page.text)
        pages.append(page.text)
        url = next((href for href, rel in link.findall(page.text) if rel == "next"), "")
    assert shown == expected  # every workspace once, in order
    assert 'rel="prev"' not in pages[0]
    back = next(href for href, rel in link.findall(pages[-1]) if rel == "prev")
    last = _listed(pages[-1])
    previous = admin.get(back)
    assert _listed(previous.text) == shown[-len(last) - PAGE_SIZE : -len(last)]
    assert 'rel="next"' in previous.text
