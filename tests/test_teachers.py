"""Training-only teachers of MedMIXClassifier: alignment, distillation, no inference cost."""

import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold, StratifiedKFold, cross_val_predict, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.utils._param_validation import InvalidParameterError

from medmix_sklearn.exceptions import MissingModalityWarning
from medmix_sklearn.fusion import MedMIXClassifier
from medmix_sklearn.fusion._classifier import _default_teacher
from medmix_sklearn.fusion._losses import (
    FusionLoss,
    alignment_loss,
    distillation_loss,
    teacher_validation_loss,
)
from medmix_sklearn.fusion._net import BlockDataset
from medmix_sklearn.fusion._network import AlignmentHeads, FusionOutput, MedMIXNetwork

FAST = dict(hidden_dim=8, max_epochs=6, lr=2e-2, random_state=0)
TEACHER_PREFIX = "teacher__"


def teacher_frame(n=240, seed=0, p_missing=0.3, p_teacher_missing=0.25):
    """Students: xray (2 experts x 4), labs (2); teachers: a big xray model and a privileged report.

    The teacher blocks carry the latent factors with little noise, so they
    predict y better than the students do.
    """
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 3))
    y = (z[:, 0] + z[:, 1] + 0.5 * z[:, 2] > 0).astype(int)
    cols, mats = [], []
    absent = rng.random(n) < p_missing
    for e in ["a", "b"]:
        emb = z @ rng.normal(size=(3, 4)) + 1.5 * rng.normal(size=(n, 4))
        emb[absent] = np.nan
        mats.append(emb)
        cols += [f"xray__{e}__{k}" for k in range(4)]
    labs = z[:, :2] + 1.0 * rng.normal(size=(n, 2))
    labs[rng.random(n) < p_missing] = np.nan
    mats.append(labs)
    cols += ["labs__age", "labs__wbc"]
    no_teacher = rng.random(n) < p_teacher_missing
    for modality, expert, dim in [("xray", "big", 6), ("report", "minilm", 5)]:
        emb = z @ rng.normal(size=(3, dim)) + 0.1 * rng.normal(size=(n, dim))
        emb[no_teacher] = np.nan
        mats.append(emb)
        cols += [f"{TEACHER_PREFIX}{modality}__{expert}__{k}" for k in range(dim)]
    return pd.DataFrame(np.hstack(mats), columns=cols), y


def teacher_columns(X):
    return [c for c in X.columns if c.startswith(TEACHER_PREFIX)]


def blank_teachers(X):
    X = X.copy()
    X[teacher_columns(X)] = np.nan
    return X


def small_hgb():
    return HistGradientBoostingClassifier(max_iter=15, random_state=0)


@pytest.fixture(scope="module")
def data():
    return teacher_frame()


@pytest.fixture(scope="module")
def plain(data):
    X, y = data
    return MedMIXClassifier(**FAST).fit(X, y)


# -- teacher=None -------------------------------------------------------------
def test_no_teacher_ignores_teacher_blocks_in_fit_and_predict(data, plain):
    X, y = data
    assert plain.teacher_blocks_ == []
    blanked = MedMIXClassifier(**FAST).fit(blank_teachers(X), y)
    np.testing.assert_array_equal(plain.predict_proba(X), blanked.predict_proba(X))
    np.testing.assert_array_equal(plain.predict_proba(X), plain.predict_proba(blank_teachers(X)))


def test_predict_never_reads_teacher_columns(data):
    X, y = data
    clf = MedMIXClassifier(teacher="align", **FAST).fit(X, y)
    expected = clf.predict_proba(X)
    garbage = X.astype(object)
    garbage[teacher_columns(X)] = "not a number"  # would fail any float conversion
    np.testing.assert_array_equal(clf.predict_proba(garbage), expected)
    np.testing.assert_array_equal(clf.explain(garbage).to_numpy(), clf.explain(X).to_numpy())
    # Names are still checked, teacher columns included.
    with pytest.raises(ValueError, match="feature names"):
        clf.predict(X.drop(columns=teacher_columns(X)[:1]))


# -- align and distill train, and change the model ---------------------------
@pytest.mark.parametrize(
    "teacher", ["align", "hgb", "both"], ids=["align", "distill", "align+distill"]
)
def test_teacher_modes_train_and_change_the_model(data, plain, teacher):
    X, y = data
    teacher = {"align": "align", "hgb": small_hgb(), "both": ("align", small_hgb())}[teacher]
    clf = MedMIXClassifier(teacher=teacher, **FAST).fit(X, y)
    assert [b.key for b in clf.teacher_blocks_] == ["teacher__xray__big", "teacher__report__minilm"]
    proba = clf.predict_proba(X)
    assert np.isfinite(proba).all()
    assert clf.score(X, y) > 0.7
    assert not np.allclose(proba, plain.predict_proba(X), atol=1e-4)
    # Prediction never reads the teacher columns: NaN there changes nothing.
    np.testing.assert_array_equal(proba, clf.predict_proba(blank_teachers(X)))
    # The module is the plain network, with no training-only weights.
    assert clf.net_.module_.state_dict().keys() == plain.net_.module_.state_dict().keys()


