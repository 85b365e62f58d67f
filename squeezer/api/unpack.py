"""Reading what an upload unpacks to, with a bound: deflate turns 1 MiB of upload into 1 GiB, so a member
read whole is refused from its size in the zip directory, and read through a capped stream rather than
trusted to that size (zipfile also stops there, then fails the CRC; the bound does not rest on it).

Only stored and deflated members are opened: Python's zipfile inflates a bzip2 or LZMA member's compressed
bytes whole on the first read, whatever size is asked for (a 344-byte bzip2 member whose entry said 1 KiB
took 512 MiB of memory to read 8 bytes of), while deflate inflates only what is read.
"""

from __future__ import annotations

import zipfile
from typing import IO

CHUNK = 1 << 20
READ_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
METHOD_NAMES = {zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "LZMA"}


class TooLarge(ValueError):
    """An upload unpacks past a limit; the message names it and its setting."""

    def __init__(self, message: str, limit: int) -> None:
        super().__init__(message)
        self.limit = limit


def open_member(archive: zipfile.ZipFile, name: str) -> IO[bytes]:
    """Member `name` as a stream, refused (ValueError) unless stored or deflated."""
    info = archive.getinfo(name)
    if info.compress_type not in READ_METHODS:
        method = METHOD_NAMES.get(info.compress_type, f"method {info.compress_type}")
        raise ValueError(f"{name} is compressed with {method}; members are read only stored or deflated")
    return archive.open(info)


def read_member(archive: zipfile.ZipFile, name: str, limit: int) -> bytes:
    """The bytes of member `name`, at most `limit` of them (TooLarge past that; nothing more is inflated)."""
    size = archive.getinfo(name).file_size
    if size > limit:
        raise TooLarge(_over(name, f"{size} bytes", limit), limit)
    data = bytearray()
    with open_member(archive, name) as handle:
        while chunk := handle.read(CHUNK):  # deflate inflates at most what is asked for
            data += chunk
            if len(data) > limit:
                raise TooLarge(_over(name, f"more than {limit} bytes (its zip entry says {size})", limit), limit)
    return bytes(data)


def _over(name: str, size: str, limit: int) -> str:
    return f"{name} unpacks to {size}; the limit is {limit} bytes (SQUEEZER_MAX_ARCHIVE_MEMBER_BYTES)"
