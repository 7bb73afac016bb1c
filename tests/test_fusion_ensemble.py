"""MedMIXClassifier's n_members: networks trained one by one and averaged."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from medmix_sklearn import MedMIXClassifier, load_model, save_model
from medmix_sklearn.fusion._network import FusionEnsemble, MedMIXNetwork

FAST = dict(max_epochs=4, lr=2e-2, random_state=0)


def _data(n=160, n_rare=30, seed=0):
    """Two modalities; class 1 has ``n_rare`` rows; "b" absent for a third of the rows."""
    rng = np.random.default_rng(seed)
    y = np.zeros(n, dtype=int)
    y[rng.choice(n, n_rare, replace=False)] = 1
    a = rng.normal(size=(n, 3)) + y[:, None]
    b = rng.normal(size=(n, 4)) + 0.5 * y[:, None]
    b[rng.random(n) < 1 / 3] = np.nan
    columns = [f"a__x{k}" for k in range(3)] + [f"b__y{k}" for k in range(4)]
    return pd.DataFrame(np.hstack([a, b]), columns=columns), y


@pytest.mark.parametrize("n_rare, expected", [(30, 5), (199, 5), (200, 1)])
def test_auto_trains_an_ensemble_only_when_the_rarest_class_is_small(n_rare, expected):
    X, y = _data(n=450, n_rare=n_rare)
    clf = MedMIXClassifier(**{**FAST, "max_epochs": 1}).fit(X, y)
    assert clf.n_members_ == expected
    module = clf.net_.module_
    if expected == 1:
        assert isinstance(module, MedMIXNetwork)
    else:
        assert isinstance(module, FusionEnsemble) and len(module.members) == expected


def test_first_member_is_the_single_network_and_members_differ():
    X, y = _data()
    single = MedMIXClassifier(**FAST, n_members=1, linear_path=True, hidden_dim=8).fit(X, y)
    ensemble = MedMIXClassifier(**FAST, n_members=3, linear_path=True, hidden_dim=8).fit(X, y)
    members = ensemble.net_.module_.members
    # Member 0 trains exactly as one network of the same random_state.
    for key, value in single.net_.module_.state_dict().items():
        torch.testing.assert_close(members[0].state_dict()[key], value)
    # The others start, shuffle and hold out differently.
    first = members[0].encoders[0].proj.weight
    assert not torch.allclose(first, members[1].encoders[0].proj.weight)
    assert not torch.allclose(members[1].encoders[0].proj.weight, members[2].encoders[0].proj.weight)
    assert ensemble.n_iter_ == single.n_iter_  # the first member's record
    # The ensemble's optimizer carries every member's state (for a later partial_fit).
    n_params = sum(1 for _ in ensemble.net_.module_.parameters())
    state = ensemble.net_.optimizer_.state_dict()["state"]
    assert len(state) == n_params
    single_state = single.net_.optimizer_.state_dict()["state"]
    first_key = next(iter(single_state))
    torch.testing.assert_close(state[first_key]["exp_avg"], single_state[first_key]["exp_avg"])


def test_probabilities_are_the_members_mean():
    X, y = _data()
    # Uncalibrated: tests/test_calibration.py checks the tempered members' mean.
    clf = MedMIXClassifier(**FAST, n_members=3, calibration=None).fit(X, y)
    x, mask = clf._prepare(X.to_numpy())
    x, mask = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(mask)
    with torch.no_grad():
        per_member = [
            torch.softmax(m.double().eval()(x, mask)[0], dim=1).numpy()
            for m in clf.net_.module_.members
        ]
    expected = np.mean(per_member, axis=0)
    np.testing.assert_allclose(clf.predict_proba(X), expected, rtol=1e-7, atol=1e-10)
    # The members disagree, so the mean is not any one of them.
    assert np.abs(per_member[0] - per_member[1]).max() > 1e-3


def test_explain_weights_stay_normalised():
    X, y = _data()
    clf = MedMIXClassifier(**FAST, n_members=3).fit(X, y)
    weights = clf.explain(X)
    modality = weights.filter(like="modality_weight__").to_numpy()
    np.testing.assert_allclose(modality.sum(axis=1), 1.0, rtol=1e-6)
    b_absent = X.filter(like="b__").isna().all(axis=1).to_numpy()
    assert (weights.loc[b_absent, "modality_weight__b"] == 0).all()


def test_ensemble_round_trips_through_a_model_file(tmp_path):
    X, y = _data()
    clf = MedMIXClassifier(**FAST, n_members=2).fit(X, y)
    path = tmp_path / "ensemble.medmix"
    save_model(clf, path)
    loaded = load_model(path)
    assert loaded.n_members_ == 2
    np.testing.assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))
    # partial_fit goes on training the ensemble as a whole.
    before = loaded.predict_proba(X)
    loaded.partial_fit(X, y)
    assert loaded.n_members_ == 2 and not np.allclose(loaded.predict_proba(X), before)


def test_partial_fit_from_scratch_trains_one_network():
    X, y = _data()
    clf = MedMIXClassifier(**FAST).partial_fit(X, y)
    assert clf.n_members_ == 1 and isinstance(clf.net_.module_, MedMIXNetwork)


def test_fusion_ensemble_rejects_no_members():
    with pytest.raises(ValueError, match="n_members must be at least 1; got 0"):
        FusionEnsemble(MedMIXNetwork, 0, block_dims=[2], block_modality=[0], block_norm=[False], n_classes=2)


def test_invalid_n_members_is_refused():
    X, y = _data()
    with pytest.raises(ValueError, match="n_members"):
        MedMIXClassifier(n_members=0).fit(X, y)


@pytest.mark.parametrize("n_members, linear_path, expected", [
    ("auto", "auto", True), (1, "auto", False), (1, True, True), (3, False, False),
])
def test_linear_path_auto_follows_the_ensemble(n_members, linear_path, expected):
    X, y = _data()  # 30 rows of the rarer class: "auto" gives an ensemble
    clf = MedMIXClassifier(**{**FAST, "max_epochs": 1}, n_members=n_members, linear_path=linear_path).fit(X, y)
    assert clf.linear_path_ is expected
    members = getattr(clf.net_.module_, "members", [clf.net_.module_])
    assert all(member.linear_path is expected for member in members)


@pytest.mark.parametrize("n_rare, hidden_dim, expected", [(30, "auto", 32), (200, "auto", 64), (30, 12, 12)])
def test_hidden_dim_auto_narrows_the_tokens_on_small_data(n_rare, hidden_dim, expected):
    X, y = _data(n=450, n_rare=n_rare)
    clf = MedMIXClassifier(**{**FAST, "max_epochs": 1, "hidden_dim": hidden_dim}).fit(X, y)
    assert clf.hidden_dim_ == expected
    members = getattr(clf.net_.module_, "members", [clf.net_.module_])
    assert all(member.hidden_dim == expected for member in members)
