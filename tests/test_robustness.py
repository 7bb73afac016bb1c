"""ModalityAmputer, robustness_curve, the ECE scorer and the curve plot."""

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline

from medmix_sklearn.model_selection import (
    ModalityAmputer,
    ece_scorer,
    expected_calibration_error,
    plot_robustness_curves,
    robustness_curve,
)


def _frame(n=400, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    img = rng.normal(size=(n, 4)) + 0.8 * y[:, None]
    txt = rng.normal(size=(n, 3)) - 0.5 * y[:, None]
    demo = rng.normal(size=(n, 2))
    txt[rng.random(n) < 0.2] = np.nan
    names = [f"img__e__{k}" for k in range(4)] + [f"txt__e__{k}" for k in range(3)] + ["demo__age", "demo__bmi"]
    return pd.DataFrame(np.hstack([img, txt, demo]), columns=names), y


def _presence(X, groups):
    values = np.asarray(X, dtype=float)
    return np.column_stack([~np.isnan(values[:, cols]).all(axis=1) for cols in groups])


GROUPS = [list(range(4)), [4, 5, 6], [7, 8]]


def test_mcar_blanks_whole_modalities_at_rate_p_and_keeps_one():
    X, _ = _frame(4000)
    before = _presence(X, GROUPS)
    out, blanked = ModalityAmputer(0.5, random_state=0).transform_with_mask(X)
    after = _presence(out, GROUPS)
    # Whole modalities: every column of a blanked modality is NaN, no other cell changed.
    values, new = X.to_numpy(), out.to_numpy()
    for j, cols in enumerate(GROUPS):
        gone = before[:, j] & ~after[:, j]
        np.testing.assert_array_equal(gone, blanked.iloc[:, j].to_numpy())
        assert np.isnan(new[np.ix_(gone, cols)]).all()
        np.testing.assert_array_equal(new[np.ix_(after[:, j], cols)], values[np.ix_(after[:, j], cols)])
    assert after.any(axis=1).all()
    rate = blanked.to_numpy().sum() / before.sum()
    assert 0.40 < rate < 0.50  # p=0.5, a little less for the rows that keep one
    assert list(blanked.columns) == ["img", "txt", "demo"]


def test_seeded_and_keep_one_off():
    X, _ = _frame()
    a = ModalityAmputer(0.6, random_state=3).transform(X)
    b = ModalityAmputer(0.6, random_state=3).transform(X)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(ModalityAmputer(0.6, random_state=4).transform(X))
    emptied = ModalityAmputer(1.0, keep_one=False, random_state=0).transform(X)
    assert emptied.isna().all().all()
    kept = ModalityAmputer(1.0, random_state=0).transform(X)
    assert (_presence(kept, GROUPS).sum(axis=1) == 1).all()


def test_mnar_by_label_blanks_the_positive_class_more():
    X, y = _frame(4000)
    _, blanked = ModalityAmputer(0.3, mechanism="mnar", random_state=0).transform_with_mask(X, y)
    per_class = [blanked.to_numpy()[y == k].mean() for k in (0, 1)]
    assert per_class[1] > 2 * per_class[0]
    with pytest.raises(ValueError, match="needs y"):
        ModalityAmputer(0.3, mechanism="mnar").transform(X)


def test_mnar_by_content_and_mar_depend_on_their_column():
    X, _ = _frame(4000)
    _, blanked = ModalityAmputer(0.3, mechanism="mnar", mnar_on="content", random_state=0).transform_with_mask(X)
    img_mean = X.iloc[:, :4].mean(axis=1).to_numpy()
    high = img_mean > np.median(img_mean)
    assert blanked["img"][high].mean() > 2 * blanked["img"][~high].mean()

    amputer = ModalityAmputer(0.3, mechanism="mar", depends_on="demo__age", random_state=0)
    out, blanked = amputer.transform_with_mask(X)
    assert not blanked["demo"].any()  # the column it depends on stays observed
    age = X["demo__age"].to_numpy()
    old = age > np.median(age)
    assert blanked["img"][old].mean() > 2 * blanked["img"][~old].mean()
    assert abs(blanked["img"].mean() - 0.3) < 0.03


def test_block_blanks_one_modality_in_every_row():
    X, _ = _frame()
    out, blanked = ModalityAmputer(1.0, mechanism="block", modality="img", random_state=0).transform_with_mask(X)
    assert blanked["img"].all() and not blanked[["txt", "demo"]].any().any()
    assert out.iloc[:, :4].isna().all().all()
    _, drawn = ModalityAmputer(1.0, mechanism="block", random_state=1).transform_with_mask(X)
    assert drawn.any(axis=0).sum() == 1


def test_array_with_blocks_and_errors():
    X, _ = _frame()
    values = X.to_numpy().astype(np.float32)
    blocks = {"img": [0, 1, 2, 3], "txt": [4, 5, 6], "demo": [7, 8]}
    out = ModalityAmputer(0.5, blocks=blocks, random_state=0).transform(values)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ModalityAmputer(0.5, random_state=0).transform(X)))
    with pytest.raises(ValueError, match="blocks="):
        ModalityAmputer(0.5).transform(values)
    with pytest.raises(ValueError, match="not in X"):
        ModalityAmputer(0.5, modalities=["xray"]).transform(X)
    with pytest.raises(ValueError, match="p"):
        ModalityAmputer(1.5).transform(X)


