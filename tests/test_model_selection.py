"""Tests for medmix_sklearn.model_selection: splits, scorers, search, shared studies."""

import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin, clone
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.model_selection import (
    StratifiedKFold,
    cross_val_score,
    cross_validate,
    train_test_split,
)
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from medmix_sklearn import MedMIXClassifier, MultimodalExpertEmbedder, TextExpert
from medmix_sklearn.datasets import make_multimodal_classification
from medmix_sklearn.model_selection import (
    MissingnessStratifiedGroupKFold,
    MissingnessStratifiedKFold,
    PatternScorer,
    SearchPipeline,
    availability_patterns,
    create_study,
    default_search_space,
    make_pattern_scorers,
    missingness_report,
    pattern_labels,
    subset_score,
)
from medmix_sklearn.model_selection._split import _strata

optuna.logging.set_verbosity(optuna.logging.WARNING)

ENTRIES = [
    ("xray", ["expert-a"], "image_path"),
    ("report", ["expert-b"], "indication"),
    ("labs", "passthrough", ["age", "heart_rate"]),
]


def _data(n=300, seed=0, n_classes=2, with_teacher=False):
    """A raw table and its embedded NaN-block matrix with label-dependent missingness."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    p_img = np.where(y == 1, 0.5, 0.85)
    has_img = rng.random(n) < p_img
    has_txt = rng.random(n) < 0.7
    has_lab = rng.random(n) < 0.9
    raw = pd.DataFrame(
        {
            "image_path": [f"img_{i}.png" if h else m for i, (h, m) in enumerate(
                zip(has_img, rng.choice(np.array([None, "", "  ", np.nan], dtype=object), n)))],
            "indication": [f"cough {i}" if h else m for i, (h, m) in enumerate(
                zip(has_txt, rng.choice(np.array([None, "", " \t", np.nan], dtype=object), n)))],
            "age": np.where(has_lab, rng.normal(60, 10, n), np.nan),
            "heart_rate": np.where(has_lab & (rng.random(n) < 0.5), rng.normal(80, 5, n), np.nan),
        }
    )
    # A row whose labs are partly present still counts as labs present.
    raw.loc[has_lab, "age"] = np.where(rng.random(has_lab.sum()) < 0.2, np.nan,
                                       raw.loc[has_lab, "age"])
    raw.loc[has_lab & raw["age"].isna(), "heart_rate"] = 70.0
    signal = y[:, None] + rng.normal(0, 1.0, (n, 4))
    cols = {}
    for k in range(4):
        cols[f"xray__expert-a__{k}"] = np.where(has_img, signal[:, k], np.nan)
    for k in range(3):
        cols[f"report__expert-b__{k}"] = np.where(has_txt, signal[:, k] * 0.5, np.nan)
    cols["labs__age"] = raw["age"].to_numpy()
    cols["labs__heart_rate"] = raw["heart_rate"].to_numpy()
    if with_teacher:  # training-only block, all NaN outside fit_transform
        cols["teacher__xray__big__0"] = np.full(n, np.nan)
    emb = pd.DataFrame(cols)
    return raw, emb, y


# --------------------------------------------------------------------------- #
# availability patterns
# --------------------------------------------------------------------------- #
def test_patterns_from_raw_equal_patterns_from_embedded_matrix():
    raw, emb, _ = _data(with_teacher=True)
    from_raw = availability_patterns(raw, ENTRIES)
    from_emb = availability_patterns(emb)
    assert list(from_raw.columns) == ["xray", "report", "labs"]
    assert list(from_emb.columns) == ["xray", "report", "labs"]  # teacher block ignored
    pd.testing.assert_frame_equal(from_raw, from_emb)
    assert from_raw.dtypes.eq(bool).all()
    # A numpy embedded matrix with an explicit mapping gives the same pattern.
    mapping = {"xray": range(4), "report": range(4, 7), "labs": [7, 8]}
    from_np = availability_patterns(emb.to_numpy(), mapping)
    np.testing.assert_array_equal(from_np.to_numpy(), from_raw.to_numpy())
    # Several patterns really occur, so the check above is not trivial.
    assert len(set(pattern_labels(from_raw))) >= 6


def test_item_and_tabular_missing_rules():
    raw = pd.DataFrame(
        {
            "img": ["a.png", None, "", "   ", np.nan, Path("b.png")],
            "age": [1.0, np.nan, 2.0, np.nan, np.nan, np.nan],
            "hr": [np.nan, np.nan, np.nan, 3.0, np.nan, np.nan],
        }
    )
    entries = [("xray", [], "img"), ("labs", "passthrough", ["age", "hr"]),
               ("teacher", [], "img")]
    pats = availability_patterns(raw, entries)
    assert list(pats.columns) == ["xray", "labs"]
    assert pats["xray"].tolist() == [True, False, False, False, False, True]
    assert pats["labs"].tolist() == [True, False, True, True, False, False]
    assert pattern_labels(pats).tolist() == ["xray+labs", "none", "labs", "labs", "none", "xray"]


def test_patterns_read_embedder_modalities_attribute():
    class FakeEmbedder:
        modalities = ENTRIES

    raw, _, _ = _data(50)
    pd.testing.assert_frame_equal(
        availability_patterns(raw, FakeEmbedder()), availability_patterns(raw, ENTRIES)
    )


def test_numpy_without_layout_makes_each_column_a_modality():
    X = np.array([[1.0, np.nan], [np.nan, np.nan]])
    pats = availability_patterns(X)
    assert list(pats.columns) == ["x0", "x1"]
    assert pats.to_numpy().tolist() == [[True, False], [False, False]]


def test_pattern_errors_name_the_problem():
    raw, _, _ = _data(20)
    with pytest.raises(ValueError, match=r"modalities\[0\] \('xray'\) names column 'nope'"):
        availability_patterns(raw, [("xray", [], "nope")])
    with pytest.raises(ValueError, match="must be a \\(name, experts_or_transformer, columns\\)"):
        availability_patterns(raw, [("xray", "image_path")])
    with pytest.raises(TypeError, match="Got int instead"):
        availability_patterns(raw, 3)


# --------------------------------------------------------------------------- #
# splitters
# --------------------------------------------------------------------------- #
def _strata_counts(labels, patterns):
    return Counter(zip(labels.tolist(), patterns.tolist()))


@pytest.mark.parametrize("source", ["raw", "embedded"])
def test_folds_are_stratified_on_label_and_pattern(source):
    raw, emb, y = _data(400)
    X, mods = (raw, ENTRIES) if source == "raw" else (emb, None)
    patterns = pattern_labels(availability_patterns(raw, ENTRIES))
    n_splits = 4
    cv = MissingnessStratifiedKFold(n_splits, shuffle=True, random_state=0, modalities=mods)
    assert cv.get_n_splits(X, y) == n_splits
    overall = _strata_counts(y, patterns)
    frequent = {k: c for k, c in overall.items() if c >= n_splits}
    assert len(frequent) >= 6
    seen = np.zeros(len(y), dtype=int)
    for train, test in cv.split(X, y):
        seen[test] += 1
        assert len(np.intersect1d(train, test)) == 0
        fold = _strata_counts(y[test], patterns[test])
        for key, count in frequent.items():
            # every frequent label x pattern stratum is in every fold, in proportion
            assert abs(fold[key] - count / n_splits) <= 1, (key, fold[key], count)
        assert abs(np.mean(y[test]) - np.mean(y)) < 0.03
    np.testing.assert_array_equal(seen, 1)


def test_stratified_splits_beat_label_only_on_pattern_balance():
    raw, _, y = _data(400, seed=3)
    patterns = pattern_labels(availability_patterns(raw, ENTRIES))
    overall = _strata_counts(y, patterns)

    def worst(cv, X):
        return max(
            abs(_strata_counts(y[test], patterns[test])[k] - c / 5)
            for _, test in cv.split(X, y) for k, c in overall.items() if c >= 5
        )

    ours = worst(MissingnessStratifiedKFold(5, modalities=ENTRIES), raw)
    plain = worst(StratifiedKFold(5), raw)
    assert ours <= 1 < plain


def test_rare_strata_are_merged_without_warning():
    labels = np.array([0] * 40 + [1] * 40)
    patterns = np.array(["a"] * 30 + ["b"] * 8 + ["c"] * 2 + ["a"] * 37 + ["d"] * 2 + ["e"] * 1)
    codes = _strata(labels, patterns, n_splits=5)
    groups = {}
    for lab, pat, code in zip(labels, patterns, codes):
        groups.setdefault(code, set()).add((lab, pat))
    merged = sorted(sorted(g) for g in groups.values())
    # (0,c) is too small alone but pooled "other" (2 rows) is too: it joins (0,a);
    # (1,d)+(1,e) likewise join (1,a); (0,b) keeps its own stratum.
    assert merged == [[(0, "a"), (0, "c")], [(0, "b")], [(1, "a"), (1, "d"), (1, "e")]]

    # Two rare patterns of one label pooled into 'other' reach n_splits and stay apart.
    patterns2 = np.array(["a"] * 30 + ["b"] * 3 + ["c"] * 3 + ["x"] * 4 + ["a"] * 40)
    codes2 = _strata(labels, patterns2, n_splits=5)
    assert codes2[30] == codes2[35] != codes2[0]

    X = pd.DataFrame({"m__f": np.where(patterns == "a", 1.0, np.nan)})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        folds = list(MissingnessStratifiedKFold(5).split(X, labels))
    assert len(folds) == 5


def test_group_variant_never_splits_a_group():
    raw, emb, y = _data(400, seed=1)
    rng = np.random.default_rng(1)
    groups = rng.integers(0, 120, len(y))
    patterns = pattern_labels(availability_patterns(emb))
    cv = MissingnessStratifiedGroupKFold(3, shuffle=True, random_state=0)
    fold_of = {}
    n_folds = 0
    for train, test in cv.split(emb, y, groups):
        n_folds += 1
        assert not set(groups[train]) & set(groups[test])
        for g in set(groups[test]):
            assert fold_of.setdefault(g, n_folds) == n_folds
        for pat, count in Counter(patterns).items():
            if count >= 30:
                assert pat in set(patterns[test])
    assert n_folds == 3
    assert set(fold_of) == set(groups)
    with pytest.raises(ValueError, match="needs groups"):
        next(cv.split(emb, y))


def test_splitter_works_as_cv_in_cross_val_score():
    _, emb, y = _data(240)
    clf = HistGradientBoostingClassifier(max_iter=20, random_state=0)
    scores = cross_val_score(clf, emb, y, cv=MissingnessStratifiedKFold(3), scoring="roc_auc")
    assert scores.shape == (3,)
    assert np.all(scores > 0.6)  # the signal is strong; a broken split would not learn it
    groups = np.arange(len(y)) // 2
    res = cross_validate(clf, emb, y, groups=groups, cv=MissingnessStratifiedGroupKFold(3))
    assert res["test_score"].shape == (3,)
    assert "modalities=None" in repr(MissingnessStratifiedKFold())


def test_splitter_without_labels_stratifies_on_pattern():
    _, emb, _ = _data(200)
    patterns = pattern_labels(availability_patterns(emb))
    for _, test in MissingnessStratifiedKFold(4).split(emb):
        for pat, count in Counter(patterns).items():
            if count >= 4:
                assert abs(Counter(patterns[test])[pat] - count / 4) <= 1


# --------------------------------------------------------------------------- #
# scorers and report
# --------------------------------------------------------------------------- #
class CountingHGB(HistGradientBoostingClassifier):
    calls = 0

    def predict_proba(self, X):
        type(self).calls += 1
        return super().predict_proba(X)


def _fitted(n_classes=2, seed=0):
    _, emb, y = _data(500, seed=seed, n_classes=n_classes)
    X_tr, X_te, y_tr, y_te = train_test_split(emb, y, test_size=0.5, random_state=0, stratify=y)
    clf = CountingHGB(max_iter=30, random_state=0).fit(X_tr, y_tr)
    return clf, X_te, y_te


def test_pattern_scorer_equals_manual_auc_on_the_subset():
    clf, X, y = _fitted()
    proba = clf.predict_proba(X)[:, 1]
    counts = availability_patterns(X).sum(axis=1).to_numpy()
    scorers = make_pattern_scorers(counts=[1, 2, 3])
    assert set(scorers) == {"roc_auc", "roc_auc_n1", "roc_auc_n2", "roc_auc_n3"}
    for k in (1, 2, 3):
        mask = counts == k
        expected = roc_auc_score(y[mask], proba[mask])
        assert scorers[f"roc_auc_n{k}"](clf, X, y) == pytest.approx(expected)
    assert scorers["roc_auc"](clf, X, y) == pytest.approx(roc_auc_score(y, proba))
    ap = make_pattern_scorers(ENTRIES, metric="auprc", patterns=["xray+report+labs"])
    assert set(ap) == {"average_precision", "average_precision_n1", "average_precision_n2",
                       "average_precision_n3", "average_precision_xray+report+labs"}
    full = pattern_labels(availability_patterns(X)) == "xray+report+labs"
    # scored on the embedded matrix here, so read the pattern from its layout
    scorer = PatternScorer("average_precision", pattern="xray+report+labs")
    assert scorer(clf, X, y) == pytest.approx(average_precision_score(y[full], proba[full]))


def test_scorer_is_nan_on_single_class_or_empty_subset():
    clf, X, y = _fitted()
    counts = availability_patterns(X).sum(axis=1).to_numpy()
    y_one = y.copy()
    y_one[counts == 1] = 1
    scorers = make_pattern_scorers(counts=[0, 1])
    assert (counts == 0).sum() == 0
    assert np.isnan(scorers["roc_auc_n0"](clf, X, y))
    assert np.isnan(scorers["roc_auc_n1"](clf, X, y_one))
    with pytest.raises(ValueError, match="needs counts"):
        make_pattern_scorers()
    with pytest.raises(ValueError, match="metric must be one of"):
        make_pattern_scorers(counts=[1], metric="accuracy")


def test_scorers_share_one_prediction_per_fold():
    clf, X, y = _fitted()
    CountingHGB.calls = 0
    scorers = make_pattern_scorers(counts=[1, 2, 3])
    for scorer in scorers.values():
        scorer(clf, X, y)
    assert CountingHGB.calls == 1
    scorers["roc_auc"](clf, X.copy(), y)
    assert CountingHGB.calls == 2


def test_pattern_scorers_in_cross_validate():
    _, emb, y = _data(300)
    res = cross_validate(
        HistGradientBoostingClassifier(max_iter=20, random_state=0), emb, y,
        cv=MissingnessStratifiedKFold(3), scoring=make_pattern_scorers(counts=[1, 2, 3]),
    )
    for key in ("test_roc_auc", "test_roc_auc_n1", "test_roc_auc_n2", "test_roc_auc_n3"):
        assert res[key].shape == (3,)
    assert np.all(np.isfinite(res["test_roc_auc"]))


def test_multiclass_scorer_is_ovr_macro():
    clf, X, y = _fitted(n_classes=3)
    proba = clf.predict_proba(X)
    expected = roc_auc_score(y, proba, multi_class="ovr", average="macro")
    assert make_pattern_scorers(counts=[3])["roc_auc"](clf, X, y) == pytest.approx(expected)
    report = missingness_report(clf, X, y)
    assert report.loc[("all", "all"), "roc_auc"] == pytest.approx(expected)
    assert report.loc[("all", "all"), "n_classes"] == 3


def test_missingness_report_rows_and_values():
    clf, X, y = _fitted()
    report = missingness_report(clf, X, y)
    assert list(report.columns) == ["n", "prevalence", "n_classes", "roc_auc", "average_precision"]
    levels = report.index.get_level_values("level")
    assert report.loc[("all", "all"), "n"] == len(y)
    assert report.loc[levels == "pattern", "n"].sum() == len(y)
    assert report.loc[levels == "n_modalities", "n"].sum() == len(y)
    names = pattern_labels(availability_patterns(X))
    proba = clf.predict_proba(X)[:, 1]
    for pattern in set(names):
        mask = names == pattern
        row = report.loc[("pattern", pattern)]
        assert row["n"] == mask.sum()
        assert row["prevalence"] == pytest.approx(y[mask].mean())
        if len(set(y[mask])) == 2:
            assert row["roc_auc"] == pytest.approx(roc_auc_score(y[mask], proba[mask]))
        else:
            assert np.isnan(row["roc_auc"])


# --------------------------------------------------------------------------- #
# search space, SearchPipeline, studies
# --------------------------------------------------------------------------- #
def test_default_search_space_is_valid_and_samplable():
    space = default_search_space()
    assert set(space) == {
        f"clf__{p}" for p in ("hidden_dim", "lr", "weight_decay", "dropout", "modality_dropout",
                              "aux_weight", "expert_fusion", "modality_fusion")
    }
    assert space["clf__lr"].log and space["clf__weight_decay"].log
    assert set(space["clf__modality_fusion"].choices) == {"attention", "gate", "mean", "concat"}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(5):
        trial = study.ask(space)
        for name, value in trial.params.items():
            assert space[name]._contains(space[name].to_internal_repr(value))
        study.tell(trial, 0.0)
    bare = default_search_space("", expert_sets={"small": [], "large": []})
    assert "lr" in bare and bare["expert_set"].choices == ("small", "large")
    with pytest.raises(ValueError, match="followed by '__'"):
        default_search_space("clf")


class _Embed(TransformerMixin, BaseEstimator):
    """Stand-in for the embedder: counts fits, exposes a `modalities` parameter."""

    fits = 0

    def __init__(self, modalities=None):
        self.modalities = modalities

    def fit(self, X, y=None):
        type(self).fits += 1
        self.scaler_ = StandardScaler().fit(X)
        return self

    def transform(self, X):
        return self.scaler_.transform(X)


def test_search_pipeline_expert_set_maps_to_embedder_modalities():
    small, large = [("x", ["a"], "c")], [("x", ["a", "b"], "c")]
    pipe = SearchPipeline([("embed", _Embed(small)), ("clf", SGDClassifier())],
                          expert_sets={"small": small, "large": large})
    pipe.set_params(expert_set="large", clf__alpha=0.1)
    assert pipe.named_steps["embed"].modalities is large
    assert pipe.get_params()["embed__modalities"] is large
    cloned = clone(pipe)
    assert cloned.expert_set == "large" and cloned.named_steps["embed"].modalities == large
    pipe.set_params(expert_sets={"t": {"embed__modalities": small, "clf__alpha": 2.0}},
                    expert_set="t")
    assert pipe.named_steps["embed"].modalities is small and pipe.named_steps["clf"].alpha == 2.0
    with pytest.raises(ValueError, match=r"expert_set='huge' is not a key of expert_sets"):
        pipe.set_params(expert_set="huge")


def test_search_pipeline_partial_fit_fits_transformers_once():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 3))
    y = (X[:, 0] > 0).astype(int)
    _Embed.fits = 0
    pipe = SearchPipeline([("embed", _Embed()), ("clf", SGDClassifier(random_state=0))])
    for _ in range(3):
        pipe.partial_fit(X, y, classes=np.array([0, 1]))
    assert _Embed.fits == 1
    assert pipe.named_steps["clf"].t_ > 3 * len(y) - 1  # three passes over the rows
    pipe.partial_fit(X[:40], y[:40])  # new rows: transformed, not refitted
    assert _Embed.fits == 1
    pipe.fit(X, y)
    assert _Embed.fits == 2
    with pytest.raises(AttributeError, match="has no partial_fit"):
        SearchPipeline([("e", _Embed()), ("c", HistGradientBoostingClassifier())]).partial_fit(X, y)


def test_optuna_search_cv_prunes_a_search_pipeline(tmp_path):
    from optuna_integration import OptunaSearchCV

    _, emb, y = _data(200)
    X = emb.fillna(0.0)
    pipe = SearchPipeline([("embed", _Embed()), ("clf", SGDClassifier(loss="log_loss"))])
    study = create_study("prune", storage=str(tmp_path / "j.log"),
                         pruner=optuna.pruners.MedianPruner(n_startup_trials=2))
    search = OptunaSearchCV(
        pipe, {"clf__alpha": optuna.distributions.FloatDistribution(1e-5, 1.0, log=True)},
        cv=MissingnessStratifiedKFold(3, modalities={"xray": range(4), "labs": [7, 8]}),
        scoring="roc_auc", study=study, n_trials=6, enable_pruning=True, max_iter=4,
        random_state=0,
    )
    search.fit(X, y)
    steps = [len(t.intermediate_values) for t in study.trials]
    assert all(1 <= s <= 4 for s in steps) and 4 in steps
    assert 0.5 < search.best_score_ <= 1.0
    assert search.best_estimator_.predict_proba(X).shape == (len(y), 2)


def test_create_study_storages(tmp_path):
    journal = create_study("s", storage=tmp_path / "study.journal")
    assert isinstance(journal._storage, optuna.storages.JournalStorage)
    journal.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    again = create_study("s", storage=str(tmp_path / "study.journal"))
    assert len(again.trials) == 2  # joined, not replaced
    sql = create_study("s", storage=f"sqlite:///{tmp_path / 'study.db'}", direction="minimize")
    assert sql.direction == optuna.study.StudyDirection.MINIMIZE
    assert create_study("m").trials == []
    with pytest.raises(TypeError, match="Got int instead"):
        create_study("s", storage=3)
    with pytest.raises(ValueError, match="direction must be"):
        create_study("s", direction="up")


# --------------------------------------------------------------------------- #
# integration with the classifier and the embedder
# --------------------------------------------------------------------------- #
def test_sampled_search_space_is_accepted_by_medmix_classifier():
    """Every sampled value passes MedMIXClassifier's own parameter validation and trains."""
    space = default_search_space("clf__")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 4)), np.tile([0, 1], 20)
    for i in range(8):
        trial = study.ask(space)
        pipe = SearchPipeline([("embed", "passthrough"),
                               ("clf", MedMIXClassifier(max_epochs=1, random_state=0))])
        pipe.set_params(**trial.params)
        pipe.named_steps["clf"]._validate_params()  # raises on a value out of its constraints
        if i < 2:
            assert pipe.fit(X, y).predict_proba(X).shape == (40, 2)
        study.tell(trial, 0.0)


