"""A terminal progress bar for `jobs.wait(progress=True)` and `squeezer jobs watch` (rich)."""

from __future__ import annotations

import os
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from squeezer.api.schemas import JobRead, MetricRead


def make_console() -> Console:
    """A terminal's own width; piped or captured, rich would cut every line at 80 columns (ids, names,
    the bar's status), so then lines keep their natural width. COLUMNS, when set, wins."""
    console = Console()
    if console.is_terminal or os.environ.get("COLUMNS"):
        return console
    return Console(width=100_000)


class JobProgress:
    """Epochs done out of the job's total, with its stage, metric and compression rate; a no-op when disabled."""

    def __init__(self, job: JobRead, enabled: bool = True, console: Any = None) -> None:
        self.enabled = enabled
        self._bar = (
            Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[status]}"),
                TimeElapsedColumn(),
                console=console or make_console(),
                transient=False,
            )
            if enabled
            else None
        )
        self._task: Any = None
        self._job = job

    def __enter__(self) -> JobProgress:
        if self._bar is not None:
            self._bar.start()
            self._task = self._bar.add_task(
                self._job.name, total=self._job.total_epochs, status=self._status(self._job)
            )
        return self

    def __exit__(self, *_: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    @staticmethod
    def _status(job: JobRead) -> str:
        parts: list[str] = [job.status]
        if job.status == "succeeded" and job.total_epochs and job.epoch < job.total_epochs:
            parts.append(f"done after {job.epoch} of {job.total_epochs} epochs")
        if job.stage:
            parts.append(job.stage)
        if job.current_metric is not None:
            parts.append(f"metric {job.current_metric:.4g}")
        if job.compression_rate is not None:
            parts.append(f"rate {job.compression_rate:.3g}")
        return " · ".join(parts)

    def job(self, job: JobRead) -> None:
        self._job = job
        if self._bar is not None:
            # epochs trained, even when an early exit ends the job before its total: the status says why
            self._bar.update(self._task, completed=job.epoch, total=job.total_epochs, status=self._status(job))

    def metric(self, metric: MetricRead) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=metric.epoch)
