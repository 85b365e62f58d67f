"""Reading a dataset upload without loading it: the arrays' headers (`.npy` inside the `.npz`, or the
safetensors metadata), then one streamed pass over the values, a few MiB at a time, for what must be
scanned (non-finite values, the label range). A 512 MiB upload costs a few MiB of memory, and nothing
is ever unpickled: an array of Python objects is refused from its header. A header must claim exactly the
bytes that follow it (its shape alone never decides what is read), and a `.npz` may unpack to
`max_dataset_bytes` at most.
"""

from __future__ import annotations

import json
import math
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, NamedTuple

import numpy as np

from squeezer.api.unpack import TooLarge, open_member, open_zip

SCAN_BYTES = 4 << 20  # one chunk of values
NUMERIC_KINDS = "biuf"  # bool, signed and unsigned integers, floats
# bytes per value of each safetensors dtype (the format's names)
SAFETENSORS_ITEMSIZES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1,
    "U16": 2, "I16": 2, "F16": 2, "BF16": 2,
    "U32": 4, "I32": 4, "F32": 4,
    "U64": 8, "I64": 8, "F64": 8,
}  # fmt: skip
NPY_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


class UnreadableDataset(ValueError):
    """The file is not a dataset this service reads (the message says why)."""


@dataclass
class ArrayScan:
    """What one pass over an array found."""

    shape: list[int]
    dtype: str
    non_finite: int = 0
    min: int | None = None  # integer arrays only
    max: int | None = None

    def add(self, values: np.ndarray) -> None:
        if values.size == 0:
            return
        if values.dtype.kind == "f":
            self.non_finite += int(values.size - np.count_nonzero(np.isfinite(values)))
        elif values.dtype.kind in "iu":
            low, high = int(values.min()), int(values.max())
            self.min = low if self.min is None else min(self.min, low)
            self.max = high if self.max is None else max(self.max, high)


def _check_dtype(name: str, dtype: np.dtype[Any]) -> None:
    if dtype.hasobject:
        raise UnreadableDataset(f"'{name}' holds Python objects (a pickle), which are never loaded")
    if dtype.kind not in NUMERIC_KINDS or dtype.fields is not None:
        raise UnreadableDataset(f"'{name}' has dtype {dtype}; arrays must be bool, integer or float")