LABS = ["wbc", "crp", "heart_rate", "temperature", "spo2"]


@pytest.fixture(scope="module")
def raw_stack(tiny_text_model_dir, tmp_path_factory):
    X, y = make_multimodal_classification(150, missingness="label", missing_rate=0.35, random_state=0)
    text = [("report", [TextExpert(tiny_text_model_dir)], "report")]
    labs = [("labs", StandardScaler(), LABS)]
    cache = str(tmp_path_factory.mktemp("cache"))
    return X, y.to_numpy(), MultimodalExpertEmbedder(text + labs, cache_dir=cache), {"both": text + labs,
                                                                       "labs": labs}


def test_pattern_from_embedder_entries_equals_pattern_of_its_output(raw_stack):
    X, y, embedder, _ = raw_stack
    embedded = embedder.fit(X, y).set_output(transform="pandas").transform(X)
    from_raw = availability_patterns(X, embedder)
    pd.testing.assert_frame_equal(from_raw, availability_patterns(embedded))
    assert from_raw.nunique().eq(2).all()  # both modalities really go missing


def test_cross_validate_full_pipeline_with_pattern_scorers(raw_stack):
    from sklearn.pipeline import Pipeline

    X, y, embedder, _ = raw_stack
    pipe = Pipeline([("embed", embedder),
                     ("clf", MedMIXClassifier(max_epochs=3, random_state=0, hidden_dim=16))])
    res = cross_validate(pipe, X, y, cv=MissingnessStratifiedKFold(3, modalities=embedder),
                         scoring=make_pattern_scorers(embedder))
    for key in ("test_roc_auc", "test_roc_auc_n1", "test_roc_auc_n2"):
        assert res[key].shape == (3,)
    assert np.all(np.isfinite(res["test_roc_auc"]))
    fitted = clone(pipe).fit(X, y)
    report = missingness_report(fitted, X, y, embedder)
    assert report.loc[("all", "all"), "n"] == len(y)
    assert set(report.loc["pattern"].index) <= {"report+labs", "report", "labs", "none"}


