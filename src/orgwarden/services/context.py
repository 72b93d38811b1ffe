"""What every use case is told about the call: who acts, and the request it came in on."""

from __future__ import annotations

from dataclasses import dataclass

from orgwarden.domain.policy import Actor


@dataclass(frozen=True, slots=True)
class Context:
    actor: Actor
    request_id: str | None = None
    source_ip: str | None = None

    @property
    def organization_id(self) -> str:
        return self.actor.organization_id
