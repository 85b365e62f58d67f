"""Hostile uploads, built for real and cheaply (for the tests and `bench/bench_bomb.py`): a `.pt2` whose
model.json inflates a thousandfold, a `.npz` of deflated zeros, and array headers that claim other bytes
than the file holds."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
from safetensors.numpy import save as safetensors_bytes

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


def npz_bomb(unpacked: int) -> bytes:
    """A `.npz` whose float32 `x` (zeros, rows of 1024) unpacks to about `unpacked` bytes, deflated; honest headers."""
    rows = unpacked // 4096
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("x.npy", "w", force_zip64=unpacked >= zipfile.ZIP64_LIMIT) as member:
            np.lib.format.write_array_header_1_0(
                member, {"descr": "<f4", "fortran_order": False, "shape": (rows, 1024)}
            )
            zeros = bytes(CHUNK)
            for _ in range(rows * 4096 // CHUNK):
                member.write(zeros)
            member.write(bytes(rows * 4096 % CHUNK))
        archive.writestr("y.npy", _npy(np.zeros(rows, np.int64)))
    return out.getvalue()


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def _lie_in_npy(npy: bytes, old: bytes, new: bytes) -> bytes:
    """`old` replaced by `new` in a .npy header, the header kept at its length (its padding absorbs it)."""
    end = npy.index(b"\n") + 1
    header = npy[: end - 1].replace(old, new).rstrip(b" ")
    assert new in header and len(header) < end - 1
    return header.ljust(end - 1) + b"\n" + npy[end:]


def lying_npz(old: bytes, new: bytes) -> bytes:
    """A real `.npz` (x: 8x64 float32 zeros, y: 8 int64) with `old` replaced by `new` in x's header, for
    example b"(8, 64)" by b"(8000000000, 64)"; the zip and its CRCs stay valid."""
    x = _lie_in_npy(_npy(np.zeros((8, 64), np.float32)), old, new)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("x.npy", x)
        archive.writestr("y.npy", _npy(np.zeros(8, np.int64)))
    return out.getvalue()


def lying_safetensors(metadata: dict[str, str] | None = None, **x_entry: object) -> bytes:
    """A real `.safetensors` (x: 8x64 float32, y: 8 int64) with x's header entry changed by `x_entry`
    (and `metadata` as its `__metadata__`)."""
    real = safetensors_bytes({"x": np.zeros((8, 64), np.float32), "y": np.zeros(8, np.int64)})
    length = int.from_bytes(real[:8], "little")
    header = json.loads(real[8 : 8 + length])
    header["x"].update(x_entry)
    if metadata is not None:
        header["__metadata__"] = metadata
    encoded = json.dumps(header).encode()
    return len(encoded).to_bytes(8, "little") + encoded + real[8 + length :]


def safetensors_offsets(name: str) -> list[int]:
    """Where a tensor of `lying_safetensors()` lies in its data section."""
    real = safetensors_bytes({"x": np.zeros((8, 64), np.float32), "y": np.zeros(8, np.int64)})
    return json.loads(real[8 : 8 + int.from_bytes(real[:8], "little")])[name]["data_offsets"]


def bzip2_npz() -> bytes:
    """A real `.npz` (x: 8x64 float32 zeros, y: 8 int64) with its members compressed with bzip2."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_BZIP2) as archive:
        archive.writestr("x.npy", _npy(np.zeros((8, 64), np.float32)))
        archive.writestr("y.npy", _npy(np.zeros(8, np.int64)))
    return out.getvalue()
