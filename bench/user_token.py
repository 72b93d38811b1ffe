#!/usr/bin/env python3
"""Print a user access token (``ow-at01-…``) for the benchmarks: the installation's first admin, in
its default workspace (an organization admin may call the API in every workspace).

Issued with ``UserTokenService`` on the database the settings name (``ORGWARDEN_*`` from the
environment, as ``orgwarden serve`` reads them), so that ``bench/ab.sh`` (``MODE=user``) can load
``/v1/messages`` with a user token instead of an API key.

    ORGWARDEN_DATA_DIR=/tmp/x .venv/bin/python bench/user_token.py
"""

from __future__ import annotations

import asyncio

from orgwarden.config import load_settings
from orgwarden.services.user_tokens import UserTokenService
from orgwarden.storage.engine import create_engine, session_factory
from orgwarden.storage.uow import UnitOfWorkFactory


async def main() -> str:
    settings = load_settings()
    engine = create_engine(settings)
    try:
        factory = UnitOfWorkFactory(session_factory(engine))
        async with factory() as uow:
            organization = await uow.organizations.first()
            assert organization is not None, "no organization: start orgwarden serve (or orgwarden init) first"
            admin = await uow.users.first_admin(organization.id)
            assert admin is not None
            workspace = await uow.workspaces.default(organization.id)
        issued = await UserTokenService(factory, 86_400, 86_400).issue(
            organization_id=organization.id, user_id=admin.id, workspace_id=workspace.id, client_id="bench",
            scope="user",
        )  # fmt: skip
        return issued.access_token
    finally:
        await engine.dispose()


if __name__ == "__main__":
    print(asyncio.run(main()))
