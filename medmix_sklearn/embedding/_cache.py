"""A content-addressed, multi-process safe on-disk cache of embeddings.

An entry is addressed by the expert's fingerprint (model, weights, preprocessing,
cache format version) and the item's content key (a hash of its bytes or text),
never by a path or a row position: the same image under two paths is one entry,
and a retrained or reconfigured expert never reads another's embeddings.

Layout on disk (store format 2)::

    {directory}/v2/{fingerprint[:32]}/{segment}.seg    records, appended
    {directory}/v2/{fingerprint[:32]}/{segment}.idx    (key, offset) pairs, appended
    {directory}/v2/{fingerprint[:32]}/{segment}.lock   held by the segment's writer
    {directory}/v2/{fingerprint[:32]}/expert.json      what the fingerprint is (optional)
    {directory}/v2/files/...                           file identity -> content key
    {directory}/{fingerprint[:32]}/{key[:2]}/{key}.emb  format 1 entries, still read

A segment file starts with a 16-byte header (``MMXSEG``, format version) followed
by records. A record is a 48-byte header (magic ``MMXR``, format version, kind,
payload length, CRC-32 of key and payload, the 32-byte binary key) and its
payload: the float32 values, little endian, for an embedding; the content key,
the time it was recorded and the file's identity for a file record. The index
file beside it holds 40-byte entries: the key and the record's byte offset.

Why this design (measured in ``docs/scaling.md``): one file per entry, the
format-1 layout, leaves millions of files at a million items and costs an open
per item; SQLite in WAL mode packs everything into one file but its locking
relies on shared memory, which its authors say does not work on network file
systems, and its writers queue on one lock. Here every writer appends only to
files it holds, so no two processes ever write the same file, and readers need
no lock at all:

- A writer claims a segment by creating its ``.lock`` file with ``O_EXCL`` (or
  creates a new segment with ``O_EXCL``); it releases the lock when it is done.
  A segment is reused by later writers until it reaches 256 MiB, so the number
  of files grows with the data and the number of concurrent writers, not with
  the number of entries (``prune`` removes stale locks of crashed writers).
- Records are appended first, index entries after. A reader loads the index
  files (a few bytes per entry; one sorted array per expert, looked up for a
  whole batch at once with :func:`numpy.searchsorted`) and checks every record
  it returns: magic, format, kind, length, key and CRC. A record that fails a
  check is counted as damaged and reported as a miss, so it is recomputed
  (and appended again), never returned; :meth:`EmbeddingCache.prune` drops
  damaged records from the files.
- On a shared file system the store relies on what NFSv3 and later, and the
  common cluster file systems, provide: atomic ``O_EXCL`` creation and atomic
  rename. A reader on another machine may see a record its writer has not
  flushed yet; the checks make that a miss, never a wrong value.

File identities (``v2/files``): an image file's content key can be remembered
by the file's identity (resolved path, size, modification and change times in
nanoseconds, inode and device), so a warm pass costs one ``stat`` per file and
reads none of its bytes. An identity is recorded only when the file's times
are at least :data:`RACY_SECONDS` older than the moment of hashing (git's
"racy" rule): a file written just before or while it was hashed could change
again without a visible change of time, so it is hashed again until it is old
enough to trust.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import socket
import struct
import threading
import time
import weakref
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "EmbeddingCache",
    "FileIdentity",
    "content_key_by_identity",
    "file_identity",
    "identity_of",
]

logger = logging.getLogger(__name__)

CACHE_DIR_ENV = "MEDMIX_CACHE_DIR"

#: A file whose modification or change time is closer than this to the moment
#: it was hashed is not remembered by identity (it is hashed again next time).
RACY_SECONDS = 3.0

_STORE = "v2"
_FILES = "files"
_SEGMENT_MAGIC = b"MMXSEG\x00\x02"
_SEGMENT_HEADER = struct.Struct("<8sQ")  # magic+version, creation time (ns)
_RECORD_MAGIC = b"MMXR"
_RECORD_VERSION = 2
_KIND_FLOAT32 = 1
_KIND_FILE = 2
# magic, version, kind, reserved, payload length, crc32(key + payload), key
_RECORD = struct.Struct("<4sBBHII32s")
_INDEX = np.dtype([("key", "<u8", (4,)), ("offset", "<u8")])
_RECORD_DTYPE = np.dtype(
    [
        ("magic", "S4"),
        ("version", "u1"),
        ("kind", "u1"),
        ("reserved", "<u2"),
        ("length", "<u4"),
        ("crc", "<u4"),
        ("key", "<u8", (4,)),
    ]
)
_FILE_RECORD = struct.Struct("<32sqqqqqq")  # key, recorded, size, mtime, ctime, ino, dev
_MAX_SEGMENT_BYTES = 256 * 2**20
_REFRESH_SECONDS = 1.0
_STALE_LOCK_SECONDS = 24 * 3600.0

# Format 1: one file per entry.
_MAGIC = b"MMXE"
_FORMAT_VERSION = 1
_DTYPE_FLOAT32 = 1
_HEADER = struct.Struct("<4sBBHII")
_SUFFIX = ".emb"
_HEX_RE = re.compile(r"^[0-9a-f]{8,128}$")
_NAME_RE = re.compile(r"[^A-Za-z0-9_.-]")


def _safe_hex(value: str) -> str:
    """Return ``value`` if it is a lowercase hex digest, else its SHA-256."""
    value = str(value)
    if _HEX_RE.match(value):
        return value
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def _key_bytes(key: str) -> bytes:
    """The 32-byte binary form of a key (a SHA-256 hex digest, or hashed into one)."""
    key = str(key)
    if len(key) == 64:
        try:
            raw = bytes.fromhex(key)
        except ValueError:
            raw = b""
        if len(raw) == 32:
            return raw
    return hashlib.sha256(key.encode("utf-8")).digest()


def _keys_bytes(keys: list[str]) -> bytes:
    """``_key_bytes`` of every key, joined; fast when all are SHA-256 hex digests."""
    if keys and all(isinstance(k, str) for k in keys) and set(map(len, keys)) == {64}:
        try:
            raw = bytes.fromhex("".join(keys))
        except ValueError:
            raw = b""
        if len(raw) == 32 * len(keys):
            return raw
    return b"".join(map(_key_bytes, keys))


def _folder_name(fingerprint: str) -> str:
    return _safe_hex(fingerprint)[:32]


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


# -- format 1 (one file per entry), read side by side ---------------------------
def _decode_v1(data: bytes, dim: int | None) -> np.ndarray | None:
    """Decode a format-1 entry; None if it fails any integrity check."""
    if len(data) < _HEADER.size:
        return None
    magic, version, dtype_code, _, n, crc = _HEADER.unpack_from(data)
    if magic != _MAGIC or version != _FORMAT_VERSION or dtype_code != _DTYPE_FLOAT32:
        return None
    if len(data) != _HEADER.size + 4 * n or (dim is not None and n != dim):
        return None
    payload = memoryview(data)[_HEADER.size :]
    if zlib.crc32(payload) != crc:
        return None
    return np.frombuffer(payload, dtype="<f4").astype(np.float32)


def _vector_dtype(n_values: int) -> np.dtype:
    return np.dtype([("header", _RECORD_DTYPE), ("values", "<f4", (n_values,))])


def _encode_vectors(keys: list[bytes], matrix: np.ndarray) -> np.ndarray:
    """Records of float32 vectors of one length, as one structured array."""
    matrix = np.ascontiguousarray(matrix, dtype="<f4").reshape(len(keys), -1)
    records = np.zeros(len(keys), dtype=_vector_dtype(matrix.shape[1]))
    header = records["header"]
    header["magic"] = _RECORD_MAGIC
    header["version"] = _RECORD_VERSION
    header["kind"] = _KIND_FLOAT32
    header["length"] = matrix.shape[1] * 4
    header["key"] = np.frombuffer(b"".join(keys), dtype="<u8").reshape(-1, 4)
    records["values"] = matrix
    raw = records.view(np.uint8).reshape(len(keys), -1)
    # The CRC covers the key and the payload: bytes 16 onwards of each record.
    header["crc"] = [zlib.crc32(row) for row in raw[:, 16:]]
    return records


def _encode_record(kind: int, key: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(payload, zlib.crc32(key))
    return _RECORD.pack(_RECORD_MAGIC, _RECORD_VERSION, kind, 0, len(payload), crc, key) + payload


# -- one expert's (or the file records') segments -------------------------------
class _Segment:
    """One segment file, read with positioned reads.

    Not memory-mapped: a file that another process cuts short (a reclaimed
    segment losing a torn tail) then reads short, which is a miss, instead of
    faulting.
    """

    __slots__ = ("path", "_fh", "_lock")

    def __init__(self, path: Path):
        self.path = path
        self._fh = None
        self._lock = threading.Lock()

    def pread(self, offset: int, length: int) -> bytes | None:
        """``length`` bytes at ``offset``, or None if the file is shorter or unreadable."""
        try:
            with self._lock:
                if self._fh is None:
                    self._fh = open(self.path, "rb")
                if hasattr(os, "pread"):
                    data = os.pread(self._fh.fileno(), length, offset)
                else:  # pragma: no cover - Windows
                    self._fh.seek(offset)
                    data = self._fh.read(length)
        except (OSError, ValueError):
            return None
        return data if len(data) == length else None

    def gather(self, offsets: list[int], size: int) -> list[bytes | None]:
        """The ``size`` bytes at each offset: one read of the span when it is dense."""
        lo, hi = min(offsets), max(offsets) + size
        if hi - lo <= max(4 * size * len(offsets), 1 << 20) and hi - lo <= 1 << 28:
            span = self.pread(lo, hi - lo)
            if span is not None:
                return [span[o - lo : o - lo + size] for o in offsets]
        return [self.pread(o, size) for o in offsets]

    def gather_records(self, offsets: np.ndarray, dtype: np.dtype) -> np.ndarray | None:
        """Fixed-size records at ``offsets`` as one array, by one read of their span.

        None when the span is sparse, when an offset is not a whole number of
        records from the first (then :meth:`gather` reads them one by one), or
        when the file is too short.
        """
        size = dtype.itemsize
        if not len(offsets):
            return np.zeros(0, dtype=dtype)
        lo, hi = int(offsets.min()), int(offsets.max()) + size
        if hi - lo > max(4 * size * len(offsets), 1 << 20) or hi - lo > 1 << 28:
            return None
        steps, rest = np.divmod(np.asarray(offsets, dtype=np.int64) - lo, size)
        if rest.any():
            return None
        span = self.pread(lo, hi - lo)
        if span is None:
            return None
        return np.frombuffer(span, dtype=dtype)[steps]

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
            self._fh = None


def _release_lock(path: str, fds: list) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
    fds.clear()
    with contextlib.suppress(OSError):
        os.remove(path)


class _Writer:
    """Appends records to one segment this process holds (by its lock file)."""

    def __init__(self, folder: Path, *, reuse: bool = True):
        self.folder = folder
        self.reuse = reuse
        self.name = None
        self.size = 0
        self.idx_size = 0
        self._fds: list[int] = []
        self._finalizer = None

    def _claim(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        candidates = sorted(self.folder.glob("*.seg")) if self.reuse else []
        for seg in candidates:
            try:
                if seg.stat().st_size >= _MAX_SEGMENT_BYTES:
                    continue
            except OSError:
                continue
            lock = seg.with_suffix(".lock")
            if lock.exists():
                continue
            if self._take_lock(lock) and self._open(seg.stem, create=False):
                return
            self._release()
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        host = _NAME_RE.sub("-", socket.gethostname())[:24] or "host"
        name = f"{stamp}-{host}-{os.getpid()}-{secrets.token_hex(4)}"
        if not self._take_lock(self.folder / f"{name}.lock") or not self._open(name, create=True):
            self._release()
            raise OSError(f"Could not create a cache segment in {self.folder}.")

    def _take_lock(self, lock: Path) -> bool:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        os.write(fd, f"{socket.gethostname()} {os.getpid()} {time.time():.0f}\n".encode())
        self._fds = [fd]
        self._finalizer = weakref.finalize(self, _release_lock, str(lock), self._fds)
        return True

    def _open(self, name: str, *, create: bool) -> bool:
        seg_path = self.folder / f"{name}.seg"
        idx_path = self.folder / f"{name}.idx"
        flags = os.O_WRONLY | os.O_APPEND | getattr(os, "O_BINARY", 0)
        if create:
            seg = os.open(seg_path, flags | os.O_CREAT | os.O_EXCL, 0o644)
            self._fds.append(seg)
            os.write(seg, _SEGMENT_HEADER.pack(_SEGMENT_MAGIC, time.time_ns()))
            idx = os.open(idx_path, flags | os.O_CREAT, 0o644)
            self._fds.append(idx)
            self.size = _SEGMENT_HEADER.size
            self.idx_size = 0
        else:
            try:
                end, idx_end = _repair_tail(seg_path, idx_path)
                seg = os.open(seg_path, flags)
                self._fds.append(seg)
                idx = os.open(idx_path, flags | os.O_CREAT, 0o644)
                self._fds.append(idx)
            except (OSError, ValueError) as exc:
                logger.warning("Not reusing cache segment %s: %s", seg_path, exc)
                return False
            self.size = end
            self.idx_size = idx_end
        self.name = name
        return True

    def append(self, records, kind: int) -> tuple[int, int, np.ndarray]:
        """Append ``(key, payload)`` records, or an array from :func:`_encode_vectors`.

        Returns the index file's size before and after, and the index entries written.
        """
        if self.name is None or self.size >= _MAX_SEGMENT_BYTES:
            self._release()
            self._claim()
        if isinstance(records, np.ndarray):
            # Fixed-size records, encoded at once (see _encode_vectors).
            data = records.tobytes()
            keys = records["header"]["key"]
            sizes = np.full(len(records), records.dtype.itemsize, dtype=np.uint64)
        else:
            blobs = [_encode_record(kind, key, payload) for key, payload in records]
            data = b"".join(blobs)
            keys = np.frombuffer(b"".join(k for k, _ in records), dtype="<u8").reshape(-1, 4)
            sizes = np.fromiter(map(len, blobs), dtype=np.uint64, count=len(blobs))
        entries = np.zeros(len(sizes), dtype=_INDEX)
        entries["key"] = keys
        entries["offset"] = self.size + np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(
            np.uint64
        )
        offset = self.size + int(sizes.sum())
        _write_all(self._fds[1], data)
        _write_all(self._fds[2], entries.tobytes())
        self.size = offset
        before = self.idx_size
        self.idx_size += entries.nbytes
        return before, self.idx_size, entries

    def _release(self) -> None:
        if self._finalizer is not None:
            self._finalizer()
        self._finalizer = None
        self.name = None

    close = _release


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _repair_tail(seg_path: Path, idx_path: Path) -> tuple[int, int]:
    """Cut a reclaimed segment back to its last whole, indexed record.

    A writer that crashed may leave a partial record or index entry at the end;
    appending after it would misalign the files. Only the holder of the lock
    calls this; it reads the segment's header and the last records' headers,
    not the whole file. Returns the new sizes of the segment and the index.
    """
    with open(seg_path, "r+b") as seg, open(idx_path, "a+b") as idx:
        size = os.fstat(seg.fileno()).st_size
        if size < _SEGMENT_HEADER.size or os.pread(seg.fileno(), 8, 0) != _SEGMENT_MAGIC:
            raise ValueError("not a format-2 segment")
        idx_size = os.fstat(idx.fileno()).st_size
        keep = idx_size // _INDEX.itemsize
        end = _SEGMENT_HEADER.size
        while keep > 0:
            raw = os.pread(idx.fileno(), _INDEX.itemsize, (keep - 1) * _INDEX.itemsize)
            entry = np.frombuffer(raw, dtype=_INDEX)[0]
            offset = int(entry["offset"])
            header = os.pread(seg.fileno(), _RECORD.size, offset)
            if len(header) == _RECORD.size:
                magic, _, _, _, length, _, key = _RECORD.unpack(header)
                stop = offset + _RECORD.size + length
                if magic == _RECORD_MAGIC and key == entry["key"].tobytes() and stop <= size:
                    end = stop
                    break
            keep -= 1
        if keep * _INDEX.itemsize != idx_size:
            idx.truncate(keep * _INDEX.itemsize)
        if end != size:
            seg.truncate(end)
    return end, keep * _INDEX.itemsize


class _Table:
    """The records of one folder: an index in memory, segments read on demand."""

    def __init__(self, folder: Path, kind: int):
        self.folder = folder
        self.kind = kind
        self._segments: list[_Segment] = []
        self._segment_ids: dict[str, int] = {}
        self._idx_sizes: dict[str, int] = {}
        # Merged entries in the order they were read (oldest first), and
        # ``_order``, their positions sorted by key prefix (newest first within
        # a prefix); ``_prefix`` is the sorted prefixes. Sorting positions only,
        # not the keys, keeps opening a big index cheap.
        self._prefix = np.empty(0, dtype="<u8")
        self._keys = np.empty((0, 4), dtype="<u8")
        self._where = np.empty((0, 2), dtype=np.int64)  # segment id, offset
        self._order = np.empty(0, dtype=np.intp)
        # Entries not merged into the sorted arrays yet: few go to a dict, many to a re-sort.
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []
        self._delta: dict[bytes, list[tuple[int, int]]] = {}
        self._loaded_at = -np.inf
        self._writer: _Writer | None = None
        self._lock = threading.Lock()

    # -- index ---------------------------------------------------------------
    def refresh(self, *, force: bool = False) -> None:
        """Read index entries appended since the last call (at most once a second)."""
        now = time.monotonic()
        if not force and now - self._loaded_at < _REFRESH_SECONDS:
            return
        self._loaded_at = now
        try:
            names = sorted(p.name for p in os.scandir(self.folder) if p.name.endswith(".idx"))
        except FileNotFoundError:
            return
        for name in names:
            path = self.folder / name
            start = self._idx_sizes.get(name, 0)
            try:
                size = os.stat(path).st_size
                if size <= start:
                    continue
                with open(path, "rb") as fh:
                    fh.seek(start)
                    raw = fh.read(size - start)
            except OSError:
                continue
            n = len(raw) // _INDEX.itemsize
            if n == 0:
                continue
            self._idx_sizes[name] = start + n * _INDEX.itemsize
            sid = self._segment_id(name[: -len(".idx")])
            self._add(sid, np.frombuffer(raw[: n * _INDEX.itemsize], dtype=_INDEX))

    def _add(self, sid: int, entries: np.ndarray) -> None:
        where = np.empty((len(entries), 2), dtype=np.int64)
        where[:, 0] = sid
        where[:, 1] = entries["offset"]
        self._pending.append((entries["key"], where))

    def _merge(self) -> None:
        if not self._pending:
            return
        n_new = sum(len(k) for k, _ in self._pending)
        if n_new + len(self._delta) <= max(4096, len(self._prefix) // 8):
            for keys, where in self._pending:
                for key, w in zip(keys, where.tolist()):
                    # Newest first, so a record written after a damaged one is tried first.
                    self._delta.setdefault(key.tobytes(), []).insert(0, tuple(w))
            self._pending = []
            return
        keys, where = [self._keys], [self._where]
        if self._delta:
            delta = [(k, w) for k, ws in self._delta.items() for w in reversed(ws)]
            keys.append(np.frombuffer(b"".join(k for k, _ in delta), "<u8").reshape(-1, 4))
            where.append(np.asarray([w for _, w in delta], dtype=np.int64).reshape(-1, 2))
            self._delta = {}
        keys += [k for k, _ in self._pending]
        where += [w for _, w in self._pending]
        self._pending = []
        self._keys = np.concatenate(keys)
        self._where = np.concatenate(where)
        # Stable, and reversed within equal prefixes: newest records first.
        order = np.argsort(self._keys[::-1, 0], kind="stable")
        self._order = len(self._keys) - 1 - order
        self._prefix = self._keys[self._order, 0]

    def _segment_id(self, stem: str) -> int:
        sid = self._segment_ids.get(stem)
        if sid is None:
            sid = len(self._segments)
            self._segments.append(_Segment(self.folder / f"{stem}.seg"))
            self._segment_ids[stem] = sid
        return sid

    def candidates(self, keys: bytes) -> tuple[np.ndarray, dict]:
        """Where the records of the keys are, for a batch of 32-byte keys joined in one bytes.

        Returns ``first``, an int64 array of shape ``(n_keys, 2)`` holding the
        segment id and offset of each key's newest record (-1 where there is
        none), and ``more``, ``{position: [(segment id, offset), ...]}`` listing
        every record of the keys that have several.
        """
        with self._lock:
            self._merge()
        query = np.frombuffer(keys, dtype="<u8").reshape(-1, 4)
        first = np.full((len(query), 2), -1, dtype=np.int64)
        more: dict[int, list[tuple[int, int]]] = {}
        if len(self._prefix) and len(query):
            prefix = self._prefix
            wanted = query[:, 0]
            # Searching sorted queries walks the index once, cache-friendly.
            order = np.argsort(wanted)
            left = np.empty(len(wanted), dtype=np.intp)
            left[order] = np.searchsorted(prefix, wanted[order], side="left")
            last = len(prefix) - 1
            hit = prefix[np.minimum(left, last)] == wanted
            hit &= left <= last
            # Several records under one prefix (a key written twice, or rarely two
            # keys sharing 8 bytes) when the next entry has the same prefix.
            several = hit & (prefix[np.minimum(left + 1, last)] == wanted) & (left < last)
            single = np.flatnonzero(hit & ~several)
            pos = self._order[left[single]]
            exact = (self._keys[pos] == query[single]).all(axis=1)
            first[single[exact]] = self._where[pos[exact]]
            multiple = np.flatnonzero(several)
            right = np.zeros(len(wanted), dtype=np.intp)
            right[multiple] = np.searchsorted(prefix, wanted[multiple], side="right")
            for i in multiple.tolist():
                hits = [
                    (int(self._where[p, 0]), int(self._where[p, 1]))
                    for p in self._order[left[i] : right[i]].tolist()
                    if (self._keys[p] == query[i]).all()
                ]
                if hits:
                    first[i] = hits[0]
                    more[i] = hits
        if self._delta:
            for i in range(len(query)):
                extra = self._delta.get(keys[32 * i : 32 * i + 32])
                if extra:
                    listed = more.get(i) or ([tuple(first[i].tolist())] if first[i, 0] >= 0 else [])
                    more[i] = extra + listed
                    first[i] = extra[0]
        return first, more

    def read(self, key: bytes, sid: int, offset: int, length: int | None) -> memoryview | None:
        """The payload of the record at ``offset`` if it passes every check, else None."""
        segment = self._segments[sid]
        header = segment.pread(offset, _RECORD.size)
        if header is None:
            return None
        magic, version, kind, _, n, crc, stored_key = _RECORD.unpack(header)
        if (
            magic != _RECORD_MAGIC
            or version != _RECORD_VERSION
            or kind != self.kind
            or stored_key != key
            or (length is not None and n != length)
        ):
            return None
        payload = segment.pread(offset + _RECORD.size, n)
        if payload is None or zlib.crc32(payload, zlib.crc32(key)) != crc:
            return None
        return memoryview(payload)

    def read_vectors(
        self, keys: bytes, first: np.ndarray, n_values: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The first candidate record of each key, checked for a whole batch at once.

        Returns the values, shape ``(len(keys), n_values)``, and a mask of the
        keys whose record passed every check.
        """
        dtype = _vector_dtype(n_values)
        size = dtype.itemsize
        n = len(first)
        values = np.empty((n, n_values), dtype=np.float32)
        ok = np.zeros(n, dtype=bool)
        query_all = np.frombuffer(keys, dtype="<u8").reshape(-1, 4)
        blank = bytes(size)
        for sid in np.unique(first[:, 0]).tolist():
            if sid < 0:
                continue
            rows = np.flatnonzero(first[:, 0] == sid)
            records = self._segments[sid].gather_records(first[rows, 1], dtype)
            if records is None:
                blobs = self._segments[sid].gather(first[rows, 1].tolist(), size)
                blobs = [blank if b is None else b for b in blobs]
                records = np.frombuffer(b"".join(blobs), dtype=dtype)
            # The CRC covers the key and the payload: bytes 16 onwards of each record.
            flat = memoryview(np.ascontiguousarray(records).view(np.uint8))
            crcs = np.fromiter(
                (zlib.crc32(flat[o + 16 : o + size]) for o in range(0, size * len(rows), size)),
                dtype=np.uint32,
                count=len(rows),
            )
            header = records["header"]
            good = (
                (header["magic"] == _RECORD_MAGIC)
                & (header["version"] == _RECORD_VERSION)
                & (header["kind"] == _KIND_FLOAT32)
                & (header["length"] == 4 * n_values)
                & (header["crc"] == crcs)
                & (header["key"] == query_all[rows]).all(axis=1)
            )
            values[rows[good]] = records["values"][good]
            ok[rows[good]] = True
        return values, ok

    # -- writing ---------------------------------------------------------------
    def append(self, records) -> None:
        with self._lock:
            if self._writer is None:
                self._writer = _Writer(self.folder)
            before, after, entries = self._writer.append(records, self.kind)
            # This process's own appends are visible at once, without re-reading.
            name = f"{self._writer.name}.idx"
            if self._idx_sizes.get(name, 0) == before:
                self._idx_sizes[name] = after
                self._add(self._segment_id(self._writer.name), entries)

    def close(self) -> None:
        with self._lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
        for segment in self._segments:
            segment.close()


