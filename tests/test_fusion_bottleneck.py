"""MedMIXClassifier's expert_bottleneck: wide expert blocks reduced to principal components."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medmix_sklearn import MedMIXClassifier


def _data(n=120, wide=60, seed=0):
    rng = np.random.default_rng(seed)
    clinical = rng.normal(size=(n, 3))
    y = (clinical[:, 0] + 0.5 * rng.normal(size=n) > 0).astype(int)
    image = rng.normal(size=(n, wide)) + y[:, None] * 0.3
    image[: n // 4] = np.nan  # absent for a quarter of the rows
    columns = [f"clinical__c{k}" for k in range(3)] + [f"img__net__{k}" for k in range(wide)]
    return pd.DataFrame(np.hstack([clinical, image]), columns=columns), y


@pytest.mark.parametrize("bottleneck, width", [(4, 4), (None, 60), (500, 60)])
def test_width_of_expert_blocks(bottleneck, width):
    X, y = _data()
    clf = MedMIXClassifier(expert_bottleneck=bottleneck, max_epochs=1, early_stopping=False,
                           random_state=0).fit(X, y)
    assert clf.network_params_["block_dims"] == [3, width]  # tabular blocks stay whole
    assert clf.predict_proba(X).shape == (len(X), 2)


@pytest.mark.parametrize("wide, width", [(300, 22), (220, 220)])
def test_auto_width_follows_the_rarest_class_where_the_block_is_present(wide, width):
    X, y = _data(n=200, wide=wide)
    # Imbalance the rows that have the image block: keep 22 of its class-1 rows.
    present = ~X.filter(like="img__").isna().all(axis=1).to_numpy()
    ones = np.flatnonzero(present & (y == 1))
    keep = np.ones(len(y), dtype=bool)
    keep[ones[22:]] = False
    X, y = X[keep], y[keep]
    clf = MedMIXClassifier(max_epochs=1, early_stopping=False, random_state=0).fit(X, y)
    # Reduced only when wider than 10 columns per row of the rarest class (here 220).
    assert clf.network_params_["block_dims"] == [3, width]


def test_auto_keeps_a_block_seen_in_many_rows_whole():
    X, y = _data(n=2000, wide=60)
    clf = MedMIXClassifier(max_epochs=1, early_stopping=False, random_state=0).fit(X, y)
    assert clf.network_params_["block_dims"] == [3, 60]


def test_components_are_unit_variance_and_absent_rows_stay_zero():
    X, y = _data()
    clf = MedMIXClassifier(expert_bottleneck=5, max_epochs=1, early_stopping=False, random_state=0).fit(X, y)
    x, mask = clf._prepare(X.to_numpy())
    reduced = x[:, 3:]
    present = mask[:, 1]
    np.testing.assert_allclose(reduced[present].std(axis=0, ddof=1), 1.0, rtol=1e-4)
    np.testing.assert_allclose(reduced[present].mean(axis=0), 0.0, atol=1e-5)
    assert not reduced[~present].any()
    # The components are uncorrelated on the training rows.
    corr = np.corrcoef(reduced[present].T)
    np.testing.assert_allclose(corr, np.eye(5), atol=1e-4)


def test_invalid_bottleneck_is_rejected():
    X, y = _data()
    with pytest.raises(ValueError, match="expert_bottleneck"):
        MedMIXClassifier(expert_bottleneck=0).fit(X, y)
    with pytest.raises(ValueError, match="expert_bottleneck"):
        MedMIXClassifier(expert_bottleneck="pca").fit(X, y)


def test_reduced_model_round_trips_through_a_model_file(tmp_path):
    from medmix_sklearn import load_model, save_model

    X, y = _data()
    clf = MedMIXClassifier(expert_bottleneck=5, max_epochs=2, early_stopping=False, random_state=0).fit(X, y)
    save_model(clf, tmp_path / "model.medmix", X=X)
    loaded = load_model(tmp_path / "model.medmix")
    assert loaded.network_params_["block_dims"] == [3, 5]
    np.testing.assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))
