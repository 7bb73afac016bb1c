"""Cross-validation splitters that stratify on the modality availability pattern.

A model can score well on the rows where every modality is present and badly
on the rows that matter (the ones where a modality is missing). A plain
``StratifiedKFold`` may put all rows of a rare availability pattern into one
fold; the splitters here stratify on the label and the availability pattern
jointly, so every fold sees every (frequent) pattern in its usual proportion.
"""

from __future__ import annotations

import numbers
import os
from collections import Counter

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from sklearn.utils.validation import column_or_1d

from .._layout import TEACHER, parse_feature_names

__all__ = [
    "MissingnessStratifiedGroupKFold",
    "MissingnessStratifiedKFold",
    "availability_patterns",
    "pattern_labels",
]

_OTHER = "other"


# --------------------------------------------------------------------------- #
# availability patterns
# --------------------------------------------------------------------------- #
def _item_missing(values: pd.Series) -> np.ndarray:
    """Missing mask of an image/text column: None, NaN, blank text or empty path."""

    def missing(value) -> bool:
        if value is None:
            return True
        if isinstance(value, str):
            return not value.strip()
        if isinstance(value, bytes):
            return len(value) == 0
        if isinstance(value, os.PathLike):
            return not os.fspath(value).strip()
        try:
            return bool(pd.isna(value))
        except (TypeError, ValueError):  # arrays, images held in memory, ...
            return False

    return np.fromiter((missing(v) for v in values), dtype=bool, count=len(values))


def _resolve_modalities(modalities):
    """Return ``("entries", list)`` for embedder-style entries, ``("mapping", dict)``."""
    if modalities is None:
        return None, None
    if hasattr(modalities, "modalities") and not isinstance(modalities, (list, tuple, dict)):
        # A MultimodalExpertEmbedder (or anything exposing its entries).
        modalities = modalities.modalities
    if isinstance(modalities, dict):
        return "mapping", modalities
    if isinstance(modalities, (list, tuple)):
        entries = []
        for i, entry in enumerate(modalities):
            if not isinstance(entry, (list, tuple)) or len(entry) != 3:
                raise ValueError(
                    f"modalities[{i}] must be a (name, experts_or_transformer, columns) "
                    f"tuple, as given to MultimodalExpertEmbedder. Got {entry!r} instead."
                )
            if entry[0] == TEACHER:
                continue  # training-only: never part of the availability pattern
            entries.append(entry)
        return "entries", entries
    raise TypeError(
        "modalities must be None, a list of (name, experts_or_transformer, columns) "
        "entries, a MultimodalExpertEmbedder, or a mapping {modality: columns}. "
        f"Got {type(modalities).__name__} instead."
    )


def _column_positions(X, columns, *, where: str) -> list[int]:
    """Positions of ``columns`` (labels, integer positions or a callable) in ``X``."""
    if callable(columns):
        columns = columns(X)
    if isinstance(columns, (str, numbers.Integral)):
        columns = [columns]
    columns = list(columns)
    names = list(X.columns) if isinstance(X, pd.DataFrame) else None
    positions = []
    n_features = X.shape[1]
    for col in columns:
        if names is not None and not isinstance(col, numbers.Integral):
            if col not in names:
                shown = names if len(names) <= 20 else [*names[:20], "..."]
                raise ValueError(
                    f"{where} names column {col!r}, which is not in X. Columns are: "
                    f"{shown}. Pass the raw DataFrame the embedder reads, or "
                    "modalities=None for an embedded matrix."
                )
            positions.append(names.index(col))
        elif isinstance(col, numbers.Integral) and 0 <= col < n_features:
            positions.append(int(col))
        else:
            raise ValueError(
                f"{where} names column {col!r}, but X is an array with {n_features} "
                "columns: use integer positions, or pass a DataFrame."
            )
    return positions


