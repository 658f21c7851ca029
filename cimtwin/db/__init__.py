"""Database access: engines, bootstrap (database + extensions) and Alembic migrations."""
