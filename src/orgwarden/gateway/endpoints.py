r"""Every public data-plane path of the API in one table, and the classifier the gateway routes by.

Each row is a method and a path pattern (``{name}`` a path parameter) with the endpoint's name,
its kind and its rate-limit group, if one applies:

* ``messages`` / ``count_tokens`` / ``models``: the Messages code path of ``pipeline.Gateway``;
* ``batches``: Message Batches, handled by ``Gateway.batches`` (a ``BatchHandler``);
* ``files``: the Files API (``gateway/files.py``: scoped to the key's workspace);
* ``forward``: governed forwarding (key check, tenant restriction, workspace header, audit of
  state-changing calls, the workspace's upstream key), the body streamed both ways.

The table lists what the official SDK (2.17) calls, less the paths orgwarden serves itself
(``/v1/organizations/...``, ``/v1/tunnels...``, ``/v1/invites/accept``, the telemetry receiver's
``/v1/metrics`` and ``/v1/logs``; ``ADMIN_PREFIXES``). Any other ``/v1/...`` path is the
gateway's too, and refused there with a 404 naming it: an unknown path is never forwarded blindly.

Classifying costs a dict hit for the fixed paths (``/v1/messages`` first of all); only a path with
parameters is matched segment by segment, against the few patterns of its method, segment count
and resource (its third segment). A parameter is one segment as the upstream will read it: no escaped ``/``
or ``\``, never ``.`` or ``..`` (``_parameter``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol, cast, get_args
from urllib.parse import unquote

if TYPE_CHECKING:
    from orgwarden.gateway.exchange import Exchange
    from orgwarden.gateway.pipeline import Call
    from orgwarden.services.credentials import KeyGrant

Kind = Literal["messages", "count_tokens", "models", "batches", "files", "forward"]
_KINDS = frozenset(get_args(Kind))

# /v1 paths the admin app (or the telemetry receiver) answers: never the gateway's.
ADMIN_PREFIXES = ("/v1/organizations", "/v1/tunnels", "/v1/invites/", "/v1/metrics", "/v1/logs")
MAX_PATH_IN_MESSAGE = 200  # characters of an unknown path named in a 404
# A path parameter: RFC 3986's path characters and escapes (``%2F``, ``%5C`` and ``.``/``..`` are
# refused by ``_parameter``: they would make the upstream see another path than the one checked).
_PCHARS = re.compile(r"(?:[A-Za-z0-9_.~!$&'()*+,;=:@-]|%[0-9A-Fa-f]{2})+")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One data-plane endpoint: ``name`` (the usage records' and access log's), ``kind`` (who
    handles it), ``group`` (the rate-limit group its requests are counted in, if any) and
    ``params`` (its path parameters, filled in by ``classify``)."""

    name: str
    kind: Kind
    group: str | None = None
    params: tuple[str, ...] = ()


class BatchHandler(Protocol):
    """Message Batches (``gateway/batches.py``). Called after the pipeline has classified the
    request, parsed the tenant header, authenticated the key, applied the tenant restriction and
    checked ``anthropic-workspace-id``; the handler reads the body, admits limits, forwards,
    relays and meters itself. Refusals are raised as ``Refusal``; the pipeline renders them."""

    async def handle(self, call: Call, exchange: Exchange, grant: KeyGrant) -> None: ...


