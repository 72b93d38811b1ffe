"""The ``orgwarden`` command: Typer commands over the same services the API uses."""