def test_teacher_blocks_are_never_blanked():
    X, _ = _frame()
    X["teacher__notes__e__0"] = 1.0
    out = ModalityAmputer(1.0, keep_one=False, random_state=0).transform(X)
    assert (out["teacher__notes__e__0"] == 1.0).all()


def _model():
    return make_pipeline(SimpleImputer(keep_empty_features=True), LogisticRegression())


def test_robustness_curve_at_zero_equals_cross_val_score():
    X, y = _frame(200)
    cv = StratifiedKFold(4, shuffle=True, random_state=0)
    curve = robustness_curve(_model(), X, y, cv=cv, random_state=0)
    assert list(curve.columns) == ["mechanism", "p", "repeat", "fold", "score"]
    assert sorted(curve["p"].unique()) == [0.0, 0.25, 0.5, 0.75]
    expected = cross_val_score(_model(), X, y, cv=cv, scoring="roc_auc")
    np.testing.assert_array_equal(curve[curve.p == 0].sort_values("fold")["score"].to_numpy(), expected)
    # Same with an int cv (unshuffled stratified folds, as cross_val_score).
    curve5 = robustness_curve(_model(), X, y, probabilities=(0,), random_state=0)
    np.testing.assert_array_equal(curve5["score"].to_numpy(), cross_val_score(_model(), X, y, scoring="roc_auc"))
    means = curve.groupby("p")["score"].mean()
    assert means[0.75] < means[0.0]


def test_robustness_curve_repeats_metrics_and_seed():
    X, y = _frame(200)
    kwargs = dict(probabilities=(0, 0.5), cv=3, mechanism="mnar", n_repeats=2, random_state=1)
    curve = robustness_curve(_model(), X, y, scoring={"auroc": "roc_auc", "ece": ece_scorer}, **kwargs)
    assert list(curve.columns) == ["mechanism", "p", "repeat", "fold", "metric", "score"]
    assert len(curve) == 2 * 2 * 3 * 2 and set(curve.mechanism) == {"mnar"}
    ece = curve[curve.metric == "ece"]["score"]
    assert (ece <= 0).all()  # minus the ECE
    again = robustness_curve(_model(), X, y, scoring={"auroc": "roc_auc", "ece": ece_scorer}, **kwargs)
    pd.testing.assert_frame_equal(curve, again)
    half = curve[(curve.p == 0.5) & (curve.metric == "auroc")]
    assert not np.array_equal(half[half.repeat == 0]["score"], half[half.repeat == 1]["score"])


def test_expected_calibration_error():
    y = np.array([0, 0, 1, 1])
    assert expected_calibration_error(y, np.array([0.0, 0.0, 1.0, 1.0])) == 0.0
    # All at 0.5 with half positive: calibrated; all at 0.9: off by 0.4.
    assert expected_calibration_error(y, np.full(4, 0.5)) == pytest.approx(0.0)
    assert expected_calibration_error(y, np.full(4, 0.9)) == pytest.approx(0.4)
    proba = np.array([[0.7, 0.2, 0.1], [0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]])
    # Top-label: bin 0.7 (2 rows, 1 right) |0.7-0.5|, 0.8 right |0.8-1|, 0.6 wrong |0.6-0|.
    expected = (2 * 0.2 + 0.2 + 0.6) / 4
    assert expected_calibration_error([0, 1, 1, 1], proba) == pytest.approx(expected)
    model = HistGradientBoostingClassifier(max_iter=5).fit(*_frame(100))
    X, y = _frame(100)
    assert ece_scorer(model, X, y) == pytest.approx(-expected_calibration_error(y, model.predict_proba(X)))