def test_distillation_pulls_the_student_towards_the_teacher(data):
    # The target is what is distilled: the teacher's out-of-fold probabilities.
    # One seed's gap is noisy at this size, so the mean over three is compared.
    X, y = data
    gaps_plain, gaps_distilled = [], []
    for seed in range(3):
        # Uncalibrated: what training learned, not the tempering fitted after it.
        params = {**FAST, "random_state": seed, "calibration": None}
        plain = MedMIXClassifier(**params).fit(X, y)
        clf = MedMIXClassifier(teacher=small_hgb(), distill_weight=5.0, **params).fit(X, y)
        cv = StratifiedKFold(5, shuffle=True, random_state=clf.seed_)
        target = cross_val_predict(small_hgb(), X.to_numpy(), y, cv=cv, method="predict_proba")[:, 1]
        gaps_plain.append(np.abs(plain.predict_proba(X)[:, 1] - target).mean())
        gaps_distilled.append(np.abs(clf.predict_proba(X)[:, 1] - target).mean())
    assert np.mean(gaps_distilled) < np.mean(gaps_plain)


def test_alignment_heads_are_trained_then_dropped(data, monkeypatch):
    from medmix_sklearn.fusion._net import FusionNet

    X, y = data
    seen = {}
    drop = FusionNet.drop_teacher

    def recording_drop(net):
        seen["heads"] = net.aligner_
        seen["initial"] = seen_initial["weights"]
        drop(net)

    seen_initial = {}
    initialize = FusionNet.initialize_module

    def recording_initialize(net):
        initialize(net)
        if getattr(net, "aligner_", None) is not None:  # not the ensemble built after training
            seen_initial["weights"] = [p.detach().clone() for p in net.aligner_.parameters()]
        return net

    monkeypatch.setattr(FusionNet, "drop_teacher", recording_drop)
    monkeypatch.setattr(FusionNet, "initialize_module", recording_initialize)
    clf = MedMIXClassifier(teacher="align", **FAST).fit(X, y)
    heads = seen["heads"]
    assert isinstance(heads, AlignmentHeads)
    # xray has a student counterpart (modality 0); report does not, so it is fused (-1).
    assert heads.sources == [clf.modality_names_.index("xray"), -1]
    assert heads.target_dims == [6, 5]
    # The heads were trained (by their own optimizer), then removed.
    assert any(not torch.equal(a, b) for a, b in zip(seen["initial"], heads.parameters()))
    assert not hasattr(clf.net_, "aligner_") and clf.net_.aligner is None
    assert clf.net_._optimizers == ["optimizer"] and clf.net_._modules == ["module"]


# -- rows without teacher data get no teacher term ---------------------------
def test_alignment_loss_ignores_masked_rows():
    g = torch.Generator().manual_seed(0)
    preds = [torch.randn(6, 3, generator=g, requires_grad=True), torch.randn(6, 2, generator=g)]
    targets = torch.randn(6, 5, generator=g)
    mask = torch.tensor([[1, 1], [1, 0], [0, 1], [0, 0], [1, 1], [0, 0]], dtype=torch.bool)
    w = torch.ones(6)
    loss = alignment_loss(preds, targets, mask, w)
    # Garbage targets on masked-out cells change nothing.
    noisy = targets.clone()
    noisy[3] = 1e3
    noisy[5] = -1e3
    noisy[1, 3:] = 7.0
    assert torch.allclose(loss, alignment_loss(preds, noisy, mask, w))
    loss.backward()
    assert torch.equal(preds[0].grad[[2, 3, 5]], torch.zeros(3, 3))
    # A perfectly aligned prediction (any positive scale) costs 0.
    assert alignment_loss([2 * targets[:, :3]], targets[:, :3], mask[:, :1], w).item() == pytest.approx(0, abs=1e-6)
    # Nothing to align: exactly 0, and still differentiable.
    none = alignment_loss(preds, targets, torch.zeros(6, 2, dtype=torch.bool), w)
    assert none.item() == 0.0 and none.requires_grad


def test_distillation_loss_ignores_masked_rows():
    logits = torch.tensor([[2.0, -1.0], [0.0, 0.0], [-3.0, 3.0]], requires_grad=True)
    soft = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]])
    mask = torch.tensor([True, False, True])
    loss = distillation_loss(logits, soft, mask, torch.ones(3), temperature=2.0)
    other = soft.clone()
    other[1] = torch.tensor([1.0, 0.0])
    assert torch.allclose(loss, distillation_loss(logits, other, mask, torch.ones(3), temperature=2.0))
    loss.backward()
    assert torch.equal(logits.grad[1], torch.zeros(2))
    # Student equal to the tempered teacher: 0. No row: exactly 0.
    p = torch.tensor([[0.7, 0.3]])
    loss = distillation_loss(torch.log(p), p, torch.tensor([True]), torch.ones(1), 1.0)
    assert loss.item() == pytest.approx(0, abs=1e-6)
    assert distillation_loss(logits, soft, torch.zeros(3, dtype=torch.bool), torch.ones(3), 2.0).item() == 0.0


def test_teacher_terms_only_in_training_loss():
    net = MedMIXNetwork([4, 2], [0, 1], [True, False], n_classes=2, hidden_dim=8).eval()
    x, mask = torch.randn(5, 6), torch.ones(5, 2, dtype=torch.bool)
    y = torch.tensor([0, 1, 0, 1, 1])
    out = net(x, mask, return_tokens=True)
    assert len(out) == 7 and all(torch.equal(a, b) for a, b in zip(out[:5], net(x, mask)))
    assert FusionOutput(*out[:5]).logits.shape == (5, 2)
    heads = AlignmentHeads(8, [3], [-1])
    preds, present = heads(out[5], out[6], out[4])
    align = (preds, torch.randn(5, 3), present)
    distill = (torch.full((5, 2), 0.5), torch.ones(5, dtype=torch.bool))
    crit = FusionLoss(align_weight=1.0, distill_weight=1.0, temperature=2.0)
    base = crit(out, y, training=False)
    assert torch.equal(base, crit(out, y, training=False, align=align, distill=distill))
    assert crit(out, y, training=True, align=align, distill=distill) > base


