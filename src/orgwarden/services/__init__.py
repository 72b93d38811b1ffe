"""Use cases, one module per aggregate, each over a unit of work. Services raise ``orgwarden.errors``."""
