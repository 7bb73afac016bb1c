"""Tests of the content-addressed embedding cache."""

import hashlib
import os
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from medmix_sklearn.embedding import EmbeddingCache
from medmix_sklearn.embedding._cache import (
    content_key_by_identity,
    default_cache_dir,
    file_identity,
    resolve_cache_dir,
)

FP = hashlib.sha256(b"expert").hexdigest()


def key(i) -> str:
    return hashlib.sha256(f"item {i}".encode()).hexdigest()


def test_put_get_roundtrip_and_counters(tmp_path):
    cache = EmbeddingCache(tmp_path)
    vector = np.arange(5, dtype=np.float64) / 3
    assert cache.get(FP, key(0)) is None
    cache.put(FP, key(0), vector)
    got = cache.get(FP, key(0), dim=5)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, vector.astype(np.float32))
    assert (cache.hits, cache.misses, cache.writes, cache.corrupt) == (1, 1, 1, 0)
    cache.reset_stats()
    assert (cache.hits, cache.misses, cache.writes) == (0, 0, 0)


def test_get_many_returns_hits_only(tmp_path):
    cache = EmbeddingCache(tmp_path)
    cache.put_many(FP, {key(i): np.full(3, i) for i in range(3)})
    cache.put_many(FP, [(key(3), np.full(3, 3))])
    found = cache.get_many(FP, [key(i) for i in range(6)], dim=3)
    assert sorted(found) == sorted(key(i) for i in range(4))
    np.testing.assert_array_equal(found[key(2)], [2, 2, 2])
    assert (cache.hits, cache.misses, cache.writes) == (4, 2, 4)


def files_of(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file())


def test_entries_packed_into_few_files_and_separate_experts(tmp_path):
    cache = EmbeddingCache(tmp_path)
    other = hashlib.sha256(b"other expert").hexdigest()
    for batch in range(20):
        cache.put_many(FP, {key(batch * 100 + i): np.full(4, i) for i in range(100)})
    cache.put(other, key(0), np.ones(2))
    folder = tmp_path / "v2" / FP[:32]
    assert [Path(n).suffix for n in files_of(folder)] == [".idx", ".lock", ".seg"]
    cache.close()
    assert [Path(n).suffix for n in files_of(folder)] == [".idx", ".seg"]
    fresh = EmbeddingCache(tmp_path)
    assert (FP, key(0)) in fresh and (other, key(0)) in fresh
    assert (FP, key(5000)) not in fresh
    assert fresh.get(other, key(1)) is None
    assert len(fresh.get_many(FP, [key(i) for i in range(2000)], dim=4)) == 2000
    # A later writer appends to the same segment instead of adding files.
    fresh.put(FP, key(9999), np.ones(4))
    fresh.close()
    assert len(files_of(folder)) == 2
    info = EmbeddingCache(tmp_path).info()
    assert sorted(e["entries"] for e in info["experts"]) == [1, 2001]
    assert info["files"] == 4 and info["format1"]["entries"] == 0


def test_get_array_marks_misses(tmp_path):
    cache = EmbeddingCache(tmp_path)
    cache.put_many(FP, {key(i): np.full(3, i) for i in range(0, 10, 2)})
    values, found = EmbeddingCache(tmp_path).get_array(FP, [key(i) for i in range(10)], 3)
    assert found.tolist() == [True, False] * 5
    np.testing.assert_array_equal(values[found][:, 0], [0, 2, 4, 6, 8])


def test_non_hex_keys_are_hashed_into_safe_names(tmp_path):
    cache = EmbeddingCache(tmp_path / "c")
    cache.put("a/b:c", "../../etc/passwd", np.ones(2))
    cache.close()
    assert all(tmp_path / "c" in p.parents for p in tmp_path.rglob("*") if p.is_file())
    found = EmbeddingCache(tmp_path / "c").get("a/b:c", "../../etc/passwd")
    np.testing.assert_array_equal(found, [1, 1])


def _flip_value_byte(data: bytearray, offset: int) -> None:
    data[offset + 48] ^= 0x01


def _flip_key_byte(data: bytearray, offset: int) -> None:
    data[offset + 20] ^= 0x01


def _bad_magic(data: bytearray, offset: int) -> None:
    data[offset : offset + 4] = b"XXXX"


def _bad_kind(data: bytearray, offset: int) -> None:
    data[offset + 5] = 7


def _truncate(data: bytearray, offset: int) -> None:
    del data[offset + 50 :]


