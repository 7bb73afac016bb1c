"""Writing output files atomically (model files, reports)."""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask now (a program may change it after import).

    Read from ``/proc/self/status`` where that exists, which changes nothing;
    elsewhere it is set and restored under a lock (``os.umask`` is the only
    portable way to read it).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


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
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp creates 0600; give the usual mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
