"""Error-compensating weight rounding for Linear layers (GPTQ, Frantar et al., 2022), at INT8.

After SmoothQuant moves a GELU output's outlier channels into the next Linear's weight columns, rounding
those weights to the per-row grid is what loses most (MiniLM's first feed-forward output: 1.9e-3 of
the layer's output energy from the weights against 6e-5 from its input). Rounding the columns one at a
time and spreading each column's rounding error over the columns not yet rounded, weighted by the
inverse of the input's second moment H = X^T X, keeps X W^T close to its FP32 value. The grid (each
row's scale) is the weight quantizer's, set before; the weights are left on that grid.
"""

from __future__ import annotations

import torch

BLOCK = 128
DAMPING = 0.01  # of H's mean diagonal, added to its diagonal: keeps the inverse finite for rare channels


def _inverse_cholesky(h: torch.Tensor) -> torch.Tensor:
    """The upper Cholesky factor of H^-1 (after damping), what the column updates are scaled by."""
    damp = DAMPING * float(torch.diagonal(h).mean())
    h = h + damp * torch.eye(h.shape[0], dtype=h.dtype)
    inverse = torch.cholesky_inverse(torch.linalg.cholesky(h))
    return torch.linalg.cholesky(inverse, upper=True)


def gptq_round(weight: torch.Tensor, step: torch.Tensor, qmin: int, qmax: int, h: torch.Tensor) -> torch.Tensor:
    """`weight` (out, in) on the grid `step` (out, 1) * [qmin, qmax], rounded column by column with each
    column's error compensated in the later columns; `h` (in, in) is the input's X^T X."""
    w = weight.detach().double().clone()
    h = h.double().clone()
    dead = torch.diagonal(h) == 0  # inputs that are always zero: any weight does
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    u = _inverse_cholesky(h)
    step = step.double().reshape(-1, 1)
    q = torch.zeros_like(w)
    columns = w.shape[1]
    for start in range(0, columns, BLOCK):
        end = min(start + BLOCK, columns)
        block = w[:, start:end].clone()
        errors = torch.zeros_like(block)
        u_block = u[start:end, start:end]
        for i in range(end - start):
            column = block[:, i : i + 1]
            rounded = (column / step).round().clamp(qmin, qmax) * step
            q[:, start + i : start + i + 1] = rounded
            error = (column - rounded) / u_block[i, i]
            block[:, i + 1 :] -= error @ u_block[i : i + 1, i + 1 :]
            errors[:, i : i + 1] = error
        w[:, end:] -= errors @ u[start:end, end:]
    return q.to(weight.dtype)
