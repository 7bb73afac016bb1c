"""Missingness in one place: which cells, blocks and modalities are absent.

Every other module (the embedder, the classifier, the splitters, the scorers,
the report, the CLI and the benchmarks) imports these functions, so they all
count the same rows as missing.

The missing-cell rule
---------------------
A cell of an image, text or tabular column means "absent" when it is

- ``None``;
- a scalar that pandas counts as missing: ``float("nan")``, ``np.nan``,
  ``pd.NA``, ``pd.NaT``, ``np.datetime64("NaT")``, ``np.timedelta64("NaT")``;
- a ``str``, ``bytes`` or path whose text is empty or whitespace only
  (``""``, ``"  "``, ``b"  "``, ``Path(" ")``).

Anything else is present, including ``0``, ``False``, ``"nan"`` (a word) and
arrays or images held in memory. An image or text modality is absent for a
row when its one cell is missing; a tabular modality when all its cells are;
a block of an embedded matrix (the layout of :mod:`medmix_sklearn._layout`)
when all its columns are NaN.

Nothing here imports torch or the estimators; only numpy, pandas and, for
:func:`subset_score`, ``sklearn.metrics``.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from ._layout import TEACHER, parse_feature_names

__all__ = [
    "availability_patterns",
    "blank_modalities",
    "block_presence",
    "is_missing",
    "missing_cells",
    "missing_mask",
    "modality_columns",
    "pattern_labels",
    "resolve_modalities",
    "subset_score",
    "teacher_columns",
]


# --------------------------------------------------------------------------- #
# cells
# --------------------------------------------------------------------------- #
def is_missing(value: Any) -> bool:
    """Whether one cell means "absent" (see the module docstring for the rule).

    Parameters
    ----------
    value : object
        One cell of a DataFrame column.

    Returns
    -------
    missing : bool

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> [is_missing(v) for v in (None, np.nan, pd.NaT, "", " ", b"  ", "x", 0)]
    [True, True, True, True, True, True, False, False]
    """
    if value is None:
        return True
    if isinstance(value, (str, bytes)):
        return not value.strip()
    if isinstance(value, os.PathLike):
        return not os.fspath(value).strip()
    if isinstance(value, (np.ndarray, list, tuple, dict, set)):
        return False  # an array or image held in memory, even an empty one
    try:
        missing = pd.isna(value)
    except (TypeError, ValueError):
        return False
    # pd.isna of an array-like (a PIL image, a tensor) is an array: present.
    return bool(missing) if np.ndim(missing) == 0 else False


def missing_mask(values) -> np.ndarray:
    """Elementwise :func:`is_missing` of a Series, DataFrame or array.

    Numeric and datetime columns take the vectorised ``pd.isna`` path (the
    same answer); object columns are checked cell by cell.

    Parameters
    ----------
    values : Series, DataFrame or array-like of shape (n_samples,) or (n_samples, n_columns)

    Returns
    -------
    mask : ndarray of bool, same shape as ``values``
    """
    if isinstance(values, pd.DataFrame):
        if values.shape[1] == 0:
            return np.zeros(values.shape, dtype=bool)
        return np.column_stack([missing_mask(values.iloc[:, j]) for j in range(values.shape[1])])
    if not isinstance(values, pd.Series):
        if isinstance(values, np.ndarray) and values.ndim == 2:
            return missing_mask(pd.DataFrame(values))
        values = pd.Series(list(values) if not isinstance(values, np.ndarray) else values,
                           dtype=object if not isinstance(values, np.ndarray) else None)
    if values.dtype != object and not isinstance(values.dtype, pd.StringDtype):
        return values.isna().to_numpy(dtype=bool)
    # tolist() first: iterating an Arrow-backed string column cell by cell is slow.
    return missing_cells(values.tolist())


def missing_cells(cells: list) -> np.ndarray:
    """:func:`is_missing` of each cell of a list, as a bool array.

    Parameters
    ----------
    cells : list

    Returns
    -------
    mask : ndarray of bool, shape (len(cells),)
    """
    # A plain str (the common cell of a text or path column) is tested inline.
    return np.fromiter(
        (not v.strip() if v.__class__ is str else is_missing(v) for v in cells),
        dtype=bool,
        count=len(cells),
    )


# --------------------------------------------------------------------------- #
# blocks and modalities of an embedded matrix
# --------------------------------------------------------------------------- #
def block_presence(X, groups: Iterable) -> np.ndarray:
    """Which column groups are present, row by row.

    A group (a block, or all the columns of a modality) is present in a row
    when at least one of its cells is not missing: for a float matrix, not NaN.

    Parameters
    ----------
    X : ndarray or DataFrame of shape (n_samples, n_features)
    groups : iterable of sequences of int
        Column positions of each group.

    Returns
    -------
    present : ndarray of bool, shape (n_samples, n_groups)
    """
    groups = [np.asarray(cols, dtype=np.intp).ravel() for cols in groups]
    n = X.shape[0]
    if not groups:
        return np.zeros((n, 0), dtype=bool)
    array = X.to_numpy() if isinstance(X, pd.DataFrame) else np.asarray(X)
    if array.dtype.kind == "f":
        missing = np.isnan(array)
    else:
        missing = missing_mask(X if isinstance(X, pd.DataFrame) else array)
    return np.stack([~missing[:, cols].all(axis=1) for cols in groups], axis=1)


def modality_columns(feature_names) -> dict[str, np.ndarray]:
    """``{modality: column positions}`` read from block-layout column names.

    Teacher blocks (``teacher__...``) are left out: they are training-only and
    never part of what is present at prediction time.

    Parameters
    ----------
    feature_names : array-like of str
        Column names, as ``get_feature_names_out()`` or ``X.columns``.

    Returns
    -------
    groups : dict of str to ndarray of int
        Sorted column positions per modality, modalities in order of first
        appearance.
    """
    groups: dict[str, list[int]] = {}
    for block in parse_feature_names([str(n) for n in feature_names]):
        if not block.teacher:
            groups.setdefault(block.modality, []).extend(block.columns)
    return {m: np.asarray(sorted(cols), dtype=np.intp) for m, cols in groups.items()}


def teacher_columns(feature_names) -> np.ndarray:
    """Sorted positions of the teacher (``teacher__...``) columns; empty when none."""
    cols = [c for b in parse_feature_names([str(n) for n in feature_names]) if b.teacher
            for c in b.columns]
    return np.asarray(sorted(cols), dtype=np.intp)


# --------------------------------------------------------------------------- #
# availability patterns
# --------------------------------------------------------------------------- #
def resolve_modalities(modalities):
    """Classify the ``modalities`` argument of :func:`availability_patterns`.

    Returns
    -------
    kind : {"entries", "mapping", None}
    spec : list of entries, dict or None
        Embedder entries without teachers, or the mapping as given.
    """
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
          ``X`` is the raw table. A modality is missing when all its cells
          are missing by the rule of :func:`is_missing` (None, NaN, NaT,
          ``pd.NA``, empty or whitespace-only text, bytes or path), the rule
          the embedder applies.
        - a mapping ``{modality: columns}`` (labels or integer positions, as
          the classifier's ``blocks``): a modality is missing when all its
          cells are missing.
        - None: the layout is read from the column names with
          :func:`modality_columns` (a modality is missing when all columns of
          all its experts are NaN; teacher blocks, which are NaN outside
          ``fit_transform``, are ignored). A numpy array has no names: each
          column is then a modality of its own (as a DataFrame whose names
          contain no ``__``); pass a mapping instead to group the columns of
          an embedded numpy matrix.

    Returns
    -------
    patterns : DataFrame of bool, shape (n_samples, n_modalities)
        ``True`` where the modality is present. Index is ``X.index`` for a
        DataFrame; columns are the modality names in their order.
    """
    kind, spec = resolve_modalities(modalities)
    is_frame = isinstance(X, pd.DataFrame)
    if not is_frame:
        X = np.asarray(X, dtype=object) if not hasattr(X, "shape") else X
        if X.ndim != 2:
            raise ValueError(f"X must be 2-dimensional. Got an array of shape {X.shape} instead.")
    index = X.index if is_frame else pd.RangeIndex(X.shape[0])

    groups: dict[str, list[int]] = {}
    if kind == "entries":
        if not spec:
            raise ValueError("modalities names no (non-teacher) modality.")
        for i, (name, _, columns) in enumerate(spec):
            groups[name] = _column_positions(X, columns, where=f"modalities[{i}] ({name!r})")
    elif kind == "mapping":
        for name, columns in spec.items():
            groups[str(name)] = _column_positions(X, columns, where=f"modalities[{name!r}]")
    else:
        names = list(X.columns) if is_frame else [f"x{i}" for i in range(X.shape[1])]
        groups = {m: cols.tolist() for m, cols in modality_columns(names).items()}
    used = sorted({c for cols in groups.values() for c in cols})
    # Check only the columns the modalities use, cell by cell where needed.
    sub = X.iloc[:, used] if is_frame else np.asarray(X)[:, used]
    where = {c: k for k, c in enumerate(used)}
    present = block_presence(sub, ([where[c] for c in cols] for cols in groups.values()))
    return pd.DataFrame(present, index=index, columns=list(groups), dtype=bool)


