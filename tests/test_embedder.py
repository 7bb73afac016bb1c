"""Tests of MultimodalExpertEmbedder: layout, missingness, teachers, cache, API."""

import hashlib
import logging
import math
import os
import pickle
import subprocess
import sys
import textwrap
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils._param_validation import InvalidParameterError

from medmix_sklearn._layout import parse_feature_names
from medmix_sklearn.embedding import EmbeddingCache, MultimodalExpertEmbedder
from medmix_sklearn.exceptions import ItemReadError, ItemReadWarning, MissingModalityWarning
from medmix_sklearn.experts._base import BaseExpert

# -- fake experts: deterministic, instant, and counting their calls ----------
CALLS = Counter()


def fake_vector(content: bytes, dim: int, seed: int) -> np.ndarray:
    digest = hashlib.sha256(content).digest()
    rng = np.random.default_rng([int.from_bytes(digest[:8], "little"), seed])
    return rng.standard_normal(dim).astype(np.float32)


class _FakeExpert(BaseExpert):
    def __init__(self, model="fake", dim=4, seed=0, fail_on=None, name=None):
        self.model = model
        self.dim = dim
        self.seed = seed
        self.fail_on = fail_on
        self.name = name

    def _fingerprint_parts(self):
        return {"model": self.model, "dim": self.dim, "seed": self.seed}

    @property
    def output_dim(self):
        return self.dim

    def _load(self, device):
        CALLS[self.name, "load"] += 1
        return {"seed": self.seed}

    def _embed(self, model, items, *, device, batch_size):
        CALLS[self.name, "embed"] += 1
        CALLS[self.name, "items"] += len(items)
        return np.stack([fake_vector(x, self.dim, model["seed"]) for x in items])

    def expected(self, content) -> np.ndarray:
        if isinstance(content, str) and os.path.exists(content):
            with open(content, "rb") as fh:
                content = fh.read()
        if isinstance(content, str):
            content = content.encode()
        return fake_vector(content, self.dim, self.seed)


class FakeTextExpert(_FakeExpert):
    kind = "text"

    def content_key(self, item):
        return hashlib.sha256(str(item).encode()).hexdigest()

    def read(self, item):
        if self.fail_on is not None and self.fail_on in item:
            raise ItemReadError(f"cannot tokenize {item!r}")
        return str(item).encode()


class FakeImageExpert(_FakeExpert):
    kind = "image"

    def content_key(self, item):
        try:
            with open(item, "rb") as fh:
                return hashlib.sha256(fh.read()).hexdigest()
        except OSError as exc:
            raise ItemReadError(f"cannot open {item!r}: {exc}") from exc

    def read(self, item):
        with open(item, "rb") as fh:
            data = fh.read()
        if data.startswith(b"CORRUPT") or (self.fail_on is not None and self.fail_on in item):
            raise ItemReadError(f"cannot decode image {item!r}")
        return data


@pytest.fixture(autouse=True)
def _reset_calls(monkeypatch, tmp_path):
    CALLS.clear()
    # Never touch the real user cache from a test.
    monkeypatch.setenv("MEDMIX_CACHE_DIR", str(tmp_path / "auto-cache"))
    yield


def write_images(directory, n, *, prefix="img"):
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = directory / f"{prefix}{i}.png"
        path.write_bytes(f"fake image {i}".encode())
        paths.append(str(path))
    return paths


@pytest.fixture
def frame(tmp_path):
    paths = write_images(tmp_path / "images", 6)
    return pd.DataFrame(
        {
            "image": paths,
            "text": [f"report number {i}" for i in range(6)],
            "age": [50.0, 61.0, 70.0, 45.0, 38.0, 80.0],
            "hr": [80.0, 90.0, 70.0, 60.0, 75.0, 95.0],
            "findings": [f"finding {i}" for i in range(6)],
        },
        index=[f"p{i}" for i in range(6)],
    )


def make_embedder(cache_dir=None, **kwargs):
    params = dict(
        modalities=[
            ("xray", [FakeImageExpert("a", 3), FakeImageExpert("b", 2, seed=1)], "image"),
            ("report", FakeTextExpert("t", 4), "text"),
            ("labs", "passthrough", ["age", "hr"]),
        ],
        teachers=[("report", [FakeTextExpert("big", 5, seed=2)], "findings")],
        cache_dir=cache_dir,
    )
    params.update(kwargs)
    return MultimodalExpertEmbedder(**params)


