"""The metrics and log-format building blocks, in process (the servers' behaviour is in tests/observability)."""

from __future__ import annotations

import json
import logging
import sys

from prometheus_client.parser import text_string_to_metric_families

from orgwarden.observability.logs import FIELDS, JsonFormatter
from orgwarden.observability.metrics import Metrics


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.render().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_a_watched_counter_adds_only_what_its_value_grew_by_and_a_gauge_shows_the_value_now() -> None:
    metrics = Metrics()
    state = {"refused": 0, "depth": 0}
    metrics.watch("demo_refused", "help", lambda: state["refused"], kind="counter", labels={"kind": "rate"})
    metrics.watch("demo_depth", "help", lambda: state["depth"])
    state.update(refused=3, depth=7)
    assert samples(metrics)["demo_refused_total", (("kind", "rate"),)] == 3
    state.update(refused=5, depth=2)
    seen = samples(metrics)
    assert seen["demo_refused_total", (("kind", "rate"),)] == 5
    assert seen["demo_depth", ()] == 2


def test_a_watched_value_that_cannot_be_read_keeps_its_last_value() -> None:
    metrics = Metrics()
    values = iter([4.0])
    metrics.watch("demo_flaky", "help", lambda: next(values))
    assert samples(metrics)["demo_flaky", ()] == 4
    assert samples(metrics)["demo_flaky", ()] == 4  # (the iterator is exhausted: StopIteration)


def test_an_unknown_method_is_counted_as_other_so_labels_stay_bounded() -> None:
    metrics = Metrics()
    for method in ("BREW", "PROPFIND", "GET"):
        metrics.request("admin", "unmatched", method, 404, 0.01)
    seen = samples(metrics)
    labels = (("method", "OTHER"), ("plane", "admin"), ("route", "unmatched"), ("status", "404"))
    assert seen["orgwarden_http_requests_total", labels] == 2
    assert seen["orgwarden_http_request_duration_seconds_count", labels] == 2


def test_the_json_format_puts_access_fields_and_a_traceback_in_one_object() -> None:
    formatter = JsonFormatter()
    record = logging.LogRecord("orgwarden.access", logging.INFO, __file__, 1, "%s", ("line",), None)
    setattr(record, FIELDS, {"request_id": "req_1", "status": 200, "path": "/v1/x\r\ny"})
    line = formatter.format(record)
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["logger"] == "orgwarden.access"
    assert parsed["message"] == "line"
    assert (parsed["request_id"], parsed["status"], parsed["path"]) == ("req_1", 200, "/v1/x\r\ny")
    assert parsed["time"].endswith("Z")

    try:
        raise ValueError("boom")
    except ValueError:
        failed = logging.LogRecord("orgwarden.api", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    parsed = json.loads(formatter.format(failed))
    assert parsed["level"] == "error"
    assert "ValueError: boom" in parsed["exc_info"]
