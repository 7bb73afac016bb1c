"""A content-addressed, multi-process safe on-disk cache of embeddings.

An entry is addressed by the expert's fingerprint (model, weights, preprocessing,
cache format version) and the item's content key (a hash of its bytes or text),
never by a path or a row position: the same image under two paths is one entry,
and a retrained or reconfigured expert never reads another's embeddings.

Layout on disk::

    {directory}/{fingerprint[:32]}/{key[:2]}/{key}.emb

Each file holds a 16-byte header (magic, format version, dtype code, length,
CRC-32 of the payload) followed by the float32 values, little endian. Writes go
to a temporary file in the same directory and are renamed into place with
:func:`os.replace`, which is atomic, so concurrent writers of one key (joblib or
Optuna workers) never leave a half-written entry behind, and readers see either
no file or a whole one. An entry that fails any check (size, magic, dtype,
length, checksum) is deleted and reported as a miss: it is recomputed, never
returned.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import struct
import tempfile
import zlib
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

__all__ = ["EmbeddingCache"]

logger = logging.getLogger(__name__)

CACHE_DIR_ENV = "MEDMIX_CACHE_DIR"

_MAGIC = b"MMXE"
_FORMAT_VERSION = 1
_DTYPE_FLOAT32 = 1
# magic, format version, dtype code, reserved, number of values, crc32 of payload
_HEADER = struct.Struct("<4sBBHII")
_SUFFIX = ".emb"
_HEX_RE = re.compile(r"^[0-9a-f]{8,128}$")


def _safe_hex(value: str) -> str:
    """Return ``value`` if it is a lowercase hex digest, else its SHA-256."""
    value = str(value)
    if _HEX_RE.match(value):
        return value
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def default_cache_dir() -> Path:
    """The directory ``cache_dir="auto"`` resolves to.

    ``$MEDMIX_CACHE_DIR`` when set, else ``$XDG_CACHE_HOME/medmix_sklearn``,
    else ``%LOCALAPPDATA%\\medmix_sklearn`` on Windows, else
    ``~/.cache/medmix_sklearn``.
    """
    env = os.environ.get(CACHE_DIR_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "medmix_sklearn"
    if os.name == "nt" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "medmix_sklearn"
    return Path.home() / ".cache" / "medmix_sklearn"


def resolve_cache_dir(cache_dir) -> Path | None:
    """Turn the ``cache_dir`` parameter into a directory, or None for no disk cache."""
    if cache_dir is None:
        return None
    if isinstance(cache_dir, str) and cache_dir == "auto":
        return default_cache_dir()
    return Path(os.fspath(cache_dir)).expanduser()


def _encode(vector: np.ndarray) -> bytes:
    payload = np.ascontiguousarray(vector, dtype="<f4").tobytes()
    header = _HEADER.pack(
        _MAGIC, _FORMAT_VERSION, _DTYPE_FLOAT32, 0, len(payload) // 4, zlib.crc32(payload)
    )
    return header + payload


def _decode(data: bytes, dim: int | None) -> np.ndarray | None:
    """Decode an entry; None if it fails any integrity check."""
    if len(data) < _HEADER.size:
        return None
    magic, version, dtype_code, _, n, crc = _HEADER.unpack_from(data)
    if magic != _MAGIC or version != _FORMAT_VERSION or dtype_code != _DTYPE_FLOAT32:
        return None
    if len(data) != _HEADER.size + 4 * n or (dim is not None and n != dim):
        return None
    payload = memoryview(data)[_HEADER.size:]
    if zlib.crc32(payload) != crc:
        return None
    return np.frombuffer(payload, dtype="<f4").astype(np.float32)


class EmbeddingCache:
    """Content-addressed store of float32 embeddings in a directory.

    Parameters
    ----------
    directory : str or path-like
        Root directory; created on the first write.

    Attributes
    ----------
    hits : int
        Lookups answered from disk since creation (or :meth:`reset_stats`).
    misses : int
        Lookups that found no valid entry (absent or corrupt).
    corrupt : int
        Entries found damaged, deleted and counted as misses.
    writes : int
        Entries written.

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> cache = EmbeddingCache(tempfile.mkdtemp())
    >>> cache.put("ab" * 32, "cd" * 32, np.ones(3))
    >>> cache.get("ab" * 32, "cd" * 32)
    array([1., 1., 1.], dtype=float32)
    >>> cache.hits, cache.misses
    (1, 0)
    """

    def __init__(self, directory):
        self.directory = Path(os.fspath(directory)).expanduser()
        self.reset_stats()

    def __repr__(self) -> str:
        return f"EmbeddingCache({str(self.directory)!r})"

    def reset_stats(self) -> None:
        """Set the hit, miss, corrupt and write counters to zero."""
        self.hits = 0
        self.misses = 0
        self.corrupt = 0
        self.writes = 0

    # -- addressing ---------------------------------------------------------
    def path(self, fingerprint: str, key: str) -> Path:
        """File that holds the entry of ``key`` for the expert ``fingerprint``."""
        fingerprint = _safe_hex(fingerprint)[:32]
        key = _safe_hex(key)
        return self.directory / fingerprint / key[:2] / f"{key}{_SUFFIX}"

    # -- reading ------------------------------------------------------------
    def get(self, fingerprint: str, key: str, *, dim: int | None = None) -> np.ndarray | None:
        """Return the cached embedding, or None on a miss.

        Parameters
        ----------
        fingerprint : str
            The expert's :meth:`~medmix_sklearn.experts.BaseExpert.fingerprint`.
        key : str
            The item's content key.
        dim : int, default=None
            Expected length; an entry of another length counts as corrupt.

        Returns
        -------
        embedding : ndarray of shape (dim,), dtype float32, or None
        """
        path = self.path(fingerprint, key)
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            self.misses += 1
            return None
        except OSError as exc:
            logger.warning("Could not read cache entry %s: %s", path, exc)
            self.misses += 1
            return None
        vector = _decode(data, dim)
        if vector is None:
            logger.warning("Cache entry %s is corrupt; deleting it and recomputing.", path)
            self.corrupt += 1
            self.misses += 1
            try:
                os.remove(path)
            except OSError:
                pass
            return None
        self.hits += 1
        return vector

    def get_many(
        self, fingerprint: str, keys: Iterable[str], *, dim: int | None = None
    ) -> dict[str, np.ndarray]:
        """Look up several keys; return ``{key: embedding}`` for the hits only."""
        found = {}
        for key in keys:
            vector = self.get(fingerprint, key, dim=dim)
            if vector is not None:
                found[key] = vector
        return found

    def __contains__(self, address) -> bool:
        fingerprint, key = address
        return self.path(fingerprint, key).is_file()

    # -- writing ------------------------------------------------------------
    def put(self, fingerprint: str, key: str, vector) -> None:
        """Store one embedding (written as float32), atomically."""
        path = self.path(fingerprint, key)
        data = _encode(np.asarray(vector).ravel())
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem[:16]}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            try:
                os.replace(tmp, path)
            except PermissionError:
                # Windows refuses to replace a file another process holds open;
                # that process wrote the same content, so keep its file.
                if not path.exists():
                    raise
                os.remove(tmp)
        except BaseException:
            try:
                os.remove(tmp)
            except OSError:
                pass
            raise
        self.writes += 1

    def put_many(self, fingerprint: str, items: Mapping[str, np.ndarray] | Iterable) -> None:
        """Store several embeddings: a mapping or pairs of ``(key, embedding)``."""
        pairs = items.items() if isinstance(items, Mapping) else items
        for key, vector in pairs:
            self.put(fingerprint, key, vector)

    def clear(self) -> None:
        """Delete every entry under :attr:`directory` written by this cache."""
        if not self.directory.is_dir():
            return
        for path in self.directory.glob(f"*/*/*{_SUFFIX}"):
            try:
                os.remove(path)
            except OSError:
                pass
