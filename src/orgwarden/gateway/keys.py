"""The data plane's key cache: no database round trip per request, revocations seen within a second.

Each worker keeps the answer for every key it has seen (by the secret's SHA-256, never the secret).
A background task polls ``cache_events`` every ``cache_poll_interval_ms`` (200 ms) and drops the
entries a change touches: a key, every key of a workspace, an admin key, a user's access token,
every token of a user (``services.user_access``). Sequence numbers are read
with a look-back window, because on PostgreSQL a transaction can commit a lower sequence number after
a higher one was already seen; handling an event twice is harmless.

Two guards keep a broken poller from serving stale grants forever: every entry also expires after
``MAX_AGE`` seconds, and an answer fetched while an invalidation ran is used once but not cached.
Unknown keys are remembered for ``NEGATIVE_TTL`` seconds, so a flood of made-up keys costs one look-up
each per second at most, and the map is bounded.

When the database cannot be reached, keys already seen keep being served (an entry past
``MAX_AGE`` is served stale rather than refused: nothing can have been revoked where nobody can
write), and a key never seen is refused with 503 ``storage unavailable`` and ``retry-after`` —
not 401, which would tell a client its valid key is wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from orgwarden.domain.clock import utcnow
from orgwarden.gateway.refusal import Refusal
from orgwarden.services.credentials import AdminKeyPresented, Answer, CredentialService, KeyGrant, UserTokenRefused
from orgwarden.storage.failures import STORAGE_UNAVAILABLE, describe, is_unavailable

log = logging.getLogger("orgwarden.gateway")

MAX_AGE = 60.0
NEGATIVE_TTL = 1.0
MAX_ENTRIES = 100_000
LOOK_BACK = 1000  # sequence numbers re-read each poll
PRUNE_EVERY = 60.0
KEEP_EVENTS = timedelta(hours=1)

RETRY_AFTER = b"5"  # seconds, on the 503 for a key that cannot be looked up

# Changes that leave every cached key as it was (a browser session is never a data-plane credential).
NOT_KEYS = frozenset({"rate_limits", "spend_limits", "user_session", "cc_policies", "user_groups"})


@dataclass(slots=True)
class _Entry:
    answer: Answer
    expires: float


class KeyCache:
    def __init__(self, credentials: CredentialService, poll_interval: float) -> None:
        self._credentials = credentials
        self._interval = poll_interval
        self._entries: dict[str, _Entry] = {}
        self._digest_of_key: dict[str, str] = {}
        self._digests_of_workspace: dict[str, set[str]] = {}
        self._digests_of_user: dict[str, set[str]] = {}  # user access tokens, by their user
        self._generation = 0
        self._high = 0
        self._seen: set[int] = set()
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.listeners: list[Callable[[str, str], None]] = []  # others that cache what changes announce

    async def lookup(self, secret: str) -> Answer:
        digest = hashlib.sha256(secret.encode()).hexdigest()
        now = time.monotonic()
        entry = self._entries.get(digest)
        if entry is not None and entry.expires > now:
            return entry.answer
        generation = self._generation
        try:
            answer = await self._credentials.resolve(secret)
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            if entry is not None and entry.answer is not None:
                return entry.answer  # stale, but the best answer there is while nobody can change it
            log.warning("key cache: cannot look a key up (%s)", describe(exc))
            raise Refusal(503, "api_error", STORAGE_UNAVAILABLE, headers=[(b"retry-after", RETRY_AFTER)]) from None
        if generation == self._generation:
            self._store(digest, answer, now)
        return answer

    def _store(self, digest: str, answer: Answer, now: float) -> None:
        if len(self._entries) >= MAX_ENTRIES:
            self._clear()
        ttl = NEGATIVE_TTL if answer is None else MAX_AGE
        self._entries[digest] = _Entry(answer, now + ttl)
        if isinstance(answer, KeyGrant):
            if answer.user_id is not None and answer.token_id is not None:  # a user's access token
                self._digest_of_key[answer.token_id] = digest
                self._digests_of_user.setdefault(answer.user_id, set()).add(digest)
            else:
                self._digest_of_key[answer.key_id] = digest
            self._digests_of_workspace.setdefault(answer.workspace_id, set()).add(digest)
        elif isinstance(answer, AdminKeyPresented):
            self._digest_of_key[answer.key_id] = digest
        elif isinstance(answer, UserTokenRefused):
            self._digest_of_key[answer.token_id] = digest
            self._digests_of_user.setdefault(answer.user_id, set()).add(digest)
            if answer.workspace_id is not None:
                self._digests_of_workspace.setdefault(answer.workspace_id, set()).add(digest)

    def _clear(self) -> None:
        self._entries.clear()
        self._digest_of_key.clear()
        self._digests_of_workspace.clear()
        self._digests_of_user.clear()

    def invalidate(self, entity_type: str, entity_id: str) -> None:
        for listener in self.listeners:
            listener(entity_type, entity_id)
        if entity_type in NOT_KEYS:
            return
        self._generation += 1
        if entity_type == "workspace":
            for digest in self._digests_of_workspace.pop(entity_id, set()):
                self._entries.pop(digest, None)
        elif entity_type in ("api_key", "admin_api_key", "user_token"):
            if entity_id in self._digest_of_key:
                self._entries.pop(self._digest_of_key.pop(entity_id), None)
        elif entity_type == "user":  # removed, deactivated, role or memberships changed: their tokens
            for digest in self._digests_of_user.pop(entity_id, set()):
                self._entries.pop(digest, None)
        else:
            self._clear()

    async def poll_once(self) -> None:
        events = await self._credentials.changes_since(max(0, self._high - LOOK_BACK))
        for event in events:
            if event.seq in self._seen:
                continue
            self._seen.add(event.seq)
            self.invalidate(event.entity_type, event.entity_id)
            self._high = max(self._high, event.seq)
        floor = self._high - LOOK_BACK
        self._seen = {seq for seq in self._seen if seq > floor}

    async def start(self) -> None:
        self._high = await self._credentials.last_change()
        self._task = asyncio.create_task(self._run(), name="orgwarden-key-cache")

    async def stop(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109 (a deadline for the task, not a call)
        """Stop polling; a poll under way finishes first (cancelling it mid-query would leave the
        database driver to clean up a half-done transaction during shutdown), unless it takes
        longer than ``timeout`` (a frozen database): then it is cancelled."""
        self._stopping.set()
        if self._task is not None:
            done, _ = await asyncio.wait({self._task}, timeout=timeout)
            if not done:
                self._task.cancel()
                await asyncio.wait({self._task}, timeout=1.0)

    async def _run(self) -> None:
        last_prune = time.monotonic()
        failing = False
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._interval)
            if self._stopping.is_set():
                return
            try:
                await self.poll_once()
                if time.monotonic() - last_prune > PRUNE_EVERY:
                    last_prune = time.monotonic()
                    await self._credentials.prune_changes(utcnow() - KEEP_EVENTS)
                if failing:
                    log.warning("key cache: change polling recovered")
                    failing = False
            except Exception as exc:  # keep polling; entries still expire after MAX_AGE
                if not failing:
                    log.error("key cache: cannot poll for changes (%s); cached keys expire within %ss", exc, MAX_AGE)
                failing = True
