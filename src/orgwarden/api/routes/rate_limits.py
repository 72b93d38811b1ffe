"""Placeholder: the rate limits Admin API endpoints are being written (issue 4)."""

from __future__ import annotations

from orgwarden.api.routing import AdminRouter

routes = AdminRouter()
