"""An upload is read with bounds (issue 25, item 4): a zip bomb is refused from the size its member unpacks
to, naming the limit, without the API process inflating it; array headers that claim other bytes than the
file holds are refused naming the array, the claim and what is there."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest

from squeezer.settings import MAX_ARCHIVE_MEMBER_BYTES
from tests.api.test_api import npz_bytes, pt2_bytes, upload
from tests.helpers import api_client
from tests.uploads import bzip2_npz, lying_npz, lying_safetensors, npz_bomb, safetensors_offsets, zip_bomb_pt2

BOMB = 256 << 20  # what model.json inflates to, from about 260 KB of upload


def _nothing_kept(api):
    return not [p for p in api.app.state.store.root.rglob("*") if p.is_file()]


@pytest.fixture
def api(tmp_path):
    return api_client(tmp_path, max_upload_bytes=4 << 20)


def test_a_zip_bomb_model_is_refused_naming_the_limit(api, tmp_path):
    bomb = zip_bomb_pt2(pt2_bytes(tmp_path), BOMB)
    assert len(bomb) < 1 << 20
    response = upload(api, api.alice, "model", "bomb.pt2", bomb)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["title"] == "Archive member too large" and problem["limit_bytes"] == MAX_ARCHIVE_MEMBER_BYTES
    assert problem["detail"] == (
        f"bomb.pt2: m/models/model.json unpacks to {BOMB} bytes; the limit is {MAX_ARCHIVE_MEMBER_BYTES} bytes "
        "(SQUEEZER_MAX_ARCHIVE_MEMBER_BYTES)"
    )
    assert _nothing_kept(api)


def test_the_member_limit_is_the_setting(tmp_path):
    api = api_client(tmp_path, max_archive_member_bytes=1000)
    response = upload(api, api.alice, "model", "m.pt2", pt2_bytes(tmp_path))  # a real export: model.json > 1000 B
    assert response.status_code == 422 and response.json()["limit_bytes"] == 1000, response.text
    assert "the limit is 1000 bytes" in response.json()["detail"]


# the API's check run alone in a fresh process, so that its peak resident memory is the check's
MEASURE = """
import sys
from pathlib import Path
from squeezer.api.errors import ApiError
from squeezer.api.inspection import model_signature

def kib(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field))

try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # the peak (VmHWM) starts again from here; without it the growth is overstated
except OSError:
    pass
before = kib("VmRSS:")
try:
    model_signature(Path(sys.argv[1]), "bomb.pt2")
    print("accepted")
except ApiError as exc:
    print(exc.status, exc.title)