EXPECTED_NAMES = (
    [f"xray__a__{k}" for k in range(3)]
    + [f"xray__b__{k}" for k in range(2)]
    + [f"report__t__{k}" for k in range(4)]
    + ["labs__age", "labs__hr"]
    + [f"teacher__report__big__{k}" for k in range(5)]
)


def block(Xt, names, prefix):
    cols = [i for i, n in enumerate(names) if n.startswith(prefix)]
    assert cols, prefix
    return Xt[:, cols]


# -- layout -------------------------------------------------------------------
def test_layout_names_values_and_blocks(frame):
    embedder = make_embedder()
    Xt = np.asarray(embedder.fit_transform(frame))
    names = embedder.get_feature_names_out()

    assert Xt.dtype == np.float32
    assert Xt.shape == (6, len(EXPECTED_NAMES))
    assert list(names) == EXPECTED_NAMES
    layout = parse_feature_names(names)
    assert embedder.blocks_ == [b for b in layout if not b.teacher]
    assert embedder.teacher_blocks_ == [b for b in layout if b.teacher]
    assert embedder.modality_names_ == ["xray", "report", "labs"]
    assert embedder.output_dims_ == {
        "xray__a": 3,
        "xray__b": 2,
        "report__t": 4,
        "labs__tabular": 2,
        "teacher__report__big": 5,
    }
    assert embedder.n_features_in_ == 5
    assert list(embedder.feature_names_in_) == list(frame.columns)
    assert embedder.device_ in {"cpu", "cuda"}

    a, b = embedder.modalities_[0][1]
    for i, path in enumerate(frame["image"]):
        np.testing.assert_allclose(block(Xt, names, "xray__a__")[i], a.expected(path))
        np.testing.assert_allclose(block(Xt, names, "xray__b__")[i], b.expected(path))
    t = embedder.modalities_[1][1][0]
    for i, text in enumerate(frame["text"]):
        np.testing.assert_allclose(block(Xt, names, "report__t__")[i], t.expected(text))
    np.testing.assert_allclose(block(Xt, names, "labs__"), frame[["age", "hr"]].to_numpy())
    big = embedder.teachers_[0][1][0]
    np.testing.assert_allclose(
        block(Xt, names, "teacher__")[2], big.expected(frame["findings"].iloc[2])
    )


def test_fit_records_layout_without_running_experts(frame):
    embedder = make_embedder().fit(frame)
    assert list(embedder.get_feature_names_out()) == EXPECTED_NAMES
    assert sum(CALLS.values()) == 0
    assert not any(e.is_loaded for e in embedder.modalities_[0][1])


def test_fit_owns_clones_and_leaves_the_users_experts_unloaded(frame):
    given = FakeImageExpert("a", 3)
    teacher = FakeTextExpert("big", 5, seed=2)
    embedder = make_embedder(
        modalities=[("xray", [given], "image"), ("labs", "passthrough", ["age", "hr"])],
        teachers=[("report", [teacher], "findings")],
    )
    Xt = embedder.fit_transform(frame)
    fitted = embedder.modalities_[0][1][0]
    assert fitted is not given and fitted.get_params() == given.get_params()
    assert fitted.is_loaded and not given.is_loaded and not teacher.is_loaded
    assert embedder.teachers_[0][1][0] is not teacher
    assert embedder.modalities[0][1][0] is given  # the parameter itself is untouched
    # Two embedders sharing one expert object do not share its loaded model.
    other = make_embedder(modalities=[("xray", [given], "image")], teachers=None)
    other.fit_transform(frame)
    assert other.modalities_[0][1][0] is not fitted and not given.is_loaded
    np.testing.assert_array_equal(np.asarray(embedder.transform(frame))[:, :3],
                                  np.asarray(Xt)[:, :3])


