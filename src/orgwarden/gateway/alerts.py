"""Spend alerts: once per spend limit, period and threshold, across every worker and instance.

After a request's cost is settled, the gateway calls ``observe()`` for each spend rule the request
was checked against, with the counter's value after settling. A threshold (a percentage of the
limit's amount) is crossed when ``spent >= amount * threshold / 100``, compared exactly in integer
picodollars. A request refused by a limit calls ``observe_refusal()``: the limit is reached, so its
100 % threshold fires even though the spend is (always, in practice) short of the amount. Both run
on the request path, so they do no I/O: a set of the alerts known to have fired makes the steady
state a few integer comparisons and set look-ups, and a crossing only queues a job.

One background task per worker runs the jobs. A job records the alert in one transaction: a
``spend_alerts`` row, whose primary key (limit, period start, threshold) is what makes "once per
period" hold when several workers or instances cross together (``INSERT ... ON CONFLICT DO
NOTHING``: the one that inserts the row fires, the others find it there and do nothing), and an
audit event. Only once that has committed is the alert logged and handed to the webhook sender, so a
rolled-back alert is never announced. A database error is logged on one line and the job retried
with backoff; the alert is marked fired only after its transaction committed (or found the row),
so a failed job is never lost. ``stop()`` runs what is still queued (with a few attempts per job
if the database is failing); an alert not recorded then fires after the restart, because the row
is missing and the counter is still above the threshold.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_DOWN, Decimal
from typing import Any

from sqlalchemy import Insert, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from orgwarden import ids
from orgwarden.domain.clock import rfc3339, utcnow
from orgwarden.domain.limits import PERIODS, PICODOLLARS_PER_CENT, SpendRule, period_window
from orgwarden.gateway.webhooks import WebhookSender
from orgwarden.storage.tables import SpendAlert
from orgwarden.storage.uow import UnitOfWork, UnitOfWorkFactory

log = logging.getLogger("orgwarden.gateway")

EVENT_TYPE = "spend_limit.threshold_reached"
AUDIT_ACTION = "spend_limit.alert"
ACTOR_ID = "orgwarden"
QUEUE_SIZE = 10_000
WALL_THRESHOLD = 100  # the threshold a refusal fires (``observe_refusal``)
FIRST_RETRY = 0.5
MAX_RETRY = 30.0
SHUTDOWN_ATTEMPTS = 3
PRUNE_EVERY = 3600.0
READINGS_SIZE = 4096  # rules whose thresholds are kept ready; the cache starts over beyond that
KEEP_FIRED = timedelta(days=32)  # longer than any period, so a current period's alerts stay known

FiredKey = tuple[str, datetime, int]  # spend limit id, period start, threshold percent
_Reading = tuple[SpendRule, tuple[int, ...], int, int | float]  # see ``SpendAlerts._reading``
OrganizationId = str | Callable[[], str | None]


@dataclass(frozen=True, slots=True)
class _Job:
    rule: SpendRule
    threshold: int
    spent_picodollars: int
    period_start: datetime
    period_end: datetime
    observed_at: datetime

    @property
    def key(self) -> FiredKey:
        return (self.rule.id, self.period_start, self.threshold)


def spent_cents(picodollars: int) -> str:
    """Picodollars as cents with at most three decimals, rounded down (``"8000.5"``, ``"8001"``)."""
    cents = (Decimal(picodollars) / PICODOLLARS_PER_CENT).quantize(Decimal("0.001"), rounding=ROUND_DOWN)
    return format(cents.normalize(), "f")


def _dollars(cents: Decimal | int) -> str:
    return f"${Decimal(cents) / 100:,.2f}"


def _one_line(exc: BaseException) -> str:
    """The first line of an error (SQLAlchemy appends the statement and a link on further lines)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300]}" if text else type(exc).__name__


