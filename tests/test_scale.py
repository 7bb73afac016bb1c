"""Tests of filling the cache (in process and on Dask) and of file identities."""

import os
import time

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.base import clone
from test_embedder import CALLS, FakeImageExpert, FakeTextExpert

from medmix_sklearn import ImageExpert, TextExpert
from medmix_sklearn.embedding import EmbeddingCache, MultimodalExpertEmbedder
from medmix_sklearn.exceptions import ItemReadWarning


@pytest.fixture(autouse=True)
def _reset(monkeypatch, tmp_path):
    CALLS.clear()
    monkeypatch.setenv("MEDMIX_CACHE_DIR", str(tmp_path / "auto-cache"))


def _texts(n: int, repeat: int = 1) -> list[str]:
    words = "no evidence of acute cardiopulmonary disease normal chest heart size".split()
    base = [" ".join(words[: 1 + i % len(words)]) + f" {i}" for i in range(n)]
    return [base[i % n] for i in range(n * repeat)]


# -- fill_cache -------------------------------------------------------------------
def test_fill_cache_in_process_then_no_model_is_loaded(tmp_path):
    texts = _texts(10, repeat=3) + [None]
    X = pd.DataFrame({"text": texts, "age": np.arange(31.0)})
    modalities = [("report", FakeTextExpert("t", 4), "text"), ("labs", "passthrough", ["age"])]
    embedder = MultimodalExpertEmbedder(
        modalities, teachers=[("teach", FakeTextExpert("u", 2), "text")],
        cache_dir=tmp_path / "c", batch_size=4,
    )
    summary = embedder.fill_cache(X)
    assert not hasattr(embedder, "blocks_")  # nothing fitted
    assert summary["experts"] == {
        "report/t": {"items": 10, "hits": 0, "embedded": 10, "failures": 0},
        "teach/u": {"items": 10, "hits": 0, "embedded": 10, "failures": 0},
    }
    assert (summary["rows"], summary["embedded"], summary["workers"]) == (31, 20, 1)
    assert CALLS["t", "items"] == 10  # each distinct text once
    assert CALLS["t", "load"] == CALLS["u", "load"] == 1
    assert 0 <= summary["load_seconds"] <= summary["seconds"]
    assert summary["torch_threads"] == {"local": __import__("torch").get_num_threads()}
    CALLS.clear()
    again = clone(embedder).fill_cache(X, teachers=False)
    assert (again["hits"], again["embedded"], again["items"]) == (10, 0, 10)
    assert again["load_seconds"] == 0 and CALLS["t", "load"] == 0  # nothing to embed: no load

    CALLS.clear()
    fresh = clone(embedder)
    Xt = np.asarray(fresh.fit_transform(X))
    assert sum(CALLS.values()) == 0
    assert not any(e.is_loaded for _, experts, _ in fresh.modalities_[:1] for e in experts)
    expected = np.stack([FakeTextExpert("t", 4).expected(t) for t in texts[:-1]])
    np.testing.assert_array_equal(Xt[:-1, :4], expected)
    assert np.isnan(Xt[-1, :4]).all()


def test_fill_cache_counts_unreadable_items_and_checks_input(tmp_path):
    X = pd.DataFrame({"text": ["fine", "bad one", "also fine"]})
    embedder = MultimodalExpertEmbedder(
        [("report", FakeTextExpert("t", 4, fail_on="bad"), "text")], cache_dir=tmp_path
    )
    summary = embedder.fill_cache(X)
    assert (summary["embedded"], summary["failures"]) == (2, 1)
    with pytest.raises(ValueError, match="needs a disk cache"):
        clone(embedder).set_params(cache_dir=None).fill_cache(X)
    with pytest.raises(TypeError, match="needs a pandas DataFrame"):
        embedder.fill_cache(X.to_numpy())
    with pytest.raises(ValueError, match="partitions must be a positive integer"):
        embedder.fill_cache(X, partitions=0)


@pytest.mark.slow
def test_fill_cache_on_a_local_dask_cluster(tmp_path, tiny_text_model_dir):
    distributed = pytest.importorskip("distributed")
    texts = _texts(60, repeat=2)
    X = pd.DataFrame({"text": texts})
    embedder = MultimodalExpertEmbedder(
        [("report", TextExpert(tiny_text_model_dir), "text")],
        cache_dir=tmp_path / "shared", batch_size=8, device="cpu",
    )
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster, distributed.Client(cluster) as client:
        def loaded():
            return client.run(
                lambda: sorted(
                    (e.pooling, e.is_loaded)
                    for e, _ in __import__(
                        "medmix_sklearn.embedding._embedder", fromlist=["x"]
                    )._LOADED_EXPERTS.values()
                )
            )

        summary = embedder.fill_cache(X, client=client, partitions=3)
        # Preloaded: each worker holds one loaded copy of the expert, reused by its tasks,
        # and runs torch on one thread (as many as its Dask threads).
        assert list(loaded().values()) == [[("mean", True)], [("mean", True)]]
        assert set(summary["torch_threads"]) == set(loaded()) and set(
            summary["torch_threads"].values()) == {1}
        assert 0 < summary["load_seconds"] < summary["seconds"]
        # Without preloading, a warm cache loads no model: another expert (CLS
        # pooling), its entries made in this process first.
        other = clone(embedder).set_params(report=TextExpert(tiny_text_model_dir, pooling="cls"))
        other.fill_cache(X)
        warm = other.fill_cache(X, client=client, partitions=3, preload=False)
        assert (warm["hits"], warm["embedded"], warm["load_seconds"]) == (60, 0, 0)
        assert all(("cls", True) not in v for v in loaded().values())
    assert summary["workers"] == 2
    assert (summary["items"], summary["embedded"], summary["failures"]) == (60, 60, 0)

    fresh = clone(embedder)
    cached = np.asarray(fresh.fit_transform(X))
    assert not fresh.modalities_[0][1][0].is_loaded
    direct = np.asarray(clone(embedder).set_params(cache_dir=None).fit_transform(X))
    np.testing.assert_allclose(cached, direct, rtol=1e-5, atol=1e-6)