def test_nested_params_follow_column_transformer_names(frame):
    from sklearn.preprocessing import StandardScaler

    embedder = make_embedder(
        modalities=[
            ("xray", [FakeImageExpert("a", 3), FakeImageExpert("b", 2, seed=1)], "image"),
            ("labs", StandardScaler(), ["age", "hr"]),
        ],
    )
    params = embedder.get_params(deep=True)
    assert params["xray__0"] is embedder.modalities[0][1][0]
    assert params["xray__1__seed"] == 1
    assert params["labs__with_mean"] is True
    assert params["teacher__report__0__dim"] == 5
    assert "xray__0__seed" not in embedder.get_params(deep=False)

    embedder.set_params(xray__1__seed=7, labs__with_mean=False, teacher__report__0__dim=6)
    assert embedder.modalities[0][1][1].seed == 7
    assert embedder.modalities[1][1].with_mean is False
    assert embedder.teachers[0][1][0].dim == 6
    replacement = FakeImageExpert("c", 4)
    embedder.set_params(xray__0=replacement)
    assert embedder.modalities[0][1][0] is replacement
    embedder.set_params(labs="passthrough")
    assert embedder.modalities[1][1] == "passthrough"

    with pytest.raises(ValueError, match="neither a parameter nor a modality name"):
        embedder.set_params(nope__0__seed=1)
    with pytest.raises(ValueError, match="has 2 expert"):
        embedder.set_params(xray__5__seed=1)
    with pytest.raises(ValueError, match="which has no parameters"):
        embedder.set_params(labs__with_mean=True)


def test_expert_parameter_set_through_a_pipeline_reaches_the_expert(frame):
    from sklearn.base import clone
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    pipe = Pipeline([("embed", make_embedder(teachers=None)), ("id", FunctionTransformer())])
    assert "embed__xray__1__seed" in pipe.get_params()
    pipe.set_params(embed__xray__1__seed=5, embed__report__0__dim=6)
    assert pipe["embed"].modalities[0][1][1].seed == 5
    fitted = clone(pipe).fit(frame)  # as a search does: clone, set, fit
    expert = fitted["embed"].modalities_[0][1][1]
    assert expert.seed == 5
    out = np.asarray(fitted.transform(frame))
    names = fitted["embed"].get_feature_names_out()
    np.testing.assert_allclose(block(out, names, "xray__b__")[0],
                               FakeImageExpert("b", 2, seed=5).expected(frame["image"].iloc[0]))
    assert block(out, names, "report__t__").shape[1] == 6


def test_modality_named_like_a_parameter_is_refused(frame):
    embedder = MultimodalExpertEmbedder([("device", "passthrough", ["age"])])
    with pytest.raises(ValueError, match="also a MultimodalExpertEmbedder parameter"):
        embedder.fit(frame)


def test_set_output_pandas(frame):
    embedder = make_embedder().set_output(transform="pandas")
    out = embedder.fit_transform(frame)
    assert isinstance(out, pd.DataFrame)
    assert list(out.columns) == EXPECTED_NAMES
    assert list(out.index) == list(frame.index)
    assert (out.dtypes == np.float32).all()
    out2 = embedder.transform(frame)
    assert list(out2.columns) == EXPECTED_NAMES


def test_batches_and_text_length_sorting_keep_rows_aligned(frame):
    texts = ["x" * (20 - i) + f" {i}" for i in range(6)]
    df = frame.assign(text=texts)
    embedder = MultimodalExpertEmbedder(
        [("report", [FakeTextExpert("t", 4)], "text")], cache_dir=None, batch_size=4
    )
    Xt = np.asarray(embedder.fit_transform(df))
    expert = embedder.modalities_[0][1][0]
    for i, text in enumerate(texts):
        np.testing.assert_allclose(Xt[i], expert.expected(text))
    assert CALLS["t", "embed"] == math.ceil(6 / 4)


def test_parallel_decoding_gives_equal_output(frame):
    serial = np.asarray(make_embedder(batch_size=2).fit_transform(frame))
    parallel = np.asarray(make_embedder(batch_size=2, n_jobs=2).fit_transform(frame))
    np.testing.assert_array_equal(serial, parallel)