def pattern_labels(patterns: pd.DataFrame) -> np.ndarray:
    """One string per row naming the modalities present: ``"xray+labs"``, ``"none"``.

    Parameters
    ----------
    patterns : DataFrame of bool
        As returned by :func:`availability_patterns`.

    Returns
    -------
    labels : ndarray of str objects, shape (n_samples,)
    """
    names = np.asarray([str(c) for c in patterns.columns], dtype=object)
    values = patterns.to_numpy(dtype=bool)
    return np.array(["+".join(names[row]) or "none" for row in values], dtype=object)


# --------------------------------------------------------------------------- #
# blanking modalities for robustness
# --------------------------------------------------------------------------- #
def _generator(random_state) -> np.random.Generator:
    if isinstance(random_state, np.random.Generator):
        return random_state
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(random_state.randint(np.iinfo(np.int32).max))
    if random_state is None or isinstance(random_state, numbers.Integral):
        return np.random.default_rng(random_state)
    raise TypeError(
        "random_state must be None, an int, a numpy Generator or a RandomState. "
        f"Got {type(random_state).__name__} instead."
    )


def blank_modalities(X, groups=None, rate=0.5, random_state=None, *, keep_one=True, return_mask=False):
    """A copy of ``X`` with whole modalities blanked (set to NaN) at random.

    Each modality present in a row is blanked, in all of its columns,
    independently with probability ``rate``, on top of what is missing
    already. This is how robustness to missing modalities is measured: by the
    CLI's and the report's robustness table and by ``benchmarks/``.

    Parameters
    ----------
    X : ndarray or DataFrame of shape (n_samples, n_features), float
        An embedded matrix (NaN marks absent blocks).
    groups : dict of str to sequence of int, default=None
        ``{modality: column positions}`` to blank; None reads them from the
        block-layout column names of a DataFrame (:func:`modality_columns`,
        teachers left out). Give a subset of the modalities to blank only
        those.
    rate : float in [0, 1] or array-like, default=0.5
        Probability of blanking each present modality of each row; an array
        broadcastable to ``(n_samples, n_groups)`` gives one probability per
        row and modality (how :class:`~medmix_sklearn.model_selection.ModalityAmputer`
        makes missingness depend on a column, the label or the content; a
        modality with probability 0 is never blanked and, when present, keeps
        its row from being emptied).
    random_state : None, int, numpy Generator or RandomState, default=None
        Source of the draws. An int or None seeds ``np.random.default_rng``;
        a Generator is used (and advanced) as is.
    keep_one : bool, default=True
        When True, a row that would lose every present modality of ``groups``
        keeps one of them, chosen at random, so every row keeps something to
        predict from (rows with nothing present stay as they are). When
        False, a row may lose every modality.
    return_mask : bool, default=False
        Also return which modalities were blanked.

    Returns
    -------
    X_blanked : same type as X
        A copy; a DataFrame keeps its index and columns.
    blanked : ndarray of bool, shape (n_samples, n_groups)
        Only with ``return_mask``: True where a present modality was blanked.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.ones((4, 3))
    >>> Xb = blank_modalities(X, {"a": [0, 1], "b": [2]}, rate=1.0, random_state=0)
    >>> bool(np.isnan(Xb).all(axis=1).any())  # every row kept one modality
    False
    """
    if isinstance(rate, numbers.Real):
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"rate must be a probability in [0, 1]. Got {rate!r} instead.")
    else:
        rate = np.asarray(rate, dtype=float)
        if not ((rate >= 0.0) & (rate <= 1.0)).all():
            raise ValueError("rate must hold probabilities in [0, 1]; some entries are outside.")
    is_frame = isinstance(X, pd.DataFrame)
    if groups is None:
        if not is_frame:
            raise ValueError(
                "blank_modalities needs groups={modality: column positions} for an array; "
                "only a DataFrame with block-layout column names can be read without them."
            )
        groups = modality_columns(X.columns)
    cols_list = [np.asarray(cols, dtype=np.intp).ravel() for cols in groups.values()]
    values = np.array(X.to_numpy() if is_frame else X, dtype=float, copy=True)
    rng = _generator(random_state)
    present = block_presence(values, cols_list)
    if not isinstance(rate, numbers.Real):
        try:
            rate = np.broadcast_to(rate, present.shape)
        except ValueError as exc:
            raise ValueError(
                f"rate of shape {rate.shape} does not broadcast to (n_samples, n_groups) = "
                f"{present.shape}. Give a float or one probability per row and modality."
            ) from exc
    drop = present & (rng.random(present.shape) < rate)
    if keep_one:
        lost_all = present.any(axis=1) & ~(present & ~drop).any(axis=1)
        for i in np.flatnonzero(lost_all):
            drop[i, rng.choice(np.flatnonzero(present[i]))] = False
    for j, cols in enumerate(cols_list):
        values[np.ix_(drop[:, j], cols)] = np.nan
    out = pd.DataFrame(values, index=X.index, columns=X.columns) if is_frame else values
    return (out, drop) if return_mask else out


