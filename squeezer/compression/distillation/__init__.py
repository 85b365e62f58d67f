"""Knowledge distillation from the uncompressed model (spec algorithms.md §6)."""

from squeezer.compression.distillation import kd  # noqa: F401  (registers the algorithm)
