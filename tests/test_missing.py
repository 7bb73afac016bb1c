"""The one home of missingness: the cell rule, presence, patterns, blanking, subset scores."""

import hashlib
import pathlib

import numpy as np
import pandas as pd
import pytest

from medmix_sklearn import MultimodalExpertEmbedder
from medmix_sklearn._missing import (
    availability_patterns,
    blank_modalities,
    block_presence,
    is_missing,
    missing_mask,
    modality_columns,
    pattern_labels,
    subset_score,
    teacher_columns,
)
from medmix_sklearn.experts import BaseExpert
from medmix_sklearn.model_selection import MissingnessStratifiedKFold, missingness_report
from medmix_sklearn.report import render_report

# Cells whose meaning the rule fixes: (value, missing?)
ODD_CELLS = [
    (None, True),
    (np.nan, True),
    (float("nan"), True),
    (pd.NA, True),
    (pd.NaT, True),
    (np.datetime64("NaT"), True),
    (np.timedelta64("NaT"), True),
    ("", True),
    ("   ", True),
    ("\t\n", True),
    (b"", True),
    (b"  ", True),
    (pathlib.Path(" "), True),
    ("x", False),
    ("nan", False),
    (b"x", False),
    (0, False),
    (0.0, False),
    (False, False),
    (np.zeros(3), False),
    (pathlib.Path("a.png"), False),
]


@pytest.mark.parametrize("value, expected", ODD_CELLS)
def test_cell_rule(value, expected):
    assert is_missing(value) is expected


def test_missing_mask_agrees_with_the_cell_rule_on_every_dtype():
    values = [v for v, _ in ODD_CELLS]
    expected = np.array([m for _, m in ODD_CELLS])
    assert missing_mask(pd.Series(values, dtype=object)).tolist() == expected.tolist()
    assert missing_mask(values).tolist() == expected.tolist()
    dates = pd.Series(pd.to_datetime(["2020-01-01", None, "2021-02-03"]))
    assert missing_mask(dates).tolist() == [False, True, False]
    strings = pd.Series(["a", "  ", None], dtype="string")
    assert missing_mask(strings).tolist() == [False, True, True]
    frame = pd.DataFrame({"a": [1.0, np.nan], "b": ["", "x"]})
    assert missing_mask(frame).tolist() == [[False, True], [True, False]]


class _TextExpert(BaseExpert):
    """Instant, deterministic text expert that reads str and bytes alike."""

    kind = "text"

    def __init__(self, model="fake", name=None):
        self.model = model
        self.name = name

    def _fingerprint_parts(self):
        return {"model": self.model}

    @property
    def output_dim(self):
        return 3

    def content_key(self, item):
        data = item if isinstance(item, bytes) else str(item).encode()
        return hashlib.sha256(data).hexdigest()

    def read(self, item):
        return item if isinstance(item, bytes) else str(item).encode()

    def _load(self, device):
        return None

    def _embed(self, model, items, *, device, batch_size):
        return np.array([[len(x), 1.0, 2.0] for x in items], dtype=np.float32)