# -- missingness -------------------------------------------------------------
@pytest.mark.parametrize("missing", [None, np.nan, pd.NA, "", "   \t"])
@pytest.mark.parametrize("column, prefix", [("image", "xray__"), ("text", "report__")])
def test_missing_item_makes_modality_nan(frame, missing, column, prefix):
    df = frame.astype({column: object})
    df.loc["p1", column] = missing
    embedder = make_embedder()
    Xt = np.asarray(embedder.fit_transform(df))
    names = embedder.get_feature_names_out()
    assert np.isnan(block(Xt, names, prefix)[1]).all()
    assert not np.isnan(np.delete(block(Xt, names, prefix), 1, axis=0)).any()
    other = "report__" if prefix == "xray__" else "xray__"
    assert not np.isnan(block(Xt, names, other)).any()
    assert not np.isnan(block(Xt, names, "labs__")).any()


def test_tabular_missing_rows_and_cells(frame):
    df = frame.copy()
    df.loc["p2", ["age", "hr"]] = np.nan
    df.loc["p4", "hr"] = np.nan
    embedder = MultimodalExpertEmbedder(
        [("labs", StandardScaler(), ["age", "hr"]), ("raw", "passthrough", ["age", "hr"])],
        cache_dir=None,
    )
    Xt = np.asarray(embedder.fit_transform(df))
    assert np.isnan(Xt[2]).all()
    assert np.isnan(Xt[4, [1, 3]]).all() and not np.isnan(Xt[4, [0, 2]]).any()
    present = np.delete(np.arange(6), 2)
    ages = df["age"].to_numpy()[present]
    np.testing.assert_allclose(Xt[present, 0], (ages - ages.mean()) / ages.std(), rtol=1e-5)


def test_transformer_that_rejects_nan_is_fitted_on_present_rows(frame):
    df = frame.copy()
    df.loc[["p0", "p3"], ["age", "hr"]] = np.nan
    embedder = MultimodalExpertEmbedder([("labs", PCA(n_components=1), ["age", "hr"])])
    Xt = np.asarray(embedder.fit_transform(df))
    assert list(embedder.get_feature_names_out()) == ["labs__pca0"]
    assert np.isnan(Xt[[0, 3]]).all()
    assert not np.isnan(Xt[[1, 2, 4, 5]]).any()
    pca = PCA(n_components=1).fit(df.loc[["p1", "p2", "p4", "p5"], ["age", "hr"]])
    np.testing.assert_allclose(
        Xt[[1, 2, 4, 5], 0], pca.transform(df.iloc[[1, 2, 4, 5]][["age", "hr"]])[:, 0], rtol=1e-5
    )


def test_modality_missing_everywhere_warns_and_is_nan(frame):
    df = frame.assign(text=[None] * 6)
    embedder = make_embedder()
    with pytest.warns(MissingModalityWarning, match="'report'.*'text'"):
        Xt = np.asarray(embedder.fit_transform(df))
    assert np.isnan(block(Xt, embedder.get_feature_names_out(), "report__")).all()
    assert CALLS["t", "load"] == 0


def test_unreadable_items_warn_with_row_and_file(frame, tmp_path):
    df = frame.copy()
    df.loc["p1", "image"] = str(tmp_path / "does_not_exist.png")
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"CORRUPT bytes")
    df.loc["p3", "image"] = str(corrupt)
    embedder = make_embedder()
    with pytest.warns(ItemReadWarning) as record:
        Xt = np.asarray(embedder.fit_transform(df))
    messages = [str(w.message) for w in record]
    # One warning per expert of the modality, each naming both rows and files.
    assert len(messages) == 2
    for message in messages:
        assert "'p1'" in message and "does_not_exist.png" in message
        assert "'p3'" in message and "corrupt.png" in message
    names = embedder.get_feature_names_out()
    xray = block(Xt, names, "xray__")
    assert np.isnan(xray[[1, 3]]).all()
    assert not np.isnan(np.delete(xray, [1, 3], axis=0)).any()
    assert not np.isnan(block(Xt, names, "report__")).any()


def test_unreadable_item_affects_only_that_expert(frame):
    df = frame.copy()
    embedder = MultimodalExpertEmbedder(
        [("xray", [FakeImageExpert("a", 3, fail_on="img4"), FakeImageExpert("b", 2)], "image")],
        cache_dir=None,
    )
    with pytest.warns(ItemReadWarning, match=r"Expert 'a'.*row 'p4'.*img4\.png"):
        Xt = np.asarray(embedder.fit_transform(df))
    assert np.isnan(Xt[4, :3]).all()
    assert not np.isnan(Xt[4, 3:]).any()
    assert np.isnan(Xt).sum() == 3


