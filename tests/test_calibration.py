"""MedMIXClassifier(calibration=...): temperatures by the number of modalities present."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from medmix_sklearn import MedMIXClassifier, load_model, save_model
from medmix_sklearn.exceptions import CalibrationWarning
from medmix_sklearn.fusion._calibration import (
    blanked_copies,
    copy_weights,
    fit_temperature,
    fit_temperatures,
    temper,
)
from medmix_sklearn.model_selection import ModalityAmputer, expected_calibration_error

# Trained on complete rows without modality dropout: the network never sees a
# modality go missing, and is overconfident when one does at prediction.
SETTINGS = dict(modality_dropout=0.0, n_members=1, random_state=0, device="cpu")


def _data(n, seed, signal=0.35):
    """Three modalities of four columns, each weakly informative on its own."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    parts = [rng.normal(size=(n, 4)) + signal * (2 * y[:, None] - 1) for _ in "abc"]
    columns = [f"{m}__x{k}" for m in "abc" for k in range(4)]
    return pd.DataFrame(np.hstack(parts), columns=columns), y


@pytest.fixture(scope="module")
def pair():
    X, y = _data(600, 0)
    plain = MedMIXClassifier(**SETTINGS, calibration=None).fit(X, y)
    calibrated = MedMIXClassifier(**SETTINGS, calibration="presence").fit(X, y)
    X_test, y_test = _data(1500, 1)
    return plain, calibrated, X, y, X_test, y_test


def _amputed(X, y, p):
    return ModalityAmputer(p=p, random_state=0).fit_transform(X, y)


def test_presence_temperatures_lower_the_ece_when_modalities_go_missing(pair):
    plain, calibrated, _, _, X_test, y_test = pair
    X_gone = _amputed(X_test, y_test, 0.75)
    before = expected_calibration_error(y_test, plain.predict_proba(X_gone))
    after = expected_calibration_error(y_test, calibrated.predict_proba(X_gone))
    assert after < 0.6 * before, (before, after)
    # On complete rows it does not get worse.
    full_before = expected_calibration_error(y_test, plain.predict_proba(X_test))
    full_after = expected_calibration_error(y_test, calibrated.predict_proba(X_test))
    assert full_after <= full_before + 0.01


def test_temperatures_grow_as_modalities_go(pair):
    _, calibrated, *_ = pair
    t = calibrated.temperatures_
    assert t.shape == (4,)  # 0..3 modalities present
    assert t[0] == 1.0  # nothing present: the learned prior, never scaled
    assert t[1] > 1.0 and t[1] > t[2] > t[3]


def test_same_weights_same_ranking_and_probabilities_that_sum_to_one(pair):
    plain, calibrated, X, _, X_test, y_test = pair
    for key, value in plain.net_.module_.state_dict().items():  # training is unchanged
        torch.testing.assert_close(calibrated.net_.module_.state_dict()[key], value)
    X_gone = _amputed(X_test, y_test, 0.5)
    proba = calibrated.predict_proba(X_gone)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    # Tempering towards the (near-balanced) class shares keeps nearly every predicted class.
    assert (calibrated.predict(X_gone) == plain.predict(X_gone)).mean() > 0.99
    decision = calibrated.decision_function(X_gone)
    np.testing.assert_allclose(1 / (1 + np.exp(-decision)), proba[:, 1], rtol=1e-9)
    # Full rows barely move; the explanation does not move at all.
    shift = np.abs(calibrated.predict_proba(X_test) - plain.predict_proba(X_test)).max()
    assert shift < 0.1
    pd.testing.assert_frame_equal(calibrated.explain(X_gone), plain.explain(X_gone))
    # A row with no modality present gets the prior, untempered.
    empty = X_test.iloc[:3].copy()
    empty[:] = np.nan
    np.testing.assert_allclose(calibrated.predict_proba(empty), plain.predict_proba(empty), rtol=1e-12)


def test_calibrated_model_round_trips_exactly(pair, tmp_path):
    _, calibrated, _, _, X_test, y_test = pair
    X_gone = _amputed(X_test, y_test, 0.5)
    save_model(calibrated, tmp_path / "m.medmix")
    for loaded in (load_model(tmp_path / "m.medmix"), pickle.loads(pickle.dumps(calibrated))):
        np.testing.assert_array_equal(loaded.temperatures_, calibrated.temperatures_)
        np.testing.assert_array_equal(loaded.predict_proba(X_gone), calibrated.predict_proba(X_gone))
        assert loaded.get_params()["calibration"] == "presence"


def test_partial_fit_drops_the_temperatures(pair):
    _, calibrated, X, y, *_ = pair
    model = pickle.loads(pickle.dumps(calibrated))
    with pytest.warns(CalibrationWarning, match="drops them"):
        model.partial_fit(X, y)
    assert model.temperatures_ is None and model.calibration_prior_ is None
    with warnings.catch_warnings():
        warnings.simplefilter("error", CalibrationWarning)  # from scratch: uncalibrated, as documented
        fresh = MedMIXClassifier(**SETTINGS, calibration="presence").partial_fit(X, y)
        fresh.partial_fit(X, y)
    assert fresh.temperatures_ is None


