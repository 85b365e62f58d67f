"""Files that hold a secret (an API key): readable by this user only from their first byte, whatever the umask.

Writing the file and then chmod-ing it leaves a moment in which others may open it, and an open file
stays readable after the chmod; so the file is created 0600 under a temporary name and renamed into place.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path` atomically: a reader sees the old file or the whole new one, never a part."""
    # mkstemp: os.open(O_CREAT | O_EXCL | O_NOFOLLOW, 0o600), a fresh name no one else holds; a umask only
    # ever removes permission bits, so the file never has more than 0600
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
