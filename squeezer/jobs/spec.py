"""What a job's stored spec names: the artifacts it reads, by field. The API checks them at submit and
before an artifact is deleted; the worker opens them when it claims the job."""

from __future__ import annotations

JOB_INPUTS = ("model", "train_data", "val_data")  # spec fields that hold artifact ids (val_data may be None)
