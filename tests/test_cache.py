"""Tests of the content-addressed embedding cache."""

import hashlib
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

from medmix_sklearn.embedding import EmbeddingCache
from medmix_sklearn.embedding._cache import default_cache_dir, resolve_cache_dir

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


def test_sharded_layout_and_separate_experts(tmp_path):
    cache = EmbeddingCache(tmp_path)
    other = hashlib.sha256(b"other expert").hexdigest()
    cache.put(FP, key(0), np.ones(2))
    path = cache.path(FP, key(0))
    assert path.relative_to(tmp_path).parts == (FP[:32], key(0)[:2], f"{key(0)}.emb")
    assert path.is_file()
    assert (FP, key(0)) in cache and (other, key(0)) not in cache
    assert cache.get(other, key(0)) is None


def test_non_hex_keys_are_hashed_into_safe_names(tmp_path):
    cache = EmbeddingCache(tmp_path)
    cache.put("a/b:c", "../../etc/passwd", np.ones(2))
    path = cache.path("a/b:c", "../../etc/passwd")
    assert tmp_path in path.parents and ".." not in path.parts
    np.testing.assert_array_equal(cache.get("a/b:c", "../../etc/passwd"), [1, 1])


def _truncate(data: bytes) -> bytes:
    return data[:-3]


def _flip_payload_byte(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 0x01])


def _bad_magic(data: bytes) -> bytes:
    return b"XXXX" + data[4:]


def _bad_dtype(data: bytes) -> bytes:
    return data[:5] + b"\x07" + data[6:]


@pytest.mark.parametrize(
    "damage", [_truncate, _flip_payload_byte, _bad_magic, _bad_dtype, lambda d: b""]
)
def test_corrupt_entry_is_deleted_and_missed(tmp_path, damage):
    cache = EmbeddingCache(tmp_path)
    cache.put(FP, key(1), np.linspace(0, 1, 8))
    path = cache.path(FP, key(1))
    path.write_bytes(damage(path.read_bytes()))
    assert cache.get(FP, key(1)) is None
    assert (cache.corrupt, cache.misses, cache.hits) == (1, 1, 0)
    assert not path.exists()
    cache.put(FP, key(1), np.linspace(0, 1, 8))
    np.testing.assert_allclose(cache.get(FP, key(1)), np.linspace(0, 1, 8))


def test_entry_of_wrong_length_is_corrupt(tmp_path):
    cache = EmbeddingCache(tmp_path)
    cache.put(FP, key(2), np.ones(4))
    assert cache.get(FP, key(2), dim=5) is None
    assert cache.corrupt == 1


def test_no_temporary_files_left_and_concurrent_threads(tmp_path):
    cache = EmbeddingCache(tmp_path)
    vectors = {key(i): np.full(16, i, dtype=np.float32) for i in range(20)}

    def writer():
        EmbeddingCache(tmp_path).put_many(FP, vectors)

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".emb"]
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

        cache = EmbeddingCache(sys.argv[1])
        fp = hashlib.sha256(b"expert").hexdigest()
        bad = 0
        for round_ in range(3):
            for i in range(150):
                k = hashlib.sha256(f"item {i}".encode()).hexdigest()
                expected = np.full(64, i, dtype=np.float32)
                got = cache.get(fp, k, dim=64)
                if got is not None and not np.array_equal(got, expected):
                    bad += 1
                cache.put(fp, k, expected)
        print(bad, cache.corrupt)
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
    keys = [key(i) for i in range(150)]
    found = cache.get_many(FP, keys, dim=64)
    assert len(found) == 150 and cache.corrupt == 0
    assert len(list(tmp_path.rglob("*.emb"))) == 150
    assert not list(tmp_path.rglob("*.tmp"))


def test_clear(tmp_path):
    cache = EmbeddingCache(tmp_path / "c")
    cache.clear()  # nothing yet: no error
    cache.put(FP, key(0), np.ones(2))
    cache.clear()
    assert cache.get(FP, key(0)) is None


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
