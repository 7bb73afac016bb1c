"""Writing output files atomically (model files, reports)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable

# Read once, at import: reading the umask means setting it, which is not
# thread-safe, so it is not done on every write.
_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path, write: Callable[[str], None], *, prefix: str, suffix: str) -> str:
    """Create ``path`` in one step: ``write(tmp)`` fills a temporary file beside it.

    The folder of ``path`` is created if needed. The temporary file gets the
    mode a plain ``open(path, "w")`` would give, then replaces ``path``
    atomically, so a reader never sees a half-written file; on any error it
    is removed and ``path`` is left as it was. Returns ``path`` as a str.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=prefix, suffix=suffix)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the usual mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