def test_optuna_search_cv_prunes_full_pipeline_over_expert_sets(raw_stack, tmp_path):
    from optuna_integration import OptunaSearchCV

    X, y, embedder, sets = raw_stack
    pipe = SearchPipeline(
        [("embed", embedder), ("clf", MedMIXClassifier(random_state=0, hidden_dim=16,
                                                        max_epochs=2, early_stopping=False))],
        expert_sets=sets,
    )
    space = default_search_space(expert_sets=sets)
    study = create_study("full", storage=str(tmp_path / "full.journal"),
                         sampler=optuna.samplers.RandomSampler(seed=0))
    search = OptunaSearchCV(pipe, space, cv=MissingnessStratifiedKFold(2, modalities=embedder),
                            scoring="roc_auc", study=study, n_trials=3, enable_pruning=True,
                            max_iter=2, random_state=0)
    search.fit(X, y)
    assert len(study.trials) == 3
    assert all(len(t.intermediate_values) == 2 for t in study.trials)
    best = search.best_estimator_
    chosen = search.best_params_["expert_set"]
    assert [m[0] for m in best.named_steps["embed"].modalities] == [m[0] for m in sets[chosen]]
    assert best.predict_proba(X).shape == (len(y), 2)


# -- evaluate_methods: the evaluation shared by the CLI, the report and benchmarks -------
def _embedded_with_teacher(n=60, seed=0):
    rng = np.random.default_rng(seed)
    y = np.tile([0, 1], n // 2)
    X = pd.DataFrame({
        "img__e__0": rng.normal(size=n) + y, "img__e__1": rng.normal(size=n),
        "labs__a": rng.normal(size=n) + y, "teacher__img__t__0": rng.normal(size=n) + 2 * y,
    })
    X.iloc[: n // 4, :2] = np.nan
    return X, y


class _RecordingClassifier(ClassifierMixin, BaseEstimator):
    """Logistic regression on non-NaN columns that records what it was given."""

    def __init__(self, teacher=None):
        self.teacher = teacher

    def fit(self, X, y):
        self.columns_ = list(X.columns)
        self.n_train_ = len(X)
        self.classes_ = np.unique(y)
        self.model_ = LogisticRegression().fit(np.nan_to_num(X.to_numpy()), y)
        return self

    def predict_proba(self, X):
        self.seen_ = getattr(self, "seen_", []) + [X.copy()]
        return self.model_.predict_proba(np.nan_to_num(X.to_numpy()))


def test_evaluate_methods_same_folds_fresh_clones_and_teacher_columns():
    from medmix_sklearn.model_selection import evaluate_methods

    X, y = _embedded_with_teacher()
    shared = LogisticRegression()
    estimators = {"lr": make_pipeline(SimpleImputer(keep_empty_features=True), shared),
                  "medmix-like": _RecordingClassifier()}
    result = evaluate_methods(estimators, X, y, cv=3, random_state=0,
                              missing_rates=(0.0, 0.5))
    assert not hasattr(shared, "coef_")  # each fold fitted a clone, not the given object
    assert len(result.splits) == 3
    assert result.proba["lr"].shape == (60, 2)
    assert result.fold_scores.groupby("method").size().to_dict() == {"lr": 3, "medmix-like": 3}
    fold_models = result.estimators["medmix-like"]
    # An estimator with a `teacher` parameter trains on the teacher column ...
    assert all("teacher__img__t__0" in m.columns_ for m in fold_models)
    # ... and sees it as NaN in every test fold; the others never see it.
    for model in fold_models:
        assert all(frame["teacher__img__t__0"].isna().all() for frame in model.seen_)
    lr_columns = result.estimators["lr"][0][:-1].feature_names_in_.tolist()
    assert lr_columns == ["img__e__0", "img__e__1", "labs__a"]
    # Out-of-fold: every row predicted once, by the model that did not train on it.
    tests = np.concatenate([test for _, test in result.splits])
    assert sorted(tests.tolist()) == list(range(60))
    # Blanking at 0.5 removes modalities but every row keeps one (keep_one=True).
    blanked = [f for m in fold_models for f in m.seen_ if f.drop(columns="teacher__img__t__0").isna().any().any()]
    assert blanked
    assert result.robustness.index.tolist() == [0.0, 0.5]
    assert result.robustness.loc[0.0, "lr"] == pytest.approx(
        subset_score(y, result.proba["lr"], result.classes))
    assert result.summary.loc["lr", "AUROC mean"] == pytest.approx(
        result.fold_scores.query("method == 'lr'")["AUROC"].mean())


def test_evaluate_methods_is_reproducible_and_checks_input():
    from medmix_sklearn.model_selection import evaluate_methods

    X, y = _embedded_with_teacher()
    def run(seed):
        lr = make_pipeline(SimpleImputer(keep_empty_features=True), LogisticRegression())
        return evaluate_methods({"lr": lr}, X, y, cv=2, random_state=seed, missing_rates=(0.6,))

    a, b, c = run(1), run(1), run(2)
    pd.testing.assert_frame_equal(a.robustness, b.robustness)
    assert not a.robustness.equals(c.robustness)
    with pytest.raises(TypeError, match="as a DataFrame"):
        evaluate_methods({"lr": LogisticRegression()}, X.to_numpy(), y)
    with pytest.raises(ValueError, match="estimators is empty"):
        evaluate_methods({}, X, y)


def test_missingness_dependence_tells_informative_from_random_patterns():
    from medmix_sklearn.model_selection import missingness_dependence

    rng = np.random.default_rng(0)
    n = 600
    y = rng.integers(0, 2, n)
    xray = rng.normal(size=(n, 3))
    informative = xray.copy()
    informative[rng.random(n) < np.where(y == 1, 0.6, 0.1)] = np.nan  # absent mostly when positive
    random = xray.copy()
    random[rng.random(n) < 0.35] = np.nan
    names = ["xray__e__0", "xray__e__1", "xray__e__2", "labs__age"]
    age = rng.normal(60, 10, size=(n, 1))
    by_label = missingness_dependence(pd.DataFrame(np.hstack([informative, age]), columns=names), y)
    at_random = missingness_dependence(pd.DataFrame(np.hstack([random, age]), columns=names), y)
    assert by_label.pvalue < 1e-20 and by_label.cramers_v > 0.4
    assert at_random.pvalue > 0.01 and at_random.cramers_v < 0.1
    assert by_label.dof == 1 and by_label.n_patterns == 2
    assert by_label.table.to_numpy().sum() == n and list(by_label.table.columns) == [0, 1]
    # Rare patterns are pooled; nothing to test with one pattern or one class.
    X = pd.DataFrame(np.hstack([informative, age]), columns=names)
    X.iloc[:3, 3] = np.nan
    pooled = missingness_dependence(X, y, min_rows=5)
    assert "other" in pooled.table.index and pooled.n_patterns == 3
    full = missingness_dependence(pd.DataFrame(np.hstack([xray, age]), columns=names), y)
    assert (full.statistic, full.pvalue, full.n_patterns) == (0.0, 1.0, 1)
    with pytest.raises(ValueError, match="X has 600 rows but y has 599 labels"):
        missingness_dependence(X, y[:-1])
    with pytest.raises(ValueError, match="min_rows must be a positive integer. Got 0"):
        missingness_dependence(X, y, min_rows=0)
