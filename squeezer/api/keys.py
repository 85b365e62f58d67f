"""API keys: shown once, stored as SHA-256, looked up by hash, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets

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