def test_all_nan_teacher_blocks_warn_and_equal_no_teacher(data, plain):
    X, y = data
    with pytest.warns(MissingModalityWarning, match="every teacher block is NaN"):
        clf = MedMIXClassifier(teacher=("align", small_hgb()), **FAST).fit(blank_teachers(X), y)
    np.testing.assert_array_equal(clf.predict_proba(X), plain.predict_proba(X))


# -- no inference cost ----------------------------------------------------------
def test_pickle_size_and_fitted_state_hold_no_teacher(data):
    X, y = data
    params = {**FAST, "early_stopping": False}  # same number of epochs, same history size
    plain = MedMIXClassifier(**params).fit(X, y)
    taught = MedMIXClassifier(teacher=("align", small_hgb()), **params).fit(X, y)
    size_plain, size_taught = len(pickle.dumps(plain)), len(pickle.dumps(taught))
    assert abs(size_taught - size_plain) / size_plain < 0.03
    # The teacher parameter is still the unfitted estimator; nothing fitted is kept.
    assert not hasattr(taught.teacher[1], "n_iter_")
    assert not any(isinstance(v, HistGradientBoostingClassifier) for v in vars(taught).values())
    assert {k for k, v in vars(taught).items() if isinstance(v, BaseEstimator)} == {"_encoder", "net_"}
    assert taught.net_.module_.state_dict().keys() == plain.net_.module_.state_dict().keys()
    n_params = sum(1 for _ in taught.net_.module_.parameters())
    assert len(taught.net_.optimizer_.state_dict()["state"]) == n_params
    assert b"AlignmentHeads" not in pickle.dumps(taught)
    loaded = pickle.loads(pickle.dumps(taught))
    np.testing.assert_array_equal(loaded.predict_proba(X), taught.predict_proba(X))


def test_fitted_net_keeps_no_teacher_values(data):
    X, y = data
    clf = MedMIXClassifier(teacher=("align", small_hgb()), **FAST).fit(X, y)
    assert clf.n_iter_ > 0 and "valid_loss" in clf.net_.history[-1]  # early stopping ran
    # Early stopping's held-out rows (with their teacher values) are not kept.
    assert clf.net_.train_split is None
    assert not any(isinstance(v, BlockDataset) for v in vars(clf.net_).values())


class RecordingTeacher(ClassifierMixin, BaseEstimator):
    """Records which rows (by the id in its last input column) each fit saw."""

    fits: list = []

    def fit(self, X, y):
        RecordingTeacher.fits.append(frozenset(np.asarray(X)[:, -1].astype(int).tolist()))
        self.classes_ = np.unique(y)
        self.prior_ = np.bincount(y, minlength=len(self.classes_)) / len(y)
        return self

    def predict_proba(self, X):
        return np.tile(self.prior_, (len(X), 1))

    def predict(self, X):
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


def test_teacher_is_refit_on_each_training_fold_only(data):
    X, y = data
    X = X.assign(teacher__ids__row=np.arange(len(X), dtype=float))  # a tabular teacher block
    RecordingTeacher.fits = []
    outer = list(KFold(3, shuffle=True, random_state=0).split(X))
    clf = MedMIXClassifier(teacher=RecordingTeacher(), teacher_cv=2, **FAST)
    cross_val_score(clf, X, y, cv=outer)
    fits = RecordingTeacher.fits
    assert len(fits) == 3 * 2  # teacher_cv fits per outer training fold, nothing else
    for k, (train, test) in enumerate(outer):
        inner = fits[2 * k : 2 * k + 2]
        assert set().union(*inner) <= set(train.tolist())  # never a test row
        assert not set().union(*inner) & set(test.tolist())
        # Out-of-fold: each inner fit leaves out some training rows, and they cover them all.
        assert all(len(f) < len(train) for f in inner)
        assert set().union(*inner) == set(train.tolist())


def test_pipeline_predict_runs_no_teacher_model(tiny_text_model_dir):
    from medmix_sklearn.embedding import MultimodalExpertEmbedder
    from medmix_sklearn.experts import TextExpert

    calls = {"load": 0, "embed": 0}

    class CountingTextExpert(TextExpert):
        def _load(self, device):
            calls["load"] += 1
            return super()._load(device)

        def _embed(self, model, items, *, device, batch_size):
            calls["embed"] += len(items)
            return super()._embed(model, items, device=device, batch_size=batch_size)

    rng = np.random.default_rng(0)
    n = 60
    sick = rng.random(n) < 0.5
    df = pd.DataFrame({
        "indication": np.where(rng.random(n) < 0.6, np.where(sick, "cough fever", "pain"), "cough"),
        "findings": np.where(sick, "right lower lobe consolidation", "lungs clear"),
        "age": 50 + 10 * sick + rng.normal(size=n),
    })
    df.loc[rng.random(n) < 0.2, "findings"] = None
    y = sick.astype(int)
    embedder = MultimodalExpertEmbedder(
        [("indication", [TextExpert(tiny_text_model_dir, name="tiny")], "indication"),
         ("demo", "passthrough", ["age"])],
        teachers=[("findings", [CountingTextExpert(tiny_text_model_dir, name="big")], "findings")],
        cache_dir=None,
    )
    clf = MedMIXClassifier(
        teacher=("align", HistGradientBoostingClassifier(max_iter=5)), teacher_cv=3, **FAST
    )
    pipe = Pipeline([("embed", embedder), ("clf", clf)])
    pipe.fit(df, y)
    # Identical texts are embedded once: two distinct findings.
    assert calls == {"load": 1, "embed": 2}
    assert [b.key for b in pipe.named_steps["clf"].teacher_blocks_] == ["teacher__findings__big"]
    fitted_calls = dict(calls)
    proba = pipe.predict_proba(df.drop(columns="findings"))
    assert proba.shape == (n, 2) and np.isfinite(proba).all()
    pipe.predict(df)
    assert calls == fitted_calls  # prediction ran no teacher model


