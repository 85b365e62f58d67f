"""Filter pruning: channel groups, importance, schedules, masks and physical channel removal."""

from squeezer.compression.pruning import algorithm  # noqa: F401  (registers the algorithm)