def test_on_error_raise(frame, tmp_path):
    df = frame.copy()
    df.loc["p5", "image"] = str(tmp_path / "gone.png")
    embedder = make_embedder(on_error="raise")
    with pytest.raises(ItemReadError, match=r"row 'p5' of column 'image'.*gone\.png"):
        embedder.fit_transform(df)
    assert CALLS["a", "load"] == 0  # raised before embedding anything


def test_on_error_raise_on_decoding(frame):
    embedder = MultimodalExpertEmbedder(
        [("report", FakeTextExpert("t", fail_on="number 4"), "text")],
        cache_dir=None,
        on_error="raise",
    )
    with pytest.raises(ItemReadError, match=r"row 'p4' of column 'text'.*cannot tokenize"):
        embedder.fit_transform(frame)


# -- teachers ----------------------------------------------------------------
def test_teachers_only_in_fit_transform(frame):
    embedder = make_embedder()
    Xt = np.asarray(embedder.fit_transform(frame))
    names = embedder.get_feature_names_out()
    assert not np.isnan(block(Xt, names, "teacher__")).any()
    assert CALLS["big", "items"] == 6
    teacher = embedder.teachers_[0][1][0]
    assert not teacher.is_loaded  # released: transform never needs it

    CALLS.clear()
    # Prediction-time data has no privileged column.
    Xp = np.asarray(embedder.transform(frame.drop(columns="findings")))
    assert Xp.shape == Xt.shape
    assert np.isnan(block(Xp, names, "teacher__")).all()
    np.testing.assert_array_equal(
        np.delete(Xp, np.s_[-5:], axis=1), np.delete(Xt, np.s_[-5:], axis=1)
    )
    assert CALLS["big", "load"] == 0 and CALLS["big", "embed"] == 0
    assert not teacher.is_loaded


def test_transform_needs_only_student_columns(frame):
    embedder = make_embedder().fit(frame)
    shuffled = frame[["hr", "findings", "text", "age", "image"]].assign(extra=1)
    np.testing.assert_array_equal(embedder.transform(shuffled), embedder.transform(frame))
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['text'\]"):
        embedder.transform(frame.drop(columns="text"))


# -- cache -------------------------------------------------------------------
def n_entries(cache_dir) -> int:
    return sum(e["entries"] for e in EmbeddingCache(cache_dir).info()["experts"])


def test_cached_pass_never_loads_and_counts(frame, tmp_path, caplog):
    cache_dir = tmp_path / "cache"
    first = make_embedder(cache_dir=cache_dir, verbose=1)
    with caplog.at_level(logging.INFO, logger="medmix_sklearn.embedding._embedder"):
        X1 = np.asarray(first.fit_transform(frame))
    assert CALLS["a", "items"] == 6 and CALLS["t", "items"] == 6
    assert "xray/a: 6 rows, 6 unique items, 0 cache hits, 6 embedded" in caplog.text
    assert n_entries(cache_dir) == 6 * 4  # a, b, t, big

    CALLS.clear()
    caplog.clear()
    second = clone(first)
    with caplog.at_level(logging.INFO, logger="medmix_sklearn.embedding._embedder"):
        X2 = np.asarray(second.fit_transform(frame))
    np.testing.assert_array_equal(X1, X2)
    assert sum(CALLS.values()) == 0
    assert not any(e.is_loaded for _, experts, _ in second.modalities_[:2] for e in experts)
    assert "xray/a: 6 rows, 6 unique items, 6 cache hits, 0 embedded" in caplog.text


def test_same_content_under_two_paths_is_one_entry(frame, tmp_path):
    df = frame.copy()
    copy = tmp_path / "elsewhere" / "copy.png"
    copy.parent.mkdir()
    copy.write_bytes(open(df.loc["p0", "image"], "rb").read())
    df.loc["p5", "image"] = str(copy)
    df.loc["p5", "text"] = df.loc["p0", "text"]
    cache_dir = tmp_path / "cache"
    embedder = MultimodalExpertEmbedder(
        [("xray", FakeImageExpert("a", 3), "image"), ("report", FakeTextExpert("t", 4), "text")],
        cache_dir=cache_dir,
    )
    Xt = np.asarray(embedder.fit_transform(df))
    assert CALLS["a", "items"] == 5 and CALLS["t", "items"] == 5
    assert n_entries(cache_dir) == 10
    np.testing.assert_array_equal(Xt[0], Xt[5])


