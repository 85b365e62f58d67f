"""Timestamps as read back from the database, made comparable: one rule for every layer above the rows.
Here, not in squeezer.db, because the SDK parses the same timestamps and must not import SQLAlchemy."""

from __future__ import annotations

from datetime import UTC, datetime


def as_utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes (stored as UTC), PostgreSQL aware ones in the session's zone."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
