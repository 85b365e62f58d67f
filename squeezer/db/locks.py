"""Check-then-write made atomic across API processes, on SQLite and on PostgreSQL.

A quota counts rows and then inserts one; two requests that count at the same time both pass. Here a
transaction first takes a lock, then counts and writes, and commits; a second transaction that asks for
the same lock waits until then (PostgreSQL's lock queue; SQLite's busy timeout, `session.py`) and counts
what the first one wrote.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from squeezer.db.models import ApiKey, Artifact


@contextlib.contextmanager
def atomic(session: Session) -> Iterator[Session]:
    """The block's writes and the locks it took end together: committed at its end, rolled back (and the
    locks released at once) when it raises."""
    try:
        yield session
    except BaseException:
        session.rollback()
        raise
    session.commit()


def lock_key(session: Session, key_id: str) -> None:
    """Until this transaction ends, no other one gets past this call for the same key. A no-op UPDATE of
    the key's row: PostgreSQL locks the row; SQLite takes its one write lock (the whole database's)."""
    session.execute(update(ApiKey).where(ApiKey.id == key_id).values(name=ApiKey.name))


def lock_content(session: Session, sha256: str) -> None:
    """Until this transaction ends, no other one gets past this call for the same bytes, of any key: the
    store's file of `sha256` is shared by every artifact row with those bytes. PostgreSQL: an advisory lock
    named by the hash (the rows may not exist yet); SQLite: its write lock, which any write takes."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            select(func.pg_advisory_xact_lock(int.from_bytes(bytes.fromhex(sha256[:16]), "big", signed=True)))
        )
    else:
        session.execute(update(Artifact).where(Artifact.sha256 == sha256).values(sha256=Artifact.sha256))
