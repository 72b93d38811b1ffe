"""Admin API routes, one module per resource: each parses, calls one service, renders."""