# -- file identities ------------------------------------------------------------------
def _settle(monkeypatch):
    """Treat files as old enough to trust (change times cannot be set back)."""
    monkeypatch.setattr("medmix_sklearn.embedding._cache.RACY_SECONDS", -1e9)


def _noise_png(path, seed: int, size: int = 160) -> str:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return str(path)


def _rchar() -> int:
    with open("/proc/self/io") as fh:
        for line in fh:
            if line.startswith("rchar:"):
                return int(line.split()[1])
    raise RuntimeError("no rchar")


@pytest.mark.skipif(not os.path.exists("/proc/self/io"), reason="needs Linux /proc/self/io")
def test_warm_pass_reads_almost_no_image_bytes(tmp_path, tiny_image_model, monkeypatch):
    _settle(monkeypatch)
    paths = [_noise_png(tmp_path / f"{i}.png", i) for i in range(12)]
    total = sum(os.path.getsize(p) for p in paths)
    X = pd.DataFrame({"image": paths})
    embedder = MultimodalExpertEmbedder(
        [("xray", ImageExpert(tiny_image_model, pretrained=False), "image")],
        cache_dir=tmp_path / "c", device="cpu",
    )
    cold = np.asarray(embedder.fit_transform(X))
    warm_embedder = clone(embedder).fit(X)
    before = _rchar()
    warm = np.asarray(warm_embedder.transform(X))
    read = _rchar() - before
    np.testing.assert_array_equal(warm, cold)
    assert read < 0.05 * total, (read, total)
    # Without the shortcut every image is read again.
    before = _rchar()
    np.asarray(clone(embedder).set_params(trust_file_stat=False).fit(X).transform(X))
    assert _rchar() - before >= total


def test_changed_moved_and_racy_files(tmp_path, monkeypatch):
    a = tmp_path / "a.png"
    a.write_bytes(b"first content")
    old = time.time() - 100
    os.utime(a, (old, old))
    X = pd.DataFrame({"image": [str(a)]})
    expert = FakeImageExpert("a", 3)
    embedder = MultimodalExpertEmbedder([("xray", expert, "image")], cache_dir=tmp_path / "c")
    counted = {"n": 0}
    original = FakeImageExpert.content_key

    def counting(self, item):
        counted["n"] += 1
        return original(self, item)

    monkeypatch.setattr(FakeImageExpert, "content_key", counting)

    # Racy: the file changed (same size, same mtime) within seconds of being hashed.
    first = np.asarray(embedder.fit_transform(X))
    np.testing.assert_array_equal(first[0], expert.expected(b"first content"))
    a.write_bytes(b"other content")  # same size
    os.utime(a, (old, old))
    second = np.asarray(embedder.transform(X))
    np.testing.assert_array_equal(second[0], expert.expected(b"other content"))
    assert counted["n"] == 2 and EmbeddingCache(tmp_path / "c").info()["file_records"][
        "entries"
    ] == 0

    _settle(monkeypatch)
    embedder.transform(X)
    assert counted["n"] == 3  # hashed and now remembered
    embedder.transform(X)
    assert counted["n"] == 3  # one stat, no read
    # New content and a new mtime: hashed again, new embedding.
    a.write_bytes(b"third content, longer")
    third = np.asarray(embedder.transform(X))
    assert counted["n"] == 4
    np.testing.assert_array_equal(third[0], expert.expected(b"third content, longer"))
    # Moved: one hash at the new path, same content key, so the cached embedding.
    CALLS.clear()
    moved = tmp_path / "moved.png"
    os.replace(a, moved)
    Xm = pd.DataFrame({"image": [str(moved)]})
    np.testing.assert_array_equal(np.asarray(embedder.transform(Xm)), third)
    assert counted["n"] == 5 and CALLS["a", "items"] == 0
    embedder.transform(Xm)
    assert counted["n"] == 5
    # Switched off: always hashed.
    embedder.set_params(trust_file_stat=False)
    embedder.transform(Xm)
    assert counted["n"] == 6