def test_single_temperature_is_shared_by_every_count():
    X, y = _data(300, 2)
    clf = MedMIXClassifier(**{**SETTINGS, "max_epochs": 5}, calibration="temperature").fit(X, y)
    t = clf.temperatures_
    assert t.shape == (4,) and t[0] == 1.0
    assert np.all(t[1:] == t[1]) and t[1] != 1.0


def test_ensemble_members_are_tempered_before_averaging(tmp_path, monkeypatch):
    X, y = _data(300, 3)
    fitted_on = []
    original = MedMIXClassifier._fit_temperatures
    monkeypatch.setattr(MedMIXClassifier, "_fit_temperatures",
                        lambda self, held_out: fitted_on.append(held_out) or original(self, held_out))
    clf = MedMIXClassifier(**{**SETTINGS, "max_epochs": 8, "n_members": 3}, calibration="presence").fit(X, y)
    t = clf.temperatures_
    assert t.shape == (4,) and not np.allclose(t, 1.0)
    # Fitted once, on every member's held-out rows (30 each), copied with modalities blanked.
    (held_out,) = fitted_on
    assert len(held_out) == 3
    assert [len(np.unique(part["rows"])) for part in held_out] == [30, 30, 30]
    assert len({tuple(np.unique(part["rows"])) for part in held_out}) == 3  # each member its own split
    X_gone = _amputed(X, y, 0.5)
    x, mask = clf._prepare(X_gone.to_numpy())
    x, mask = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(mask)
    log_prior = torch.as_tensor(np.log(clf.calibration_prior_))
    expected = []
    with torch.no_grad():
        for member in clf.net_.module_.members:
            out = member.double().eval()(x, mask)
            count = out[4].sum(dim=1).round().long().numpy()
            tempered = (out[0] - log_prior) / torch.as_tensor(t[count])[:, None] + log_prior
            expected.append(torch.softmax(tempered, 1).numpy())
    np.testing.assert_allclose(clf.predict_proba(X_gone), np.mean(expected, axis=0), rtol=1e-7, atol=1e-10)
    save_model(clf, tmp_path / "e.medmix")
    np.testing.assert_array_equal(load_model(tmp_path / "e.medmix").predict_proba(X_gone), clf.predict_proba(X_gone))


def test_without_held_out_rows_nothing_is_calibrated():
    X, y = _data(60, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CalibrationWarning)
        clf = MedMIXClassifier(calibration="presence", early_stopping=False, max_epochs=1, n_members=1).fit(X, y)
    assert clf.temperatures_ is None
    # Too few rows for a stratified split: fit warns about the split and does not calibrate.
    with pytest.warns(UserWarning, match="stratified validation split"):
        clf = MedMIXClassifier(calibration="presence", max_epochs=1, n_members=1).fit(X.iloc[:8], [0, 1] * 4)
    assert clf.temperatures_ is None
    np.testing.assert_allclose(clf.predict_proba(X).sum(axis=1), 1.0)


def test_calibration_prior_is_the_weighted_class_shares():
    X, y = _data(300, 5)
    y = np.where(np.arange(300) < 60, 1, 0)  # 20% of class 1
    clf = MedMIXClassifier(max_epochs=2, calibration="temperature", random_state=0).fit(X, y)
    np.testing.assert_allclose(clf.calibration_prior_, [0.8, 0.2])
    balanced = MedMIXClassifier(max_epochs=2, calibration="temperature", class_weight="balanced",
                                random_state=0).fit(X, y)
    np.testing.assert_allclose(balanced.calibration_prior_, [0.5, 0.5])
    assert MedMIXClassifier(max_epochs=2, random_state=0, calibration=None).fit(X, y).calibration_prior_ is None


def test_tempering_moves_towards_the_class_shares_not_equal_probabilities():
    rng = np.random.default_rng(0)
    log_prior = np.log([0.8, 0.2])
    # Uninformative logits that carry the prior and noise: the best T is large,
    # and the tempered probabilities go to the prior, not to 0.5.
    logits = log_prior + rng.normal(scale=2.0, size=(3000, 2))
    y = (rng.random(3000) < 0.2).astype(int)
    t = fit_temperature(logits, y, log_prior=log_prior)
    assert t > 5
    out = temper((torch.as_tensor(logits), None, None, None, torch.ones(3000, 1)),
                 torch.as_tensor([1.0, t]), torch.as_tensor(log_prior))
    proba = torch.softmax(out[0], dim=1).numpy()
    assert abs(proba[:, 1].mean() - 0.2) < 0.03


