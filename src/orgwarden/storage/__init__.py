"""SQL storage: tables, repositories, the unit of work and Alembic migrations (SQLite and PostgreSQL)."""