@pytest.mark.parametrize(
    "damage", [_flip_value_byte, _flip_key_byte, _bad_magic, _bad_kind, _truncate]
)
def test_damaged_record_is_missed_then_recomputed(tmp_path, damage):
    cache = EmbeddingCache(tmp_path)
    cache.put_many(FP, {key(i): np.linspace(0, 1, 8) * i for i in range(3)})
    cache.close()
    path, offset = EmbeddingCache(tmp_path)._locate(FP, key(1))
    data = bytearray(path.read_bytes())
    damage(data, offset)
    path.write_bytes(bytes(data))
    reader = EmbeddingCache(tmp_path)
    assert reader.get(FP, key(1), dim=8) is None
    assert (reader.corrupt, reader.misses, reader.hits) == (1, 1, 0)
    values, found = reader.get_array(FP, [key(0), key(1)], 8)
    assert found.tolist() == [True, False]
    # Recomputed and written again: the new record is the one read from now on.
    reader.put(FP, key(1), np.linspace(0, 1, 8) * 10)
    for fresh in (reader, EmbeddingCache(tmp_path)):
        np.testing.assert_allclose(fresh.get(FP, key(1), dim=8), np.linspace(0, 1, 8) * 10)


def test_entry_of_wrong_length_is_damaged(tmp_path):
    cache = EmbeddingCache(tmp_path)
    cache.put(FP, key(2), np.ones(4))
    assert cache.get(FP, key(2), dim=5) is None
    assert cache.corrupt == 1
    assert cache.get(FP, key(2), dim=4) is not None


def test_concurrent_threads_each_hold_their_own_segment(tmp_path):
    vectors = {key(i): np.full(16, i, dtype=np.float32) for i in range(20)}

    def writer():
        with EmbeddingCache(tmp_path) as cache:
            cache.put_many(FP, vectors)

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    names = files_of(tmp_path)
    assert {Path(n).suffix for n in names} == {".seg", ".idx"}
    assert 2 <= len(names) <= 8
    cache = EmbeddingCache(tmp_path)
    found = cache.get_many(FP, vectors, dim=16)
    assert len(found) == 20 and cache.corrupt == 0
    for k, v in vectors.items():
        np.testing.assert_array_equal(found[k], v)


def test_two_processes_writing_and_reading_the_same_keys(tmp_path):
    script = textwrap.dedent(
        """
        import hashlib, sys
        import numpy as np
        from medmix_sklearn.embedding._cache import EmbeddingCache

        fp = hashlib.sha256(b"expert").hexdigest()
        bad = corrupt = 0
        for round_ in range(3):
            cache = EmbeddingCache(sys.argv[1])
            for start in range(0, 150, 10):
                keys = [hashlib.sha256(f"item {i}".encode()).hexdigest()
                        for i in range(start, start + 10)]
                found = cache.get_many(fp, keys, dim=64)
                for i, k in enumerate(keys, start=start):
                    if k in found and not np.array_equal(found[k], np.full(64, i)):
                        bad += 1
                cache.put_many(fp, {k: np.full(64, i, dtype=np.float32)
                                    for i, k in enumerate(keys, start=start)})
            corrupt += cache.corrupt
            cache.close()
        print(bad, corrupt)
        """
    )
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        for _ in range(2)
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
        assert out.split() == [b"0", b"0"]
    cache = EmbeddingCache(tmp_path)
    found = cache.get_many(FP, [key(i) for i in range(150)], dim=64)
    assert len(found) == 150 and cache.corrupt == 0
    # Each process held one segment at a time and later rounds reused them.
    assert len(files_of(tmp_path)) <= 4


def test_crashed_writer_leaves_a_segment_that_is_repaired_and_reused(tmp_path):
    cache = EmbeddingCache(tmp_path)
    cache.put_many(FP, {key(i): np.full(4, i) for i in range(5)})
    folder = tmp_path / "v2" / FP[:32]
    seg = next(folder.glob("*.seg"))
    lock = seg.with_suffix(".lock")
    cache.close()
    # Simulate a crash: the lock stays behind, a half record and half an index entry.
    with open(seg, "ab") as fh:
        fh.write(b"MMXR" + b"\0" * 20)
    with open(seg.with_suffix(".idx"), "ab") as fh:
        fh.write(b"\1" * 17)
    lock.write_text(f"{socket.gethostname()} 999999999 0\n")
    assert EmbeddingCache(tmp_path).get(FP, key(4), dim=4) is not None
    report = EmbeddingCache(tmp_path).prune()
    assert report["stale_locks_removed"] == 1 and not lock.exists()
    writer = EmbeddingCache(tmp_path)
    writer.put(FP, key(5), np.full(4, 5))
    writer.close()
    assert len(list(folder.glob("*.seg"))) == 1  # reused, after cutting the torn tail
    reader = EmbeddingCache(tmp_path)
    found = reader.get_many(FP, [key(i) for i in range(6)], dim=4)
    assert sorted(int(v[0]) for v in found.values()) == list(range(6))
    assert reader.corrupt == 0