def _npy_values(handle: IO[bytes], dtype: np.dtype[Any], count: int) -> Iterator[np.ndarray]:
    """`count` values of `dtype` from `handle`, in chunks of about SCAN_BYTES (the order does not matter)."""
    per_chunk = max(1, SCAN_BYTES // max(dtype.itemsize, 1))
    left = count
    while left:
        want = min(per_chunk, left)
        data = handle.read(want * dtype.itemsize)
        if len(data) != want * dtype.itemsize:
            raise UnreadableDataset("the array data is truncated")
        left -= want
        yield np.frombuffer(data, dtype=dtype)


class NpyHeader(NamedTuple):
    shape: list[int]
    dtype: np.dtype[Any]
    offset: int  # where the values start
    nbytes: int


def _npz_header(archive: zipfile.ZipFile, member: str, name: str) -> NpyHeader:
    """The header of a `.npy` member, refused unless its shape and dtype claim exactly the bytes that follow
    it (a header's shape alone must not decide how much is read)."""
    with open_member(archive, member) as handle:
        version = np.lib.format.read_magic(handle)
        if version not in NPY_HEADER_READERS:
            raise UnreadableDataset(f"'{name}' has .npy format version {version}; 1.0 and 2.0 are read")
        shape, _fortran, dtype = NPY_HEADER_READERS[version](handle)
        offset = handle.tell()
    present = archive.getinfo(member).file_size - offset
    _check_dtype(name, dtype)
    claimed = math.prod(shape) * dtype.itemsize
    if claimed != present or min(shape, default=0) < 0:
        raise UnreadableDataset(
            f"'{name}': its header claims shape {list(shape)} of {dtype} ({claimed} bytes), "
            f"the file holds {present} bytes of it"
        )
    return NpyHeader(list(shape), dtype, offset, claimed)


def _check_total(sizes: dict[str, int], limit: int) -> None:
    total = sum(sizes.values())
    if total > limit:
        each = ", ".join(f"{n} {b}" for n, b in sizes.items())
        raise TooLarge(
            f"its arrays unpack to {total} bytes ({each}); the limit is {limit} bytes (SQUEEZER_MAX_DATASET_BYTES)",
            limit,
        )


def scan_npz(path: Path, names: tuple[str, ...], max_bytes: int) -> dict[str, ArrayScan]:
    """Header and one streamed pass per array of a `.npz`; KeyError lists what the file holds instead.
    Every header is checked before any array is scanned, and together they may claim `max_bytes` at most."""
    with open_zip(path) as archive:
        members = {n.removesuffix(".npy"): n for n in archive.namelist() if n.endswith(".npy")}
        missing = [n for n in names if n not in members]
        if missing:
            raise KeyError(sorted(members))
        headers = {name: _npz_header(archive, members[name], name) for name in names}
        _check_total({name: header.nbytes for name, header in headers.items()}, max_bytes)
        scans = {}
        for name, header in headers.items():
            scan = ArrayScan(header.shape, str(header.dtype))
            with open_member(archive, members[name]) as handle:
                handle.read(header.offset)
                for values in _npy_values(handle, header.dtype, math.prod(header.shape)):
                    scan.add(values)
                if handle.read(1):  # more than the zip entry says (zipfile stops there too; not relied on)
                    raise UnreadableDataset(f"'{name}' holds more than the {header.nbytes} bytes its header claims")
            scans[name] = scan
    return scans


def _safetensors_header(path: Path, names: tuple[str, ...], max_header_bytes: int) -> dict[str, int]:
    """Bytes of each named tensor, from the header, refused unless its shape and dtype claim exactly its
    offsets' span and the span lies in the file; KeyError lists what the file holds when a name is not there."""
    size = path.stat().st_size
    with path.open("rb") as f:
        if size < 8:
            raise UnreadableDataset(f"it is {size} bytes long, shorter than a safetensors header")
        length = int.from_bytes(f.read(8), "little")
        if length > size - 8:
            raise UnreadableDataset(f"its header claims {length} bytes, the file holds {size - 8} after the length")
        if length > max_header_bytes:
            raise TooLarge(
                f"its header is {length} bytes; the limit is {max_header_bytes} bytes "
                "(SQUEEZER_MAX_ARCHIVE_MEMBER_BYTES)",
                max_header_bytes,
            )
        header = json.loads(f.read(length))
    if not isinstance(header, dict):
        raise UnreadableDataset("its header is not a JSON object")
    held = size - 8 - length
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    if not set(names) <= set(tensors):
        raise KeyError(sorted(tensors))
    return {name: _safetensors_bytes(name, tensors[name], held) for name in names}


def _safetensors_bytes(name: str, entry: Any, held: int) -> int:
    try:
        dtype, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
        itemsize = SAFETENSORS_ITEMSIZES[dtype]
        claimed = math.prod(shape) * itemsize
        if not all(isinstance(v, int) for v in (*shape, begin, end, claimed)):
            raise TypeError
    except (KeyError, TypeError, ValueError) as exc:  # not KeyError to the caller: that means a missing array
        raise UnreadableDataset(f"'{name}' has a header entry this service does not read: {entry!r:.200}") from exc
    claim = f"its header claims shape {shape} of {dtype} ({claimed} bytes) at offsets [{begin}, {end}]"
    if claimed != end - begin or min(shape, default=0) < 0:
        raise UnreadableDataset(f"'{name}': {claim}, a span of {end - begin} bytes")
    if not 0 <= begin <= end <= held:
        raise UnreadableDataset(f"'{name}': {claim}, the file holds {held} bytes of data")
    return claimed


def scan_safetensors(path: Path, names: tuple[str, ...], max_header_bytes: int, max_bytes: int) -> dict[str, ArrayScan]:
    """Metadata and one streamed (memory-mapped) pass per tensor of a `.safetensors` file; the header is
    read (at most `max_header_bytes`) and checked against the file's length before the library opens it."""
    from safetensors import safe_open

    _check_total(_safetensors_header(path, names, max_header_bytes), max_bytes)
    with safe_open(str(path), framework="numpy") as f:
        scans = {}
        for name in names:
            tensor = f.get_slice(name)
            shape = list(tensor.get_shape())
            scan = ArrayScan(shape, str(tensor.get_dtype()))
            if shape:
                row_bytes = max(1, math.prod(shape[1:]) * 8)
                step = max(1, SCAN_BYTES // row_bytes)
                for start in range(0, shape[0], step):
                    values = tensor[start : min(start + step, shape[0])]  # slices are not clamped
                    _check_dtype(name, values.dtype)
                    scan.dtype = str(values.dtype)  # numpy's name ("int64"), as for .npz, not "I64"
                    scan.add(values)
            scans[name] = scan
    return scans
