"""Weight sparsity: magnitude, regularization-based (RB) and const masks, with level schedules."""

from squeezer.compression.sparsity import const, magnitude, rb  # noqa: F401  (register the algorithms)