# -- the warm path: distinct items once, vectors scattered back to their rows ----------
def test_repeated_items_embedded_once_and_scattered_to_their_rows(tmp_path):
    texts = ["a", "bad x", "b", "a", None, "  ", "b", "c", "bad x", "a"]
    X = pd.DataFrame({"text": pd.Series(texts, dtype="string[pyarrow]"),
                      "other": [f"{t} more" if t else "z" for t in texts]})
    expert = FakeTextExpert("t", 4, fail_on="bad")
    embedder = MultimodalExpertEmbedder(
        [("report", expert, "text"), ("note", FakeTextExpert("u", 3), "other")],
        cache_dir=tmp_path / "c", batch_size=2,
    )
    for attempt in ("cold", "warm"):
        CALLS.clear()
        with pytest.warns(ItemReadWarning) as caught:
            Xt = np.asarray(embedder.fit_transform(X))
        # The unreadable text's two rows, in row order, in one warning.
        (message,) = [str(w.message) for w in caught if "bad x" in str(w.message)]
        assert "2 item(s)" in message and message.index("row 1") < message.index("row 8")
        if attempt == "cold":
            assert CALLS["t", "items"] == 3  # a, b, c: each once
        else:
            assert CALLS["t", "items"] == 0
        for i, text in enumerate(texts):
            if text is None or not text.strip() or text.startswith("bad"):
                assert np.isnan(Xt[i, :4]).all()
            else:
                np.testing.assert_array_equal(Xt[i, :4], expert.expected(text))
            np.testing.assert_array_equal(Xt[i, 4:], FakeTextExpert("u", 3).expected(X["other"][i]))


def test_factorize_keeps_types_apart_and_unhashable_items_distinct():
    from medmix_sklearn.embedding._embedder import _factorize, _rank_keys
    from medmix_sklearn.exceptions import ItemReadError

    codes, uniques = _factorize(["x", "y", "x"])
    assert codes.tolist() == [0, 1, 0] and uniques == ["x", "y"]
    array = np.zeros(2)
    codes, uniques = _factorize([1, True, "1", 1, array, array, "1"])
    assert codes.tolist() == [0, 1, 2, 0, 3, 4, 2]
    assert uniques[:3] == [1, True, "1"] and type(uniques[1]) is bool
    assert _factorize([])[0].shape == (0,)

    first, position, unreadable = _rank_keys(["k2", "k1", "k2", "k3"])
    assert first == {"k2": 0, "k1": 1, "k3": 3} and position.tolist() == [0, 1, 0, 2]
    error = ItemReadError("no")
    first, position, unreadable = _rank_keys(["k2", error, "k2"])
    assert first == {"k2": 0} and position.tolist() == [0, -1, 0] and unreadable == [1]


@pytest.mark.slow
def test_gpu_check_cpu_only_runs_every_step(tmp_path, capsys):
    """benchmarks/gpu_check.py, the CPU standing in for the GPU, with tiny models."""
    import importlib.util
    import json

    path = os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks", "gpu_check.py")
    spec = importlib.util.spec_from_file_location("gpu_check", path)
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    out = tmp_path / "gpu.json"
    status = gpu_check.main(["--cpu-only", "--models", "tiny", "--n", "8", "--batch-size", "4",
                             "--out", str(out)])
    printed = capsys.readouterr().out
    assert status == 0, printed
    assert "RESULT: all checks passed" in printed
    figures = json.loads(out.read_text())
    assert figures["failures"] == [] and figures["n"] == 8
    # The CPU against itself: float32 agrees to rounding, the classifier exactly.
    assert figures["image_float32_max_relative_diff"] <= 1e-5
    assert figures["text_float32_max_relative_diff"] <= 1e-5
    for precision in ("float32", "autocast"):
        round_trip = figures[f"classifier_{precision}"]
        assert round_trip["loaded_classifier_on_gpu_embeddings_max_proba_diff"] <= 1e-6
        assert round_trip["loaded_pipeline_vs_classifier_on_cpu_embeddings_max_proba_diff"] <= 1e-6
        assert round_trip["pipeline_cpu_vs_gpu_same_label"] == 1.0
    assert figures["images_per_s_embedder"] > 0 and figures["texts_per_s_hand_loop"] > 0


def test_text_keys_in_bulk_match_the_experts_content_key(tiny_text_model_dir):
    from medmix_sklearn.exceptions import ItemReadError

    class Note(str):
        pass

    class Lowered(TextExpert):
        def content_key(self, item):
            return super().content_key(str(item).lower())

    expert = TextExpert(tiny_text_model_dir)
    items = ["a", " a ", "b\n", Note(" b"), "ünïcode", 3, None]
    keys = expert.content_keys(items)
    assert keys[:5] == [expert.content_key(item) for item in items[:5]]
    assert keys[0] == keys[1] and keys[2] == keys[3]
    assert all(isinstance(k, ItemReadError) for k in keys[5:])
    # A subclass that keys texts its own way is followed.
    lowered = Lowered(tiny_text_model_dir)
    assert lowered.content_keys(["A", "a"]) == [lowered.content_key("a")] * 2