def test_embedder_splitter_scorer_and_report_agree_on_odd_cells():
    """One rule: the embedder's NaN blocks are the modalities the others call absent."""
    n = len(ODD_CELLS)
    # Only str/bytes cells and the missing ones reach a text expert.
    text = [v if m or isinstance(v, (str, bytes)) else f"text {i}"
            for i, (v, m) in enumerate(ODD_CELLS)]
    tab_cells = [v if not isinstance(v, np.ndarray) else "y" for v, _ in ODD_CELLS]
    raw = pd.DataFrame({
        "note": pd.Series(text, dtype=object),
        "cat": pd.Series(tab_cells, dtype=object),
        "num": np.where(np.arange(n) % 2 == 0, np.nan, 1.0),
    })
    entries = [
        ("note", [_TextExpert()], "note"),
        ("labs", "passthrough", ["num"]),
    ]
    embedder = MultimodalExpertEmbedder(entries, cache_dir=None)
    embedded = embedder.fit_transform(raw)

    from_raw = availability_patterns(raw, entries)
    from_embedded = availability_patterns(embedded)
    pd.testing.assert_frame_equal(from_raw, from_embedded)
    expected_note = [not m for _, m in ODD_CELLS]
    assert from_raw["note"].tolist() == expected_note
    assert from_raw["labs"].tolist() == (np.arange(n) % 2 == 1).tolist()

    # A tabular entry with a transformer uses the rule as well: "" and b"  " are absent.
    from sklearn.preprocessing import FunctionTransformer

    def codes(frame):
        return np.ones((len(frame), 1))

    tab = [("cat", FunctionTransformer(codes, feature_names_out="one-to-one"), ["cat"])]
    tab_out = MultimodalExpertEmbedder(tab, cache_dir=None).fit_transform(raw)
    tab_present = ~np.isnan(tab_out.to_numpy()).all(axis=1)
    assert tab_present.tolist() == availability_patterns(raw, tab)["cat"].tolist()
    assert tab_present.tolist() == [not is_missing(v) for v in tab_cells]

    # The splitter stratifies on the same labels from the raw table and the matrix.
    y = np.arange(n) % 2
    labels = pattern_labels(from_raw)
    cv = MissingnessStratifiedKFold(2, modalities=entries)
    raw_folds = [test.tolist() for _, test in cv.split(raw, y)]
    emb_folds = [test.tolist() for _, test in MissingnessStratifiedKFold(2).split(embedded, y)]
    assert raw_folds == emb_folds

    # The scorer's subsets and the report's pattern table count the same rows.
    class Constant:
        classes_ = np.array([0, 1])

        def predict_proba(self, X):
            return np.tile([0.5, 0.5], (len(X), 1))

    report = missingness_report(Constant(), raw, y, entries)
    by_pattern = report.xs("pattern", level="level")["n"].to_dict()
    assert by_pattern == pd.Series(labels).value_counts().to_dict()
    html = render_report(y_true=y, proba=np.tile([0.5, 0.5], (n, 1)), availability=from_embedded)
    for pattern, count in by_pattern.items():
        assert f">{pattern}<" in html
        assert f">{count}<" in html


def test_block_presence_on_floats_and_objects():
    X = np.array([[1.0, np.nan, np.nan], [np.nan, np.nan, 2.0], [np.nan, np.nan, np.nan]])
    assert block_presence(X, [[0, 1], [2]]).tolist() == [[True, False], [False, True], [False, False]]
    frame = pd.DataFrame({"a": ["", "x", None], "b": [np.nan, np.nan, 1.0]})
    assert block_presence(frame, [[0], [1], [0, 1]]).tolist() == [
        [False, False, False], [True, False, True], [False, True, True]]
    assert block_presence(X, []).shape == (3, 0)


def test_modality_and_teacher_columns_from_layout_names():
    names = ["xray__a__0", "xray__a__1", "labs__wbc", "xray__b__0", "teacher__xray__c__0", "age"]
    groups = modality_columns(names)
    assert list(groups) == ["xray", "labs", "age"]
    assert groups["xray"].tolist() == [0, 1, 3]
    assert teacher_columns(names).tolist() == [4]
    assert teacher_columns(["a__b"]).tolist() == []


def _matrix(n=400, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5))
    X[rng.random(n) < 0.3, 0:2] = np.nan  # modality a absent in ~30%
    X[:10] = np.nan  # nothing present in 10 rows
    return X, {"a": [0, 1], "b": [2, 3], "c": [4]}