def test_plot_robustness_curves():
    import matplotlib

    matplotlib.use("Agg")
    X, y = _frame(120)
    curves = {"logreg": robustness_curve(_model(), X, y, cv=3, probabilities=(0, 0.5), random_state=0)}
    ax = plot_robustness_curves(curves)
    assert [line.get_label() for line in ax.get_lines()] == ["logreg"]
    np.testing.assert_allclose(ax.get_lines()[0].get_xdata(), [0.0, 0.5])


def test_robustness_curve_several_mechanisms_share_the_fits():
    X, y = _frame(200)
    curve = robustness_curve(_model(), X, y, cv=3, mechanism=["mcar", "mnar"], probabilities=(0, 0.5),
                             random_state=0)
    assert list(curve.mechanism.unique()) == ["mcar", "mnar"]
    zero = curve[curve.p == 0]
    np.testing.assert_array_equal(zero[zero.mechanism == "mcar"]["score"], zero[zero.mechanism == "mnar"]["score"])
    half = curve[curve.p == 0.5]
    assert not np.array_equal(half[half.mechanism == "mcar"]["score"], half[half.mechanism == "mnar"]["score"])


class _SeesMissing(ClassifierMixin, BaseEstimator):
    """Predicts nothing useful; remembers the share of NaN cells it was fitted on."""

    def fit(self, X, y):
        self.classes_ = np.unique(y)
        self.missing_ = float(np.isnan(np.asarray(X, dtype=float)).mean())
        return self

    def predict_proba(self, X):
        return np.full((len(X), len(self.classes_)), 1.0 / len(self.classes_))


def _fitted_missing(estimator, X, y):
    return estimator.estimator.missing_  # robustness_curve wraps classifiers


def test_train_and_test_amputation_fits_on_amputed_training_folds():
    X, y = _frame(200)
    base = float(np.isnan(X.to_numpy()).mean())
    kwargs = dict(probabilities=(0, 0.5), cv=3, mechanism="mnar", random_state=0)
    test_only = robustness_curve(_SeesMissing(), X, y, scoring=_fitted_missing, **kwargs)
    both = robustness_curve(_SeesMissing(), X, y, scoring=_fitted_missing, amputate="train_and_test", **kwargs)
    # Test-only: every model saw the folds as they are.
    assert test_only["score"].max() < base + 0.05
    # Both: the p=0 model is the plain one, the p=0.5 models saw blanked modalities.
    pd.testing.assert_frame_equal(both[both.p == 0], test_only[test_only.p == 0])
    assert (both[both.p == 0.5]["score"] > base + 0.15).all()
    # The test folds are amputed identically in both modes.
    same = robustness_curve(_model(), X, y, **kwargs)
    mnar_both = robustness_curve(_model(), X, y, amputate="train_and_test", **kwargs)
    np.testing.assert_array_equal(same[same.p == 0]["score"], mnar_both[mnar_both.p == 0]["score"])
    with pytest.raises(ValueError, match="amputate must be 'test' or 'train_and_test'. Got 'train'"):
        robustness_curve(_model(), X, y, amputate="train", **kwargs)


def test_label_dependent_missingness_is_learnt_when_it_shapes_training():
    """A model with missing indicators exploits label-dependent blanking it was fitted on."""
    X, y = _frame(400)
    model = make_pipeline(SimpleImputer(add_indicator=True, keep_empty_features=True), LogisticRegression())
    kwargs = dict(probabilities=(0.5,), cv=4, mechanism="mnar", n_repeats=2, random_state=0)
    test_only = robustness_curve(model, X, y, **kwargs)["score"].mean()
    both = robustness_curve(model, X, y, amputate="train_and_test", **kwargs)["score"].mean()
    assert both > test_only + 0.1  # 0.98 vs 0.82 with this seed
