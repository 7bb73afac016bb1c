"""Cross-validation splitters that stratify on the modality availability pattern.

A model can score well on the rows where every modality is present and badly
on the rows that matter (the ones where a modality is missing). A plain
``StratifiedKFold`` may put all rows of a rare availability pattern into one
fold; the splitters here stratify on the label and the availability pattern
jointly, so every fold sees every (frequent) pattern in its usual proportion.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from sklearn.utils.validation import column_or_1d

from .._missing import availability_patterns, pattern_labels

__all__ = ["MissingnessStratifiedGroupKFold", "MissingnessStratifiedKFold"]

_OTHER = "other"


# --------------------------------------------------------------------------- #
# strata
# --------------------------------------------------------------------------- #
def _strata(
    labels: np.ndarray | None,
    patterns: np.ndarray,
    n_splits: int,
    groups: np.ndarray | None = None,
) -> np.ndarray:
    """Joint label x pattern strata, with strata too small for the folds merged.

    A stratum is too small when it has fewer than ``n_splits`` members (rows,
    or distinct groups when ``groups`` is given). Too-small strata of a label
    are pooled into that label's ``other`` stratum; if that pool is itself
    too small it joins the label's largest stratum, so the label ratio is
    still preserved (label-only fallback).
    """
    n = len(patterns)
    labels = np.zeros(n, dtype=object) if labels is None else np.asarray(labels, dtype=object)
    pats = np.asarray(patterns, dtype=object).copy()

    def sizes(keys: list[tuple]) -> Counter:
        if groups is None:
            return Counter(keys)
        return Counter(k for k, _ in set(zip(keys, groups.tolist())))

    keys = list(zip(labels.tolist(), pats.tolist()))
    count = sizes(keys)
    pats = np.array(
        [p if count[k] >= n_splits else _OTHER for k, p in zip(keys, pats)], dtype=object
    )

    keys = list(zip(labels.tolist(), pats.tolist()))
    count = sizes(keys)
    for label in set(labels.tolist()):
        other = (label, _OTHER)
        if other not in count or count[other] >= n_splits:
            continue
        rivals = [(c, k) for k, c in count.items() if k[0] == label and k != other]
        if rivals:
            target = max(rivals, key=lambda t: (t[0], str(t[1][1])))[1]
            pats[(labels == label) & (pats == _OTHER)] = target[1]
    codes = pd.factorize(pd.Series([f"{lab!r}|{p}" for lab, p in zip(labels, pats)]))[0]
    return codes


class _MissingnessStratifiedMixin:
    """Shared code: the ``modalities`` parameter; turn (X, y) into joint strata codes."""

    def __init__(self, n_splits=5, *, shuffle=False, random_state=None, modalities=None):
        super().__init__(n_splits=n_splits, shuffle=shuffle, random_state=random_state)
        self.modalities = modalities

    def _patterns(self, X) -> np.ndarray:
        return pattern_labels(availability_patterns(X, self.modalities))

    def _labels(self, y):
        if y is None:
            return None
        y = column_or_1d(y, warn=True)
        return y


class MissingnessStratifiedKFold(_MissingnessStratifiedMixin, StratifiedKFold):
    """Stratified K-fold on the label and the modality availability pattern jointly.

    Each fold keeps the label ratio and the proportion of every availability
    pattern (which modalities are present) of the whole data set, so no fold
    is scored only on complete rows. Strata (label x pattern) with fewer than
    ``n_splits`` rows are pooled per label into an ``other`` stratum; if that
    pool is still too small it joins the label's largest stratum.

    Parameters
    ----------
    n_splits : int, default=5
        Number of folds. At least 2.
    shuffle : bool, default=False
        Whether to shuffle each stratum's rows before splitting.
    random_state : int, RandomState instance or None, default=None
        Seeds the shuffling when ``shuffle=True``; must be None otherwise.
    modalities : list of tuples, MultimodalExpertEmbedder, dict or None, default=None
        How the availability pattern is read from ``X``; see
        :func:`availability_patterns`. Give the embedder (or its entries)
        when ``X`` is the raw table of a Pipeline; leave None when ``X`` is
        an embedded matrix with block-layout column names.

    See Also
    --------
    MissingnessStratifiedGroupKFold : the same, keeping each group (patient)
        in one fold.
    availability_patterns : the pattern this splitter stratifies on.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from medmix_sklearn.model_selection import MissingnessStratifiedKFold
    >>> X = pd.DataFrame({"img__e__0": [1.0, np.nan] * 10, "lab__age": [1.0] * 20})
    >>> y = np.array([0, 0, 1, 1] * 5)
    >>> cv = MissingnessStratifiedKFold(n_splits=5)
    >>> [int(np.isnan(X.iloc[test, 0]).sum()) for _, test in cv.split(X, y)]
    [2, 2, 2, 2, 2]
    """

    def split(self, X, y=None, groups=None):
        """Generate indices to split data into training and test set.

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_samples, n_features)
            Raw table (with ``modalities`` given) or embedded matrix.
        y : array-like of shape (n_samples,), default=None
            Class labels. None stratifies on the pattern alone.
        groups : object
            Ignored; present for API compatibility.

        Yields
        ------
        train : ndarray
            Training set indices for that split.
        test : ndarray
            Test set indices for that split.
        """
        strata = _strata(self._labels(y), self._patterns(X), self.n_splits)
        return super().split(X, strata, groups)


class MissingnessStratifiedGroupKFold(_MissingnessStratifiedMixin, StratifiedGroupKFold):
    """Stratified group K-fold on the label and the availability pattern jointly.

    Like :class:`MissingnessStratifiedKFold`, but no group (a patient with
    several studies) is ever in two folds: scikit-learn's
    :class:`~sklearn.model_selection.StratifiedGroupKFold` runs on the joint
    label x pattern strata. A stratum is too small, and pooled, when it spans
    fewer than ``n_splits`` groups.

    Parameters
    ----------
    n_splits : int, default=5
        Number of folds. At least 2.
    shuffle : bool, default=False
        Whether to shuffle the groups before assigning them to folds.
    random_state : int, RandomState instance or None, default=None
        Seeds the shuffling when ``shuffle=True``; must be None otherwise.
    modalities : list of tuples, MultimodalExpertEmbedder, dict or None, default=None
        How the availability pattern is read from ``X``; see
        :func:`availability_patterns`.

    See Also
    --------
    MissingnessStratifiedKFold : the ungrouped splitter.
    """

    def split(self, X, y=None, groups=None):
        """Generate indices to split data into training and test set.

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_samples, n_features)
            Raw table (with ``modalities`` given) or embedded matrix.
        y : array-like of shape (n_samples,), default=None
            Class labels. None stratifies on the pattern alone.
        groups : array-like of shape (n_samples,)
            Group labels (patient ids); each group lands in exactly one fold.

        Yields
        ------
        train : ndarray
            Training set indices for that split.
        test : ndarray
            Test set indices for that split.
        """
        if groups is None:
            raise ValueError(
                "MissingnessStratifiedGroupKFold needs groups (e.g. patient ids): "
                "pass groups=... to split() or cross_validate(). Got groups=None."
            )
        groups_arr = column_or_1d(groups)
        strata = _strata(self._labels(y), self._patterns(X), self.n_splits, groups_arr)
        return super().split(X, strata, groups)
