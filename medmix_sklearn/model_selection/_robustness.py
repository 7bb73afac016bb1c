"""Robustness to missing modalities as a tool: amputation, curves, calibration.

:class:`ModalityAmputer` blanks whole modalities (every column of every expert
of a modality set to NaN, the block layout's meaning of "absent") by a named
mechanism; :func:`robustness_curve` fits an estimator on each training fold as
it is and scores each test fold amputed at each probability;
:func:`plot_robustness_curves` draws the curves of several estimators;
:func:`expected_calibration_error` and :func:`ece_scorer` measure whether the
probabilities stay honest while modalities go missing.

The blanking itself is :func:`medmix_sklearn._missing.blank_modalities` (the
one home of missingness); a mechanism here only turns into the per-row,
per-modality probabilities that function draws from.
"""

from __future__ import annotations

import numbers
import warnings

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, clone, is_classifier
from sklearn.metrics import check_scoring
from sklearn.model_selection import check_cv
from sklearn.utils import check_random_state
from sklearn.utils._available_if import available_if
from sklearn.utils._param_validation import Interval, StrOptions, validate_params

from .._layout import blocks_from_mapping
from .._missing import blank_modalities, block_presence, modality_columns

__all__ = [
    "MECHANISMS",
    "ModalityAmputer",
    "ece_scorer",
    "expected_calibration_error",
    "plot_robustness_curves",
    "robustness_curve",
]

#: The amputation mechanisms of :class:`ModalityAmputer`.
MECHANISMS = ("mcar", "mar", "mnar", "block")


# --------------------------------------------------------------------------- #
# the blanking itself (numpy only)
# --------------------------------------------------------------------------- #
def _calibrated_probabilities(score: np.ndarray, p: float, strength: float) -> np.ndarray:
    """Per-row probabilities ``sigmoid(a + strength * z)`` whose mean is ``p``.

    ``z`` is ``score`` standardised (0 where it is constant); the intercept
    ``a`` is found by bisection, so a mechanism that depends on a score still
    blanks a share ``p`` of the rows on average.
    """
    if p <= 0.0:
        return np.zeros(len(score))
    if p >= 1.0:
        return np.ones(len(score))
    score = np.asarray(score, dtype=float)
    std = score.std()
    z = (score - score.mean()) / std if std > 0 else np.zeros_like(score)
    lo, hi = -50.0, 50.0
    for _ in range(80):
        mid = (lo + hi) / 2
        if np.mean(1.0 / (1.0 + np.exp(-(mid + strength * z)))) < p:
            lo = mid
        else:
            hi = mid
    return 1.0 / (1.0 + np.exp(-((lo + hi) / 2 + strength * z)))


# --------------------------------------------------------------------------- #
# ModalityAmputer
# --------------------------------------------------------------------------- #
def _modality_columns(X, blocks) -> dict[str, np.ndarray]:
    """``{modality: column indices}`` of the non-teacher modalities of ``X``."""
    if blocks is not None:
        groups: dict[str, list[int]] = {}
        for block in blocks_from_mapping(blocks, X.shape[1]):
            if not block.teacher:
                groups.setdefault(block.modality, []).extend(block.columns)
        return {name: np.asarray(sorted(cols), dtype=np.intp) for name, cols in groups.items()}
    if isinstance(X, pd.DataFrame):
        return modality_columns(X.columns)
    raise ValueError(
        "ModalityAmputer needs the block layout: pass a DataFrame whose columns follow it "
        "('{modality}__{expert}__{k}', as MultimodalExpertEmbedder writes them) or give "
        f"blocks={{modality: column indices}} for an array. Got a {type(X).__name__} and blocks=None."
    )


