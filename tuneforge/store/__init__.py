"""Persistence for the service: SQLAlchemy tables, engine/session setup and Alembic migrations.

SQLite under the data dir by default; any SQLAlchemy URL (PostgreSQL via psycopg) when given.
"""