@pytest.mark.parametrize("keep_one", [True, False])
def test_blank_modalities_blanks_whole_modalities_at_the_rate(keep_one):
    X, groups = _matrix()
    before = block_presence(X, groups.values())
    out = blank_modalities(X, groups, 0.5, random_state=0, keep_one=keep_one)
    after = block_presence(out, groups.values())
    assert not (after & ~before).any()  # nothing comes back
    for cols in groups.values():  # a blanked modality is NaN in all its columns
        cells = np.isnan(out[:, cols])
        assert (cells.all(axis=1) | ~cells.any(axis=1) | np.isnan(X[:, cols]).any(axis=1)).all()
    lost = before.sum() - after.sum()
    assert 0.35 < lost / before.sum() < 0.55
    kept_nothing = before.any(axis=1) & ~after.any(axis=1)
    if keep_one:
        assert not kept_nothing.any()
    else:
        assert kept_nothing.sum() > 5  # a row may lose everything (rows with 3 modalities: 1/8)
    assert np.isnan(out[:10]).all()  # rows with nothing present stay as they are
    assert not np.shares_memory(out, X)


def test_blank_modalities_is_seeded_and_keeps_frames():
    X, groups = _matrix()
    a = blank_modalities(X, groups, 0.4, random_state=3)
    b = blank_modalities(X, groups, 0.4, random_state=np.random.default_rng(3))
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    c = blank_modalities(X, groups, 0.4, random_state=4)
    assert not np.array_equal(np.isnan(a), np.isnan(c))
    names = ["a__e__0", "a__e__1", "b__e__0", "b__e__1", "c__x"]
    frame = pd.DataFrame(X, columns=names, index=np.arange(100, 500))
    out = blank_modalities(frame, None, 0.4, random_state=3)
    assert list(out.columns) == names and out.index[0] == 100
    np.testing.assert_array_equal(np.isnan(out.to_numpy()), np.isnan(a))
    np.testing.assert_array_equal(blank_modalities(X, groups, 0.0, random_state=0), X)


def test_blank_modalities_errors():
    X, groups = _matrix(20)
    with pytest.raises(ValueError, match="rate must be a probability"):
        blank_modalities(X, groups, 1.5)
    with pytest.raises(ValueError, match="needs groups"):
        blank_modalities(X, None, 0.5)
    with pytest.raises(TypeError, match="random_state must be"):
        blank_modalities(X, groups, 0.5, random_state="seed")


def test_subset_score_binary_and_multiclass():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = np.array(["a", "b", "c"] * 20)
    p = rng.dirichlet(np.ones(3), size=60)
    classes = np.array(["a", "b", "c"])
    assert subset_score(y, p, classes) == pytest.approx(
        roc_auc_score(y, p, multi_class="ovr", average="macro", labels=classes))
    # A subset without class "c": the macro average over the classes that are defined.
    keep = y != "c"
    expected = np.mean([roc_auc_score(y[keep] == k, p[keep, j]) for j, k in enumerate("ab")])
    assert subset_score(y[keep], p[keep], classes) == pytest.approx(expected)
    assert np.isnan(subset_score(y[y == "a"], p[y == "a"], classes))
    assert np.isnan(subset_score(y[:0], p[:0], classes))
    yb = np.array([0, 1, 1, 0])
    pb = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    assert subset_score(yb, pb, [0, 1]) == pytest.approx(roc_auc_score(yb, pb[:, 1]))
    with pytest.raises(ValueError, match="metric must be one of"):
        subset_score(yb, pb, [0, 1], metric="accuracy")


def test_missing_cells_agrees_with_is_missing():
    from medmix_sklearn._missing import is_missing, missing_cells

    class Text(str):
        pass

    cells = [None, np.nan, pd.NA, pd.NaT, "", "  ", "\x1c", "x", b" ", Text(" "), Text("y"),
             0, False, np.zeros(0), pathlib.Path(" "), "nan"]
    assert missing_cells(cells).tolist() == [is_missing(c) for c in cells]
    series = pd.Series(["a", None, " ", "b"], dtype="string[pyarrow]")
    assert missing_mask(series).tolist() == [False, True, True, False]
