"""Scores per availability pattern and per number of modalities present.

An overall AUROC can hide a model that fails whenever a modality is missing.
:func:`make_pattern_scorers` gives one scorer per subset (usable as
``cross_validate(scoring=...)``) and :func:`missingness_report` tabulates
AUROC and AUPRC per pattern and per count for a fitted model.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .._missing import availability_patterns, pattern_labels, resolve_modalities, subset_score

__all__ = ["PatternScorer", "make_pattern_scorers", "missingness_report"]

_ALIASES = {"auroc": "roc_auc", "auprc": "average_precision", "roc_auc": "roc_auc",
            "average_precision": "average_precision"}


def _check_metric(metric: str) -> str:
    if metric not in _ALIASES:
        raise ValueError(
            f"metric must be one of {sorted(_ALIASES)}. Got {metric!r} instead."
        )
    return _ALIASES[metric]


def _scores(estimator, X) -> np.ndarray:
    """Class scores, shape (n, n_classes) (binary: the positive column only kept later)."""
    if hasattr(estimator, "predict_proba"):
        return np.asarray(estimator.predict_proba(X))
    scores = np.asarray(estimator.decision_function(X))
    if scores.ndim == 1:
        scores = np.column_stack([-scores, scores])
    return scores


class _PredictionCache:
    """Remembers the last (estimator, X) -> scores, so a dict of scorers predicts once.

    ``cross_validate`` calls every scorer of the dict with the same fitted
    estimator and the same test fold object; identity (``is``) is checked on
    strongly held references, so a recycled ``id`` cannot give stale scores.
    """

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._value: np.ndarray | None = None

    def get(self, estimator, X) -> np.ndarray:
        if self._key is not None and self._key[0] is estimator and self._key[1] is X:
            return self._value
        value = _scores(estimator, X)
        self._key, self._value = (estimator, X), value
        return value

    def clear(self) -> None:
        self._key = self._value = None

    def __getstate__(self):  # a pickled copy (joblib worker) starts empty
        return {"_key": None, "_value": None}


class PatternScorer:
    """Score a classifier on the rows with a given availability subset.

    Parameters
    ----------
    metric : {"roc_auc", "average_precision"}
        Binary score, or the one-vs-rest macro average for multiclass.
    modalities : list of tuples, MultimodalExpertEmbedder, dict or None
        How the availability pattern is read from ``X``; see
        :func:`~medmix_sklearn.model_selection.availability_patterns`.
    n_present : int or None, default=None
        Keep the rows with exactly this many modalities present.
    pattern : str or None, default=None
        Keep the rows with exactly this pattern, named as ``"xray+labs"``
        (modality names joined by ``+`` in their order; ``"none"``).

    Notes
    -----
    Call as ``scorer(estimator, X, y)``. Returns NaN when the subset is empty
    or holds a single class, so ``cross_validate`` keeps going; average the
    folds with ``np.nanmean``.
    """

    def __init__(self, metric="roc_auc", modalities=None, *, n_present=None, pattern=None,
                 _cache=None):
        self.metric = _check_metric(metric)
        self.modalities = modalities
        self.n_present = n_present
        self.pattern = pattern
        self._cache = _cache if _cache is not None else _PredictionCache()

    def __repr__(self) -> str:
        what = (
            f"n_present={self.n_present}" if self.n_present is not None
            else f"pattern={self.pattern!r}" if self.pattern is not None else "all rows"
        )
        return f"PatternScorer({self.metric!r}, {what})"

    def _mask(self, X) -> np.ndarray:
        patterns = availability_patterns(X, self.modalities)
        mask = np.ones(len(patterns), dtype=bool)
        if self.n_present is not None:
            mask &= patterns.to_numpy().sum(axis=1) == self.n_present
        if self.pattern is not None:
            mask &= pattern_labels(patterns) == self.pattern
        return mask

    def __call__(self, estimator, X, y) -> float:
        y = np.asarray(y)
        mask = self._mask(X)
        if not mask.any():
            return float("nan")
        scores = self._cache.get(estimator, X)
        return subset_score(y[mask], scores[mask], estimator.classes_, self.metric)


def make_pattern_scorers(modalities=None, metric="roc_auc", *, counts=None, patterns=None,
                         include_overall=True):
    """Scorers per number of modalities present (and per pattern), for ``cross_validate``.

    Parameters
    ----------
    modalities : list of tuples, MultimodalExpertEmbedder, dict or None, default=None
        How the availability pattern is read from ``X``; see
        :func:`~medmix_sklearn.model_selection.availability_patterns`. Give
        the embedder (or its entries) when the scored estimator is a Pipeline
        fed the raw table; leave None for an embedded matrix with block-layout
        column names.
    metric : {"roc_auc", "average_precision"}, default="roc_auc"
        ``"auroc"`` and ``"auprc"`` are accepted as aliases. Multiclass
        problems use the one-vs-rest macro average.
    counts : iterable of int or None, default=None
        Numbers of present modalities to score. Default: ``1 .. n`` where
        ``n`` is the number of modalities in ``modalities``; required when
        ``modalities`` is None (the count is then unknown until ``X`` is seen).
    patterns : iterable of str or None, default=None
        Availability patterns to score as well, named as in
        :func:`~medmix_sklearn.model_selection.pattern_labels`
        (``"xray+labs"``).
    include_overall : bool, default=True
        Also score all rows under the key ``metric``.

    Returns
    -------
    scorers : dict of str to callable
        Keys ``"{metric}"``, ``"{metric}_n{k}"`` and ``"{metric}_{pattern}"``;
        each value is called as ``scorer(estimator, X, y)`` and returns NaN
        when its subset is empty or holds a single class. The scorers share a
        prediction cache, so each fold is predicted once.

    Examples
    --------
    >>> from sklearn.model_selection import cross_validate
    >>> scoring = make_pattern_scorers(counts=[1, 2])  # doctest: +SKIP
    >>> cross_validate(clf, X_embedded, y, scoring=scoring)  # doctest: +SKIP
    """
    metric = _check_metric(metric)
    if counts is None:
        kind, spec = resolve_modalities(modalities)
        if kind is None:
            raise ValueError(
                "make_pattern_scorers needs counts=... when modalities is None: the "
                "number of modalities is unknown until X is seen. Got counts=None."
            )
        counts = range(1, len(spec) + 1)
    cache = _PredictionCache()
    scorers = {}
    if include_overall:
        scorers[metric] = PatternScorer(metric, modalities, _cache=cache)
    for k in counts:
        scorers[f"{metric}_n{int(k)}"] = PatternScorer(
            metric, modalities, n_present=int(k), _cache=cache
        )
    for pattern in patterns or ():
        scorers[f"{metric}_{pattern}"] = PatternScorer(
            metric, modalities, pattern=str(pattern), _cache=cache
        )
    return scorers


def missingness_report(estimator, X, y, modalities=None, *,
                       metrics=("roc_auc", "average_precision")):
    """AUROC and AUPRC of a fitted classifier per availability pattern and per count.

    Parameters
    ----------
    estimator : fitted classifier
        Anything with ``predict_proba`` (or ``decision_function``) and
        ``classes_``: a Pipeline on the raw table, or a classifier on an
        embedded matrix.
    X : DataFrame or array-like of shape (n_samples, n_features)
        Held-out data, as the estimator takes it.
    y : array-like of shape (n_samples,)
        True labels.
    modalities : list of tuples, MultimodalExpertEmbedder, dict or None, default=None
        How the availability pattern is read from ``X``; see
        :func:`~medmix_sklearn.model_selection.availability_patterns`.
    metrics : tuple of str, default=("roc_auc", "average_precision")
        Columns to compute.

    Returns
    -------
    report : DataFrame
        Index: a MultiIndex ``(level, subset)`` with ``level`` in ``"all"``,
        ``"n_modalities"`` (subset: the count) and ``"pattern"`` (subset: the
        pattern name, ``"xray+labs"``). Columns: ``n`` (rows), ``prevalence``
        (fraction of the positive class ``classes_[1]`` for a binary problem;
        for multiclass, the fraction of the subset's most frequent class),
        ``n_classes`` (classes present in the subset), then one column per
        metric (NaN where undefined: a subset with a single class).
    """
    metrics = [_check_metric(m) for m in metrics]
    y = np.asarray(y)
    classes = np.asarray(estimator.classes_)
    scores = _scores(estimator, X)
    patterns = availability_patterns(X, modalities)
    names = pattern_labels(patterns)
    counts = patterns.to_numpy().sum(axis=1)

    subsets = [("all", "all", np.ones(len(y), dtype=bool))]
    for k in sorted(set(counts.tolist()), reverse=True):
        subsets.append(("n_modalities", str(k), counts == k))
    order = pd.Series(names).value_counts(sort=True)
    for name in order.index:
        subsets.append(("pattern", name, names == name))

    rows, index = [], []
    for level, label, mask in subsets:
        ys = y[mask]
        if len(classes) == 2:
            prevalence = float(np.mean(ys == classes[1]))
        else:
            prevalence = float(pd.Series(ys).value_counts(normalize=True).iloc[0])
        row = {"n": int(mask.sum()), "prevalence": prevalence,
               "n_classes": int(len(np.unique(ys)))}
        for metric in metrics:
            row[metric] = subset_score(ys, scores[mask], classes, metric)
        rows.append(row)
        index.append((level, label))
    return pd.DataFrame(rows, index=pd.MultiIndex.from_tuples(index, names=["level", "subset"]))


def missingness_dependence(X, y, modalities=None, *, min_rows=5):
    """Test whether the availability pattern tells something about the label.

    A chi-squared test of independence between the pattern of present
    modalities and the class, on the rows given (a training set). When the
    pattern depends on the label (sicker patients get more examinations) and
    will keep doing so where the model is used,
    ``MedMIXClassifier(pattern_prior=True)`` uses it; when modalities will go
    missing for other reasons, the pattern is better not trusted
    (docs/benchmarks/mnar_train.md measures both).

    Parameters
    ----------
    X : DataFrame or array-like of shape (n_samples, n_features)
        The embedded matrix (layout column names) or the raw table, as
        :func:`~medmix_sklearn.model_selection.availability_patterns` takes it.
    y : array-like of shape (n_samples,)
        Class labels.
    modalities : list of tuples, MultimodalExpertEmbedder, dict or None, default=None
        How the pattern is read from ``X``; see ``availability_patterns``.
    min_rows : int, default=5
        Patterns with fewer rows are pooled into one (``"other"``), so that
        rare patterns do not make the test's approximation invalid.

    Returns
    -------
    result : Bunch
        ``statistic`` (chi-squared), ``pvalue``, ``dof``, ``cramers_v`` (the
        strength of the dependence, 0 to 1), ``n_patterns`` (after pooling)
        and ``table`` (a DataFrame of row counts, patterns by class). With a
        single pattern, or a single class, there is nothing to test:
        ``statistic`` 0 and ``pvalue`` 1.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from medmix_sklearn.model_selection import missingness_dependence
    >>> y = np.array([0, 1] * 50)
    >>> X = pd.DataFrame({"xray__e__0": np.where(y == 1, 1.0, np.nan), "labs__age": 60.0})
    >>> result = missingness_dependence(X, y)
    >>> result.pvalue < 1e-10, round(result.cramers_v, 2)
    (True, 1.0)
    """
    from scipy.stats import chi2_contingency
    from sklearn.utils import Bunch

    y = np.asarray(y)
    if len(y) != len(X):
        raise ValueError(f"X has {len(X)} rows but y has {len(y)} labels.")
    if isinstance(min_rows, bool) or not isinstance(min_rows, (int, np.integer)) or min_rows < 1:
        raise ValueError(f"min_rows must be a positive integer. Got {min_rows!r} instead.")
    names = pd.Series(pattern_labels(availability_patterns(X, modalities)), name="pattern")
    sizes = names.value_counts()
    rare = sizes.index[sizes < min_rows]
    if len(rare):
        names = names.where(~names.isin(rare), "other")
    table = pd.crosstab(names, pd.Series(y, name="class"))
    n_patterns = int(table.shape[0])
    if n_patterns < 2 or table.shape[1] < 2:
        return Bunch(statistic=0.0, pvalue=1.0, dof=0, cramers_v=0.0, n_patterns=n_patterns, table=table)
    statistic, pvalue, dof, _ = chi2_contingency(table.to_numpy(), correction=False)
    cramers_v = float(np.sqrt(statistic / (len(y) * (min(table.shape) - 1))))
    return Bunch(statistic=float(statistic), pvalue=float(pvalue), dof=int(dof), cramers_v=cramers_v,
                 n_patterns=n_patterns, table=table)