class EmbeddingCache:
    """Content-addressed store of float32 embeddings in a directory.

    Entries are packed into append-only segment files, one set per expert
    fingerprint (see the module docstring for the format and what it relies on
    for concurrent writers). Format-1 entries (one ``.emb`` file per entry)
    left by older versions are read side by side and copied into the store
    when hit; :meth:`migrate` moves them all at once.

    Parameters
    ----------
    directory : str or path-like
        Root directory; created on the first write.

    Attributes
    ----------
    hits : int
        Lookups answered from disk since creation (or :meth:`reset_stats`).
    misses : int
        Lookups that found no valid entry (absent or damaged).
    corrupt : int
        Damaged entries found; each counts as a miss and is recomputed.
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
    >>> cache.close()
    """

    def __init__(self, directory):
        self.directory = Path(os.fspath(directory)).expanduser()
        self._tables: dict[str, _Table] = {}
        self._touched: set[str] = set()
        self._lock = threading.Lock()
        self.reset_stats()

    def __repr__(self) -> str:
        return f"EmbeddingCache({str(self.directory)!r})"

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Release the segments this instance writes to (other writers may reuse them)."""
        with self._lock:
            tables = list(self._tables.values())
            self._tables.clear()
        for table in tables:
            table.close()

    def reset_stats(self) -> None:
        """Set the hit, miss, corrupt and write counters to zero."""
        self.hits = 0
        self.misses = 0
        self.corrupt = 0
        self.writes = 0

    @property
    def store(self) -> Path:
        """Folder of the format-2 store."""
        return self.directory / _STORE

    def _table(self, folder: str, kind: int) -> _Table:
        with self._lock:
            table = self._tables.get(folder)
            if table is None:
                table = self._tables[folder] = _Table(self.store / folder, kind)
            return table

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
            Expected length; an entry of another length counts as damaged.

        Returns
        -------
        embedding : ndarray of shape (dim,), dtype float32, or None
        """
        return self.get_many(fingerprint, [key], dim=dim).get(key)

    def get_many(
        self, fingerprint: str, keys: Iterable[str], *, dim: int | None = None
    ) -> dict[str, np.ndarray]:
        """Look up several keys with one index lookup; return ``{key: embedding}`` for hits.

        Parameters
        ----------
        fingerprint : str
            The expert's fingerprint.
        keys : iterable of str
            Content keys; duplicates are looked up once.
        dim : int, default=None
            Expected length; an entry of another length counts as damaged.

        Returns
        -------
        found : dict
            ``{key: ndarray of shape (dim,), dtype float32}`` for the keys found.
        """
        keys = list(dict.fromkeys(keys))
        folder = _folder_name(fingerprint)
        table = self._table(folder, _KIND_FLOAT32)
        table.refresh()
        self._touch(folder)
        raw = _keys_bytes(keys)
        length = None if dim is None else 4 * int(dim)
        found: dict[str, np.ndarray] = {}
        missing = []
        first, more = table.candidates(raw)
        if dim is not None and keys:
            values, ok = table.read_vectors(raw, first, int(dim))
            for i in np.flatnonzero(ok).tolist():
                found[keys[i]] = values[i]
            failed = np.flatnonzero(~ok)
            slow = failed[first[failed, 0] >= 0].tolist()
            missing = [keys[i] for i in failed[first[failed, 0] < 0].tolist()]
        else:
            slow = range(len(keys))
        for i in slow:
            key, kb = keys[i], raw[32 * i : 32 * i + 32]
            value = None
            options = more.get(i) or ([tuple(first[i].tolist())] if first[i, 0] >= 0 else [])
            for sid, offset in options:
                payload = table.read(kb, sid, offset, length)
                if payload is None:
                    self.corrupt += 1
                    logger.warning(
                        "Damaged cache record for key %s in %s; it will be recomputed.",
                        key[:16],
                        table.folder,
                    )
                    continue
                value = np.frombuffer(payload, dtype="<f4").astype(np.float32)
                payload.release()
                break
            if value is None:
                missing.append(key)
            else:
                found[key] = value
        if missing:
            found.update(self._get_v1(fingerprint, missing, dim))
        self.hits += len(found)
        self.misses += len(keys) - len(found)
        return found

    def get_array(
        self, fingerprint: str, keys: Sequence[str], dim: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Look up a batch of keys into one array (faster than :meth:`get_many` for many keys).

        Parameters
        ----------
        fingerprint : str
            The expert's fingerprint.
        keys : sequence of str
            Content keys.
        dim : int
            The embedding width.

        Returns
        -------
        values : ndarray of shape (len(keys), dim), dtype float32
            The embeddings; rows of keys not found are undefined.
        found : ndarray of shape (len(keys),), dtype bool
        """
        keys = list(keys)
        folder = _folder_name(fingerprint)
        table = self._table(folder, _KIND_FLOAT32)
        table.refresh()
        self._touch(folder)
        raw = _keys_bytes(keys)
        first, more = table.candidates(raw)
        values, ok = table.read_vectors(raw, first, int(dim))
        retry = np.flatnonzero(~ok)
        retry = retry[first[retry, 0] >= 0]
        n_retried = 0
        if len(retry):
            # Damaged first records, or keys with several records: the slow path.
            again = self.get_many(fingerprint, [keys[i] for i in retry.tolist()], dim=dim)
            n_retried = len(retry)
            for i in retry.tolist():
                vector = again.get(keys[i])
                if vector is not None:
                    values[i] = vector
                    ok[i] = True
        absent = np.flatnonzero(~ok & (first[:, 0] < 0))
        if len(absent) and (self.directory / folder).is_dir():
            legacy = self._get_v1(fingerprint, [keys[i] for i in absent.tolist()], dim)
            for i in absent.tolist():
                vector = legacy.get(keys[i])
                if vector is not None:
                    values[i] = vector
                    ok[i] = True
        # get_many counted the retried keys already.
        n_hits = int(ok.sum()) - sum(1 for i in retry.tolist() if ok[i])
        self.hits += n_hits
        self.misses += len(keys) - n_retried - n_hits
        return values, ok

    def _get_v1(self, fingerprint: str, keys: list[str], dim: int | None) -> dict:
        """Format-1 entries of ``keys``; each one found is copied into the store."""
        root = self.directory / _folder_name(fingerprint)
        if not root.is_dir():
            return {}
        found = {}
        for key in keys:
            path = self._v1_path(fingerprint, key)
            try:
                data = path.read_bytes()
            except OSError:
                continue
            vector = _decode_v1(data, dim)
            if vector is None:
                self.corrupt += 1
                logger.warning("Cache entry %s is damaged; deleting it and recomputing.", path)
                with contextlib.suppress(OSError):
                    os.remove(path)
                continue
            found[key] = vector
        if found:
            try:
                self._put(fingerprint, found.items(), count=False)
            except OSError as exc:
                logger.warning("Could not copy format-1 cache entries into the store: %s", exc)
        return found

    def _v1_path(self, fingerprint: str, key: str) -> Path:
        key = _safe_hex(key)
        return self.directory / _folder_name(fingerprint) / key[:2] / f"{key}{_SUFFIX}"

    def __contains__(self, address) -> bool:
        fingerprint, key = address
        table = self._table(_folder_name(fingerprint), _KIND_FLOAT32)
        table.refresh(force=True)
        kb = _key_bytes(key)
        first, more = table.candidates(kb)
        options = more.get(0) or ([tuple(first[0].tolist())] if first[0, 0] >= 0 else [])
        if any(table.read(kb, s, o, None) is not None for s, o in options):
            return True
        return self._v1_path(fingerprint, key).is_file()

    def _locate(self, fingerprint: str, key: str) -> tuple[Path, int] | None:
        """The segment file and byte offset of a key's newest record (for tests and tools)."""
        table = self._table(_folder_name(fingerprint), _KIND_FLOAT32)
        table.refresh(force=True)
        first, _ = table.candidates(_key_bytes(key))
        if first[0, 0] < 0:
            return None
        return table._segments[int(first[0, 0])].path, int(first[0, 1])

    def _touch(self, folder: str) -> None:
        # Records that an expert was used, once per instance, for prune(older_than=...).
        if folder in self._touched:
            return
        self._touched.add(folder)
        with contextlib.suppress(OSError):
            os.utime(self.store / folder)

    # -- writing ------------------------------------------------------------
    def put(self, fingerprint: str, key: str, vector) -> None:
        """Store one embedding (written as float32)."""
        self.put_many(fingerprint, [(key, vector)])

    def put_many(self, fingerprint: str, items: Mapping[str, np.ndarray] | Iterable) -> None:
        """Store several embeddings with one append: a mapping or ``(key, embedding)`` pairs."""
        pairs = items.items() if isinstance(items, Mapping) else items
        self._put(fingerprint, pairs, count=True)

    def _put(self, fingerprint: str, pairs, *, count: bool) -> None:
        keys, vectors = [], []
        for key, vector in pairs:
            keys.append(_key_bytes(key))
            vectors.append(np.ravel(np.asarray(vector, dtype=np.float32)))
        if not keys:
            return
        table = self._table(_folder_name(fingerprint), _KIND_FLOAT32)
        lengths = {v.size for v in vectors}
        if len(lengths) == 1:
            table.append(_encode_vectors(keys, np.stack(vectors)))
        else:
            table.append([(k, v.astype("<f4").tobytes()) for k, v in zip(keys, vectors)])
        if count:
            self.writes += len(keys)

    def describe(self, fingerprint: str, description: Mapping) -> None:
        """Save what a fingerprint stands for (expert name, class, width), for :meth:`info`.

        Written once per expert folder; later calls leave an existing description.
        """
        folder = self.store / _folder_name(fingerprint)
        path = folder / "expert.json"
        if path.exists():
            return
        folder.mkdir(parents=True, exist_ok=True)
        data = json.dumps({"fingerprint": fingerprint, **dict(description)}, default=str)
        tmp = folder / f".expert.{secrets.token_hex(4)}.tmp"
        try:
            tmp.write_text(data, encoding="utf-8")
            os.replace(tmp, path)
        except OSError as exc:
            logger.debug("Could not describe %s: %s", folder, exc)
            with contextlib.suppress(OSError):
                os.remove(tmp)

    # -- file identities ----------------------------------------------------
    def get_file_keys(
        self, namespace: str, identities: Sequence[FileIdentity | None]
    ) -> list[str | None]:
        """Content keys remembered for file identities (None where unknown or not trusted).

        Parameters
        ----------
        namespace : str
            Names the way content keys are computed (two hashing schemes never
            share records).
        identities : sequence of FileIdentity or None
            From :func:`file_identity`; None entries give None.

        Returns
        -------
        keys : list of str or None
        """
        table = self._table(_FILES, _KIND_FILE)
        table.refresh()
        positions = [i for i, ident in enumerate(identities) if ident is not None]
        raw = [identities[i].record_key(namespace) for i in positions]
        out: list[str | None] = [None] * len(identities)
        first, more = table.candidates(b"".join(raw))
        for j, (i, kb) in enumerate(zip(positions, raw)):
            ident = identities[i]
            options = more.get(j) or ([tuple(first[j].tolist())] if first[j, 0] >= 0 else [])
            for sid, offset in options:
                payload = table.read(kb, sid, offset, None)
                if payload is None or len(payload) < _FILE_RECORD.size:
                    self.corrupt += 1
                    continue
                content, recorded, *fields = _FILE_RECORD.unpack_from(payload)
                payload.release()
                if tuple(fields) != ident.fields or not ident.settled(recorded):
                    continue
                out[i] = content.hex()
                break
        return out

    def put_file_keys(
        self, namespace: str, pairs: Iterable[tuple[FileIdentity, str]], *, recorded_ns=None
    ) -> int:
        """Remember content keys by file identity; skip identities too recent to trust.

        Parameters
        ----------
        namespace : str
            See :meth:`get_file_keys`.
        pairs : iterable of (FileIdentity, str)
            Identities (taken before hashing) and the content keys found.
        recorded_ns : int, default=None
            The time of hashing in nanoseconds since the epoch; now by default.

        Returns
        -------
        n_written : int
        """
        now = time.time_ns() if recorded_ns is None else int(recorded_ns)
        records = []
        for ident, key in pairs:
            if not ident.settled(now):
                continue
            path = ident.path.encode("utf-8", "surrogateescape")
            payload = _FILE_RECORD.pack(_key_bytes(key), now, *ident.fields) + path
            records.append((ident.record_key(namespace), payload))
        if records:
            self._table(_FILES, _KIND_FILE).append(records)
        return len(records)

    # -- maintenance --------------------------------------------------------
    def info(self) -> dict:
        """Size of the cache: per expert and for the file records, plus format-1 leftovers.

        Returns
        -------
        info : dict
            ``directory``, ``files`` (number of files on disk), ``bytes``,
            ``experts`` (a list of dicts: ``folder``, ``entries``, ``bytes``,
            ``files``, ``last_used`` (epoch seconds) and the saved description),
            ``file_records`` (``entries``, ``bytes``, ``files``) and
            ``format1`` (``entries``, ``bytes``).
        """
        out = {"directory": str(self.directory), "experts": [], "files": 0, "bytes": 0}
        empty = {"entries": 0, "bytes": 0, "files": 0}
        out["file_records"] = dict(empty)
        if self.store.is_dir():
            for folder in sorted(p for p in self.store.iterdir() if p.is_dir()):
                stats = _folder_stats(folder)
                out["files"] += stats["files"]
                out["bytes"] += stats["bytes"]
                if folder.name == _FILES:
                    out["file_records"] = stats
                    continue
                stats = {"folder": folder.name, **stats}
                with contextlib.suppress(OSError):
                    stats["last_used"] = folder.stat().st_mtime
                with contextlib.suppress(OSError, ValueError):
                    stats.update(json.loads((folder / "expert.json").read_text("utf-8")))
                out["experts"].append(stats)
        legacy = {"entries": 0, "bytes": 0}
        for path in self._v1_files():
            with contextlib.suppress(OSError):
                legacy["bytes"] += path.stat().st_size
                legacy["entries"] += 1
        out["format1"] = legacy
        out["files"] += legacy["entries"]
        out["bytes"] += legacy["bytes"]
        return out

    def _v1_files(self):
        if not self.directory.is_dir():
            return
        for folder in self.directory.iterdir():
            if folder.is_dir() and folder.name != _STORE and _HEX_RE.match(folder.name):
                yield from folder.glob(f"*/*{_SUFFIX}")

    def prune(
        self,
        *,
        keep: Iterable[str] | None = None,
        older_than: float | None = None,
        files: bool = True,
        dry_run: bool = False,
    ) -> dict:
        """Delete the entries of experts no longer used, and stale file records.

        Parameters
        ----------
        keep : iterable of str, default=None
            Fingerprints of the experts still in use: every other expert's
            entries are deleted. None keeps all (subject to ``older_than``).
        older_than : float, default=None
            Also delete experts not read or written for this many seconds.
        files : bool, default=True
            Drop file records whose file is gone or changed, and compact them.
        dry_run : bool, default=False
            Report what would be deleted without deleting.

        Returns
        -------
        report : dict
            ``experts_removed`` (folders), ``entries_removed``, ``bytes_freed``,
            ``file_records_removed``, ``stale_locks_removed``.
        """
        self.close()
        keep_folders = None if keep is None else {_folder_name(f) for f in keep}
        report = {
            "experts_removed": [],
            "entries_removed": 0,
            "bytes_freed": 0,
            "file_records_removed": 0,
            "stale_locks_removed": 0,
        }
        now = time.time()
        folders = []
        if self.store.is_dir():
            folders = [p for p in self.store.iterdir() if p.is_dir() and p.name != _FILES]
        legacy = [
            p
            for p in (self.directory.iterdir() if self.directory.is_dir() else [])
            if p.is_dir() and p.name != _STORE and _HEX_RE.match(p.name)
        ]
        for folder in folders + legacy:
            try:
                last = folder.stat().st_mtime
            except OSError:
                continue
            unused = keep_folders is not None and folder.name not in keep_folders
            old = older_than is not None and now - last > older_than
            if not (unused or old):
                continue
            stats = _folder_stats(folder) if folder in folders else _legacy_stats(folder)
            report["experts_removed"].append(folder.name)
            report["entries_removed"] += stats["entries"]
            report["bytes_freed"] += stats["bytes"]
            if not dry_run:
                shutil.rmtree(folder, ignore_errors=True)
        for folder in folders:
            if folder.exists():
                report["stale_locks_removed"] += _remove_stale_locks(folder, dry_run)
        files_folder = self.store / _FILES
        if files and files_folder.is_dir():
            report["stale_locks_removed"] += _remove_stale_locks(files_folder, dry_run)
            removed, freed = _compact_file_records(files_folder, dry_run)
            report["file_records_removed"] = removed
            report["bytes_freed"] += freed
        return report

    def migrate(self) -> int:
        """Copy every format-1 entry into the store and delete the format-1 files.

        Returns
        -------
        n_migrated : int
            Entries copied (damaged ones are deleted, not copied).
        """
        moved = 0
        for folder in [p for p in self.directory.iterdir() if p.is_dir()] if (
            self.directory.is_dir()
        ) else []:
            if folder.name == _STORE or not _HEX_RE.match(folder.name):
                continue
            batch = []
            for path in folder.glob(f"*/*{_SUFFIX}"):
                with contextlib.suppress(OSError):
                    vector = _decode_v1(path.read_bytes(), None)
                    if vector is not None:
                        batch.append((path.stem, vector))
            if batch:
                table = self._table(folder.name, _KIND_FLOAT32)
                for start in range(0, len(batch), 4096):
                    chunk = batch[start : start + 4096]
                    table.append(
                        [(_key_bytes(k), v.astype("<f4").tobytes()) for k, v in chunk]
                    )
                moved += len(batch)
            shutil.rmtree(folder, ignore_errors=True)
        self.close()
        return moved

    def clear(self) -> None:
        """Delete every entry and file record under :attr:`directory` written by this cache."""
        self.close()
        if not self.directory.is_dir():
            return
        shutil.rmtree(self.store, ignore_errors=True)
        for path in list(self._v1_files()):
            with contextlib.suppress(OSError):
                os.remove(path)

    def __getstate__(self):
        return {"directory": self.directory}

    def __setstate__(self, state):
        self.__init__(state["directory"])


def _folder_stats(folder: Path) -> dict:
    stats = {"entries": 0, "bytes": 0, "files": 0}
    for path in folder.iterdir():
        try:
            size = path.stat().st_size
        except OSError:
            continue
        stats["files"] += 1
        stats["bytes"] += size
        if path.suffix == ".idx":
            stats["entries"] += size // _INDEX.itemsize
    return stats


def _legacy_stats(folder: Path) -> dict:
    stats = {"entries": 0, "bytes": 0, "files": 0}
    for path in folder.glob(f"*/*{_SUFFIX}"):
        with contextlib.suppress(OSError):
            stats["bytes"] += path.stat().st_size
            stats["entries"] += 1
            stats["files"] += 1
    return stats


def _remove_stale_locks(folder: Path, dry_run: bool) -> int:
    """Remove locks left by dead writers: a dead pid on this host, or older than a day."""
    host = socket.gethostname()
    removed = 0
    for lock in folder.glob("*.lock"):
        try:
            text = lock.read_text("utf-8").split()
            age = time.time() - lock.stat().st_mtime
        except (OSError, ValueError):
            continue
        stale = age > _STALE_LOCK_SECONDS
        if not stale and len(text) >= 2 and text[0] == host and text[1].isdigit():
            stale = not _pid_alive(int(text[1]))
        if stale:
            removed += 1
            if not dry_run:
                with contextlib.suppress(OSError):
                    os.remove(lock)
    return removed


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError as exc:
        return exc.errno == errno.EPERM
    return True


def _compact_file_records(folder: Path, dry_run: bool) -> tuple[int, int]:
    """Rewrite the file records of free segments, keeping those whose file is unchanged."""
    # Hold every segment compacted, so that no writer appends to one meanwhile.
    segments, locks = [], []
    for seg in sorted(folder.glob("*.seg")):
        try:
            fd = os.open(seg.with_suffix(".lock"), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except OSError:
            continue
        os.close(fd)
        segments.append(seg)
        locks.append(seg.with_suffix(".lock"))
    try:
        return _compact_held(folder, segments, dry_run)
    finally:
        for lock in locks:
            with contextlib.suppress(OSError):
                os.remove(lock)


def _compact_held(folder: Path, segments: list[Path], dry_run: bool) -> tuple[int, int]:
    if not segments:
        return 0, 0
    keep: dict[bytes, bytes] = {}
    removed = 0
    freed = 0
    for seg in segments:
        idx = seg.with_suffix(".idx")
        try:
            data = seg.read_bytes()
            raw = idx.read_bytes()
            freed += len(data) + len(raw)
        except OSError:
            continue
        n = len(raw) // _INDEX.itemsize
        for entry in np.frombuffer(raw[: n * _INDEX.itemsize], dtype=_INDEX):
            offset = int(entry["offset"])
            key = entry["key"].tobytes()
            payload = _check_record(data, offset, key, _KIND_FILE)
            if payload is None or len(payload) < _FILE_RECORD.size:
                removed += 1
                continue
            _, _, *fields = _FILE_RECORD.unpack_from(payload)
            path = bytes(payload[_FILE_RECORD.size :]).decode("utf-8", "surrogateescape")
            current = identity_of(path.split("\n") if "\n" in path else path)
            if current is None or current.fields != tuple(fields) or key in keep:
                removed += 1
                continue
            keep[key] = bytes(payload)
    if dry_run or removed == 0:
        return removed, 0
    writer = _Writer(folder, reuse=False)
    try:
        items = list(keep.items())
        for start in range(0, len(items), 4096):
            writer.append(items[start : start + 4096], _KIND_FILE)
        new_name = writer.name
    finally:
        writer.close()
    for seg in segments:
        if seg.stem == new_name:
            continue
        for path in (seg, seg.with_suffix(".idx")):
            with contextlib.suppress(OSError):
                os.remove(path)
    kept = sum(s.stat().st_size for s in folder.glob(f"{new_name}.*")) if new_name else 0
    return removed, max(0, freed - kept)


def _check_record(data: bytes, offset: int, key: bytes, kind: int) -> memoryview | None:
    if offset + _RECORD.size > len(data):
        return None
    magic, version, got_kind, _, n, crc, stored = _RECORD.unpack_from(data, offset)
    start = offset + _RECORD.size
    if (
        magic != _RECORD_MAGIC
        or version != _RECORD_VERSION
        or got_kind != kind
        or stored != key
        or start + n > len(data)
    ):
        return None
    payload = memoryview(data)[start : start + n]
    if zlib.crc32(payload, zlib.crc32(key)) != crc:
        return None
    return payload


# -- file identities ----------------------------------------------------------------
class FileIdentity:
    """What identifies one version of a file without reading it.

    Parameters
    ----------
    path : str
        Resolved absolute path.
    size, mtime_ns, ctime_ns, ino, dev : int
        From :func:`os.stat` (inode and device are 0 where the platform has none).
    """

    __slots__ = ("path", "size", "mtime_ns", "ctime_ns", "ino", "dev")

    def __init__(self, path: str, size: int, mtime_ns: int, ctime_ns: int, ino: int, dev: int):
        self.path = path
        self.size = size
        self.mtime_ns = mtime_ns
        self.ctime_ns = ctime_ns
        self.ino = ino
        self.dev = dev

    @property
    def fields(self) -> tuple:
        return (self.size, self.mtime_ns, self.ctime_ns, self.ino, self.dev)

    def __eq__(self, other) -> bool:
        return isinstance(other, FileIdentity) and (self.path, self.fields) == (
            other.path,
            other.fields,
        )

    def __hash__(self) -> int:
        return hash((self.path, self.fields))

    def __repr__(self) -> str:
        return f"FileIdentity({self.path!r}, size={self.size}, mtime_ns={self.mtime_ns})"

    def record_key(self, namespace: str) -> bytes:
        text = f"file-identity\0{namespace}\0{self.path}\0" + "\0".join(map(str, self.fields))
        return hashlib.sha256(text.encode("utf-8", "surrogateescape")).digest()

    def settled(self, recorded_ns: int) -> bool:
        """Whether the file was old enough, at ``recorded_ns``, for its times to be trusted."""
        newest = max(self.mtime_ns, self.ctime_ns)
        return recorded_ns - newest >= RACY_SECONDS * 1e9


def file_identity(path) -> FileIdentity | None:
    """Stat a regular file into a :class:`FileIdentity`; None if it is not one.

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    identity : FileIdentity or None
    """
    try:
        resolved = os.path.realpath(os.fspath(path))
        st = os.stat(resolved)
    except (OSError, TypeError, ValueError):
        return None
    if not (st.st_mode & 0o170000 == 0o100000):  # S_ISREG
        return None
    return FileIdentity(
        resolved,
        st.st_size,
        st.st_mtime_ns,
        getattr(st, "st_ctime_ns", st.st_mtime_ns),
        st.st_ino or 0,
        st.st_dev or 0,
    )


class _GroupIdentity(FileIdentity):
    """The identity of several files together (a folder of DICOM slices, say)."""

    __slots__ = ()

    @classmethod
    def of(cls, identities: list[FileIdentity]) -> _GroupIdentity:
        joined = "\0".join(f"{i.path}\0" + "\0".join(map(str, i.fields)) for i in identities)
        digest = int.from_bytes(hashlib.sha256(joined.encode("utf-8", "surrogateescape")).digest()[:7], "little")
        newest = max(max(i.mtime_ns, i.ctime_ns) for i in identities)
        paths = "\n".join(i.path for i in identities)
        return cls(paths, sum(i.size for i in identities), newest, newest, digest, len(identities))


def content_key_by_identity(
    files, compute: Callable[[], str], *, cache: EmbeddingCache | None, namespace: str
) -> str:
    """A content key, remembered by the identity of the file(s) it was computed from.

    For an expert whose item is one file or a set of files (a DICOM series
    folder): when the files' identities are known to ``cache`` and old enough to
    trust, return the remembered key without reading them; otherwise call
    ``compute()`` (which reads and hashes them), remember its result when the
    files did not change meanwhile and are not too recent, and return it.

    Parameters
    ----------
    files : str, path-like or sequence of them
        The files whose bytes determine the key.
    compute : callable
        Returns the content key by reading the files.
    cache : EmbeddingCache or None
        Where identities are remembered; None always computes.
    namespace : str
        Names the hashing scheme (for example the expert class's qualified name).

    Returns
    -------
    key : str
    """
    if cache is None:
        return compute()
    ident = identity_of(files)
    if ident is not None:
        known = cache.get_file_keys(namespace, [ident])[0]
        if known is not None:
            return known
    key = compute()
    if ident is not None and identity_of(files) == ident:
        with contextlib.suppress(OSError):
            cache.put_file_keys(namespace, [(ident, key)])
    return key


def identity_of(files) -> FileIdentity | None:
    """The identity of one file, or of several files together; None if one is not a file."""
    if isinstance(files, (str, os.PathLike)):
        return file_identity(files)
    identities = [file_identity(f) for f in files]
    if not identities or any(i is None for i in identities):
        return None
    if len(identities) == 1:
        return identities[0]
    return _GroupIdentity.of(identities)