# One row per endpoint: method, path pattern, kind, rate-limit group ("-": none), and a name for the
# usage records and the access log (the Messages kinds keep the names they always had; a row without
# one is named by its method and pattern). "#" starts a note.
_TABLE = """
POST   /v1/messages                                                                   messages     -     messages
POST   /v1/messages/count_tokens                                                      count_tokens -     count_tokens
GET    /v1/models                                                                     models       -     models
GET    /v1/models/{model_id}                                                          models       -     model
# Message Batches
POST   /v1/messages/batches                                                           batches      batch create
GET    /v1/messages/batches                                                           batches      batch list
GET    /v1/messages/batches/{message_batch_id}                                        batches      batch retrieve
DELETE /v1/messages/batches/{message_batch_id}                                        batches      batch delete
POST   /v1/messages/batches/{message_batch_id}/cancel                                 batches      batch cancel
GET    /v1/messages/batches/{message_batch_id}/results                                batches      batch results
# Files
POST   /v1/files                                                                      files        files upload
GET    /v1/files                                                                      files        files list
GET    /v1/files/{file_id}                                                            files        files retrieve
GET    /v1/files/{file_id}/content                                                    files        files download
DELETE /v1/files/{file_id}                                                            files        files delete
# Skills
POST   /v1/skills                                                                     forward      skills
GET    /v1/skills                                                                     forward      skills
GET    /v1/skills/{skill_id}                                                          forward      skills
DELETE /v1/skills/{skill_id}                                                          forward      skills
POST   /v1/skills/{skill_id}/versions                                                 forward      skills
GET    /v1/skills/{skill_id}/versions                                                 forward      skills
GET    /v1/skills/{skill_id}/versions/{version}                                       forward      skills
DELETE /v1/skills/{skill_id}/versions/{version}                                       forward      skills
GET    /v1/skills/{skill_id}/versions/{version}/content                               forward      skills
# Agents
POST   /v1/agents                                                                     forward      -
GET    /v1/agents                                                                     forward      -
GET    /v1/agents/{agent_id}                                                          forward      -
POST   /v1/agents/{agent_id}                                                          forward      -
POST   /v1/agents/{agent_id}/archive                                                  forward      -
GET    /v1/agents/{agent_id}/versions                                                 forward      -
# Compliance review
GET    /v1/compliance/review/cases                                                    forward      -
GET    /v1/compliance/review/cases/{case_id}                                          forward      -
POST   /v1/compliance/review/cases/{case_id}/respond                                  forward      -
GET    /v1/compliance/review/items/{item_id}                                          forward      -
GET    /v1/compliance/review/notices                                                  forward      -
# Deployments and their runs
POST   /v1/deployments                                                                forward      -
GET    /v1/deployments                                                                forward      -
GET    /v1/deployments/{deployment_id}                                                forward      -
POST   /v1/deployments/{deployment_id}                                                forward      -
POST   /v1/deployments/{deployment_id}/archive                                        forward      -
POST   /v1/deployments/{deployment_id}/pause                                          forward      -
POST   /v1/deployments/{deployment_id}/unpause                                        forward      -
POST   /v1/deployments/{deployment_id}/run                                            forward      -
GET    /v1/deployment_runs                                                            forward      -
GET    /v1/deployment_runs/{deployment_run_id}                                        forward      -
# Dreams
POST   /v1/dreams                                                                     forward      -
GET    /v1/dreams                                                                     forward      -
GET    /v1/dreams/{dream_id}                                                          forward      -
POST   /v1/dreams/{dream_id}/archive                                                  forward      -
POST   /v1/dreams/{dream_id}/cancel                                                   forward      -
# Environments and their work
POST   /v1/environments                                                               forward      -
GET    /v1/environments                                                               forward      -
GET    /v1/environments/{environment_id}                                              forward      -
POST   /v1/environments/{environment_id}                                              forward      -
DELETE /v1/environments/{environment_id}                                              forward      -
POST   /v1/environments/{environment_id}/archive                                      forward      -
GET    /v1/environments/{environment_id}/work                                         forward      -
GET    /v1/environments/{environment_id}/work/poll                                    forward      -
GET    /v1/environments/{environment_id}/work/stats                                   forward      -
GET    /v1/environments/{environment_id}/work/{work_id}                               forward      -
POST   /v1/environments/{environment_id}/work/{work_id}                               forward      -
POST   /v1/environments/{environment_id}/work/{work_id}/ack                           forward      -
POST   /v1/environments/{environment_id}/work/{work_id}/heartbeat                     forward      -
POST   /v1/environments/{environment_id}/work/{work_id}/stop                          forward      -
# Memory stores
POST   /v1/memory_stores                                                              forward      -
GET    /v1/memory_stores                                                              forward      -
GET    /v1/memory_stores/{memory_store_id}                                            forward      -
POST   /v1/memory_stores/{memory_store_id}                                            forward      -
DELETE /v1/memory_stores/{memory_store_id}                                            forward      -
POST   /v1/memory_stores/{memory_store_id}/archive                                    forward      -
POST   /v1/memory_stores/{memory_store_id}/memories                                   forward      -
GET    /v1/memory_stores/{memory_store_id}/memories                                   forward      -
GET    /v1/memory_stores/{memory_store_id}/memories/{memory_id}                       forward      -
POST   /v1/memory_stores/{memory_store_id}/memories/{memory_id}                       forward      -
DELETE /v1/memory_stores/{memory_store_id}/memories/{memory_id}                       forward      -
GET    /v1/memory_stores/{memory_store_id}/memory_versions                            forward      -
GET    /v1/memory_stores/{memory_store_id}/memory_versions/{memory_version_id}        forward      -
POST   /v1/memory_stores/{memory_store_id}/memory_versions/{memory_version_id}/redact forward      -
# Sessions
POST   /v1/sessions                                                                   forward      -
GET    /v1/sessions                                                                   forward      -
GET    /v1/sessions/{session_id}                                                      forward      -
POST   /v1/sessions/{session_id}                                                      forward      -
DELETE /v1/sessions/{session_id}                                                      forward      -
POST   /v1/sessions/{session_id}/archive                                              forward      -
GET    /v1/sessions/{session_id}/events                                               forward      -
POST   /v1/sessions/{session_id}/events                                               forward      -
GET    /v1/sessions/{session_id}/events/stream                                        forward      -
GET    /v1/sessions/{session_id}/resources                                            forward      -
POST   /v1/sessions/{session_id}/resources                                            forward      -
GET    /v1/sessions/{session_id}/resources/{resource_id}                              forward      -
POST   /v1/sessions/{session_id}/resources/{resource_id}                              forward      -
DELETE /v1/sessions/{session_id}/resources/{resource_id}                              forward      -
GET    /v1/sessions/{session_id}/threads                                              forward      -
GET    /v1/sessions/{session_id}/threads/{thread_id}                                  forward      -
POST   /v1/sessions/{session_id}/threads/{thread_id}/archive                          forward      -
GET    /v1/sessions/{session_id}/threads/{thread_id}/events                           forward      -
GET    /v1/sessions/{session_id}/threads/{thread_id}/stream                           forward      -
# User profiles
POST   /v1/user_profiles                                                              forward      -
GET    /v1/user_profiles                                                              forward      -
GET    /v1/user_profiles/{user_profile_id}                                            forward      -
POST   /v1/user_profiles/{user_profile_id}                                            forward      -
DELETE /v1/user_profiles/{user_profile_id}                                            forward      -
POST   /v1/user_profiles/{user_profile_id}/action_urls                                forward      -
POST   /v1/user_profiles/{user_profile_id}/enrollment_url                             forward      -
GET    /v1/user_profiles/{user_profile_id}/providers/google/data_controls             forward      -
POST   /v1/user_profiles/{user_profile_id}/providers/google/data_controls             forward      -
# Vaults and their credentials
POST   /v1/vaults                                                                     forward      -
GET    /v1/vaults                                                                     forward      -
GET    /v1/vaults/{vault_id}                                                          forward      -
POST   /v1/vaults/{vault_id}                                                          forward      -
DELETE /v1/vaults/{vault_id}                                                          forward      -
POST   /v1/vaults/{vault_id}/archive                                                  forward      -
POST   /v1/vaults/{vault_id}/credentials                                              forward      -
GET    /v1/vaults/{vault_id}/credentials                                              forward      -
GET    /v1/vaults/{vault_id}/credentials/{credential_id}                              forward      -
POST   /v1/vaults/{vault_id}/credentials/{credential_id}                              forward      -
DELETE /v1/vaults/{vault_id}/credentials/{credential_id}                              forward      -
POST   /v1/vaults/{vault_id}/credentials/{credential_id}/archive                      forward      -
POST   /v1/vaults/{vault_id}/credentials/{credential_id}/mcp_oauth_validate           forward      -
"""