def test_cache_dir_none_dedupes_and_writes_nothing(frame, tmp_path):
    df = frame.assign(text=["same"] * 3 + ["other"] * 3)
    embedder = MultimodalExpertEmbedder(
        [("report", FakeTextExpert("t", 4), "text")], cache_dir=None
    )
    Xt = np.asarray(embedder.fit_transform(df))
    assert CALLS["t", "items"] == 2
    np.testing.assert_array_equal(Xt[0], Xt[2])
    assert not (tmp_path / "auto-cache").exists()
    embedder.transform(df)
    assert CALLS["t", "items"] == 4  # no disk cache: recomputed


def test_cache_dir_auto_uses_env(frame, tmp_path):
    MultimodalExpertEmbedder([("report", FakeTextExpert("t", 4), "text")]).fit_transform(frame)
    assert n_entries(tmp_path / "auto-cache") == 6


def test_corrupt_entry_is_recomputed(frame, tmp_path):
    cache_dir = tmp_path / "cache"
    embedder = MultimodalExpertEmbedder(
        [("report", FakeTextExpert("t", 4), "text")], cache_dir=cache_dir
    )
    X1 = np.asarray(embedder.fit_transform(frame))
    expert = embedder.modalities_[0][1][0]
    path, offset = EmbeddingCache(cache_dir)._locate(
        expert.fingerprint(), expert.content_key(frame["text"].iloc[3])
    )
    data = bytearray(path.read_bytes())
    data[offset + 50] ^= 0xFF  # a byte of the values
    path.write_bytes(bytes(data))

    CALLS.clear()
    X2 = np.asarray(clone(embedder).fit_transform(frame))
    np.testing.assert_array_equal(X1, X2)
    assert CALLS["t", "items"] == 1
    key = expert.content_key("report number 3")
    assert EmbeddingCache(cache_dir).get(expert.fingerprint(), key) is not None


def test_cross_val_score_embeds_each_item_once(tmp_path):
    rng = np.random.default_rng(0)
    n = 40
    paths = write_images(tmp_path / "images", n)
    df = pd.DataFrame(
        {"image": paths, "text": [f"note {i}" for i in range(n)], "age": rng.normal(60, 10, n)}
    )
    y = np.arange(n) % 2
    embedder = MultimodalExpertEmbedder(
        [
            ("xray", [FakeImageExpert("a", 3), FakeImageExpert("b", 2)], "image"),
            ("report", [FakeTextExpert("t", 4)], "text"),
            ("labs", StandardScaler(), ["age"]),
        ],
        cache_dir=tmp_path / "cache",
        batch_size=8,
    )
    pipe = Pipeline([("embed", embedder), ("clf", LogisticRegression())])
    scores = cross_val_score(pipe, df, y, cv=KFold(5, shuffle=True, random_state=0))
    assert scores.shape == (5,)
    assert CALLS["a", "items"] == n and CALLS["b", "items"] == n and CALLS["t", "items"] == n


