"""Claude Code telemetry: which metrics count, how a point becomes an increment, and whose it is.

Claude Code exports OpenTelemetry counters (``claude_code.*``); orgwarden keeps the ones the usage
report needs and sums them per UTC day and actor:

    claude_code.session.count            -> core_metrics.num_sessions
    claude_code.commit.count             -> core_metrics.commits_by_claude_code
    claude_code.pull_request.count       -> core_metrics.pull_requests_by_claude_code
    claude_code.lines_of_code.count      -> core_metrics.lines_of_code.{added,removed}  (attribute ``type``)
    claude_code.token.usage              -> model_breakdown[model].tokens.*              (``type``, ``model``)
    claude_code.cost.usage               -> model_breakdown[model].estimated_cost        (``model``; USD)
    claude_code.code_edit_tool.decision  -> tool_actions[tool].{accepted,rejected}       (``tool_name``, ``decision``)

Every other metric is accepted and ignored. Values are kept as integers: cost in picodollars (USD
x 1e12, so sums are exact), everything else as a whole count (a fractional count is rounded to the
nearest, half to even).

A point counts on the UTC day of its end time (``time_unix_nano``): an interval that spans midnight
counts wholly on the day it ends.

Temporality. OTLP sends sums either as *delta* points (what happened in the interval) or as
*cumulative* points (the running total since ``start_time_unix_nano``). orgwarden remembers the last
point of each series (``Progress``) and adds only what is new:

* cumulative: the value minus the last value seen with the same start time; a new start time is a
  reset (the exporter restarted), so the whole value is new; a value lower than the last one is a
  reset too.
* both: a point whose end time is not after the last one seen for its series is a repeat (an export
  retried or sent twice) or a late arrival, and adds nothing. Points of one series are exported in
  order and delta intervals never overlap, so a point that is really new always ends later.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_EVEN, Decimal

SESSIONS = "claude_code.session.count"
COMMITS = "claude_code.commit.count"
PULL_REQUESTS = "claude_code.pull_request.count"
LINES_OF_CODE = "claude_code.lines_of_code.count"
TOKENS = "claude_code.token.usage"
COST = "claude_code.cost.usage"
EDIT_DECISIONS = "claude_code.code_edit_tool.decision"
KEPT_METRICS = frozenset({SESSIONS, COMMITS, PULL_REQUESTS, LINES_OF_CODE, TOKENS, COST, EDIT_DECISIONS})

DELTA = 1  # AggregationTemporality values of the OTLP protocol
CUMULATIVE = 2

USER_ACTOR = "user_actor"
API_ACTOR = "api_actor"
UNKNOWN_TERMINAL = "unknown"
UNKNOWN_MODEL = "unknown"

PICODOLLARS_PER_USD = 10**12
PICODOLLARS_PER_CENT = 10**10
MAX_STORED = 2**62  # in the stored unit: $4.6 million a point, or 4.6e18 of a count
CENTS_QUANTUM = Decimal("0.01")  # the report's cents are rounded to a hundredth of a cent

TOKEN_TYPES = {"input": "input", "output": "output", "cacheRead": "cache_read", "cacheCreation": "cache_creation"}
LINE_TYPES = frozenset({"added", "removed"})
DECISIONS = {"accept": "accepted", "reject": "rejected"}
# The spec's keys for Claude Code's code edit tools; any other tool name becomes snake_case + "_tool".
TOOL_KEYS = {
    "Edit": "edit_tool",
    "MultiEdit": "multi_edit_tool",
    "Write": "write_tool",
    "NotebookEdit": "notebook_edit_tool",
}
REPORTED_TOOLS = tuple(TOOL_KEYS.values())  # always present in a record, zero when unused

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_NOT_WORD = re.compile(r"[^a-z0-9]+")


def tool_key(tool_name: str) -> str:
    """``Edit`` -> ``edit_tool``; an unknown tool ``WebFetch`` -> ``web_fetch_tool``."""
    if tool_name in TOOL_KEYS:
        return TOOL_KEYS[tool_name]
    snake = _NOT_WORD.sub("_", _CAMEL.sub("_", tool_name).lower()).strip("_") or "unknown"
    return snake if snake.endswith("_tool") else f"{snake}_tool"


def stored_value(metric: str, value: float | int) -> int:
    """A point's value in the unit it is stored in: picodollars for cost, a whole count otherwise.

    A double is read as the shortest decimal that round-trips (``repr``), which is the value the
    exporter meant, then rounded half to even: cost to the picodollar (1e-12 USD), counts to 1.
    A value that cannot be stored (``MAX_STORED`` or more) raises ``ValueError``.
    """
    exact = Decimal(value) if isinstance(value, int) else Decimal(repr(float(value)))
    if metric == COST:
        exact *= PICODOLLARS_PER_USD
    if abs(exact) >= MAX_STORED:
        raise ValueError(f"{value!r} is out of range")
    return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def cents(picodollars: int) -> Decimal:
    """Picodollars as cents, rounded half to even to a hundredth of a cent."""
    return (Decimal(picodollars) / PICODOLLARS_PER_CENT).quantize(CENTS_QUANTUM, rounding=ROUND_HALF_EVEN)


def day_of(time_unix_nano: int) -> date:
    return datetime.fromtimestamp(time_unix_nano // 1_000_000_000, UTC).date()


@dataclass(frozen=True, slots=True)
class Sample:
    """One data point of a kept metric, as decoded from an export, before temporality is applied."""

    metric: str
    series: str  # SHA-256 (hex) of the series' identity: sender, resource, scope, metric, attributes
    temporality: int  # DELTA or CUMULATIVE
    start_unix_nano: int
    time_unix_nano: int
    value: int  # in the stored unit (``stored_value``)
    attributes: Mapping[str, str]  # resource attributes, overridden by the point's own


@dataclass(frozen=True, slots=True)
class Progress:
    """The last point seen of one series."""

    start_unix_nano: int
    time_unix_nano: int
    last_value: int


def advance(progress: Progress | None, sample: Sample) -> tuple[int, Progress | None]:
    """What ``sample`` adds, and the series' progress after it (``None``: unchanged)."""
    after = Progress(sample.start_unix_nano, sample.time_unix_nano, sample.value)
    if progress is None:
        return max(sample.value, 0), after
    if sample.time_unix_nano <= progress.time_unix_nano:
        return 0, None  # a repeat, or a late arrival
    if sample.temporality == DELTA:
        return max(sample.value, 0), after
    if sample.start_unix_nano != progress.start_unix_nano or sample.value < progress.last_value:
        return max(sample.value, 0), after  # a reset: the exporter started counting again
    return sample.value - progress.last_value, after


