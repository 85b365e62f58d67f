"""Reading a dataset upload without loading it: the arrays' headers (`.npy` inside the `.npz`, or the
safetensors metadata), then one streamed pass over the values, a few MiB at a time, for what must be
scanned (non-finite values, the label range). A 512 MiB upload costs a few MiB of memory, and nothing
is ever unpickled: an array of Python objects is refused from its header.
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

SCAN_BYTES = 4 << 20  # one chunk of values
NUMERIC_KINDS = "biuf"  # bool, signed and unsigned integers, floats
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


def scan_npz(path: Path, names: tuple[str, ...]) -> dict[str, ArrayScan]:
    """Header and one streamed pass per array of a `.npz`; KeyError lists what the file holds instead."""
    with zipfile.ZipFile(path) as archive:
        members = {n.removesuffix(".npy"): n for n in archive.namelist() if n.endswith(".npy")}
        missing = [n for n in names if n not in members]
        if missing:
            raise KeyError(sorted(members))
        scans = {}
        for name in names:
            with archive.open(members[name]) as handle:
                version = np.lib.format.read_magic(handle)
                if version not in NPY_HEADER_READERS:
                    raise UnreadableDataset(f"'{name}' has .npy format version {version}; 1.0 and 2.0 are read")
                shape, _fortran, dtype = NPY_HEADER_READERS[version](handle)
                _check_dtype(name, dtype)
                scan = ArrayScan(list(shape), str(dtype))
                for values in _npy_values(handle, dtype, math.prod(shape)):
                    scan.add(values)
            scans[name] = scan
    return scans


def scan_safetensors(path: Path, names: tuple[str, ...]) -> dict[str, ArrayScan]:
    """Metadata and one streamed (memory-mapped) pass per tensor of a `.safetensors` file."""
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        keys = set(f.keys())
        if not set(names) <= keys:
            raise KeyError(sorted(keys))
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