class ModalityAmputer(BaseEstimator):
    """Blank whole modalities (all their columns NaN) with probability ``p``.

    A tool for robustness studies on an embedded matrix: it removes
    modalities the way the block layout marks them absent, by a named
    mechanism, reproducibly.

    Parameters
    ----------
    p : float, default=0.5
        Probability (on average over rows) that each present modality of a
        row is blanked.
    mechanism : {"mcar", "mar", "mnar", "block"}, default="mcar"
        - ``"mcar"``: each present modality of each row independently, with
          probability ``p``.
        - ``"mar"``: the probability depends on an observed column,
          ``depends_on``, which is never blanked: ``sigmoid(a + strength *
          z)`` with ``z`` the standardised column and ``a`` set so that the
          mean is ``p``. Rows high in that column lose more.
        - ``"mnar"``: the probability depends on the label (``mnar_on=
          "label"``: rows of ``classes_[-1]``, or of higher label codes, lose
          more; ``y`` must be given) or on the modality's own content
          (``mnar_on="content"``: the mean of the modality's standardised
          columns), calibrated to mean ``p`` as for ``"mar"``.
        - ``"block"``: one modality, ``modality`` (default: one drawn at
          random), for every row with probability ``p`` (``p=1``: a site
          without that modality).
    modalities : list of str or None, default=None
        The modalities that may be blanked; None: all (teacher blocks never).
    depends_on : str, int or None, default=None
        The column of ``"mar"``: a column name (DataFrame) or index. None:
        the first column of the first modality that is present in every row
        (it is then never blanked).
    mnar_on : {"label", "content"}, default="label"
        What ``"mnar"`` depends on.
    strength : float, default=2.0
        Slope of the dependence of ``"mar"`` and ``"mnar"`` (on the logit
        scale, per standard deviation).
    modality : str or None, default=None
        The modality of ``"block"``.
    keep_one : bool, default=True
        Keep at least one present modality per row (one drawn for blanking is
        spared). False: a row may lose everything.
    blocks : dict or None, default=None
        ``{modality: column indices}`` (or ``{modality: {expert: indices}}``)
        for an array; a DataFrame's layout is read from its column names.
    random_state : int, RandomState instance or None, default=None
        Seeds the draws. With an int, every call blanks the same cells.

    Examples
    --------
    >>> import numpy as np
    >>> from medmix_sklearn.model_selection import ModalityAmputer
    >>> X = np.arange(12, dtype=float).reshape(4, 3)
    >>> amputer = ModalityAmputer(p=1.0, blocks={"a": [0, 1], "b": [2]}, random_state=0)
    >>> np.isnan(amputer.transform(X)).all(axis=1).any()  # one modality kept per row
    np.False_
    """

    _parameter_constraints: dict = {
        "p": [Interval(numbers.Real, 0, 1, closed="both")],
        "mechanism": [StrOptions(set(MECHANISMS))],
        "modalities": [list, tuple, None],
        "depends_on": [str, numbers.Integral, None],
        "mnar_on": [StrOptions({"label", "content"})],
        "strength": [Interval(numbers.Real, 0, None, closed="left")],
        "modality": [str, None],
        "keep_one": ["boolean"],
        "blocks": [dict, None],
        "random_state": ["random_state"],
    }

    def __init__(self, p=0.5, *, mechanism="mcar", modalities=None, depends_on=None, mnar_on="label",
                 strength=2.0, modality=None, keep_one=True, blocks=None, random_state=None):
        self.p = p
        self.mechanism = mechanism
        self.modalities = modalities
        self.depends_on = depends_on
        self.mnar_on = mnar_on
        self.strength = strength
        self.modality = modality
        self.keep_one = keep_one
        self.blocks = blocks
        self.random_state = random_state

    def fit(self, X=None, y=None):
        """Check the parameters; the amputer learns nothing. Returns self."""
        self._validate_params()
        return self

    def fit_transform(self, X, y=None):
        """:meth:`fit`, then :meth:`transform` (``y`` is used by ``"mnar"`` by label).

        Returns
        -------
        X_amputed : same type as X
        """
        return self.fit(X, y).transform(X, y)

    def transform(self, X, y=None):
        """Return a copy of ``X`` with the drawn modalities blanked.

        Parameters
        ----------
        X : DataFrame or ndarray of shape (n_samples, n_features)
            An embedded matrix: layout column names, or ``blocks=``.
        y : array-like of shape (n_samples,), default=None
            Labels; required by ``mechanism="mnar"`` with ``mnar_on="label"``.

        Returns
        -------
        X_amputed : same type as X
        """
        X_out, _ = self.transform_with_mask(X, y)
        return X_out

    def transform_with_mask(self, X, y=None):
        """:meth:`transform`, plus which modalities were blanked.

        Returns
        -------
        X_amputed : same type as X
        blanked : DataFrame of bool, shape (n_samples, n_modalities)
            True where a modality was present and is now blanked.
        """
        self._validate_params()
        is_frame = isinstance(X, pd.DataFrame)
        values = X.to_numpy(dtype=float, copy=True) if is_frame else np.array(X, dtype=float, copy=True)
        if values.ndim != 2:
            raise ValueError(f"X must be 2-dimensional. Got shape {values.shape} instead.")
        groups = _modality_columns(X, self.blocks)
        names = list(groups)
        presence = block_presence(values, groups.values())
        allowed = np.ones(len(names), dtype=bool)
        if self.modalities is not None:
            unknown = sorted(set(self.modalities) - set(names))
            if unknown:
                raise ValueError(f"modalities names {unknown}, which are not in X. Modalities are: {names}.")
            allowed = np.array([n in set(self.modalities) for n in names])
        rng = np.random.default_rng(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))

        scores, block = None, -1
        if self.mechanism == "mar":
            column = self._mar_column(X, groups, presence)
            observed = values[:, column]
            owner = next((j for j, cols in enumerate(groups.values()) if column in cols), None)
            if owner is not None:
                allowed[owner] = False  # the column it depends on stays observed
            filled = np.where(np.isnan(observed), np.nanmean(observed) if (~np.isnan(observed)).any() else 0.0,
                              observed)
            scores = np.repeat(filled[:, None], len(names), axis=1)
        elif self.mechanism == "mnar" and self.mnar_on == "label":
            if y is None:
                raise ValueError(
                    "mechanism='mnar' with mnar_on='label' needs y: call transform(X, y). "
                    "Or use mnar_on='content'."
                )
            _, codes = np.unique(np.asarray(y), return_inverse=True)
            if len(codes) != len(values):
                raise ValueError(f"y has {len(codes)} labels but X has {len(values)} rows.")
            scores = np.repeat(codes.astype(float)[:, None], len(names), axis=1)
        elif self.mechanism == "mnar":
            scores = np.column_stack([self._content(values[:, cols]) for cols in groups.values()])
        elif self.mechanism == "block":
            candidates = [j for j in range(len(names)) if allowed[j]]
            if self.modality is not None:
                if self.modality not in names:
                    raise ValueError(f"modality={self.modality!r} is not in X. Modalities are: {names}.")
                block = names.index(self.modality)
            elif candidates:
                block = int(rng.choice(candidates))
            allowed = np.arange(len(names)) == block
        prob = np.ones((len(values), len(names))) * float(self.p)
        if scores is not None:
            prob = np.column_stack([_calibrated_probabilities(scores[:, j], float(self.p), float(self.strength))
                                    for j in range(len(names))])
        prob = prob * allowed  # 0 for the modalities that may not be blanked
        out, drop = blank_modalities(values, groups, prob, rng, keep_one=self.keep_one, return_mask=True)
        blanked = pd.DataFrame(drop, columns=names, index=X.index if is_frame else None)
        if is_frame:
            frame = pd.DataFrame(out, columns=X.columns, index=X.index)
            if all(dtype.kind == "f" for dtype in X.dtypes):
                frame = frame.astype(X.dtypes.to_dict())
            return frame, blanked
        dtype = np.asarray(X).dtype
        return out.astype(dtype if dtype.kind == "f" else np.float64), blanked

    def _mar_column(self, X, groups, presence) -> int:
        if self.depends_on is None:
            always = [j for j in range(presence.shape[1]) if presence[:, j].all()]
            if not always:
                raise ValueError(
                    "mechanism='mar' needs an observed column to depend on, and no modality is "
                    "present in every row. Pass depends_on=<column name or index>."
                )
            return int(list(groups.values())[always[0]][0])
        if isinstance(self.depends_on, str):
            if not isinstance(X, pd.DataFrame) or self.depends_on not in X.columns:
                raise ValueError(
                    f"depends_on={self.depends_on!r} is not a column of X. Give a column name of a "
                    "DataFrame or an integer index."
                )
            return int(list(X.columns).index(self.depends_on))
        if not 0 <= self.depends_on < X.shape[1]:
            raise ValueError(f"depends_on={self.depends_on} is out of range for X with {X.shape[1]} columns.")
        return int(self.depends_on)

    @staticmethod
    def _content(block: np.ndarray) -> np.ndarray:
        """Mean of the block's standardised columns per row (0 where absent)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean, std = np.nanmean(block, axis=0), np.nanstd(block, axis=0)
            z = (block - np.nan_to_num(mean)) / np.where(np.nan_to_num(std) > 0, std, 1.0)
            out = np.nanmean(z, axis=1)
        return np.nan_to_num(out)


# --------------------------------------------------------------------------- #
# calibration
# --------------------------------------------------------------------------- #
def expected_calibration_error(y_true, y_prob, *, n_bins=10, classes=None) -> float:
    """Expected calibration error over equal-width probability bins.

    For two classes the binned quantity is the probability of the positive
    class (``classes[1]``) against the observed frequency; for more, the
    top-label confidence against the accuracy. The ECE is the mean absolute
    gap, weighted by the rows in each bin.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
    y_prob : array-like of shape (n_samples, n_classes) or (n_samples,)
        Class probabilities in the order of ``classes`` (a 1-d array: the
        positive-class probability of a binary problem).
    n_bins : int, default=10
    classes : array-like or None, default=None
        Class labels in the column order of ``y_prob``; default the sorted
        unique labels of ``y_true`` (``0 .. n_classes - 1`` when they do not
        match the width of ``y_prob``).

    Returns
    -------
    ece : float
        In [0, 1]; 0 is perfect calibration. NaN for no rows.
    """
    y_true = np.asarray(y_true)
    proba = np.asarray(y_prob, dtype=float)
    if proba.ndim == 1:
        proba = np.column_stack([1.0 - proba, proba])
    if len(y_true) == 0:
        return float("nan")
    if classes is None:
        classes = np.unique(y_true)
        if len(classes) != proba.shape[1]:
            classes = np.arange(proba.shape[1])
    classes = np.asarray(classes)
    if len(classes) != proba.shape[1]:
        raise ValueError(f"classes has {len(classes)} labels but y_prob has {proba.shape[1]} columns.")
    if len(classes) == 2:
        confidence, outcome = proba[:, 1], (y_true == classes[1]).astype(float)
    else:
        confidence = proba.max(axis=1)
        outcome = (classes[proba.argmax(axis=1)] == y_true).astype(float)
    edges = np.linspace(0.0, 1.0, int(n_bins) + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, int(n_bins) - 1)
    counts = np.bincount(index, minlength=int(n_bins))
    gap = np.abs(np.bincount(index, weights=confidence - outcome, minlength=int(n_bins)))
    return float(gap.sum() / counts.sum())


def ece_scorer(estimator, X, y) -> float:
    """Scorer of the expected calibration error: minus the ECE (greater is better).

    For ``cross_validate(scoring=...)`` and :func:`robustness_curve`; uses
    ``predict_proba`` and ``classes_`` (10 bins, as
    :func:`expected_calibration_error`).

    Returns
    -------
    score : float
        ``-expected_calibration_error(y, estimator.predict_proba(X))``.
    """
    return -expected_calibration_error(y, estimator.predict_proba(X), classes=estimator.classes_)


# --------------------------------------------------------------------------- #
# robustness_curve
# --------------------------------------------------------------------------- #
def _seed(random_state) -> int:
    return int(check_random_state(random_state).randint(np.iinfo(np.int32).max))


def _amputer_for(mechanism) -> ModalityAmputer:
    if isinstance(mechanism, ModalityAmputer):
        return mechanism
    if mechanism not in MECHANISMS:
        raise ValueError(f"mechanism must be one of {MECHANISMS} or a ModalityAmputer. Got {mechanism!r} instead.")
    return ModalityAmputer(mechanism=mechanism)


def _mechanism_name(mechanism) -> str:
    return mechanism.mechanism if isinstance(mechanism, ModalityAmputer) else str(mechanism)


def _take(X, idx):
    return X.iloc[idx] if isinstance(X, pd.DataFrame) else X[idx]


class _PredictOnce(ClassifierMixin, BaseEstimator):
    """A fitted classifier whose predictions are computed once per input object.

    Several scorers of one amputed test fold (AUROC, AUPRC, ECE) then share
    one ``predict_proba`` call. The input is held, and matched by identity.
    """

    def __init__(self, estimator):
        self.estimator = estimator

    @property
    def classes_(self):
        return self.estimator.classes_

    def _once(self, method: str, X):
        memo = self.__dict__.setdefault("_memo", {})
        if method in memo and memo[method][0] is X:
            return memo[method][1]
        value = getattr(self.estimator, method)(X)
        memo[method] = (X, value)
        return value

    @available_if(lambda self: hasattr(self.estimator, "predict_proba"))
    def predict_proba(self, X):
        return self._once("predict_proba", X)

    @available_if(lambda self: hasattr(self.estimator, "decision_function"))
    def decision_function(self, X):
        return self._once("decision_function", X)

    def predict(self, X):
        return self._once("predict", X)


def _draw_seed(*key) -> int:
    return int(np.random.SeedSequence(list(key)).generate_state(1)[0] % np.iinfo(np.int32).max)


def _fitted(estimator, X, y, params):
    model = clone(estimator).fit(X, y, **params)
    return _PredictOnce(model) if is_classifier(model) else model


def _fold(estimator, X, y, train, test, fold, scorers, probabilities, amputers, n_repeats, seed, params,
          amputate="test"):
    X_train, y_train = _take(X, train), y[train]
    plain = []  # the model fitted on the fold as it is, when a score needs it

    def plain_model():
        if not plain:
            plain.append(_fitted(estimator, X_train, y_train, params))
        return plain[0]

    X_test, y_test = _take(X, test), y[test]
    rows = []
    unamputed = None
    for m, (name, amputer) in enumerate(amputers.items()):
        for p in probabilities:
            for repeat in range(n_repeats):
                if p > 0:
                    amp = clone(amputer).set_params(
                        p=float(p), random_state=_draw_seed(seed, fold, m, repeat, round(p * 1e6)))
                    if amputate == "test":
                        scored = plain_model()
                    else:
                        # Its own stream: the test fold's draws stay those of amputate="test".
                        train_amp = clone(amputer).set_params(
                            p=float(p), random_state=_draw_seed(seed, fold, m, repeat, round(p * 1e6), 1))
                        scored = _fitted(estimator, train_amp.transform(X_train, y_train), y_train, params)
                    scores = {k: float(s(scored, amp.transform(X_test, y_test), y_test)) for k, s in scorers.items()}
                else:  # nothing blanked: every mechanism and repeat scores the same predictions
                    if unamputed is None:
                        unamputed = {k: float(s(plain_model(), X_test, y_test)) for k, s in scorers.items()}
                    scores = unamputed
                for metric, score in scores.items():
                    rows.append({"mechanism": name, "p": float(p), "repeat": repeat, "fold": fold, "metric": metric,
                                 "score": score})
    return rows


def robustness_curve(estimator, X, y, *, probabilities=(0, 0.25, 0.5, 0.75), mechanism="mcar", cv=5,
                     scoring="roc_auc", n_repeats=1, random_state=None, n_jobs=None, params=None,
                     amputate="test"):
    """Score an estimator on test folds with modalities blanked at each probability.

    The estimator is fitted once per training fold, on the fold as it is;
    each test fold is then amputed by :class:`ModalityAmputer` at every
    probability in ``probabilities`` (``n_repeats`` independent draws each)
    and scored. At ``p=0`` nothing is blanked, so those scores are exactly
    :func:`~sklearn.model_selection.cross_val_score`'s on the same folds.
    With ``amputate="train_and_test"`` the training fold is amputed too, by
    the same mechanism and probability, and a model is fitted per draw.

    Parameters
    ----------
    estimator : estimator
        Cloned and fitted per fold; it must accept the NaN blocks.
    X : DataFrame or ndarray of shape (n_samples, n_features)
        An embedded matrix with layout column names; an ndarray needs an
        amputer with ``blocks=`` as ``mechanism``.
    y : array-like of shape (n_samples,)
    probabilities : sequence of float, default=(0, 0.25, 0.5, 0.75)
    mechanism : {"mcar", "mar", "mnar", "block"}, ModalityAmputer or list, default="mcar"
        A name (the amputer's other parameters at their defaults) or a
        configured :class:`ModalityAmputer`, whose ``p`` and
        ``random_state`` are set per draw. A list of them scores every
        mechanism on the same fitted fold models.
    cv : int, cross-validation generator or iterable, default=5
        As for ``cross_val_score`` (an int: stratified folds for a classifier).
    scoring : str, callable, list or dict, default="roc_auc"
        One scorer, or several (a list of names or a dict ``{name: scorer}``):
        the frame then has a ``metric`` column. :func:`ece_scorer` gives
        minus the ECE.
    n_repeats : int, default=1
        Independent amputations per fold and probability (the fitted fold
        models are reused).
    random_state : int, RandomState instance or None, default=None
        Seeds the amputations.
    n_jobs : int or None, default=None
        Folds fitted in parallel (joblib).
    params : dict or None, default=None
        Passed to ``fit``.
    amputate : {"test", "train_and_test"}, default="test"
        ``"test"``: modalities go missing at test time only (a shift: the
        model never saw the mechanism). ``"train_and_test"``: the training
        fold is amputed as well (an independent draw), as when the mechanism
        also shaped the data the model learns from; then a label-dependent
        mechanism (``"mnar"``) is something the model can learn, and one fit
        per fold, mechanism, probability above 0 and repeat is made. The test
        folds are amputed identically in both modes.

    Returns
    -------
    scores : DataFrame
        One row per (p, repeat, fold): columns ``mechanism, p, repeat, fold,
        score`` (and ``metric`` before ``score`` with several scorers).

    Examples
    --------
    >>> from medmix_sklearn.model_selection import robustness_curve  # doctest: +SKIP
    >>> curve = robustness_curve(MedMIXClassifier(), X_embedded, y)  # doctest: +SKIP
    >>> curve.groupby("p")["score"].agg(["mean", "std"])  # doctest: +SKIP
    """
    from joblib import Parallel, delayed

    y = np.asarray(y)
    probabilities = [float(p) for p in probabilities]
    if any(not 0.0 <= p <= 1.0 for p in probabilities):
        raise ValueError(f"probabilities must lie in [0, 1]. Got {probabilities!r} instead.")
    if not isinstance(n_repeats, numbers.Integral) or n_repeats < 1:
        raise ValueError(f"n_repeats must be an integer >= 1. Got {n_repeats!r} instead.")
    if amputate not in ("test", "train_and_test"):
        raise ValueError(f"amputate must be 'test' or 'train_and_test'. Got {amputate!r} instead.")
    mechanisms = list(mechanism) if isinstance(mechanism, (list, tuple)) else [mechanism]
    if not mechanisms:
        raise ValueError("mechanism names no mechanism.")
    amputers = {_mechanism_name(m): _amputer_for(m) for m in mechanisms}
    single = isinstance(scoring, str) or callable(scoring) or scoring is None
    if single:
        scorers = {"score": check_scoring(estimator, scoring)}
    elif isinstance(scoring, dict):
        scorers = {str(k): check_scoring(estimator, v) for k, v in scoring.items()}
    else:
        scorers = {str(k): check_scoring(estimator, k) for k in scoring}
    splitter = check_cv(cv, y, classifier=is_classifier(estimator))
    seed = _seed(random_state)
    folds = list(splitter.split(X, y))
    results = Parallel(n_jobs=n_jobs)(
        delayed(_fold)(estimator, X, y, train, test, k, scorers, probabilities, amputers, int(n_repeats), seed,
                       params or {}, amputate)
        for k, (train, test) in enumerate(folds)
    )
    frame = pd.DataFrame([row for rows in results for row in rows])
    order = {name: i for i, name in enumerate(amputers)}
    frame = frame.sort_values(["mechanism", "p", "repeat", "fold"], key=lambda c: c.map(order) if c.name ==
                              "mechanism" else c, kind="stable").reset_index(drop=True)
    if single:
        frame = frame.drop(columns="metric")
        return frame[["mechanism", "p", "repeat", "fold", "score"]]
    return frame[["mechanism", "p", "repeat", "fold", "metric", "score"]]


@validate_params({"curves": [dict], "ax": "no_validation", "metric": [str, None]},
                 prefer_skip_nested_validation=True)
def plot_robustness_curves(curves, *, ax=None, metric=None):
    """Draw mean score against p, with a ± one-std band, for several estimators.

    Parameters
    ----------
    curves : dict of str to DataFrame
        ``{label: robustness_curve(...) output}``.
    ax : matplotlib Axes or None, default=None
        Where to draw; a new figure when None.
    metric : str or None, default=None
        With frames that have a ``metric`` column: the one to draw.

    Returns
    -------
    ax : matplotlib Axes
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, frame in curves.items():
        if "metric" in frame.columns:
            if metric is None:
                raise ValueError("The curves have several metrics: pass metric=<name>.")
            frame = frame[frame["metric"] == metric]
        stats = frame.groupby("p")["score"].agg(["mean", "std"]).fillna(0.0)
        x = stats.index.to_numpy(dtype=float)
        (line,) = ax.plot(x, stats["mean"], marker="o", label=str(label))
        ax.fill_between(x, stats["mean"] - stats["std"], stats["mean"] + stats["std"], color=line.get_color(),
                        alpha=0.15, linewidth=0)
    mechanisms = sorted({str(m) for f in curves.values() for m in f["mechanism"].unique()})
    ax.set_xlabel(f"p (probability a modality is blanked; {', '.join(mechanisms)})")
    ax.set_ylabel(metric or "score")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return ax
