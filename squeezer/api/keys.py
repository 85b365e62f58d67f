"""API keys: shown once, stored as SHA-256, looked up by hash, compared in constant time; a revoked key
stays (its jobs and uploads keep their owner) and is refused from the moment it is revoked."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from squeezer.db import ApiKey

PREFIX = "sq_"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(session: Session, name: str) -> tuple[ApiKey, str]:
    """A new key row and the secret (the only time it exists in clear)."""
    secret = PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(name=name, prefix=secret[:10], key_hash=hash_key(secret))
    session.add(row)
    session.commit()
    return row, secret


def find_key(session: Session, secret: str) -> ApiKey | None:
    digest = hash_key(secret)
    row = session.scalars(select(ApiKey).where(ApiKey.prefix == secret[:10], ApiKey.revoked_at.is_(None))).first()
    if row is None or not hmac.compare_digest(row.key_hash, digest):
        return None
    return row


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)))


def keys_named(session: Session, name_or_id: str) -> list[ApiKey]:
    """The key with this id, else the keys with this name (names need not be unique)."""
    row = session.get(ApiKey, name_or_id)
    if row is not None:
        return [row]
    return list(session.scalars(select(ApiKey).where(ApiKey.name == name_or_id).order_by(ApiKey.created_at)))


def revoke_key(session: Session, row: ApiKey) -> bool:
    """Revoke the key; False when it already was. Every request after this commit is refused (401)."""
    if row.revoked_at is not None:
        return False
    row.revoked_at = datetime.now(UTC)
    session.commit()
    return True