def _all_nan(block) -> np.ndarray:
    frame = pd.DataFrame(block) if not isinstance(block, pd.DataFrame) else block
    return frame.isna().to_numpy().all(axis=1)


def availability_patterns(X, modalities=None) -> pd.DataFrame:
    """Which modalities are present, row by row.

    Parameters
    ----------
    X : DataFrame or array-like of shape (n_samples, n_features)
        Either the raw table the embedder reads (with ``modalities`` given as
        embedder entries) or an embedded matrix (block-layout columns, or a
        numpy array with ``modalities`` given as a mapping).
    modalities : list of tuples, MultimodalExpertEmbedder, dict or None, default=None
        How to read the pattern:

        - a list of ``(name, experts_or_transformer, columns)`` entries, as
          given to :class:`~medmix_sklearn.MultimodalExpertEmbedder`, or the
          embedder itself (its ``modalities`` are read, its teachers ignored):
          ``X`` is the raw table. An entry with a single column (image or
          text) is missing when the value is None, NaN, blank text or an empty
          path; an entry with a list of columns (tabular) is missing when all
          of them are NaN.
        - a mapping ``{modality: columns}`` (labels or integer positions, as
          the classifier's ``blocks``): a modality is missing when all its
          columns are NaN.
        - None: the layout is read from the column names with
          :func:`~medmix_sklearn._layout.parse_feature_names` (a modality is
          missing when all columns of all its experts are NaN; teacher blocks,
          which are NaN outside ``fit_transform``, are ignored). A numpy array
          has no names: each column is then a modality of its own (as a
          DataFrame whose names contain no ``__``); pass a mapping instead to
          group the columns of an embedded numpy matrix.

    Returns
    -------
    patterns : DataFrame of bool, shape (n_samples, n_modalities)
        ``True`` where the modality is present. Index is ``X.index`` for a
        DataFrame; columns are the modality names in their order.
    """
    kind, spec = _resolve_modalities(modalities)
    is_frame = isinstance(X, pd.DataFrame)
    if not is_frame:
        X = np.asarray(X, dtype=object) if not hasattr(X, "shape") else X
        if X.ndim != 2:
            raise ValueError(f"X must be 2-dimensional. Got an array of shape {X.shape} instead.")
    index = X.index if is_frame else pd.RangeIndex(X.shape[0])
    frame = X if is_frame else pd.DataFrame(X)

    present: dict[str, np.ndarray] = {}
    if kind == "entries":
        if not spec:
            raise ValueError("modalities names no (non-teacher) modality.")
        for i, (name, _, columns) in enumerate(spec):
            where = f"modalities[{i}] ({name!r})"
            if isinstance(columns, (str, numbers.Integral)):
                (pos,) = _column_positions(X, columns, where=where)
                present[name] = ~_item_missing(frame.iloc[:, pos])
            else:
                pos = _column_positions(X, columns, where=where)
                present[name] = ~_all_nan(frame.iloc[:, pos])
    elif kind == "mapping":
        for name, columns in spec.items():
            pos = _column_positions(X, columns, where=f"modalities[{name!r}]")
            present[str(name)] = ~_all_nan(frame.iloc[:, pos])
    else:
        names = list(X.columns) if is_frame else [f"x{i}" for i in range(X.shape[1])]
        groups: dict[str, list[int]] = {}
        for block in parse_feature_names(names):
            if not block.teacher:
                groups.setdefault(block.modality, []).extend(block.columns)
        for name, pos in groups.items():
            present[name] = ~_all_nan(frame.iloc[:, sorted(pos)])
    return pd.DataFrame(present, index=index, dtype=bool)


def pattern_labels(patterns: pd.DataFrame) -> np.ndarray:
    """One string per row naming the modalities present: ``"xray+labs"``, ``"none"``."""
    names = np.asarray([str(c) for c in patterns.columns], dtype=object)
    values = patterns.to_numpy(dtype=bool)
    return np.array(["+".join(names[row]) or "none" for row in values], dtype=object)


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