def test_fit_temperature_recovers_a_known_overconfidence():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(scale=1.5, size=(4000, 3))
    proba = np.exp(true_logits) / np.exp(true_logits).sum(axis=1, keepdims=True)
    y = np.array([rng.choice(3, p=p) for p in proba])
    assert fit_temperature(3.0 * true_logits, y) == pytest.approx(3.0, rel=0.1)
    assert fit_temperature(0.5 * true_logits, y) == pytest.approx(0.5, rel=0.1)
    # Per count: a count with too few distinct rows gets the pooled temperature.
    n_present = np.where(np.arange(4000) < 3985, 2, 1)
    t = fit_temperatures(3.0 * true_logits, y, np.ones(4000), n_present, np.arange(4000), 2)
    assert t[0] == 1.0 and t[2] == pytest.approx(3.0, rel=0.1)
    assert t[1] == fit_temperature(3.0 * true_logits, y)
    # ... and so does a count with many rows but fewer than 5 of some class.
    n_present = np.where(y == 2, 2, 1)
    n_present[np.flatnonzero(y == 2)[:3]] = 1  # count 1 holds 3 rows of class 2
    t = fit_temperatures(3.0 * true_logits, y, np.ones(4000), n_present, np.arange(4000), 2)
    assert t[1] == fit_temperature(3.0 * true_logits, y)
    # Too few rows in all: no scaling.
    t = fit_temperatures(3.0 * true_logits[:12], y[:12], np.ones(12), np.ones(12), np.arange(12), 2)
    np.testing.assert_array_equal(t, np.ones(3))


def test_blanked_copies_keep_a_subset_and_at_least_one():
    rng = np.random.default_rng(0)
    present = rng.random((50, 4)) < 0.7
    present[0] = False  # a row with nothing stays with nothing
    rows, keep = blanked_copies(present, rng, 10)
    assert len(rows) == 50 * 11
    np.testing.assert_array_equal(keep[:50], present)  # copy 0: as observed
    assert not (keep & ~present[rows]).any()
    has_any = present[rows].any(axis=1)
    assert keep[has_any].any(axis=1).all() and not keep[~has_any].any()
    counts = np.bincount(keep.sum(axis=1), minlength=5)
    assert (counts[1:4] > 50).all()  # every count of present modalities is seen


def test_rows_as_observed_carry_half_the_presence_weight(label_in_pattern):
    X, y = label_in_pattern
    n_copies = 7
    share = copy_weights(30, n_copies)
    assert share.shape == (30 * (n_copies + 1),)
    assert share[:30].sum() == pytest.approx(share[30:].sum())
    np.testing.assert_array_equal(share[30:], 1.0)

    record = {}

    class Recording(MedMIXClassifier):
        def _fit_temperatures(self, held_out):
            record["parts"] = held_out
            return super()._fit_temperatures(held_out)

    weight = np.where(y == 1, 2.0, 1.0)
    Recording(blocks={"a": [0, 1], "b": [2, 3]}, random_state=0, max_epochs=5, n_members=1).fit(
        X, y, sample_weight=weight
    )
    (part,) = record["parts"]
    n_rows = len(np.unique(part["rows"]))
    observed, blanked = part["weight"][:n_rows], part["weight"][n_rows:]
    assert observed.sum() == pytest.approx(blanked.sum())
    # The sample weights still count within each half.
    np.testing.assert_allclose(observed, weight[part["rows"][:n_rows]] * (len(part["rows"]) // n_rows - 1))


def test_presence_tempers_what_the_network_reads_into_a_missing_modality(label_in_pattern):
    # The label is in the availability pattern only (class 1 rows mostly lack "b"). Blanking
    # at random on the held-out rows says a missing "b" means nothing, so "presence" pulls
    # those rows towards the class shares; "temperature" (rows as observed) keeps the signal.
    X, y = label_in_pattern
    absent = np.isnan(X[:, 2])
    settings = dict(blocks={"a": [0, 1], "b": [2, 3]}, pattern_prior=True, random_state=0, max_epochs=40,
                    n_members=1)
    observed = MedMIXClassifier(**settings, calibration="temperature").fit(X, y).predict_proba(X)[absent, 1]
    presence = MedMIXClassifier(**settings, calibration="presence").fit(X, y)
    assert presence.temperatures_[1] > 1.5
    assert observed.mean() > 0.7
    assert 0.5 < presence.predict_proba(X)[absent, 1].mean() < observed.mean() - 0.05


def test_a_model_saved_before_calibration_existed_loads_uncalibrated(pair):
    plain, calibrated, _, _, X_test, y_test = pair
    state = dict(calibrated.__getstate__())
    for key in ("calibration", "temperatures_", "calibration_prior_"):
        state.pop(key)
    old = MedMIXClassifier.__new__(MedMIXClassifier)
    old.__setstate__(state)
    assert old.get_params()["calibration"] is None
    X_gone = _amputed(X_test, y_test, 0.5)
    np.testing.assert_array_equal(old.predict_proba(X_gone), plain.predict_proba(X_gone))