def test_two_processes_filling_one_cache_agree(tmp_path):
    images = write_images(tmp_path / "images", 12)
    cache_dir = tmp_path / "cache"
    script = tmp_path / "worker.py"
    script.write_text(
        textwrap.dedent(
            """
            import hashlib, sys
            import numpy as np, pandas as pd
            from medmix_sklearn.embedding import MultimodalExpertEmbedder
            from medmix_sklearn.experts._base import BaseExpert

            class Expert(BaseExpert):
                kind = "image"
                output_dim = 8
                def __init__(self, model="e", name=None):
                    self.model = model
                    self.name = name
                def _fingerprint_parts(self):
                    return {"e": 1}
                def content_key(self, item):
                    return hashlib.sha256(open(item, "rb").read()).hexdigest()
                def read(self, item):
                    return open(item, "rb").read()
                def _load(self, device):
                    return None
                def _embed(self, model, items, *, device, batch_size):
                    return np.stack([
                        np.frombuffer(hashlib.sha256(x).digest(), dtype=np.uint32)
                        .astype(np.float32) for x in items])

            paths = sys.argv[2:]
            df = pd.DataFrame({"image": paths})
            out = MultimodalExpertEmbedder(
                [("xray", [Expert()], "image")], cache_dir=sys.argv[1], batch_size=2
            ).fit_transform(df)
            np.save(sys.stdout.buffer, out)
            """
        )
    )
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(cache_dir), *order],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        for order in (images, images[::-1])
    ]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
        import io

        outputs.append(np.load(io.BytesIO(out)))
    np.testing.assert_array_equal(outputs[0], outputs[1][::-1])
    info = EmbeddingCache(cache_dir).info()
    # Both may embed an item before the other wrote it: one or two records each.
    assert len(info["experts"]) == 1 and 12 <= info["experts"][0]["entries"] <= 24
    assert not list(cache_dir.rglob("*.tmp")) and not list(cache_dir.rglob("*.lock"))
    cache = EmbeddingCache(cache_dir)
    fingerprint = info["experts"][0]["fingerprint"]
    for i, path in enumerate(images):
        key = hashlib.sha256(open(path, "rb").read()).hexdigest()
        np.testing.assert_array_equal(cache.get(fingerprint, key, dim=8), outputs[0][i])
    assert cache.hits == 12 and cache.corrupt == 0


# -- pickling ----------------------------------------------------------------
def test_unpickled_embedder_gives_equal_output(frame):
    embedder = make_embedder()
    embedder.fit(frame)
    X1 = np.asarray(embedder.transform(frame))
    assert embedder.modalities_[0][1][0].is_loaded
    restored = pickle.loads(pickle.dumps(embedder))
    assert not restored.modalities_[0][1][0].is_loaded
    CALLS.clear()
    X2 = np.asarray(restored.transform(frame))
    np.testing.assert_array_equal(X1, X2)
    assert CALLS["a", "load"] == 1  # re-loaded after unpickling (no disk cache)


# -- input validation --------------------------------------------------------
@pytest.mark.parametrize(
    "modalities, error, match",
    [
        ([], ValueError, "modalities is empty"),
        ([("a", "passthrough")], ValueError, r"modalities\[0\] must be a \(name"),
        ([("a__b", "passthrough", ["age"])], ValueError, "Invalid modality name 'a__b'"),
        ([("teacher", "passthrough", ["age"])], ValueError, "reserved"),
        (
            [("a", "passthrough", ["age"]), ("a", "passthrough", ["hr"])],
            ValueError,
            r"modalities\[1\] reuses the modality name 'a'",
        ),
        (
            [("labs", "passthrough", ["age", "weight"])],
            ValueError,
            r"names column 'weight', which is not in X\. Columns are: \['image', 'text'",
        ),
        (
            [("x", FakeTextExpert("t"), ["text", "image"])],
            ValueError,
            "read ONE column",
        ),
        (
            [("x", [FakeTextExpert("t"), FakeImageExpert("i")], "text")],
            ValueError,
            r"mixes experts of kinds \['image', 'text'\]",
        ),
        (
            [("x", [FakeTextExpert("t"), FakeTextExpert("t", seed=3)], "text")],
            ValueError,
            "two experts named 't'",
        ),
        ([("x", "drop", ["age"])], ValueError, "the only string accepted is 'passthrough'"),
        ([("x", 42, ["age"])], ValueError, "expected an expert or a list of experts"),
        ([("x", "passthrough", ["text"])], ValueError, r"column 'text'.*not numbers.*OneHotEncoder"),
    ],
)
def test_bad_modalities(frame, modalities, error, match):
    with pytest.raises(error, match=match):
        MultimodalExpertEmbedder(modalities).fit(frame)


def test_reserved_teacher_name_in_teachers(frame):
    with pytest.raises(ValueError, match=r"teachers\[0\] is named 'teacher'"):
        make_embedder(teachers=[("teacher", FakeTextExpert("t"), "findings")]).fit(frame)


def test_needs_a_dataframe_with_experts(frame):
    with pytest.raises(TypeError, match="needs a pandas DataFrame.*Got ndarray instead"):
        make_embedder().fit(frame.to_numpy())
    embedder = make_embedder().fit(frame)
    with pytest.raises(TypeError, match="needs a pandas DataFrame"):
        embedder.transform(frame.to_numpy())