def _write_format1(directory: Path, fingerprint: str, k: str, vector) -> Path:
    payload = np.asarray(vector, dtype="<f4").tobytes()
    header = struct.pack("<4sBBHII", b"MMXE", 1, 1, 0, len(payload) // 4, zlib.crc32(payload))
    path = directory / fingerprint[:32] / k[:2] / f"{k}.emb"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + payload)
    return path


def test_format1_entries_are_read_side_by_side_and_migrated(tmp_path):
    old = [_write_format1(tmp_path, FP, key(i), np.full(3, i)) for i in range(4)]
    damaged = _write_format1(tmp_path, FP, key(9), np.ones(3))
    damaged.write_bytes(damaged.read_bytes()[:-1])
    cache = EmbeddingCache(tmp_path)
    assert cache.info()["format1"]["entries"] == 5
    np.testing.assert_array_equal(cache.get(FP, key(1), dim=3), [1, 1, 1])
    assert cache.get(FP, key(9), dim=3) is None and not damaged.exists()
    cache.close()
    old[1].unlink()  # key 1 was copied into the store when it was hit
    np.testing.assert_array_equal(EmbeddingCache(tmp_path).get(FP, key(1), dim=3), [1, 1, 1])
    assert EmbeddingCache(tmp_path).migrate() == 3
    assert not list(tmp_path.rglob("*.emb"))
    found = EmbeddingCache(tmp_path).get_many(FP, [key(i) for i in range(4)], dim=3)
    assert sorted(int(v[0]) for v in found.values()) == [0, 1, 2, 3]


def test_info_and_prune_of_unused_experts(tmp_path):
    other = hashlib.sha256(b"other expert").hexdigest()
    cache = EmbeddingCache(tmp_path)
    cache.put_many(FP, {key(i): np.ones(8) for i in range(10)})
    cache.put_many(other, {key(i): np.ones(8) for i in range(3)})
    cache.describe(FP, {"expert": "a", "dim": 8})
    _write_format1(tmp_path, other, key(7), np.ones(8))
    cache.close()
    info = EmbeddingCache(tmp_path).info()
    by_folder = {e["folder"]: e for e in info["experts"]}
    assert by_folder[FP[:32]]["entries"] == 10 and by_folder[FP[:32]]["expert"] == "a"
    assert by_folder[other[:32]]["entries"] == 3
    dry = EmbeddingCache(tmp_path).prune(keep=[FP], dry_run=True)
    assert dry["entries_removed"] == 4 and (tmp_path / "v2" / other[:32]).exists()
    report = EmbeddingCache(tmp_path).prune(keep=[FP])
    assert sorted(report["experts_removed"]) == [other[:32], other[:32]]
    assert report["entries_removed"] == 4 and report["bytes_freed"] > 0
    after = EmbeddingCache(tmp_path)
    assert [e["folder"] for e in after.info()["experts"]] == [FP[:32]]
    assert after.get(other, key(7)) is None and len(after.get_many(FP, [key(0)])) == 1
    after.close()
    # Unused for a while: older_than removes it too.
    old = time.time() - 3600
    os.utime(tmp_path / "v2" / FP[:32], (old, old))
    assert EmbeddingCache(tmp_path).prune(older_than=60)["experts_removed"] == [FP[:32]]


def test_clear(tmp_path):
    cache = EmbeddingCache(tmp_path / "c")
    cache.clear()  # nothing yet: no error
    cache.put(FP, key(0), np.ones(2))
    _write_format1(tmp_path / "c", FP, key(1), np.ones(2))
    cache.clear()
    assert cache.get(FP, key(0)) is None and cache.get(FP, key(1)) is None


# -- file identities ---------------------------------------------------------------
def _old_file(path: Path, content: bytes, age: float = 60.0) -> Path:
    path.write_bytes(content)
    then = time.time() - age
    os.utime(path, (then, then))
    return path


def test_file_keys_remembered_by_identity(tmp_path):
    cache = EmbeddingCache(tmp_path / "cache")
    a = _old_file(tmp_path / "a.png", b"a" * 100)
    b = _old_file(tmp_path / "b.png", b"b" * 100)
    # Change times cannot be set back: wait until they are old enough to trust.
    ids = [file_identity(a), file_identity(b), None]
    later = time.time_ns() + int(10e9)
    pairs = [(ids[0], key(0)), (ids[1], key(1))]
    assert cache.put_file_keys("ns", pairs, recorded_ns=later) == 2
    fresh = EmbeddingCache(tmp_path / "cache")
    assert fresh.get_file_keys("ns", ids) == [key(0), key(1), None]
    assert fresh.get_file_keys("other scheme", ids[:1]) == [None]
    # A changed size or mtime is a new identity.
    _old_file(a, b"A" * 101)
    assert fresh.get_file_keys("ns", [file_identity(a)]) == [None]
    then = time.time() - 30
    os.utime(b, (then, then))
    assert fresh.get_file_keys("ns", [file_identity(b)]) == [None]


