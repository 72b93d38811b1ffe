"""A user spend limit is exact across instances: two server processes sharing PostgreSQL and Redis
(and one process on SQLite, memory store), requests racing with two tokens of the same user over
both instances, never pass the limit, and use it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.attrib.test_user_tokens_data_plane import issue, new_team
from tests.gateway.test_limits_exact import (
    OUTPUT_PRICE,
    PICO_PER_CENT,
    deployment,
    fire,
    metered_cost,
    set_spend_limit,
)


@pytest.mark.parametrize("mode", ["redis", "memory"])
def test_a_user_spend_limit_is_never_exceeded_by_racing_requests_on_two_instances(tmp_path: Path, mode: str) -> None:
    """As ``test_a_spend_limit_is_never_exceeded_by_racing_requests``, for a user's tokens: each
    request costs 1 cent of output (at most about 1.4 cents), 60 race for the user's 8-cent daily
    limit, from two tokens, over both instances."""
    limit_cents = 8
    with deployment(tmp_path, mode) as servers:
        team = new_team(servers[0])
        tokens = [team.token, issue(servers[0], team.user["id"], team.workspace["id"])]
        set_spend_limit(servers[0], limit_cents, {"type": "user", "user_id": team.user["id"]})
        time.sleep(1.0)  # every instance reloads within a second
        targets = [(servers[i % len(servers)].base_url, tokens[(i // 2) % 2]) for i in range(60)]
        responses = fire(targets, max_tokens=2000, output_tokens=2000)
        ok = [r for r in responses if r.status_code == 200]
        refused = [r for r in responses if r.status_code != 200]
        assert refused, "the limit never bit"
        for response in refused:
            assert response.status_code == 400, response.text
            assert response.json()["error"]["message"].startswith(
                "You have reached your specified user API usage limits."
            )
        total = metered_cost(servers[0], expect_rows=len(ok))
        assert total <= limit_cents * PICO_PER_CENT, f"metered {total} pico > limit {limit_cents} cents"
        one_worst_case = 2000 * OUTPUT_PRICE + 10_000 * 10**6
        assert total > limit_cents * PICO_PER_CENT - one_worst_case, f"only {total} pico metered: limit unused"
