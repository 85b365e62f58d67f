"""What a job row says about a failure: one sentence a user can act on, a full disk named as such."""

from __future__ import annotations

import errno


def failure_reason(exc: BaseException) -> str:
    full = isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
    # torch.save reports a short write as a RuntimeError from its zip writer (inline_container.cc)
    if full or (isinstance(exc, RuntimeError) and "inline_container.cc" in str(exc)):
        where = f" writing {exc.filename}" if isinstance(exc, OSError) and exc.filename else ""
        return f"storage full{where} ({exc}); files written before, the last checkpoint included, are intact"
    return f"{type(exc).__name__}: {exc}"
