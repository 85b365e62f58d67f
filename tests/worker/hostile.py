"""A job target that loads the upload the unsafe way, standing in for a bug in our loader or in torch:
`torch.export.load` unpickles, so code carried by the archive runs inside the job process."""

from __future__ import annotations

from typing import Any


def load_unsafely(model_path: str, **_: Any) -> None:
    import torch

    torch.export.load(model_path)
    raise RuntimeError("the archive loaded and its payload did not stop the job")


def kill_itself(**_: Any) -> None:
    import os
    import signal

    os.kill(os.getpid(), signal.SIGKILL)


def send_invalid_message(**_: Any) -> None:
    """Write to the events pipe directly: a 'done' that names an output outside the known kinds."""
    import os
    from pathlib import Path

    message = b'{"type": "done", "status": "succeeded", "uncompressed_metric": 1.0, "outputs": ["../db"]}\n'
    for fd in map(int, os.listdir("/proc/self/fd")):  # the events pipe: the one pipe open for writing
        info = Path(f"/proc/self/fdinfo/{fd}")
        if fd <= 2 or not info.exists():
            continue
        flags = next(line for line in info.read_text().splitlines() if line.startswith("flags:"))
        if int(flags.split()[1], 8) & os.O_ACCMODE == os.O_WRONLY:
            os.write(fd, message)


def link_outputs_to_the_database(workdir: str, **_: Any) -> Any:
    """Claim success with outputs that are links to the worker's database (<home>/squeezer.db)."""
    from pathlib import Path
    from types import SimpleNamespace

    database = Path(workdir).parent.parent / "squeezer.db"
    (Path(workdir) / "model.onnx").symlink_to(database)
    (Path(workdir) / "stripped_model.safetensors").symlink_to(database)
    return SimpleNamespace(status="succeeded", uncompressed_metric=1.0, metric=1.0, compression_rate=1.0, statistics={})


def sleep_forever(workdir: str, **_: Any) -> None:
    import os
    import time
    from pathlib import Path

    (Path(workdir) / "pid").write_text(str(os.getpid()))
    while True:
        time.sleep(1)


def leave_a_child_behind(**_: Any) -> Any:
    """Fork a process that keeps the job's pipes open and runs on, then report success."""
    import os
    import time
    from types import SimpleNamespace

    pid = os.fork()
    if pid == 0:
        os.setsid()  # not even in our process group
        while True:
            time.sleep(1)
    statistics = {"child_pid": pid}
    return SimpleNamespace(
        status="succeeded", uncompressed_metric=1.0, metric=1.0, compression_rate=1.0, statistics=statistics
    )


def allocate_without_end(workdir: str, **_: Any) -> None:
    """Take memory 64 MiB at a time (each page touched, so it is resident), as a model too big for the box."""
    import time

    import numpy as np

    held = []
    for _ in range(4096):
        held.append(np.ones(8 * 1024 * 1024))  # 64 MiB of float64, written
        time.sleep(0.05)
    raise RuntimeError("256 GiB allocated and no limit stopped the job")


def fork_without_end(**_: Any) -> None:
    """Start sleeping processes one after another, as a data loader with runaway workers."""
    import subprocess
    import sys
    import time

    children = []
    for _ in range(1000):
        children.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"]))
        time.sleep(0.05)
    raise RuntimeError("1000 processes started and no limit stopped the job")


def fill_the_disk(workdir: str, **_: Any) -> None:
    """Write 16 MiB files into the job's folder without end, as checkpoints kept every step."""
    import time
    from pathlib import Path

    block = b"\1" * (16 * 1024 * 1024)
    for i in range(4096):
        (Path(workdir) / f"checkpoint-{i}.bin").write_bytes(block)
        time.sleep(0.02)
    raise RuntimeError("64 GiB written and no limit stopped the job")


def spin_the_cpu(**_: Any) -> None:
    while True:
        pass


EPOCH = {"phase": "training", "stage": "fully_compressed", "metric": 1.0, "accuracy_budget": 0.0, "wall_time_s": 0.1}


def flood_epochs(on_epoch: Any, **_: Any) -> None:
    """Report epochs 0 to 999: each would be one more metric row."""
    for epoch in range(1000):
        on_epoch({"epoch": epoch, **EPOCH})


def repeat_an_epoch(on_epoch: Any, **_: Any) -> None:
    """Report epoch 0, then epoch 1 a thousand times."""
    on_epoch({"epoch": 0, **EPOCH})
    for _ in range(1000):
        on_epoch({"epoch": 1, **EPOCH})


def report_an_epoch_without_a_budget(on_epoch: Any, **_: Any) -> None:
    """An epoch without the accuracy budget and the wall time, which every metric row must have."""
    on_epoch({"epoch": 0, "phase": "training", "stage": "fully_compressed", "metric": 1.0})
