"""Smoke tests of the quality benchmark's scikit-learn baselines (benchmarks/_baselines.py)."""

import os
import sys

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))

from _baselines import (
    BestSingleModality,
    BlockImputer,
    LateFusionClassifier,
    make_hgb,
    make_logistic,
    make_mlp,
    modality_columns,
    quiet_fit,
)


def _block_frame(n=120, n_classes=2, seed=0):
    """Two expert blocks (a: 4 columns, b: 3 columns) and a tabular modality with NaN cells."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    a = rng.normal(size=(n, 4)) + y[:, None]
    b = rng.normal(size=(n, 3)) - 0.5 * y[:, None]
    labs = rng.normal(size=(n, 2)) + 0.3 * y[:, None]
    a[rng.random(n) < 0.3] = np.nan
    b[rng.random(n) < 0.3] = np.nan
    labs[rng.random(n) < 0.2] = np.nan  # the whole modality absent
    labs[rng.random(n) < 0.1, 1] = np.nan  # single cells of column "crp"
    names = (
        [f"img__e1__{k}" for k in range(4)]
        + [f"txt__e2__{k}" for k in range(3)]
        + ["labs__wbc", "labs__crp"]
    )
    return pd.DataFrame(np.hstack([a, b, labs]), columns=names), y


BASELINES = {
    "logistic": lambda: make_logistic(),
    "hgb": lambda: make_hgb(max_iter=20, random_state=0),
    "late_fusion": lambda: LateFusionClassifier(),
    "mlp": lambda: make_mlp(max_iter=50, random_state=0),
    "best_single": lambda: BestSingleModality(random_state=0),
}


@pytest.mark.parametrize("name", list(BASELINES))
@pytest.mark.parametrize("n_classes", [2, 3])
def test_baseline_probabilities(name, n_classes):
    X, y = _block_frame(n_classes=n_classes)
    model = quiet_fit(BASELINES[name](), X, y)
    proba = model.predict_proba(X)
    assert proba.shape == (len(X), n_classes)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    assert np.isfinite(proba).all()
    # A row with every modality absent still gets a prediction.
    empty = pd.DataFrame(np.full((2, X.shape[1]), np.nan), columns=X.columns)
    proba_empty = model.predict_proba(empty)
    np.testing.assert_allclose(proba_empty.sum(axis=1), 1.0, rtol=1e-6)


def test_modality_columns_groups_experts_and_skips_teachers():
    names = ["a__x__0", "a__x__1", "a__y__0", "labs__wbc", "teacher__a__z__0"]
    groups = modality_columns(names)
    assert list(groups) == ["a", "labs"]
    np.testing.assert_array_equal(groups["a"], [0, 1, 2])
    np.testing.assert_array_equal(groups["labs"], [3])


def test_block_imputer_indicator_count_and_values():
    X, _ = _block_frame()
    imputer = BlockImputer().fit(X)
    # One indicator per modality (img, txt, labs) + one for the cell-NaN column labs__crp.
    assert imputer.n_indicators_ == 4
    np.testing.assert_array_equal(imputer.cell_indicator_columns_, [8])
    Xt = imputer.transform(X)
    assert Xt.shape == (len(X), X.shape[1] + 4)
    assert not np.isnan(Xt).any()
    values = X.to_numpy()
    np.testing.assert_array_equal(Xt[:, 9], np.isnan(values[:, :4]).all(axis=1))
    cell_only = ~np.isnan(values[:, 7]) & np.isnan(values[:, 8])
    assert cell_only.any()
    assert (Xt[cell_only, 12] == 1).all() and (Xt[cell_only, 11] == 0).all()
    # Imputed cells hold the training mean of the column.
    rows = np.isnan(values[:, 0])
    np.testing.assert_allclose(Xt[rows, 0], np.nanmean(values[:, 0]))


def test_late_fusion_uses_only_present_modalities():
    X, y = _block_frame()
    model = LateFusionClassifier().fit(X, y)
    groups = model.modalities_
    i = int(np.flatnonzero(X.iloc[:, groups["txt"]].notna().all(axis=1))[0])
    row = X.iloc[[i]].copy()
    row.iloc[:, :] = np.nan
    row.iloc[0, groups["txt"]] = X.iloc[i, groups["txt"]].to_numpy()
    expected = model.estimators_["txt"].predict_proba(X.iloc[[i], groups["txt"]].to_numpy())
    assert not np.allclose(expected, 0.5)
    np.testing.assert_allclose(model.predict_proba(row), expected)

    # Two present modalities: the mean of their two models' probabilities.
    row.iloc[0, groups["img"]] = np.abs(X.iloc[:, groups["img"]].dropna().iloc[0].to_numpy())
    p_img = model.estimators_["img"].predict_proba(row.iloc[:, groups["img"]].to_numpy())
    np.testing.assert_allclose(model.predict_proba(row), (expected + p_img) / 2)

    # No modality present: the training prior.
    empty = pd.DataFrame(np.full((1, X.shape[1]), np.nan), columns=X.columns)
    np.testing.assert_allclose(model.predict_proba(empty)[0], np.bincount(y) / len(y))


def test_best_single_modality_picks_the_informative_modality():
    rng = np.random.default_rng(1)
    n = 150
    y = np.arange(n) % 2
    informative = rng.normal(size=(n, 3)) + 2.0 * y[:, None]
    noise = rng.normal(size=(n, 3))
    X = pd.DataFrame(
        np.hstack([noise, informative]),
        columns=[f"noise__e__{k}" for k in range(3)] + [f"signal__e__{k}" for k in range(3)],
    )
    model = BestSingleModality(random_state=0).fit(X, y)
    assert model.modality_ == "signal"
    assert model.cv_scores_["signal"] > model.cv_scores_["noise"]
    # Only the chosen modality's columns matter at prediction time.
    scrambled = X.copy()
    scrambled.iloc[:, :3] = rng.normal(size=(n, 3))
    np.testing.assert_allclose(model.predict_proba(scrambled), model.predict_proba(X))
