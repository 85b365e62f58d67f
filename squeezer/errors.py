"""One exception hierarchy for the whole package, so callers can catch `SqueezerError`."""

from __future__ import annotations


class SqueezerError(Exception):
    """Base class of every error Squeezer raises on purpose."""


class ConfigError(SqueezerError, ValueError):
    """A compression config is invalid. `path` is the JSON path of the offending value."""

    def __init__(self, message: str, path: str = "$", problems: list[str] | None = None) -> None:
        self.path = path
        self.problems = problems or [f"{path}: {message}"]
        super().__init__("\n".join(self.problems) if problems else f"{path}: {message}")


class ScopeError(ConfigError):
    """An ignored/target scope pattern matches no operation of the model."""


class ExportError(SqueezerError):
    """The exported ONNX file does not reproduce the torch model."""


class StateError(SqueezerError):
    """A checkpoint or compression state does not fit the model."""


class CompressionError(SqueezerError):
    """The model cannot be compressed as configured (e.g. missing init data)."""


class TrainingDiverged(CompressionError):
    """The training loss became non-finite or exploded: further epochs would only train noise."""

    def __init__(self, epoch: int, loss: float, reference: float | None = None) -> None:
        self.epoch, self.loss, self.reference = epoch, loss, reference
        grew = f", from {reference:.4g} at first" if reference is not None and loss == loss else ""
        super().__init__(f"loss diverged at epoch {epoch} (loss={loss:.4g}{grew})")