@pytest.mark.parametrize(
    "params, match",
    [
        ({"on_error": "ignore"}, "on_error"),
        ({"batch_size": 0}, "batch_size"),
        ({"cache_dir": 3}, "cache_dir"),
    ],
)
def test_bad_params(frame, params, match):
    with pytest.raises(InvalidParameterError, match=match):
        make_embedder(**params).fit(frame)


def test_bad_device(frame):
    with pytest.raises(ValueError, match="device must be 'auto' or a torch device.*'gpu0'"):
        make_embedder(device="gpu0").fit(frame)


def test_numpy_input_for_tabular_modalities():
    X = np.arange(12, dtype=float).reshape(4, 3)
    X[1] = np.nan
    embedder = MultimodalExpertEmbedder(
        [("a", "passthrough", [0, 2]), ("b", StandardScaler(), slice(1, 3))]
    )
    Xt = np.asarray(embedder.fit_transform(X))
    assert list(embedder.get_feature_names_out()) == ["a__x0", "a__x2", "b__x1", "b__x2"]
    np.testing.assert_array_equal(Xt[:, :2], X[:, [0, 2]].astype(np.float32))
    assert np.isnan(Xt[1]).all()
    with pytest.raises(ValueError, match="X has 2 features, but MultimodalExpertEmbedder"):
        embedder.transform(X[:, :2])


# -- the real (tiny, random) experts -----------------------------------------
@pytest.fixture
def real_frame(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(5):
        path = tmp_path / "png" / f"scan{i}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (48, 48), dtype=np.uint8)).save(path)
        paths.append(str(path))
    broken = tmp_path / "png" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    paths[3] = str(broken)
    paths[4] = ""
    return pd.DataFrame(
        {
            "image": paths,
            "text": ["no evidence of pneumonia", "   ", "mild pleural effusion", None, "cough"],
            "age": [70.0, 50.0, np.nan, 40.0, 35.0],
        },
        index=[10, 11, 12, 13, 14],
    )


def test_real_tiny_experts(real_frame, tmp_path, tiny_image_model, tiny_text_model_dir):
    from medmix_sklearn import experts

    def build():
        return MultimodalExpertEmbedder(
            [
                ("xray", [experts.ImageExpert(tiny_image_model, pretrained=False)], "image"),
                ("report", [experts.TextExpert(tiny_text_model_dir, name="bert")], "text"),
                ("labs", "passthrough", ["age"]),
            ],
            cache_dir=tmp_path / "cache",
            batch_size=2,
        )

    embedder = build()
    with pytest.warns(ItemReadWarning, match=r"row 13.*broken\.png"):
        X1 = np.asarray(embedder.fit_transform(real_frame))
    names = embedder.get_feature_names_out()
    assert X1.shape == (5, 256 + 32 + 1)
    assert names[0] == f"xray__{tiny_image_model}__0" and names[256] == "report__bert__0"
    image, text = X1[:, :256], X1[:, 256:288]
    assert not np.isnan(image[:3]).any() and np.isnan(image[3:]).all()
    assert not np.isnan(text[[0, 2, 4]]).any() and np.isnan(text[[1, 3]]).all()

    again = build()
    with pytest.warns(ItemReadWarning):  # the broken file is never cached
        X2 = np.asarray(again.fit_transform(real_frame))
    np.testing.assert_array_equal(X1, X2)
    assert not any(e.is_loaded for _, es, _ in again.modalities_[:2] for e in es)


def test_dataframe_in_gives_layout_named_dataframe_out(frame):
    """The default output keeps the block layout in the column names."""
    embedder = MultimodalExpertEmbedder([("report", FakeTextExpert("t", 4), "text")])
    out = embedder.fit_transform(frame)
    assert isinstance(out, pd.DataFrame)
    assert list(out.columns) == list(embedder.get_feature_names_out())
    assert out.index.equals(frame.index)
    assert (out.dtypes == np.float32).all()
    plain = clone(embedder).set_output(transform="default").fit_transform(frame)
    assert isinstance(plain, np.ndarray)
    np.testing.assert_array_equal(plain, out.to_numpy())