# -- parameter validation --------------------------------------------------------
@pytest.mark.parametrize(
    "params, error, match",
    [
        ({"teacher": "distill"}, InvalidParameterError, "'teacher' parameter"),
        ({"teacher": HistGradientBoostingRegressor()}, InvalidParameterError, "'teacher' parameter"),
        ({"teacher": ("align", "align")}, ValueError, r"teacher must be None, 'align'.*Got \('align', 'align'\)"),
        ({"teacher": ("align",)}, ValueError, "teacher must be None"),
        ({"teacher": ["align", small_hgb(), small_hgb()]}, ValueError, "teacher must be None"),
        ({"teacher": HistGradientBoostingClassifier}, ValueError, "unfitted scikit-learn classifier instance"),
        ({"align_weight": -1.0}, InvalidParameterError, "'align_weight' parameter"),
        ({"distill_weight": -0.5}, InvalidParameterError, "'distill_weight' parameter"),
        ({"distill_temperature": 0.0}, InvalidParameterError, "'distill_temperature' parameter"),
        ({"teacher_cv": 1}, InvalidParameterError, "'teacher_cv' parameter"),
    ],
)
def test_parameter_validation(data, params, error, match):
    X, y = data
    with pytest.raises(error, match=match):
        MedMIXClassifier(**{**FAST, **params}).fit(X, y)


def test_teacher_needs_teacher_blocks(data):
    X, y = data
    students = X.drop(columns=teacher_columns(X))
    with pytest.raises(ValueError, match="needs teacher blocks in X.*teachers= to MultimodalExpertEmbedder"):
        MedMIXClassifier(teacher="align", **FAST).fit(students, y)


def test_teacher_estimator_must_accept_nan(data):
    X, y = data
    with pytest.raises(ValueError, match="does not accept NaN.*SimpleImputer"):
        MedMIXClassifier(teacher=LogisticRegression(), **FAST).fit(X, y)


def test_partial_fit_refuses_teachers(data):
    X, y = data
    with pytest.raises(ValueError, match="partial_fit does not use teachers"):
        MedMIXClassifier(teacher="align", **FAST).partial_fit(X, y, classes=[0, 1])


def test_teacher_with_explicit_blocks_mapping(data):
    X, y = data
    cols = {c: i for i, c in enumerate(X.columns)}
    pick = lambda prefix: [i for c, i in cols.items() if c.startswith(prefix)]  # noqa: E731
    mapping = {
        "xray": {"a": pick("xray__a__"), "b": pick("xray__b__")},
        "labs": pick("labs__"),
        "teacher__xray": {"big": pick("teacher__xray__")},
        "teacher__report": {"minilm": pick("teacher__report__")},
    }
    named = MedMIXClassifier(teacher="align", **FAST).fit(X, y)
    mapped = MedMIXClassifier(teacher="align", blocks=mapping, **FAST).fit(X.to_numpy(), y)
    assert [b.key for b in mapped.teacher_blocks_] == [b.key for b in named.teacher_blocks_]
    np.testing.assert_allclose(mapped.predict_proba(X.to_numpy()), named.predict_proba(X), rtol=1e-6)


# -- contrastive alignment ------------------------------------------------------
def test_contrastive_loss_value_on_known_inputs():
    from medmix_sklearn.fusion._losses import contrastive_alignment_loss

    # Two rows, each projection equal to its own (orthogonal) target: cos 1 on the diagonal, 0 off it.
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    preds = [3.0 * targets.clone()]
    mask = torch.ones(2, 1, dtype=torch.bool)
    loss = contrastive_alignment_loss(preds, targets, mask, torch.ones(2), temperature=0.5)
    expected = np.log(1 + np.exp(-2.0))  # -log(e^2 / (e^2 + e^0)), the same both ways
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # Swapped projections pick the wrong row: the loss is higher.
    swapped = contrastive_alignment_loss([preds[0].flip(0)], targets, mask, torch.ones(2), temperature=0.5)
    assert swapped.item() == pytest.approx(np.log(1 + np.exp(2.0)), rel=1e-6)


def test_contrastive_loss_ignores_masked_and_zero_weight_rows():
    from medmix_sklearn.fusion._losses import contrastive_alignment_loss

    g = torch.Generator().manual_seed(0)
    pred = torch.randn(6, 4, generator=g, requires_grad=True)
    targets = torch.randn(6, 4, generator=g)
    mask = torch.tensor([1, 1, 0, 1, 1, 0], dtype=torch.bool).unsqueeze(1)
    w = torch.tensor([1.0, 2.0, 1.0, 0.0, 1.0, 1.0])
    loss = contrastive_alignment_loss([pred], targets, mask, w)
    noisy = targets.clone()
    noisy[[2, 3, 5]] = 1e3  # neither anchors nor negatives
    assert torch.allclose(loss, contrastive_alignment_loss([pred], noisy, mask, w))
    loss.backward()
    assert torch.equal(pred.grad[[2, 3, 5]], torch.zeros(3, 4))
    # Fewer than two usable rows: nothing to contrast, an exact 0 with a graph.
    one = contrastive_alignment_loss([pred], targets, torch.eye(6, 1, dtype=torch.bool), torch.ones(6))
    assert one.item() == 0.0 and one.requires_grad