# A pattern's segments: a literal, or None for a parameter.
_Pattern = tuple[tuple[str | None, ...], Endpoint]
_EXACT: dict[tuple[str, str], Endpoint] = {}
_PATTERNS: dict[tuple[str, int, str], list[_Pattern]] = {}


def _build() -> None:
    for line in _TABLE.splitlines():
        if not line or line.startswith("#"):
            continue
        method, pattern, kind, group, *named = line.split()
        if not named:
            name = f"{method} {pattern}"
        elif kind in ("messages", "count_tokens", "models"):
            name = named[0]
        else:
            name = f"{kind}.{named[0]}"
        if kind not in _KINDS:
            raise ValueError(f"unknown kind {kind!r} of {method} {pattern}")
        endpoint = Endpoint(name, cast(Kind, kind), None if group == "-" else group)
        if "{" not in pattern:
            if (method, pattern) in _EXACT:
                raise ValueError(f"duplicate endpoint {method} {pattern}")
            _EXACT[(method, pattern)] = endpoint
            continue
        parts = pattern.split("/")
        segments = tuple(None if part.startswith("{") else part for part in parts)
        _PATTERNS.setdefault((method, len(parts), parts[2]), []).append((segments, endpoint))


_build()


def classify(method: str, path: str, raw: str | None = None) -> Endpoint | None:
    """The endpoint of a data-plane request, with its path parameters, or ``None`` when the API
    has no such endpoint (the caller answers 404). ``path`` is percent-decoded, ``raw`` the path as
    on the wire when it has escapes: a fixed path matches decoded (``/v1/m%65ssages`` is Messages,
    as the upstream reads it), parameters are taken from the path still escaped (an escaped ``/``
    cannot move a parameter into another segment)."""
    endpoint = _EXACT.get((method, path))
    if endpoint is not None:
        return endpoint
    parts = (raw or path).split("/")
    if len(parts) < 4:
        return None
    for segments, candidate in _PATTERNS.get((method, len(parts), parts[2]), ()):
        params: list[str] = []
        for want, got in zip(segments, parts, strict=True):
            if want is None:
                if not _parameter(got):
                    break
                params.append(got)
            elif want != got:
                break
        else:
            return Endpoint(candidate.name, candidate.kind, candidate.group, tuple(params))
    return None


def _parameter(segment: str) -> bool:
    """Whether a path segment can be a parameter: an id, as the upstream will read it."""
    if _PCHARS.fullmatch(segment) is None:
        return False
    if "%" in segment:
        lowered = segment.lower()
        if "%2f" in lowered or "%5c" in lowered:
            return False
        segment = unquote(segment)
    return segment not in (".", "..")


def is_data_plane(path: str) -> bool:
    """Whether the gateway answers a path (for any method): the fixed data-plane paths, and every
    other ``/v1/...`` path that orgwarden does not serve itself (an unknown one is refused there)."""
    return path.startswith("/v1/") and not path.startswith(ADMIN_PREFIXES)


def unknown(method: str, path: str) -> str:
    """The 404's message for a path the API does not have (the path bounded)."""
    shown = path if len(path) <= MAX_PATH_IN_MESSAGE else path[:MAX_PATH_IN_MESSAGE] + "..."
    return f"no such endpoint: {method[:16]} {shown}"
