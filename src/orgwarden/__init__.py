"""orgwarden: a self-hosted access plane for Claude.

The Admin API (`/v1/organizations/...`) is wire-compatible with Anthropic's and with the official
`anthropic` Python SDK; see README.md for what is served and how it is configured.
"""

__version__ = "0.1.0"