def test_contrastive_teacher_trains_and_leaves_no_weights(data, plain):
    X, y = data
    clf = MedMIXClassifier(teacher=("contrastive", "align"), **FAST).fit(X, y)
    proba = clf.predict_proba(X)
    assert not np.allclose(proba, plain.predict_proba(X), atol=1e-4)
    assert clf.score(X, y) > 0.7
    assert not hasattr(clf.net_, "aligner_")
    assert clf.net_.module_.state_dict().keys() == plain.net_.module_.state_dict().keys()


def test_teacher_modes_parse():
    clf = MedMIXClassifier(teacher=("contrastive", small_hgb()))
    alignment, estimator = clf._teacher_modes()
    assert alignment == ("contrastive",) and isinstance(estimator, HistGradientBoostingClassifier)
    alignment, estimator = MedMIXClassifier(teacher="auto")._teacher_modes()
    assert alignment == ()  # distillation alone: alignment added nothing on OpenI
    assert isinstance(estimator, Pipeline) and isinstance(estimator[-1], LogisticRegression)
    assert MedMIXClassifier(teacher=["contrastive", "align"])._teacher_modes() == (("cosine", "contrastive"), None)


# -- semi-supervised ------------------------------------------------------------
def semi(y, n_labeled=80, seed=0, value=-1):
    """y with all but ``n_labeled`` rows (stratified) set to ``value``."""
    rng = np.random.default_rng(seed)
    y = np.asarray(y).astype(object if isinstance(value, str) else int)
    keep = np.concatenate([rng.permutation(np.flatnonzero(y == c))[: n_labeled // 2] for c in np.unique(y)])
    out = np.full(len(y), value, dtype=y.dtype)
    out[keep] = y[keep]
    return out


def semi_encoded(y):
    """``semi(y)``, its labelled-row mask, the codes (0 for unlabelled rows) and unit weights."""
    ys = semi(y)
    labeled = ys != -1
    return ys, labeled, np.where(labeled, ys, 0), np.ones(len(y))


def test_unlabelled_rows_get_no_supervised_gradient():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 2, generator=g, requires_grad=True)
    aux = torch.randn(6, 2, 2, generator=g, requires_grad=True)
    out = (logits, aux, None, None, torch.ones(6, 2))
    labeled = torch.tensor([True, False, True, False, True, False])
    y = torch.tensor([0, 1, 1, 0, 0, 1])
    crit = FusionLoss(aux_weight=0.5, class_weight=torch.tensor([1.0, 3.0]))
    loss = crit(out, y, training=True, labeled=labeled)
    # The placeholder label of an unlabelled row does not matter...
    y_other = y.clone()
    y_other[~labeled] = 1 - y_other[~labeled]
    assert torch.allclose(loss, crit(out, y_other, training=True, labeled=labeled))
    # ...and the value is the supervised loss of the labelled rows alone.
    sub = (logits[labeled], aux[labeled], None, None, torch.ones(3, 2))
    assert torch.allclose(loss, crit(sub, y[labeled], training=True))
    loss.backward()
    assert torch.equal(logits.grad[~labeled], torch.zeros(3, 2))
    assert torch.equal(aux.grad[~labeled], torch.zeros(3, 2, 2))
    # The teacher term does reach them.
    logits.grad = None
    distill = (torch.full((6, 2), 0.5), torch.ones(6, dtype=torch.bool))
    crit = FusionLoss(distill_weight=1.0, temperature=2.0)
    crit(out, y, training=True, labeled=labeled, distill=distill).backward()
    assert (logits.grad[~labeled].abs().sum(dim=1) > 0).all()


def test_consistency_loss_value_and_mask():
    from medmix_sklearn.fusion._losses import consistency_loss

    full = torch.tensor([[0.0, 0.0], [2.0, 0.0]], requires_grad=True)
    dropped = torch.tensor([[0.0, 0.0], [0.0, 2.0]], requires_grad=True)
    p = torch.softmax(torch.tensor([2.0, 0.0]), 0)
    kl = float((p * (p.log() - p.flip(0).log())).sum())
    loss = consistency_loss(dropped, full, torch.tensor([1.0, 1.0]))
    assert loss.item() == pytest.approx(kl / 2, rel=1e-5)  # row 0 agrees: KL 0
    loss.backward()
    assert full.grad is None  # the target gets no gradient
    only_second = consistency_loss(dropped, full, torch.tensor([0.0, 1.0]))
    assert only_second.item() == pytest.approx(kl, rel=1e-5)
    none = consistency_loss(dropped, full, torch.zeros(2))
    assert none.item() == 0.0 and none.requires_grad
    # FusionLoss applies it to unlabelled rows only.
    out = (dropped, torch.zeros(2, 1, 2), None, None, torch.ones(2, 1))
    y = torch.tensor([0, 0])
    crit = FusionLoss(consistency_weight=1.0)
    both = torch.tensor([True, False])
    extra = crit(out, y, labeled=both, full_logits=full) - crit(out, y, labeled=both)
    assert extra.item() == pytest.approx(kl, rel=1e-5)


def test_semi_supervised_fit_classes_split_and_weights(data):
    from sklearn.utils.class_weight import compute_class_weight

    X, y = data
    ys = semi(y)
    labeled = ys != -1
    clf = MedMIXClassifier(
        teacher=("align", small_hgb()), unlabeled_value=-1, class_weight="balanced", **FAST
    ).fit(X, ys)
    assert clf.classes_.tolist() == [0, 1]
    assert clf.n_unlabeled_ == int((~labeled).sum()) > 0
    expected = compute_class_weight("balanced", classes=np.array([0, 1]), y=ys[labeled])
    np.testing.assert_allclose(clf.class_weight_, expected)
    # Early stopping holds out labelled rows only: 10% of them, every unlabelled row trains.
    train_idx, valid_idx = clf._validation_split(np.where(labeled, ys, 0), labeled, clf.seed_)
    assert len(valid_idx) == int(np.ceil(0.1 * labeled.sum())) and labeled[valid_idx].all()
    assert set(np.flatnonzero(~labeled)) <= set(train_idx) and not set(train_idx) & set(valid_idx)
    assert clf.predict_proba(X).shape == (len(y), 2)
    assert set(clf.predict(X)) <= {0, 1}
    assert clf.score(X, y) > 0.7
    assert not hasattr(clf.net_, "aligner_")


def test_semi_supervised_string_labels(data):
    X, y = data
    names = np.where(np.asarray(y) == 1, "sick", "well").astype(object)
    ys = semi(names, value="unlabeled")
    clf = MedMIXClassifier(teacher="auto", unlabeled_value="unlabeled", **FAST).fit(X, ys)
    assert clf.classes_.tolist() == ["sick", "well"]


def test_unlabelled_rows_need_a_teacher(data):
    X, y = data
    ys = semi(y)
    with pytest.raises(ValueError, match=r"rows of y equal unlabeled_value=-1, but teacher=None.*teacher='auto'"):
        MedMIXClassifier(unlabeled_value=-1, **FAST).fit(X, ys)
    with pytest.raises(ValueError, match="Every row of y equals unlabeled_value"):
        MedMIXClassifier(teacher="auto", unlabeled_value=-1, **FAST).fit(X, np.full(len(y), -1))
    with (
        pytest.raises(ValueError, match="every teacher block is NaN in every row"),
        pytest.warns(MissingModalityWarning),
    ):
        MedMIXClassifier(teacher="auto", unlabeled_value=-1, **FAST).fit(blank_teachers(X), ys)
    # Without unlabeled_value, -1 is an ordinary class.
    clf = MedMIXClassifier(**FAST).fit(X.iloc[:120], ys[:120])
    assert -1 in clf.classes_


def test_partial_fit_and_unlabelled_rows(data):
    X, y = data
    ys = semi(y)
    clf = MedMIXClassifier(unlabeled_value=-1, **FAST)
    with pytest.raises(ValueError, match="partial_fit got .* unlabelled rows"):
        clf.partial_fit(X, ys, classes=[-1, 0, 1])
    labeled = ys != -1
    clf.partial_fit(X[labeled], ys[labeled], classes=[-1, 0, 1])
    assert clf.classes_.tolist() == [0, 1]  # the unlabeled value is never a class
    clf.partial_fit(X[labeled], ys[labeled])
    assert clf.n_iter_ == 2


def test_unlabelled_rows_get_out_of_sample_soft_labels(data):
    X, y = data
    X = X.assign(teacher__ids__row=np.arange(len(X), dtype=float))
    ys = semi(y)
    unlabeled = set(np.flatnonzero(ys == -1).tolist())
    RecordingTeacher.fits = []
    MedMIXClassifier(teacher=RecordingTeacher(), teacher_cv=3, unlabeled_value=-1, **FAST).fit(X, ys)
    fits = RecordingTeacher.fits
    assert len(fits) == 3
    assert not set().union(*fits) & unlabeled  # the teacher never fits on unlabelled rows
    assert set().union(*fits) == set(np.flatnonzero(ys != -1).tolist())


def test_unlabelled_rows_change_the_student(data):
    X, y = data
    ys = semi(y, n_labeled=60)
    labeled = ys != -1
    params = {**FAST, "early_stopping": False}
    alone = MedMIXClassifier(teacher="auto", **params).fit(X[labeled], ys[labeled])
    taught = MedMIXClassifier(teacher="auto", unlabeled_value=-1, **params).fit(X, ys)
    assert not np.allclose(alone.predict_proba(X), taught.predict_proba(X), atol=1e-3)
    assert taught.score(X, y) > 0.7


# -- auto, and no inference cost with wide teacher blocks -----------------------
def test_auto_needs_teacher_blocks(data):
    X, y = data
    with pytest.raises(ValueError, match="teacher='auto' needs teacher blocks"):
        MedMIXClassifier(teacher="auto", **FAST).fit(X.drop(columns=teacher_columns(X)), y)


def test_pickle_with_wide_teacher_blocks_within_five_percent(data):
    X, y = data
    rng = np.random.default_rng(0)
    wide = pd.DataFrame(rng.normal(size=(len(X), 384)), columns=[f"teacher__notes__minilm__{k}" for k in range(384)])
    Xw = pd.concat([X, wide], axis=1)
    params = {**FAST, "early_stopping": False}
    plain = MedMIXClassifier(**params).fit(X, y)
    taught = MedMIXClassifier(teacher="auto", **params).fit(Xw, y)
    size_plain, size_taught = len(pickle.dumps(plain)), len(pickle.dumps(taught))
    assert size_taught <= 1.05 * size_plain
    loaded = pickle.loads(pickle.dumps(taught))
    assert loaded.feature_names_in_.dtype == object
    np.testing.assert_array_equal(loaded.feature_names_in_, Xw.columns.to_numpy(dtype=object))
    np.testing.assert_array_equal(loaded.predict_proba(Xw), taught.predict_proba(Xw))


def test_name_runs_round_trip():
    from medmix_sklearn.fusion._classifier import _name_runs, _names_from_runs

    names = ["age", "x__1", "x__2", "x__3", "x__07", "x__8", "y__0", "y__2", "10", "11"]
    runs = _name_runs(names)
    assert runs == ["age", ("x__", 1, 4), "x__07", ("x__", 8, 9), ("y__", 0, 1), ("y__", 2, 3), ("", 10, 12)]
    assert _names_from_runs(runs).tolist() == names


# -- auto's teacher and early stopping on teacher-labelled rows --------------------
def test_auto_teacher_reads_only_the_teacher_columns(data):
    X, y = data
    ys, labeled, y_enc, weights = semi_encoded(y)
    # Noise in every student column: auto's soft labels do not move, a given teacher's do.
    noisy = X.copy()
    students = [c for c in X.columns if not c.startswith(TEACHER_PREFIX)]
    present = noisy[students].notna().to_numpy()
    noise = np.random.default_rng(1).normal(size=present.shape)
    noisy[students] = np.where(present, noise, np.nan)
    auto = MedMIXClassifier(teacher="auto", unlabeled_value=-1, **FAST).fit(X, ys)
    given = MedMIXClassifier(teacher=_default_teacher(), unlabeled_value=-1, **FAST).fit(X, ys)
    for clf, moves in ((auto, False), (given, True)):
        a = clf._cross_fit_teacher(_default_teacher(), X.to_numpy(), y_enc, weights, labeled)
        b = clf._cross_fit_teacher(_default_teacher(), noisy.to_numpy(), y_enc, weights, labeled)
        np.testing.assert_allclose(a.sum(axis=1), 1.0)
        assert (not np.allclose(a, b, atol=1e-6)) == moves
    # The teacher columns alone still rank the unlabelled rows well (they carry the latent factors).
    from sklearn.metrics import roc_auc_score

    soft = auto._cross_fit_teacher(_default_teacher(), X.to_numpy(), y_enc, weights, labeled)
    has_teacher = X[teacher_columns(X)].notna().any(axis=1).to_numpy()
    rows = ~labeled & has_teacher
    assert roc_auc_score(y[rows], soft[rows, 1]) > 0.9


def test_teacher_validation_loss_value_and_mask():
    logits = torch.tensor([[0.0, 1.0], [2.0, 0.0], [0.5, 0.5], [1.0, -1.0]])
    y = torch.tensor([1, 0, 0, 0])
    soft = torch.tensor([[0.5, 0.5], [0.5, 0.5], [0.2, 0.8], [0.9, 0.1]])
    soft_mask = torch.tensor([True, True, True, False])
    labeled = torch.tensor([True, False, False, False])
    weights = torch.tensor([1.0, 2.0, 1.0, 5.0])
    log_p = torch.log_softmax(logits, dim=1)
    # Row 0: its label; rows 1-2: their soft labels; row 3: neither, so it counts nothing.
    expected = (1.0 * -log_p[0, 1] - 2.0 * (soft[1] * log_p[1]).sum() - 1.0 * (soft[2] * log_p[2]).sum()) / 4.0
    got = teacher_validation_loss(logits, y, soft, soft_mask, labeled, weights)
    assert torch.isclose(got, expected)
    # Every row labelled: the plain weighted cross-entropy, whatever the soft labels say.
    everyone = torch.ones(4, dtype=torch.bool)
    ce = torch.nn.functional.cross_entropy(logits, y, reduction="none")
    assert torch.isclose(teacher_validation_loss(logits, y, soft, soft_mask, everyone, weights),
                         (ce * weights).sum() / weights.sum())
    # FusionLoss scores held-out rows this way (not the training terms), and only outside training.
    output = (logits, torch.zeros(4, 1, 2), None, None, torch.ones(4, 1, dtype=torch.bool))
    crit = FusionLoss(aux_weight=0.3, distill_weight=3.0, temperature=2.0)
    held_out = crit(output, y, weights, training=False, distill=(soft, soft_mask), labeled=labeled)
    assert torch.isclose(held_out, expected)
    plain = crit(output, y, weights, training=False, labeled=labeled)
    assert torch.isclose(plain, -log_p[0, 1])  # without soft labels: the labelled rows only


def test_validation_split_holds_out_teacher_labelled_rows(data):
    X, y = data
    ys = semi(y, n_labeled=60)
    labeled = ys != -1
    clf = MedMIXClassifier(teacher="auto", unlabeled_value=-1, **FAST).fit(X, ys)
    y_enc = np.where(labeled, ys, 0)
    scored = ~labeled & X[teacher_columns(X)].notna().any(axis=1).to_numpy()
    train_idx, valid_idx = clf._validation_split(y_enc, labeled, clf.seed_, scored)
    assert not set(train_idx) & set(valid_idx)
    assert set(train_idx) | set(valid_idx) == set(range(len(y)))
    held_lab = labeled[valid_idx].sum()
    assert held_lab == int(np.ceil(0.1 * labeled.sum()))
    held_unlab = valid_idx[~labeled[valid_idx]]
    assert len(held_unlab) == int(np.ceil(0.1 * scored.sum())) and scored[held_unlab].all()
    # Unlabelled rows without a soft label are never held out; without soft labels only labelled rows are.
    assert set(np.flatnonzero(~labeled & ~scored)) <= set(train_idx)
    _, labelled_only = clf._validation_split(y_enc, labeled, clf.seed_, None)
    assert labeled[labelled_only].all() and len(labelled_only) == held_lab


def test_semi_supervised_early_stopping_watches_teacher_labelled_rows(data, monkeypatch):
    X, y = data
    ys = semi(y, n_labeled=60)
    seen = {}
    original = MedMIXClassifier._validation_split

    def spy(self, y_enc, labeled, seed, scored=None):
        out = original(self, y_enc, labeled, seed, scored)
        seen["valid"], seen["labeled"] = out[1], labeled
        return out

    monkeypatch.setattr(MedMIXClassifier, "_validation_split", spy)
    MedMIXClassifier(teacher="auto", unlabeled_value=-1, **FAST).fit(X, ys)
    assert (~seen["labeled"][seen["valid"]]).sum() > 0  # a soft-label teacher: unlabelled rows held out
    MedMIXClassifier(teacher="align", unlabeled_value=-1, **FAST).fit(X, ys)
    assert seen["labeled"][seen["valid"]].all()  # alignment only: labelled rows only


# -- Platt scaling of the cross-fitted soft labels -----------------------------------
def test_fit_platt_is_platt_scaling_for_two_classes():
    from medmix_sklearn.fusion._classifier import _apply_platt, _fit_platt

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 600)
    score = rng.normal(size=600) + y
    p1 = 1 / (1 + np.exp(-6 * (score - 0.5)))  # ranks well, far too confident
    proba = np.column_stack([1 - p1, p1])
    slope, bias = _fit_platt(proba, y, np.ones(len(y)))
    logit = np.log(p1 / (1 - p1))[:, None]
    reference = LogisticRegression(C=1e8, max_iter=1000).fit(logit, y)
    assert slope == pytest.approx(reference.coef_[0, 0], rel=1e-3)
    assert bias[0] == 0.0 and bias[1] == pytest.approx(reference.intercept_[0], abs=1e-3)
    scaled = _apply_platt(proba, slope, bias)
    np.testing.assert_allclose(scaled.sum(axis=1), 1.0)
    # Softened (slope < 1), the ranking kept, the log loss lower.
    assert slope < 1.0
    assert np.all(np.diff(scaled[np.argsort(p1), 1]) >= -1e-12)

    def loss(p):
        return -np.mean(np.log(p[np.arange(len(y)), y]))

    assert loss(scaled) < loss(proba)


def test_fit_platt_sends_a_chance_teacher_to_the_class_frequencies():
    from medmix_sklearn.fusion._classifier import _apply_platt, _fit_platt

    rng = np.random.default_rng(1)
    y = (rng.random(800) < 0.3).astype(int)
    noise = rng.uniform(0.02, 0.98, 800)  # confident and unrelated to y
    slope, bias = _fit_platt(np.column_stack([1 - noise, noise]), y, np.ones(800))
    assert slope < 0.05
    scaled = _apply_platt(np.column_stack([1 - noise, noise]), slope, bias)
    np.testing.assert_allclose(scaled[:, 1], y.mean(), atol=0.03)
    # Weights count: the weighted class frequency is the target then.
    w = np.where(y == 1, 3.0, 1.0)
    slope_w, bias_w = _fit_platt(np.column_stack([1 - noise, noise]), y, w)
    expected = np.sum(w * y) / np.sum(w)
    np.testing.assert_allclose(_apply_platt(np.column_stack([1 - noise, noise]), slope_w, bias_w)[:, 1],
                               expected, atol=0.03)


def test_fit_platt_three_classes():
    from medmix_sklearn.fusion._classifier import _apply_platt, _fit_platt

    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 500)
    logits = rng.normal(size=(500, 3))
    logits[np.arange(500), y] += 1.0
    proba = np.exp(4 * logits)  # overconfident
    proba /= proba.sum(axis=1, keepdims=True)
    slope, bias = _fit_platt(proba, y, np.ones(500))
    assert 0 < slope < 1 and bias.shape == (3,) and bias[0] == 0.0
    scaled = _apply_platt(proba, slope, bias)
    np.testing.assert_allclose(scaled.sum(axis=1), 1.0)
    assert -np.mean(np.log(scaled[np.arange(500), y])) < -np.mean(np.log(proba[np.arange(500), y]))


