"""A job's per-epoch scalars as TensorBoard event files (the `tensorboard` export: `tensorboard.zip`).

The writer is tensorboardX: it writes the event format with numpy and protobuf alone, while
`torch.utils.tensorboard.SummaryWriter` needs the whole `tensorboard` package (its web server, grpcio,
werkzeug) installed on every worker only to write a few scalars. Reading the logs is for whoever
downloads them, with `tensorboard --logdir` on the unzipped folder.

The epoch is the step. Each validated epoch is appended to a journal in the job's work folder, which a
worker restart leaves in place; the event file is written from the journal when the job's outputs are,
keeping the last record of each epoch. A resumed job that validates an epoch again (its worker died after
the epoch was reported but before the loop state was saved) therefore replaces that point instead of
adding a second one at the same step.
"""

from __future__ import annotations

import json
import shutil
import time
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

JOURNAL = "tensorboard_scalars.jsonl"
_FIELDS = ("epoch", "metric", "accuracy_budget", "compression_rate", "compression_rate_target", "loss", "lr")
LOG_DIR = "tensorboard"
# tag -> how to read it from an epoch record; a None value (no loss before training) writes no point
SCALARS: dict[str, Callable[[dict[str, Any]], float | None]] = {
    "metric/validation": lambda r: r["metric"],
    # the lowest metric the config tolerates (FP32 metric minus the allowed drop): the record's
    # accuracy_budget is the headroom above it
    "metric/minimal_tolerable": lambda r: r["metric"] - r["accuracy_budget"],
    "metric/accuracy_budget": lambda r: r["accuracy_budget"],
    "compression/rate": lambda r: r.get("compression_rate"),
    "compression/rate_target": lambda r: r.get("compression_rate_target"),
    "train/loss": lambda r: r.get("loss"),
    "train/lr": lambda r: r.get("lr"),
}


def journal_epoch(workdir: Path, record: Mapping[str, Any]) -> None:
    """Append one epoch record (an `EpochRecord.to_dict()`) to the job's journal."""
    line = json.dumps({k: record.get(k) for k in _FIELDS})
    path = workdir / JOURNAL
    with path.open("ab") as journal:
        if journal.tell() > 0:  # a line cut short by a crash must not swallow this one
            with path.open("rb") as previous:
                previous.seek(-1, 2)
                if previous.read(1) != b"\n":
                    journal.write(b"\n")
        journal.write(line.encode() + b"\n")


def journaled_epochs(workdir: Path) -> dict[int, dict[str, Any]]:
    """epoch -> its last journaled record; a line cut short by a crash is ignored."""
    epochs: dict[int, dict[str, Any]] = {}
    path = workdir / JOURNAL
    if not path.is_file():
        return epochs
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        epochs[int(record["epoch"])] = record
    return epochs


def write_tensorboard(workdir: Path, archive: Path) -> Path | None:
    """The journal as TensorBoard event files in `workdir/tensorboard`, zipped to `archive` (its members
    at the zip's root); None when no epoch was recorded."""
    from tensorboardX.event_file_writer import EventsWriter
    from tensorboardX.proto.event_pb2 import Event
    from tensorboardX.summary import scalar

    epochs = journaled_epochs(workdir)
    if not epochs:
        return None
    log_dir = workdir / LOG_DIR
    shutil.rmtree(log_dir, ignore_errors=True)  # written whole from the journal, never appended to
    log_dir.mkdir()
    # the synchronous writer under SummaryWriter: SummaryWriter adds a multiprocessing queue and a thread,
    # which a confined job process cannot create (no semaphores) and a few scalars do not need
    writer = EventsWriter(str(log_dir / "events"))
    try:
        for epoch in sorted(epochs):
            for tag, read in SCALARS.items():
                value = read(epochs[epoch])
                if value is not None:
                    writer.write_event(Event(wall_time=time.time(), step=epoch, summary=scalar(tag, float(value))))
    finally:
        writer.close()
    tmp = archive.with_suffix(".partial")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(log_dir.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(log_dir).as_posix())
    tmp.replace(archive)
    return archive
