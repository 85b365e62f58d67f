"""Hostile uploads, built for real and cheaply (for the tests and `bench/bench_bomb.py`): a `.pt2` whose
model.json inflates a thousandfold."""

from __future__ import annotations

import io
import zipfile

CHUNK = 1 << 20


def _write_blank(archive: zipfile.ZipFile, name: str, size: int, tail: bytes = b"") -> None:
    """A deflated member of `size` bytes: spaces (JSON whitespace), then `tail`; written in chunks."""
    with archive.open(name, "w", force_zip64=size >= zipfile.ZIP64_LIMIT) as member:
        left = size - len(tail)
        while left > 0:
            member.write(b" " * min(CHUNK, left))
            left -= CHUNK
        member.write(tail)


def zip_bomb_pt2(pt2: bytes, unpacked: int, lie: bool = False, method: int = zipfile.ZIP_DEFLATED) -> bytes:
    """A real torch.export archive whose models/model.json is padded with whitespace to `unpacked` bytes
    and compressed with `method` (deflate: 1000:1): still valid JSON, the same graph. `lie`: the zip
    directory says it is 1 KiB."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(pt2)) as src, zipfile.ZipFile(out, "w", method) as dst:
        for info in src.infolist():
            if not info.filename.endswith("models/model.json"):
                dst.writestr(info, src.read(info))
                continue
            _write_blank(dst, info.filename, unpacked, src.read(info))
            if lie:
                dst.getinfo(info.filename).file_size = 1024  # what the central directory will say
    return out.getvalue()