class SpendAlerts:
    """Fires spend alerts; ``observe()`` from the event loop, ``start()`` / ``stop()`` around use.

    ``organization_id`` is the installation's organization (or a callable returning it, as the
    gateway holds it), used for limits scoped to a workspace or an API key; an organization-scoped
    limit names its organization itself."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        webhooks: WebhookSender | None,
        organization_id: OrganizationId,
        *,
        queue_size: int = QUEUE_SIZE,
    ) -> None:
        self._uow = uow
        self._webhooks = webhooks
        self._organization_id = organization_id
        self._fired: set[FiredKey] = set()
        self._readings: dict[str, _Reading] = {}
        self._queued: set[FiredKey] = set()
        self._queue: deque[_Job] = deque()
        self._queue_size = queue_size
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def observe(self, rule: SpendRule, spent_picodollars: int, now: datetime) -> None:
        """Queue an alert for every threshold of ``rule`` that ``spent_picodollars`` (the period's
        counter after this request) has reached and that has not fired yet. No I/O."""
        if spent_picodollars <= 0:
            return
        reading = self._readings.get(rule.id)
        if reading is None or reading[0] is not rule:
            reading = self._reading(rule)
        _, thresholds, amount, lowest = reading
        if spent_picodollars * 100 < lowest:
            return  # below every threshold: most calls end here
        period: tuple[datetime, datetime] | None = None
        for threshold in thresholds:
            if spent_picodollars * 100 < amount * threshold:
                break
            if period is None:
                period = period_window(rule.period, now)
            if not self._enqueue(rule, threshold, spent_picodollars, period, now):
                return

    def observe_refusal(self, rule: SpendRule, spent_picodollars: int, now: datetime) -> None:
        """A request refused by ``rule`` (its worst case did not fit): its scope is at the wall, so its
        100 % threshold fires, once per period as any, with ``spent_picodollars`` (the counter,
        short of the amount by less than that worst case). Spend reaches the amount itself only when
        a request costs its whole worst case, which in practice never happens: without this the 100 %
        alert would never fire. Other thresholds keep needing the spend. No I/O."""
        if WALL_THRESHOLD in rule.thresholds:
            self._enqueue(rule, WALL_THRESHOLD, spent_picodollars, period_window(rule.period, now), now)

    def _enqueue(
        self, rule: SpendRule, threshold: int, spent: int, period: tuple[datetime, datetime], now: datetime
    ) -> bool:
        """Queue the alert unless it fired or is queued already; ``False`` when the queue is full."""
        key: FiredKey = (rule.id, period[0], threshold)
        if key in self._fired or key in self._queued:
            return True
        if len(self._queue) >= self._queue_size:
            log.error("spend alerts: queue full; the %d%% alert of %s waits for a later request", threshold, rule.id)
            return False
        self._queue.append(_Job(rule, threshold, spent, period[0], period[1], now))
        self._queued.add(key)
        self._wake.set()
        return True

    def _reading(self, rule: SpendRule) -> _Reading:
        """``rule``'s thresholds in order, its amount in picodollars, and the first crossing point
        (times 100, as ``observe`` compares); kept by rule id, for as long as that rule object is the
        one in force (a reload of the limits makes new ones)."""
        thresholds = tuple(sorted(rule.thresholds))
        amount = rule.amount_picodollars
        # No thresholds: nothing to cross. ``spent * 100`` is an int, so a float infinity is above any.
        lowest = amount * thresholds[0] if thresholds else math.inf
        if len(self._readings) >= READINGS_SIZE:
            self._readings.clear()
        reading = self._readings[rule.id] = (rule, thresholds, amount, lowest)
        return reading

    @property
    def pending(self) -> int:
        """Alerts queued or being recorded (a failing database keeps them here)."""
        return len(self._queued)

    @property
    def fired(self) -> frozenset[FiredKey]:
        """The alerts known to have fired (here or, since start, anywhere): ``(limit id, period start, %)``."""
        return frozenset(self._fired)

    async def start(self) -> None:
        """Load the alerts already fired in the current periods (so a restart costs no database work
        per crossing), then start the background task. A failed load is logged: the primary key
        still keeps every alert to once per period."""
        now = utcnow()
        since = min(period_window(period, now)[0] for period in PERIODS)
        try:
            async with self._uow() as uow:
                rows = await _session(uow).execute(
                    select(SpendAlert.spend_limit_id, SpendAlert.period_start, SpendAlert.threshold).where(
                        SpendAlert.period_start >= since
                    )
                )
                self._fired.update((limit_id, start, threshold) for limit_id, start, threshold in rows.all())
        except Exception as exc:
            log.error("spend alerts: cannot load the alerts already fired (%s)", _one_line(exc))
        self._task = asyncio.create_task(self._run(), name="orgwarden-spend-alerts")

    async def stop(self) -> None:
        """Finish the job under way, then run every queued one (a few attempts each)."""
        self._stopping.set()
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None
        while self._queue:
            await self._process(self._queue.popleft())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        last_prune = loop.time()
        while not self._stopping.is_set():
            if loop.time() - last_prune > PRUNE_EVERY:
                last_prune = loop.time()
                self._prune(utcnow())
            if not self._queue:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), PRUNE_EVERY)
                self._wake.clear()
                continue
            await self._process(self._queue.popleft())

    def _prune(self, now: datetime) -> None:
        """Forget alerts of periods long over, so the set does not grow for the life of the process."""
        horizon = now - KEEP_FIRED
        self._fired = {key for key in self._fired if key[1] >= horizon}

    async def _process(self, job: _Job) -> None:
        """Record ``job`` (retrying a failing database with backoff), then announce it if it was new."""
        delay, attempt = FIRST_RETRY, 0
        while True:
            attempt += 1
            try:
                details = await self._record(job)
                break
            except Exception as exc:
                if self._stopping.is_set() and attempt >= SHUTDOWN_ATTEMPTS:
                    log.error(
                        "spend alerts: stopping without recording the %d%% alert of spend limit %s (%s);"
                        " it fires again after the restart",
                        job.threshold,
                        job.rule.id,
                        _one_line(exc),
                    )
                    self._queued.discard(job.key)
                    return
                log.error(
                    "spend alerts: cannot record the %d%% alert of spend limit %s (%s); retrying in %.1fs",
                    job.threshold,
                    job.rule.id,
                    _one_line(exc),
                    delay,
                )
                if self._stopping.is_set():
                    await asyncio.sleep(delay)
                else:  # a stop ends the wait: the shutdown attempts follow at once
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), delay)
                delay = min(delay * 2, MAX_RETRY)
        self._fired.add(job.key)
        self._queued.discard(job.key)
        if details is None:
            return  # another worker or instance recorded (and announces) it
        rule = job.rule
        log.warning(
            "spend alert: %s %s reached %d%% of its %s limit (%s): %s spent since %s (spend limit %s)",
            rule.scope_type.replace("_", " "),
            rule.scope_id,
            job.threshold,
            rule.period,
            _dollars(rule.amount_cents),
            _dollars(Decimal(details["spent_cents"])),
            details["period_start"],
            rule.id,
        )
        if self._webhooks is not None:
            self._webhooks.send(EVENT_TYPE, details)

    def _organization(self, rule: SpendRule) -> str:
        if rule.scope_type == "organization":
            return rule.scope_id
        organization_id = self._organization_id() if callable(self._organization_id) else self._organization_id
        if organization_id is None:
            raise RuntimeError("the installation has no organization yet")
        return organization_id

    async def _record(self, job: _Job) -> dict[str, Any] | None:
        """Insert the alert and its audit event in one transaction; ``None`` when the alert row was
        already there (fired elsewhere), in which case nothing is written."""
        rule = job.rule
        organization_id = self._organization(rule)
        now = utcnow()
        details: dict[str, Any] = {
            "spend_limit_id": rule.id,
            "organization_id": organization_id,
            "threshold_percent": job.threshold,
            "amount_cents": rule.amount_cents,
            "spent_cents": spent_cents(job.spent_picodollars),
            "period": rule.period,
            "period_start": rfc3339(job.period_start),
            "period_end": rfc3339(job.period_end),
            "scope": {"type": rule.scope_type, "id": rule.scope_id},
        }
        async with self._uow() as uow:
            session = _session(uow)
            values = {
                "spend_limit_id": rule.id,
                "period_start": job.period_start,
                "threshold": job.threshold,
                "organization_id": organization_id,
                "amount_cents": rule.amount_cents,
                "spent_picodollars": job.spent_picodollars,
                "fired_at": now,
            }
            try:
                inserted = (await session.execute(_insert_if_absent(session, values))).first() is not None
            except IntegrityError:  # a database without ON CONFLICT, or a race it reports anyway
                inserted = False
            if not inserted:
                return None  # leaving the block rolls back
            audit_details = {k: v for k, v in details.items() if k not in ("spend_limit_id", "organization_id")}
            await uow.audit.insert_many(
                [
                    {
                        "id": ids.new_id(ids.AUDIT_EVENT),
                        "organization_id": organization_id,
                        "occurred_at": now,
                        "actor_type": "system",
                        "actor_id": ACTOR_ID,
                        "actor_user_id": None,
                        "action": AUDIT_ACTION,
                        "target_type": "spend_limit",
                        "target_id": rule.id,
                        "workspace_id": rule.scope_id if rule.scope_type == "workspace" else None,
                        "request_id": None,
                        "source_ip": None,
                        "outcome": "success",
                        "details": audit_details,
                    }
                ]
            )
            await uow.commit()
        return details


def _session(uow: UnitOfWork) -> AsyncSession:
    """The unit of work's session (it has no spend-alert repository yet; every repository holds it)."""
    return uow.audit.session


def _insert_if_absent(session: AsyncSession, values: dict[str, Any]) -> Insert:
    """``INSERT ... ON CONFLICT DO NOTHING RETURNING``: a row back means this transaction fired it.

    On PostgreSQL a concurrent insert of the same key waits for the other transaction and then
    does nothing (or inserts, if that one rolled back); SQLite serializes writers anyway."""
    dialect = session.get_bind().dialect.name
    stmt: Insert
    if dialect == "postgresql":
        stmt = postgresql.insert(SpendAlert).values(values).on_conflict_do_nothing()
    elif dialect == "sqlite":
        stmt = sqlite.insert(SpendAlert).values(values).on_conflict_do_nothing()
    else:  # pragma: no cover - the two supported databases are above; IntegrityError covers others
        stmt = insert(SpendAlert).values(values)
    return stmt.returning(SpendAlert.threshold)
