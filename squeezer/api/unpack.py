"""Reading what an upload unpacks to, with a bound: deflate turns 1 MiB of upload into 1 GiB, so a member
read whole is refused from its size in the zip directory, and read through a capped stream rather than
trusted to that size (zipfile also stops there, then fails the CRC; the bound does not rest on it).

Only stored and deflated members are opened: Python's zipfile inflates a bzip2 or LZMA member's compressed
bytes whole on the first read, whatever size is asked for (a 344-byte bzip2 member whose entry said 1 KiB
took 512 MiB of memory to read 8 bytes of), while deflate inflates only what is read.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import IO

CHUNK = 1 << 20
READ_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
METHOD_NAMES = {zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "LZMA"}


class TooLarge(ValueError):
    """An upload unpacks past a limit; the message names it and its setting."""

    def __init__(self, message: str, limit: int) -> None:
        super().__init__(message)
        self.limit = limit


ECD_ENTRIES, ECD_SIZE = 4, 5  # fields of zipfile's end record (zipfile._ECD_ENTRIES_TOTAL, _ECD_SIZE)
MAX_DIRECTORY_BYTES = 4 << 20  # ~40,000 entries; a torch.export archive has one per tensor (BERT-base: ~200)


def open_zip(path: Path) -> zipfile.ZipFile:
    """The zip at `path`, its central directory bounded first: zipfile reads the whole directory into
    objects when it opens a file (200,000 empty entries, a 17 MB upload, cost 106 MiB), so its size is
    read from the end record before that."""
    with path.open("rb") as handle:  # zipfile's own end-record reader (zip64 included), not public API
        end = getattr(zipfile, "_EndRecData")(handle)  # noqa: B009
    size, entries = (end[ECD_SIZE], end[ECD_ENTRIES]) if end is not None else (0, 0)
    if size > MAX_DIRECTORY_BYTES:
        raise TooLarge(
            f"its zip directory holds {entries} entries in {size} bytes; the limit is {MAX_DIRECTORY_BYTES} bytes",
            MAX_DIRECTORY_BYTES,
        )
    return zipfile.ZipFile(path)


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
