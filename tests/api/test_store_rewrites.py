"""A content-addressed file, once written, never changes under a reader: uploading the same bytes again
while a confined job process reads them leaves the stored file (and its inode, which the job's Landlock
rule names) as it was."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap

import pytest

from squeezer.worker.sandbox.confine import landlock_abi
from tests.api.test_api import api, npz_bytes, upload  # noqa: F401  (the api fixture)

# confined to the one stored file (and its own folder), as a job process is; reads it when told to
READER = textwrap.dedent(
    """
    import hashlib, sys
    from squeezer.worker.sandbox.confine import confine
    confine([sys.argv[1]], [sys.argv[2]])
    print("confined", flush=True)
    sys.stdin.readline()
    try:
        with open(sys.argv[1], "rb") as f:
            print(hashlib.sha256(f.read()).hexdigest(), flush=True)
    except OSError as exc:
        print(f"unreadable: {exc}", flush=True)
    """
)


@pytest.mark.skipif(landlock_abi() < 4, reason="needs Landlock ABI 4+ (Linux 6.7+); workers refuse jobs without it")
def test_uploading_the_same_bytes_again_keeps_the_file_a_confined_job_reads(api, tmp_path):  # noqa: F811
    data = npz_bytes()
    first = upload(api, api.alice, "dataset", "train.npz", data).json()
    stored = api.app.state.store.path(f"{first['sha256'][:2]}/{first['sha256']}")
    inode = stored.stat().st_ino
    workdir = tmp_path / "job"
    workdir.mkdir()
    with subprocess.Popen(
        [sys.executable, "-c", READER, str(stored), str(workdir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as reader:
        assert reader.stdout.readline().strip() == "confined"
        # the same bytes again, by the same key and by another one (a new artifact row, the same file)
        assert upload(api, api.alice, "dataset", "again.npz", data).json()["id"] == first["id"]
        assert upload(api, api.bob, "dataset", "train.npz", data).status_code == 201
        reader.stdin.write("read\n")
        reader.stdin.flush()
        assert reader.stdout.readline().strip() == hashlib.sha256(data).hexdigest()
    assert stored.stat().st_ino == inode
    assert not list(stored.parent.parent.glob(".upload-*"))  # no temp file left behind
