"""Knowledge distillation from the uncompressed model."""

from squeezer.compression.distillation import kd  # noqa: F401  (registers the algorithm)
