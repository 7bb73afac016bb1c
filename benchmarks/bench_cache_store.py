"""Which on-disk layout for the embedding cache: measured, not assumed.

Writes N embeddings (float32, width D) in batches of 256 and reads them back in
batches of 4096 with three stores:

- ``format1``: one file per entry (the layout before store format 2), as the
  old cache wrote it (temporary file + ``os.replace``);
- ``sqlite-wal``: one SQLite database in WAL mode, a ``(key BLOB PRIMARY KEY,
  value BLOB)`` table, one transaction per batch, reads with ``IN (...)``;
- ``segments``: :class:`medmix_sklearn.embedding.EmbeddingCache` (append-only
  segment files with an index, store format 2).

Prints entries/s for writes and reads and the number of files each leaves.
Run: ``python benchmarks/bench_cache_store.py [--n 50000] [--dim 384]``. The
figures in docs/scaling.md come from this script.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sqlite3
import struct
import tempfile
import time
import zlib

import numpy as np


def _keys(n: int) -> list[str]:
    return [hashlib.sha256(f"item {i}".encode()).hexdigest() for i in range(n)]


def _count_files(root: str) -> int:
    return sum(len(files) for _, _, files in os.walk(root))


def bench_format1(root, keys, values, batch, read_batch):
    header = struct.Struct("<4sBBHII")
    t0 = time.perf_counter()
    for k, v in zip(keys, values):
        payload = v.astype("<f4").tobytes()
        data = header.pack(b"MMXE", 1, 1, 0, len(v), zlib.crc32(payload)) + payload
        path = os.path.join(root, "fp", k[:2], f"{k}.emb")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    write = time.perf_counter() - t0
    t0 = time.perf_counter()
    got = 0
    for k in keys:
        with open(os.path.join(root, "fp", k[:2], f"{k}.emb"), "rb") as fh:
            data = fh.read()
        n = header.unpack_from(data)[4]
        payload = memoryview(data)[header.size:]
        if zlib.crc32(payload) == header.unpack_from(data)[5] and n:
            got += 1
    read = time.perf_counter() - t0
    return write, read, got


def bench_sqlite(root, keys, values, batch, read_batch):
    db = sqlite3.connect(os.path.join(root, "cache.db"))
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE IF NOT EXISTS e (key BLOB PRIMARY KEY, value BLOB) WITHOUT ROWID")
    t0 = time.perf_counter()
    for s in range(0, len(keys), batch):
        with db:
            db.executemany(
                "INSERT OR REPLACE INTO e VALUES (?, ?)",
                [
                    (bytes.fromhex(k), v.astype("<f4").tobytes())
                    for k, v in zip(keys[s : s + batch], values[s : s + batch])
                ],
            )
    write = time.perf_counter() - t0
    t0 = time.perf_counter()
    got = 0
    for s in range(0, len(keys), read_batch):
        part = [bytes.fromhex(k) for k in keys[s : s + read_batch]]
        for i in range(0, len(part), 900):  # SQLite's bound-parameter limit
            chunk = part[i : i + 900]
            rows = db.execute(
                f"SELECT key, value FROM e WHERE key IN ({','.join('?' * len(chunk))})", chunk
            ).fetchall()
            got += sum(1 for _, v in rows if np.frombuffer(v, "<f4").size)
    read = time.perf_counter() - t0
    db.close()
    return write, read, got


def bench_segments(root, keys, values, batch, read_batch):
    from medmix_sklearn.embedding import EmbeddingCache

    fp = "ab" * 32
    cache = EmbeddingCache(root)
    t0 = time.perf_counter()
    for s in range(0, len(keys), batch):
        cache.put_many(fp, zip(keys[s : s + batch], values[s : s + batch]))
    cache.close()
    write = time.perf_counter() - t0
    t0 = time.perf_counter()
    reader = EmbeddingCache(root)
    got = 0
    for s in range(0, len(keys), read_batch):
        _, found = reader.get_array(fp, keys[s : s + read_batch], values.shape[1])
        got += int(found.sum())
    read = time.perf_counter() - t0
    return write, read, got


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=384)
    args = parser.parse_args(argv)
    keys = _keys(args.n)
    values = np.random.default_rng(0).standard_normal((args.n, args.dim)).astype(np.float32)
    print(f"{args.n} entries of {args.dim} float32; write batches of 256, read batches of 4096")
    print(f"{'store':<12} {'write/s':>10} {'read/s':>10} {'files':>8}")
    for name, bench in (
        ("format1", bench_format1),
        ("sqlite-wal", bench_sqlite),
        ("segments", bench_segments),
    ):
        with tempfile.TemporaryDirectory(prefix=f"medmix-store-{name}-") as root:
            write, read, got = bench(root, keys, values, 256, 4096)
            assert got == args.n, (name, got)
            files = _count_files(root)
            print(f"{name:<12} {args.n / write:>10.0f} {args.n / read:>10.0f} {files:>8}")


if __name__ == "__main__":
    main()