def test_racy_file_identity_is_not_remembered(tmp_path):
    cache = EmbeddingCache(tmp_path / "cache")
    fresh_file = tmp_path / "new.png"
    fresh_file.write_bytes(b"x" * 10)
    ident = file_identity(fresh_file)
    assert not ident.settled(time.time_ns())
    assert cache.put_file_keys("ns", [(ident, key(0))]) == 0
    assert cache.get_file_keys("ns", [ident]) == [None]
    later = time.time_ns() + int(10e9)
    assert cache.put_file_keys("ns", [(ident, key(0))], recorded_ns=later) == 1
    assert EmbeddingCache(tmp_path / "cache").get_file_keys("ns", [ident]) == [key(0)]


def test_content_key_by_identity_hashes_once_and_prune_drops_stale_records(
    tmp_path, monkeypatch
):
    # Treat every file as settled: change times cannot be moved into the past.
    monkeypatch.setattr("medmix_sklearn.embedding._cache.RACY_SECONDS", -1e9)
    cache = EmbeddingCache(tmp_path / "cache")
    folder = tmp_path / "series"
    folder.mkdir()
    slices = [_old_file(folder / f"{i}.dcm", bytes([i]) * 50) for i in range(3)]
    calls = []

    def compute():
        calls.append(1)
        return hashlib.sha256(b"".join(p.read_bytes() for p in slices)).hexdigest()

    first = content_key_by_identity(slices, compute, cache=cache, namespace="vol")
    again = content_key_by_identity(slices, compute, cache=cache, namespace="vol")
    assert first == again and len(calls) == 1
    single = content_key_by_identity(slices[0], compute, cache=cache, namespace="vol")
    assert single == first and len(calls) == 2
    assert EmbeddingCache(tmp_path / "cache").info()["file_records"]["entries"] == 2
    _old_file(slices[2], b"changed" * 10)
    content_key_by_identity(slices, compute, cache=cache, namespace="vol")
    assert len(calls) == 3
    cache.close()
    report = EmbeddingCache(tmp_path / "cache").prune()
    assert report["file_records_removed"] == 1  # the series before the change
    cache = EmbeddingCache(tmp_path / "cache")
    assert cache.info()["file_records"]["entries"] == 2
    content_key_by_identity(slices, compute, cache=cache, namespace="vol")
    content_key_by_identity(slices[0], compute, cache=cache, namespace="vol")
    assert len(calls) == 3


def test_resolve_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("MEDMIX_CACHE_DIR", str(tmp_path / "env"))
    assert resolve_cache_dir("auto") == tmp_path / "env"
    monkeypatch.delenv("MEDMIX_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "medmix_sklearn"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    if os.name != "nt":
        assert resolve_cache_dir("auto") == tmp_path / "home" / ".cache" / "medmix_sklearn"
    assert resolve_cache_dir(None) is None
    assert resolve_cache_dir(tmp_path / "x") == tmp_path / "x"
    assert resolve_cache_dir(str(tmp_path / "y")) == Path(tmp_path / "y")


def test_batch_lookup_across_merges_rewrites_and_mixed_record_sizes(tmp_path):
    """get_array agrees with get over an index merged several times, with keys
    written twice (the newest record wins) and a record of another length in
    the same segment (read record by record, never returned for the wrong dim)."""
    writer = EmbeddingCache(tmp_path)
    expected = {}
    for i in range(6000):
        expected[key(i)] = np.full(8, i, dtype=np.float32)
    items = list(expected.items())
    writer.put_many(FP, dict(items[:3000]))
    reader = EmbeddingCache(tmp_path)
    values, found = reader.get_array(FP, [k for k, _ in items[:3000]], 8)  # first merge
    assert found.all()
    writer.put(FP, key("short"), np.ones(4))
    writer.put_many(FP, dict(items[3000:]))
    # Rewritten: the newer record is the one read.
    for i in (5, 4000):
        expected[key(i)] = np.full(8, -i, dtype=np.float32)
        writer.put(FP, key(i), expected[key(i)])
    writer.close()
    reader._tables[next(iter(reader._tables))]._loaded_at = -np.inf  # see the new appends
    wanted = [key(i) for i in range(5999, -1, -7)] + [key(5), key(4000), key("short"), key("none")]
    for cache in (reader, EmbeddingCache(tmp_path)):
        values, found = cache.get_array(FP, wanted, 8)
        assert found.tolist() == [True] * (len(wanted) - 2) + [False, False]
        for k, v in zip(wanted[:-2], values[:-2]):
            np.testing.assert_array_equal(v, expected[k])
            np.testing.assert_array_equal(cache.get(FP, k, dim=8), expected[k])