# --------------------------------------------------------------------------- #
# scores on a subset of rows
# --------------------------------------------------------------------------- #
def subset_score(y_true, y_score, classes, metric="roc_auc") -> float:
    """AUROC (or average precision) on a subset of rows; NaN where undefined.

    Binary problems score the positive class ``classes[1]``. Multiclass
    problems take the one-vs-rest macro average over the classes that have
    both positive and negative rows in the subset; a class absent from the
    subset does not count (its AUROC is undefined). The score is NaN when no
    class qualifies (an empty subset, or a single class).

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        Labels of the subset's rows.
    y_score : array-like of shape (n_samples, n_classes)
        Class scores (probabilities) in the order of ``classes``.
    classes : array-like of shape (n_classes,)
        All classes of the problem, as the classifier's ``classes_``.
    metric : {"roc_auc", "average_precision"}, default="roc_auc"

    Returns
    -------
    score : float
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    functions = {"roc_auc": roc_auc_score, "average_precision": average_precision_score}
    if metric not in functions:
        raise ValueError(f"metric must be one of {sorted(functions)}. Got {metric!r} instead.")
    func = functions[metric]
    y = np.asarray(y_true)
    scores = np.asarray(y_score, dtype=float)
    classes = np.asarray(classes)
    if len(classes) == 2:
        positive = y == classes[1]
        if positive.all() or not positive.any():
            return float("nan")
        return float(func(positive, scores[:, 1]))
    values = []
    for k, cls in enumerate(classes):
        positive = y == cls
        if positive.any() and not positive.all():
            values.append(func(positive, scores[:, k]))
    return float(np.mean(values)) if values else float("nan")
