"""A job's TensorBoard export, read back with TensorBoard's own event reader: one point per epoch and
tag, the values the job reported, and no second point when a resumed job reports an epoch again."""

from __future__ import annotations

import pytest

from squeezer.recipe import Recipe
from squeezer.worker.runner import run_job
from squeezer.worker.tensorboard import SCALARS, journal_epoch, write_tensorboard
from tests.helpers import read_tensorboard_zip, write_digits_job_files

SPARSITY = {
    "compression": {
        "algorithm": "magnitude_sparsity",
        "params": {"schedule": "polynomial", "sparsity_target": 0.5, "sparsity_target_epoch": 2},
    }
}


@pytest.mark.slow
def test_a_job_writes_one_scalar_per_epoch_with_the_reported_values(tmp_path):
    files = write_digits_job_files(tmp_path)
    result = run_job(
        files["model"], SPARSITY, files["train"], files["val"], Recipe(epochs=3, lr=3e-3), tmp_path / "work"
    )
    assert result.artifacts["tensorboard"] == str(tmp_path / "work" / "tensorboard.zip")
    scalars = read_tensorboard_zip(result.artifacts["tensorboard"], tmp_path / "unzipped")

    records = result.records
    assert [r["epoch"] for r in records] == [0, 1, 2, 3]
    for tag, read in SCALARS.items():
        expected = [(r["epoch"], read(r)) for r in records if read(r) is not None]
        assert [step for step, _ in scalars.get(tag, [])] == [step for step, _ in expected], tag
        assert [v for _, v in scalars.get(tag, [])] == pytest.approx([v for _, v in expected], rel=1e-6), tag
    # what the charts need is there: the metric, its lower bound, the rate rising with the schedule, the loss
    assert {"metric/validation", "metric/minimal_tolerable", "compression/rate", "train/loss", "train/lr"} <= set(
        scalars
    )
    rates = [v for _, v in scalars["compression/rate"]]
    assert rates[-1] > rates[0]
    assert [s for s, _ in scalars["train/loss"]] == [1, 2, 3]  # epoch 0 is the evaluation before training


def test_an_epoch_reported_again_after_a_resume_replaces_the_first_point(tmp_path):
    def record(epoch, metric):
        return {"epoch": epoch, "metric": metric, "accuracy_budget": metric - 90.0, "loss": 1.0 / (epoch + 1)}

    for epoch, metric in ((0, 91.0), (1, 92.0), (2, 93.0)):
        journal_epoch(tmp_path, record(epoch, metric))
    with (tmp_path / "tensorboard_scalars.jsonl").open("a") as journal:
        journal.write('{"epoch": 3, "met')  # the worker died while writing epoch 3
    for epoch, metric in ((2, 93.5), (3, 94.0)):  # the resumed job validates epoch 2 again, then goes on
        journal_epoch(tmp_path, record(epoch, metric))

    scalars = read_tensorboard_zip(write_tensorboard(tmp_path, tmp_path / "tb.zip"), tmp_path / "unzipped")
    assert scalars["metric/validation"] == [(0, 91.0), (1, 92.0), (2, 93.5), (3, 94.0)]
    assert [v for _, v in scalars["metric/minimal_tolerable"]] == [90.0] * 4
    assert "compression/rate" not in scalars  # no value was reported, so no point was made up


def test_no_recorded_epoch_means_no_export(tmp_path):
    assert write_tensorboard(tmp_path, tmp_path / "tb.zip") is None
    assert not (tmp_path / "tb.zip").exists()
