"""MedMIXClassifier: scikit-learn contract, masking, persistence, layouts."""

import copy
import logging
import pickle
import threading

import joblib
import numpy as np
import pandas as pd
import pytest
import torch
from skorch.exceptions import DeviceWarning

from medmix_sklearn.exceptions import MissingModalityWarning
from medmix_sklearn.fusion import MedMIXClassifier

FAST = dict(hidden_dim=16, max_epochs=6, lr=2e-2, random_state=0)


def block_frame(n=240, seed=0, p_missing=0.3, labels=None, teacher=False):
    """Two expert modalities (2 experts x 4 dims) and a 2-column tabular one."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 3))
    y = (z[:, 0] + z[:, 1] > 0).astype(int)
    cols, mats = [], []
    for m, experts in [("xray", ["a", "b"]), ("report", ["a", "b"])]:
        absent = rng.random(n) < p_missing
        for e in experts:
            emb = z @ rng.normal(size=(3, 4)) + 0.3 * rng.normal(size=(n, 4))
            emb[absent] = np.nan
            mats.append(emb)
            cols += [f"{m}__{e}__{k}" for k in range(4)]
    labs = z[:, :2] + 0.3 * rng.normal(size=(n, 2))
    labs[rng.random(n) < p_missing] = np.nan
    mats.append(labs)
    cols += ["labs__age", "labs__wbc"]
    if teacher:
        mats.append(z + 0.1 * rng.normal(size=(n, 3)))
        cols += [f"teacher__xray__big__{k}" for k in range(3)]
    X = pd.DataFrame(np.hstack(mats), columns=cols)
    if labels is not None:
        y = np.asarray(labels)[y]
    return X, y


@pytest.fixture(scope="module")
def fitted():
    X, y = block_frame()
    return MedMIXClassifier(**FAST).fit(X, y), X, y


def test_layout_from_names(fitted):
    clf, X, _ = fitted
    assert clf.modality_names_ == ["xray", "report", "labs"]
    assert [(b.modality, b.expert) for b in clf.blocks_] == [
        ("xray", "a"), ("xray", "b"), ("report", "a"), ("report", "b"), ("labs", "tabular"),
    ]
    assert clf.score(X, fitted[2]) > 0.8


def test_layout_from_blocks_matches_names(fitted):
    clf, X, y = fitted
    mapping = {
        "xray": {"a": range(4), "b": range(4, 8)},
        "report": {"a": range(8, 12), "b": range(12, 16)},
        "labs": [16, 17],
    }
    other = MedMIXClassifier(blocks=mapping, **FAST).fit(X.to_numpy(), y)
    assert other.modality_names_ == clf.modality_names_
    assert [b.columns for b in other.blocks_] == [b.columns for b in clf.blocks_]
    np.testing.assert_allclose(other.predict_proba(X.to_numpy()), clf.predict_proba(X), rtol=1e-6)


def test_plain_array_is_one_tabular_modality(fitted):
    _, X, y = fitted
    clf = MedMIXClassifier(**FAST).fit(X.to_numpy(), y)
    assert clf.modality_names_ == ["features"]
    assert len(clf.blocks_) == 1 and clf.blocks_[0].dim == X.shape[1]
    proba = clf.predict_proba(X.to_numpy())
    assert np.isfinite(proba).all()
    # Names without the layout separator are also one plain table.
    plain = X.set_axis([f"col{i}" for i in range(X.shape[1])], axis=1)
    assert MedMIXClassifier(**FAST).fit(plain, y).modality_names_ == ["features"]


def test_teacher_blocks_are_never_inputs():
    X, y = block_frame(teacher=True)
    clf = MedMIXClassifier(**FAST).fit(X, y)
    assert all(not b.teacher for b in clf.blocks_)
    assert "teacher" not in clf.modality_names_
    X_nan = X.copy()
    X_nan[[c for c in X.columns if c.startswith("teacher__")]] = np.nan
    np.testing.assert_array_equal(clf.predict_proba(X), clf.predict_proba(X_nan))


def test_absent_modality_values_do_not_matter_and_empty_rows_get_the_prior(fitted):
    clf, X, _ = fitted
    X2 = X.copy()
    xray = [c for c in X.columns if c.startswith("xray__")]
    X2.loc[:, xray] = np.nan
    X2.iloc[:5, :] = np.nan  # nothing present at all
    proba = clf.predict_proba(X2)
    assert np.isfinite(proba).all()
    np.testing.assert_allclose(proba[:5], np.repeat(proba[:1], 5, axis=0))
    # Predicting a row alone or in a batch gives the same answer.
    np.testing.assert_allclose(clf.predict_proba(X2.iloc[7:8]), proba[7:8], rtol=1e-6)
    # A NaN cell inside a present tabular block is imputed, not propagated.
    X3 = X.copy()
    X3.loc[X3["labs__age"].notna(), "labs__wbc"] = np.nan
    assert np.isfinite(clf.predict_proba(X3)).all()


def test_training_with_90_percent_missing_stays_finite():
    X, y = block_frame(p_missing=0.9, seed=1)
    clf = MedMIXClassifier(**FAST).fit(X, y)
    losses = clf.net_.history[:, "train_loss"]
    assert np.isfinite(losses).all()
    assert np.isfinite(clf.predict_proba(X)).all()


def test_explain_weights(fitted):
    clf, X, _ = fitted
    Xi = X.set_axis(pd.RangeIndex(100, 100 + len(X)))
    w = clf.explain(Xi)
    assert list(w.index) == list(Xi.index)
    assert list(w.columns) == [
        "expert_weight__xray__a", "expert_weight__xray__b", "expert_weight__report__a",
        "expert_weight__report__b", "expert_weight__labs__tabular",
        "modality_weight__xray", "modality_weight__report", "modality_weight__labs",
    ]
    assert (w.to_numpy() >= 0).all()
    present = {m: X[[c for c in X.columns if c.startswith(m + "__")]].notna().any(axis=1).to_numpy()
               for m in clf.modality_names_}
    mw = w[[f"modality_weight__{m}" for m in clf.modality_names_]].to_numpy()
    pm = np.column_stack([present[m] for m in clf.modality_names_])
    assert (mw[~pm] == 0).all()
    rows = pm.any(axis=1)
    np.testing.assert_allclose(mw[rows].sum(axis=1), 1.0, atol=1e-6)
    for m in ("xray", "report"):
        ew = w[[f"expert_weight__{m}__a", f"expert_weight__{m}__b"]].to_numpy()
        np.testing.assert_allclose(ew[present[m]].sum(axis=1), 1.0, atol=1e-6)
        assert (ew[~present[m]] == 0).all()
    # One expert missing inside a present modality gets exactly 0 weight.
    X2 = X.copy()
    X2.loc[:, [c for c in X.columns if c.startswith("xray__b__")]] = np.nan
    w2 = clf.explain(X2)
    assert (w2["expert_weight__xray__b"] == 0).all()
    np.testing.assert_allclose(w2.loc[present["xray"], "expert_weight__xray__a"], 1.0)


@pytest.mark.parametrize("dump", ["pickle", "joblib"])
def test_round_trip_gives_identical_predictions(fitted, dump, tmp_path):
    clf, X, y = fitted
    if dump == "pickle":
        loaded = pickle.loads(pickle.dumps(clf))
    else:
        joblib.dump(clf, tmp_path / "clf.joblib")
        loaded = joblib.load(tmp_path / "clf.joblib")
    np.testing.assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))
    assert hasattr(clf, "net_")  # pickling does not strip the live model
    loaded.partial_fit(X, y)  # training can continue
    assert loaded.n_iter_ == clf.n_iter_ + 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="simulates a CPU-only machine")
def test_model_saved_from_cuda_loads_on_cpu(fitted):
    clf, X, _ = fitted
    expected = clf.predict_proba(X)
    cuda = copy.deepcopy(clf)
    cuda.device_ = cuda.net_.device = "cuda"  # as if trained on a GPU
    with pytest.warns(DeviceWarning, match="CUDA"):
        loaded = pickle.loads(pickle.dumps(cuda))
    assert str(loaded.net_.device) == "cpu"
    np.testing.assert_array_equal(loaded.predict_proba(X), expected)


def test_fitted_net_keeps_no_validation_rows_and_resumes_like_a_pickle(fitted):
    clf, X, y = fitted
    assert clf.net_.train_split is None
    assert "early_stopping" not in dict(clf.net_.callbacks_)
    live, loaded = copy.deepcopy(clf), pickle.loads(pickle.dumps(clf))
    live.partial_fit(X, y)
    loaded.partial_fit(X, y)
    assert "valid_loss" not in live.net_.history[-1]
    np.testing.assert_array_equal(live.predict_proba(X), loaded.predict_proba(X))


def test_string_labels_and_multiclass():
    rng = np.random.default_rng(0)
    X, _ = block_frame(n=300)
    z = X[["labs__age", "labs__wbc"]].fillna(0).to_numpy()
    y = np.array(["cat", "dog", "eel"])[np.digitize(z[:, 0], [-0.5, 0.5])]
    clf = MedMIXClassifier(**{**FAST, "max_epochs": 15}).fit(X, y)
    assert clf.classes_.tolist() == ["cat", "dog", "eel"]
    assert set(clf.predict(X)) <= set(clf.classes_)
    assert clf.predict_proba(X).shape == (300, 3)
    assert clf.decision_function(X).shape == (300, 3)
    assert clf.score(X, y) > 0.5
    yb = rng.choice(["neg", "pos"], size=300)
    clf2 = MedMIXClassifier(**FAST).fit(X, yb)
    d = clf2.decision_function(X)
    p = clf2.predict_proba(X)
    assert d.shape == (300,)
    np.testing.assert_allclose(d, np.log(p[:, 1] / p[:, 0]), rtol=1e-6, atol=1e-9)


def test_sample_weight_and_class_weight_shift_predictions(fitted):
    _, X, y = fitted
    base = MedMIXClassifier(**FAST).fit(X, y).predict_proba(X)[:, 1].mean()
    weighted = MedMIXClassifier(**FAST).fit(X, y, sample_weight=np.where(y == 1, 20.0, 1.0))
    by_class = MedMIXClassifier(class_weight={1: 20.0}, **FAST).fit(X, y)
    assert weighted.predict_proba(X)[:, 1].mean() > base + 0.05
    assert by_class.predict_proba(X)[:, 1].mean() > base + 0.05
    with pytest.raises(ValueError, match="class_weight names classes"):
        MedMIXClassifier(class_weight={7: 2.0}, **FAST).fit(X, y)


def test_partial_fit_one_epoch_per_call(fitted):
    _, X, y = fitted
    clf = MedMIXClassifier(hidden_dim=8, lr=2e-2, random_state=0)
    losses = []
    for i in range(4):
        clf.partial_fit(X, y, classes=[0, 1])
        assert clf.n_iter_ == i + 1 == len(clf.net_.history)
        losses.append(clf.net_.history[-1, "train_loss"])
    assert losses[-1] < losses[0]
    with pytest.raises(ValueError, match=r"not in classes_"):
        clf.partial_fit(X, np.full(len(y), 5))


def test_partial_fit_first_call_rejects_labels_outside_classes(fitted):
    _, X, y = fitted
    with pytest.raises(ValueError, match=r"labels \[2\] that are not in classes_ \[0, 1\]"):
        MedMIXClassifier(**FAST).partial_fit(X, np.where(y == 1, 2, 0), classes=[0, 1])


def test_reproducible_for_fixed_random_state(fitted):
    _, X, y = fitted
    a = MedMIXClassifier(**FAST).fit(X, y).predict_proba(X)
    b = MedMIXClassifier(**FAST).fit(X, y).predict_proba(X)
    c = MedMIXClassifier(**{**FAST, "random_state": 1}).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


@pytest.mark.parametrize("modality_fusion", ["gate", "mean", "concat"])
def test_other_fusions_fit_and_explain(fitted, modality_fusion):
    _, X, y = fitted
    clf = MedMIXClassifier(modality_fusion=modality_fusion, expert_fusion="mean", **FAST).fit(X, y)
    assert clf.score(X, y) > 0.7
    w = clf.explain(X)
    mw = w.filter(like="modality_weight__").to_numpy()
    np.testing.assert_allclose(mw[mw.sum(axis=1) > 0].sum(axis=1), 1.0, atol=1e-6)


def test_input_errors(fitted):
    clf, X, y = fitted
    X_inf = X.copy()
    X_inf.iloc[0, 0] = np.inf
    with pytest.raises(ValueError, match="[Ii]nfinity"):
        clf.predict(X_inf)
    with pytest.raises(ValueError, match="[Ii]nfinity"):
        MedMIXClassifier(**FAST).fit(X_inf, y)
    with pytest.raises(ValueError, match="X has 17 features, but MedMIXClassifier is expecting 18"):
        clf.predict(X.to_numpy()[:, :-1])
    with pytest.raises(ValueError, match="at least 2 classes"):
        MedMIXClassifier(**FAST).fit(X, np.zeros(len(X)))
    with pytest.raises(ValueError, match="modality_fusion"):
        MedMIXClassifier(modality_fusion="max").fit(X, y)
    with pytest.raises(ValueError, match="blocks leaves columns"):
        MedMIXClassifier(blocks={"a": [0, 1]}, **FAST).fit(X.to_numpy(), y)
    with pytest.raises(ValueError, match="device must be"):
        MedMIXClassifier(device="tpu-ish", **FAST).fit(X, y)


def test_modality_absent_everywhere_warns(fitted):
    _, X, y = fitted
    X2 = X.copy()
    X2.loc[:, [c for c in X.columns if c.startswith("report__")]] = np.nan
    with pytest.warns(MissingModalityWarning, match="report"):
        clf = MedMIXClassifier(**FAST).fit(X2, y)
    assert (clf.explain(X2)["modality_weight__report"] == 0).all()


@pytest.mark.parametrize("n_members", [1, 2])
def test_each_epoch_is_logged(fitted, caplog, n_members):
    _, X, y = fitted
    params = {**FAST, "max_epochs": 3, "early_stopping": False, "n_members": n_members}
    with caplog.at_level(logging.INFO, logger="medmix_sklearn.fusion._net"):
        MedMIXClassifier(**params).fit(X, y)
    epochs = [r for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert len(epochs) == 3 * n_members  # every member's epochs
    assert "train_loss" in epochs[0].getMessage()


def test_early_stopping_keeps_best_epoch():
    X, y = block_frame(n=400, seed=2)
    clf = MedMIXClassifier(hidden_dim=8, lr=5e-2, max_epochs=200, patience=3, random_state=0).fit(X, y)
    valid = clf.net_.history[:, "valid_loss"]
    assert clf.n_iter_ < 200  # stopped early
    assert clf.n_iter_ == len(valid)
    assert np.argmin(valid) == len(valid) - 1 - 3  # patience epochs after the best


def test_pipeline_with_embedder_under_cross_val_score(tiny_text_model_dir):
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import Pipeline

    from medmix_sklearn.embedding import MultimodalExpertEmbedder
    from medmix_sklearn.experts import TextExpert

    rng = np.random.default_rng(0)
    n = 60
    sick = rng.random(n) < 0.5
    texts = np.where(sick, "pleural effusion right lower lobe", "no acute cardiopulmonary disease")
    df = pd.DataFrame({
        "text": [t if rng.random() > 0.3 else None for t in texts],
        "age": np.where(rng.random(n) > 0.2, 50 + 10 * sick + rng.normal(size=n), np.nan),
        "hr": rng.normal(80, 5, size=n),
    })
    y = np.where(sick, "sick", "well")
    embedder = MultimodalExpertEmbedder(
        [("report", [TextExpert(tiny_text_model_dir, name="tiny")], "text"),
         ("labs", "passthrough", ["age", "hr"])],
        cache_dir=None,
    )
    pipe = Pipeline([("embed", embedder), ("clf", MedMIXClassifier(**{**FAST, "max_epochs": 15}))])
    # No set_output: a DataFrame in gives layout-named columns to the classifier.
    scores = cross_val_score(pipe, df, y, cv=3, scoring="accuracy")
    assert scores.shape == (3,) and (scores > 0.6).all()
    pipe.fit(df, y)
    clf = pipe.named_steps["clf"]
    assert clf.modality_names_ == ["report", "labs"]
    assert set(pipe.predict(df)) <= {"sick", "well"}


def test_verbose_progress_bar_closes_after_early_stopping(fitted):
    _, X, y = fitted
    clf = MedMIXClassifier(**{**FAST, "max_epochs": 200, "patience": 1, "verbose": 1}).fit(X, y)
    assert clf.n_iter_ < 200  # stopped early
    assert dict(clf.net_.callbacks_)["epoch_log"].bar_ is None


def test_partial_fit_rejects_other_classes_later(fitted):
    _, X, y = fitted
    clf = MedMIXClassifier(**FAST).partial_fit(X, y, classes=np.unique(y))
    clf.partial_fit(X, y, classes=np.unique(y))  # the same classes are fine
    with pytest.raises(ValueError, match="differs from the classes of the first call"):
        clf.partial_fit(X, y, classes=[*np.unique(y), "extra"])


def test_fits_in_threads_equal_sequential_fits():
    """Every draw comes from the estimator's generators, not torch's global one."""
    X, y = block_frame(n=160)
    params = dict(hidden_dim=16, max_epochs=4, lr=2e-2, dropout=0.3, modality_dropout=0.3)
    seeds = [0, 123, 7]
    sequential = [MedMIXClassifier(**params, random_state=s).fit(X, y).predict_proba(X) for s in seeds]
    threaded: dict = {}
    barrier = threading.Barrier(len(seeds))

    def run(seed):
        clf = MedMIXClassifier(**params, random_state=seed)
        barrier.wait()
        threaded[seed] = clf.fit(X, y).predict_proba(X)

    threads = [threading.Thread(target=run, args=(s,)) for s in seeds]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for seed, expected in zip(seeds, sequential):
        np.testing.assert_allclose(threaded[seed], expected, atol=1e-6)
    assert not np.allclose(sequential[0], sequential[1])  # the seeds matter


def test_fit_does_not_depend_on_torch_global_rng():
    X, y = block_frame(n=80)
    torch.manual_seed(6)  # a changed global seed changes nothing
    a = MedMIXClassifier(**FAST).fit(X, y).predict_proba(X)
    torch.manual_seed(7)
    b = MedMIXClassifier(**FAST).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(a, b)


def test_pattern_prior_learns_label_dependent_missingness(label_in_pattern):
    # The label is in the availability pattern only: class 1 rows lack "b".
    X, y = label_in_pattern
    blocks = {"a": [0, 1], "b": [2, 3]}
    # Uncalibrated: calibration="presence" fits its temperatures on rows whose modalities it
    # blanks at random, which is what tempers a pattern's meaning (tests/test_calibration.py).
    clf = MedMIXClassifier(
        blocks=blocks, pattern_prior=True, random_state=0, max_epochs=40, n_members=1, calibration=None
    ).fit(X, y)
    proba = clf.predict_proba(X)[:, 1]
    absent = np.isnan(X[:, 2])
    # P(y=1 | b absent) = 0.8 / 0.9 ~ 0.89; P(y=1 | b present) = 0.2 / 1.1 ~ 0.18.
    assert proba[absent].mean() > 0.7 and proba[~absent].mean() < 0.35
    assert clf.net_.module_.pattern_logits.shape == (4, 2)

