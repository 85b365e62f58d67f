"""Dataset uploads are read from their headers and one streamed pass: non-finite values are refused at
upload with their count, label ranges span every chunk, and a large array is never loaded whole."""

from __future__ import annotations

import asyncio
import io
import tracemalloc
import zipfile

import numpy as np
import pytest
from safetensors.numpy import save as safetensors_bytes

from squeezer.api import datasets
from squeezer.api.errors import ApiError
from squeezer.api.inspection import dataset_summary
from tests.api.test_api import api, upload  # noqa: F401  (the api fixture)


def _npz(compressed=False, **arrays):
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    return buf.getvalue()


def _with_non_finite(n_samples=8):
    x = np.zeros((n_samples, 64), np.float32)
    x[1, 3], x[5, 0], x[6, 7] = np.nan, np.inf, -np.inf
    return x


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("d.npz", _npz(x=_with_non_finite(), y=np.zeros(8, np.int64))),
        ("d.npz", _npz(compressed=True, x=_with_non_finite(), y=np.zeros(8, np.int64))),
        ("d.safetensors", safetensors_bytes({"x": _with_non_finite(), "y": np.zeros(8, np.int64)})),
    ],
)
def test_non_finite_values_are_refused_at_upload_with_their_count(api, name, data):  # noqa: F811
    response = upload(api, api.alice, "dataset", name, data)
    assert response.status_code == 422, response.text
    assert response.json()["detail"] == (
        f"{name}: x has 3 NaN or infinite values (of 512); training data must be finite: drop or impute those samples"
    )
    assert not [p for p in api.app.state.store.root.rglob("*") if p.is_file()]  # nothing kept


def test_non_finite_regression_targets_are_refused(api):  # noqa: F811
    y = np.zeros((8, 2), np.float64)
    y[0, 0] = np.nan
    response = upload(api, api.alice, "dataset", "t.npz", _npz(x=np.zeros((8, 64), np.float32), y=y))
    assert response.status_code == 422 and "y has 1 NaN or infinite values (of 16)" in response.json()["detail"]


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_the_label_range_spans_every_chunk(tmp_path, monkeypatch, suffix):
    monkeypatch.setattr(datasets, "SCAN_BYTES", 64)  # 8 int64 labels or 2 rows per chunk
    y = np.full(100, 4, np.int64)
    y[3], y[97] = -2, 11
    x = np.arange(100 * 3, dtype=np.float32).reshape(100, 3)
    path = tmp_path / f"d{suffix}"
    path.write_bytes(_npz(x=x, y=y) if suffix == ".npz" else safetensors_bytes({"x": x, "y": y}))
    summary = dataset_summary(path, path.name)
    assert (summary["y_min"], summary["y_max"], summary["x_shape"], summary["y_shape"]) == (-2, 11, [100, 3], [100])


def test_a_truncated_array_is_refused(tmp_path):
    data = _npz(x=np.zeros((64, 64), np.float32), y=np.zeros(64, np.int64))
    path = tmp_path / "d.npz"
    # rewrite the stored x.npy member with its last bytes cut off, keeping the zip itself valid
    with zipfile.ZipFile(io.BytesIO(data)) as original, zipfile.ZipFile(path, "w") as cut:
        cut.writestr("x.npy", original.read("x.npy")[:-100])
        cut.writestr("y.npy", original.read("y.npy"))
    cut_short = r"not a readable \.npz / \.safetensors file: 'x': its header claims shape \[64, 64\] of float32 \(16384 bytes\), the file holds 16284 bytes of it"
    with pytest.raises(ApiError, match=cut_short):
        dataset_summary(path, "d.npz")


def test_a_large_dataset_is_scanned_without_loading_it(tmp_path):
    x = np.ones((12_000, 1024), np.float32)  # 48 MiB: loading it whole would take twice the allowed peak
    path = tmp_path / "big.npz"
    np.savez(path, x=x, y=np.arange(12_000) % 10)
    del x
    tracemalloc.start()
    try:
        summary = dataset_summary(path, "big.npz")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert summary["x_shape"] == [12_000, 1024] and (summary["y_min"], summary["y_max"]) == (0, 9)
    assert peak < 24 << 20, f"peak {peak / 2**20:.1f} MiB while scanning a 48 MiB array"


def test_the_upload_inspects_datasets_off_the_event_loop(api, monkeypatch):  # noqa: F811
    from squeezer.api.routers import artifacts as route

    on_loop = []

    def spy(path, filename, *limits):
        try:
            asyncio.get_running_loop()
            on_loop.append(True)
        except RuntimeError:  # no loop in this thread: a worker thread
            on_loop.append(False)
        return dataset_summary(path, filename, *limits)

    monkeypatch.setattr(route, "dataset_summary", spy)
    response = upload(api, api.alice, "dataset", "d.npz", _npz(x=np.zeros((8, 64), np.float32), y=np.zeros(8, int)))
    assert response.status_code == 201 and on_loop == [False]