@dataclass(frozen=True, slots=True)
class Actor:
    type: str  # USER_ACTOR or API_ACTOR
    id: str  # the user's email, or the id of the API key that sent the export


def actor_of(attributes: Mapping[str, str], api_key_id: str, user_email: str | None = None) -> Actor:
    """The user whose access token sent the export (``user_email``: orgwarden knows who it is, which
    outranks what the export says); else the user by ``user.email`` when Claude Code knows it (OAuth
    sign-in); else the API key."""
    if user_email:
        return Actor(USER_ACTOR, user_email[:320])
    email = attributes.get("user.email", "").strip()
    if email:
        return Actor(USER_ACTOR, email[:320])
    return Actor(API_ACTOR, api_key_id)


DAILY_COUNTERS = ("sessions", "commits", "pull_requests", "lines_added", "lines_removed")
MODEL_COUNTERS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens", "cost_picodollars")
TOOL_COUNTERS = ("accepted", "rejected")
_CORE = {SESSIONS: "sessions", COMMITS: "commits", PULL_REQUESTS: "pull_requests"}

Counters = dict[str, int]


class Tally:
    """What one export adds, per row of the three daily aggregates (keys without the organization):

    * ``daily[(day, actor type, actor, terminal type)]``: the core figures; every point touches it,
      so that an actor appears in the report whatever it did;
    * ``models[(day, actor type, actor, model)]``: tokens by type, and cost;
    * ``tools[(day, actor type, actor, tool key)]``: decisions.

    Attribute values that do not fit a known one (a token ``type``, a lines ``type``, a ``decision``)
    add nothing: Claude Code does not send them today, and guessing would corrupt a figure.
    """

    def __init__(self) -> None:
        self.daily: dict[tuple[date, str, str, str], Counters] = {}
        self.models: dict[tuple[date, str, str, str], Counters] = {}
        self.tools: dict[tuple[date, str, str, str], Counters] = {}

    def add(self, sample: Sample, amount: int, actor: Actor) -> None:
        day = day_of(sample.time_unix_nano)
        attributes = sample.attributes
        terminal = (attributes.get("terminal.type") or UNKNOWN_TERMINAL)[:64]
        core = self.daily.setdefault((day, actor.type, actor.id, terminal), dict.fromkeys(DAILY_COUNTERS, 0))
        metric = sample.metric
        if metric in _CORE:
            core[_CORE[metric]] += amount
        elif metric == LINES_OF_CODE:
            kind = attributes.get("type")
            if kind in LINE_TYPES:
                core[f"lines_{kind}"] += amount
        elif metric in (TOKENS, COST):
            column = "cost_picodollars"
            if metric == TOKENS:
                kind = TOKEN_TYPES.get(attributes.get("type", ""))
                if kind is None:
                    return
                column = f"{kind}_tokens"
            model = (attributes.get("model") or UNKNOWN_MODEL)[:128]
            row = self.models.setdefault((day, actor.type, actor.id, model), dict.fromkeys(MODEL_COUNTERS, 0))
            row[column] += amount
        elif metric == EDIT_DECISIONS:
            decision = DECISIONS.get(attributes.get("decision", ""))
            if decision is None:
                return
            tool = tool_key(attributes.get("tool_name") or "unknown")[:64]
            row = self.tools.setdefault((day, actor.type, actor.id, tool), dict.fromkeys(TOOL_COUNTERS, 0))
            row[decision] += amount