def test_calibrate_teacher_hook_platt_scales_the_cross_fitted_soft_labels(data):
    from medmix_sklearn.fusion._classifier import _apply_platt, _fit_platt

    X, y = data
    ys, labeled, y_enc, weights = semi_encoded(y)

    class Scaled(MedMIXClassifier):
        def _calibrate_teacher(self):
            return True

    plain_clf = MedMIXClassifier(teacher="auto", unlabeled_value=-1, **FAST).fit(X, ys)
    scaled_clf = Scaled(teacher="auto", unlabeled_value=-1, **FAST).fit(X, ys)
    assert not plain_clf._calibrate_teacher()
    raw = plain_clf._cross_fit_teacher(_default_teacher(), X.to_numpy(), y_enc, weights, labeled)
    scaled = scaled_clf._cross_fit_teacher(_default_teacher(), X.to_numpy(), y_enc, weights, labeled)
    expected = _apply_platt(raw, *_fit_platt(raw[labeled], y_enc[labeled], weights[labeled]))
    np.testing.assert_allclose(scaled, expected, atol=1e-10)
    assert not np.allclose(scaled, raw, atol=1e-3)
    # Monotone per row in the teacher's probability of class 1: the teacher's ranking is kept.
    order = np.argsort(raw[:, 1])
    assert np.all(np.diff(scaled[order, 1]) >= -1e-9)
