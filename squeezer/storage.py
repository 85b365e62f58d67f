"""Artifact store: files addressed by SHA-256, written atomically, never outside the store root.

Local directory by default. Names from users never become paths: a stored file's path is derived
from its hash only.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import anyio

from squeezer.errors import SqueezerError

CHUNK_BYTES = 1024 * 1024


class StorageError(SqueezerError):
    """The store could not write or find a file."""


class UploadTooLarge(StorageError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"upload exceeds the limit of {limit} bytes")
        self.limit = limit


@dataclass(frozen=True)
class StoredFile:
    sha256: str
    size_bytes: int
    key: str  # relative path inside the store


@dataclass(frozen=True)
class StagedFile:
    """Received bytes under a temp name in the store's root, not yet at their key: checked there, a refused
    upload never touches a stored file, and `publish` puts the file back if it was deleted meanwhile."""

    sha256: str
    size_bytes: int
    path: Path


def _publish_once(tmp: str | os.PathLike[str], target: Path) -> None:
    """Move `tmp` to `target` unless a file is there already: that one has the same bytes (its name is
    their hash) and must keep its inode, since a confined job process may read it by a Landlock rule
    bound to that inode. A link fails instead of replacing, so two concurrent uploads cannot swap it."""
    try:
        os.link(tmp, target)
    except FileExistsError:
        pass  # the same bytes are stored; the temp file is dropped by the caller
    except OSError:  # a file system without hard links
        if not target.exists():
            os.replace(tmp, target)


class LocalStore:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        """The file of `key`; refuses anything that would leave the store."""
        path = (self.root / key).resolve()
        if self.root not in path.parents:
            raise StorageError(f"invalid storage key {key!r}")
        return path

    @staticmethod
    def key_for(sha256: str) -> str:
        return f"{sha256[:2]}/{sha256}"

    def delete(self, key: str) -> None:
        """Remove the file of `key` (the bytes of artifacts that no row names any more)."""
        self.path(key).unlink(missing_ok=True)

    def delete_tree(self, prefix: str) -> None:
        """Remove every file under `prefix` (a job's exports when the job is deleted)."""
        target = self.path(prefix)
        if target.is_dir():
            shutil.rmtree(target)

    def save_file(self, key: str, source: str | os.PathLike[str]) -> StoredFile:
        """Copy a regular file to `key` atomically (temp file, then rename), hashing it on the way.

        `source` is opened without following a link: a job process writes the files copied from
        its folder, and must not be able to point one at the database.
        """
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        digest, size = hashlib.sha256(), 0
        tmp = target.with_name(f".{target.name}.tmp")
        try:
            with open(os.open(source, os.O_RDONLY | os.O_NOFOLLOW), "rb") as src:
                if not stat.S_ISREG(os.fstat(src.fileno()).st_mode):
                    raise StorageError(f"{source} is not a regular file")
                with tmp.open("wb") as out:
                    while chunk := src.read(CHUNK_BYTES):
                        digest.update(chunk)
                        size += len(chunk)
                        out.write(chunk)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return StoredFile(digest.hexdigest(), size, key)

    async def stage_stream(self, chunks: AsyncIterator[bytes], limit: int) -> StagedFile:
        """Hash and write while reading; stop as soon as `limit` is passed (nothing is kept then). The caller
        `publish`es or `discard`s what it gets."""
        digest = hashlib.sha256()
        size = 0
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as out:

                def append(chunk: bytes) -> None:
                    digest.update(chunk)
                    out.write(chunk)

                async for chunk in chunks:
                    size += len(chunk)
                    if size > limit:
                        raise UploadTooLarge(limit)
                    await anyio.to_thread.run_sync(append, chunk)  # hashing and writing block: off the loop
        except BaseException:
            os.unlink(tmp)
            raise
        return StagedFile(digest.hexdigest(), size, Path(tmp))

    def publish(self, staged: StagedFile) -> StoredFile:
        """The staged bytes at their key, linked there unless the same bytes are there already."""
        key = self.key_for(staged.sha256)
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        _publish_once(staged.path, target)
        return StoredFile(staged.sha256, staged.size_bytes, key)

    @staticmethod
    def discard(staged: StagedFile) -> None:
        staged.path.unlink(missing_ok=True)