print(kib("VmHWM:") - before)
"""


@pytest.mark.parametrize(
    ("method", "unpacked", "lie", "outcome"),
    [
        (zipfile.ZIP_DEFLATED, BOMB, False, "422 Archive member too large"),
        # the directory says 1 KiB: zipfile stops there and the CRC fails, an unreadable archive
        (zipfile.ZIP_DEFLATED, BOMB, True, "422 Invalid model archive"),
        # zipfile would inflate these whole on the first read whatever the directory says: never opened
        (zipfile.ZIP_BZIP2, 64 << 20, True, "422 Invalid model archive"),
        (zipfile.ZIP_LZMA, 64 << 20, True, "422 Invalid model archive"),
    ],
    ids=["deflate", "deflate-lying-directory", "bzip2-lying-directory", "lzma-lying-directory"],
)
def test_a_zip_bomb_costs_the_api_process_no_memory(tmp_path, method, unpacked, lie, outcome):
    path = tmp_path / "bomb.pt2"
    path.write_bytes(zip_bomb_pt2(pt2_bytes(tmp_path), unpacked, lie=lie, method=method))
    out = subprocess.run([sys.executable, "-c", MEASURE, str(path)], check=True, capture_output=True, text=True)
    result, grown_kib = out.stdout.split("\n")[:2]
    assert int(grown_kib) < 8 << 10, f"peak RSS grew {int(grown_kib) / 1024:.0f} MiB for a {unpacked >> 20} MiB bomb"
    assert result == outcome


def _bzip2_model(tmp_path):
    return zip_bomb_pt2(pt2_bytes(tmp_path), 1 << 20, method=zipfile.ZIP_BZIP2)  # a real export, recompressed


@pytest.mark.parametrize(
    ("kind", "name", "make", "member"),
    [
        ("model", "m.pt2", _bzip2_model, "m/models/model.json"),
        ("dataset", "d.npz", lambda _: bzip2_npz(), "x.npy"),
    ],
    ids=["model", "dataset"],
)
def test_members_compressed_with_bzip2_are_refused_unopened(api, tmp_path, kind, name, make, member):
    response = upload(api, api.alice, kind, name, make(tmp_path))
    assert response.status_code == 422, response.text
    assert f"{member} is compressed with bzip2; members are read only stored or deflated" in response.json()["detail"]
    assert _nothing_kept(api)


def test_a_dataset_that_unpacks_past_the_limit_is_refused_before_its_scan(tmp_path):
    api = api_client(tmp_path, max_upload_bytes=4 << 20, max_dataset_bytes=64 << 20)
    response = upload(api, api.alice, "dataset", "bomb.npz", npz_bomb(128 << 20))
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["title"] == "Dataset too large" and problem["limit_bytes"] == 64 << 20
    assert problem["detail"] == (
        f"bomb.npz: its arrays unpack to {(128 << 20) + 32768 * 8} bytes (x {128 << 20}, y {32768 * 8}); "
        f"the limit is {64 << 20} bytes (SQUEEZER_MAX_DATASET_BYTES)"
    )
    assert _nothing_kept(api)
    assert upload(api, api.alice, "dataset", "d.npz", npz_bytes()).status_code == 201  # a real one still passes


@pytest.mark.parametrize(
    ("old", "new", "claim"),
    [
        (b"(8, 64)", b"(8000000000, 64)", "shape [8000000000, 64] of float32 (2048000000000 bytes)"),
        (b"(8, 64)", b"(2, 64)", "shape [2, 64] of float32 (512 bytes)"),
        (b"'<f4'", b"'<f8'", "shape [8, 64] of float64 (4096 bytes)"),
        (b"(8, 64)", b"(-8, -64)", "shape [-8, -64] of float32 (2048 bytes)"),
    ],
    ids=["huge-shape", "small-shape", "wider-dtype", "negative-shape"],
)
def test_a_lying_npz_header_is_refused_naming_the_array(api, old, new, claim):
    response = upload(api, api.alice, "dataset", "d.npz", lying_npz(old, new))
    assert response.status_code == 422, response.text
    assert response.json()["detail"] == (
        f"d.npz is not a readable .npz / .safetensors file: 'x': its header claims {claim}, "
        "the file holds 2048 bytes of it"
    )
    assert _nothing_kept(api)


def test_a_lying_safetensors_header_is_refused_naming_the_array(api):
    begin = safetensors_offsets("x")[0]
    huge = lying_safetensors(shape=[8_000_000, 64], data_offsets=[begin, begin + 8_000_000 * 64 * 4])
    response = upload(api, api.alice, "dataset", "d.safetensors", huge)
    assert response.status_code == 422, response.text
    assert response.json()["detail"] == (
        "d.safetensors is not a readable .npz / .safetensors file: 'x': its header claims shape [8000000, 64] "
        f"of F32 (2048000000 bytes) at offsets [{begin}, {begin + 2048000000}], the file holds 2112 bytes of data"
    )
    response = upload(api, api.alice, "dataset", "d.safetensors", lying_safetensors(shape=[16, 64]))
    assert response.status_code == 422, response.text
    assert response.json()["detail"].endswith(
        f"'x': its header claims shape [16, 64] of F32 (4096 bytes) at offsets [{begin}, {begin + 2048}], "
        "a span of 2048 bytes"
    )
    assert _nothing_kept(api)


def test_a_safetensors_header_past_the_member_limit_is_refused(tmp_path):
    api = api_client(tmp_path, max_archive_member_bytes=4096)
    response = upload(api, api.alice, "dataset", "d.safetensors", lying_safetensors(metadata={"note": "n" * 8192}))
    assert response.status_code == 422 and response.json()["limit_bytes"] == 4096, response.text
    assert "its header is" in response.json()["detail"] and "(SQUEEZER_MAX_ARCHIVE_MEMBER_BYTES)" in response.text


def test_a_zip_directory_of_many_entries_is_refused_before_it_is_read(tmp_path):
    """zipfile turns every directory entry into an object when it opens a file: 200,000 empty entries (an
    upload of about 20 MB) cost 106 MiB; the directory's size is now read from its end record first."""
    path = tmp_path / "bomb.pt2"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for i in range(200_000):
            archive.writestr(f"m/data/{i}", b"")
    out = subprocess.run([sys.executable, "-c", MEASURE, str(path)], check=True, capture_output=True, text=True)
    result, grown_kib = out.stdout.split("\n")[:2]
    assert result == "422 Archive member too large" and int(grown_kib) < 8 << 10, (result, grown_kib)
