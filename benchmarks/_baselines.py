"""Scikit-learn baselines for the quality benchmark, on the NaN-block matrix.

Each baseline takes the matrix :class:`~medmix_sklearn.MultimodalExpertEmbedder`
writes (columns ``{modality}__{expert}__{k}`` and ``{modality}__{feature}``, a
modality absent for a row being NaN in all of its columns) and does what a data
scientist would do with plain scikit-learn:

- :func:`make_logistic`: mean imputation, one missing indicator per modality
  plus one per column with NaN cells inside present rows, standardisation,
  logistic regression;
- :func:`make_hgb`: histogram gradient boosting on the NaN blocks as they are
  (native NaN support);
- :class:`LateFusionClassifier`: one logistic regression per modality, trained
  on the rows where that modality is present; a prediction averages the
  probabilities of the modalities present for the row (the training class
  frequencies when none is);
- :func:`make_mlp`: standardisation, zeros for every missing value (the
  feature mean after standardisation), a one-hidden-layer MLP;
- :class:`BestSingleModality`: the logistic regression of :func:`make_logistic`
  on one modality only, the modality chosen by inner cross-validation on the
  training rows.

Modalities are read from column names (``feature_names_in_``) with
:func:`medmix_sklearn.model_selection.modality_columns`, or given explicitly as
``{modality: column indices}``. Teacher blocks are ignored.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin, clone
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import LabelEncoder, StandardScaler
from sklearn.utils.validation import check_is_fitted, validate_data

from medmix_sklearn.model_selection import availability_patterns, modality_columns, subset_score

__all__ = [
    "BestSingleModality",
    "BlockImputer",
    "LateFusionClassifier",
    "make_hgb",
    "make_logistic",
    "make_mlp",
    "modality_columns",
    "modality_presence",
]


def modality_presence(X, groups: dict[str, np.ndarray]) -> np.ndarray:
    """(n_samples, n_modalities) bool: the library's rule (a modality is present when any cell is set)."""
    return availability_patterns(X, groups).to_numpy()


def _resolve_groups(estimator, modalities, n_features: int) -> dict[str, np.ndarray]:
    if modalities is not None:
        return {str(m): np.asarray(c, dtype=np.intp).ravel() for m, c in modalities.items()}
    names = getattr(estimator, "feature_names_in_", None)
    if names is not None:
        return modality_columns(names)
    return {"features": np.arange(n_features)}


class BlockImputer(TransformerMixin, BaseEstimator):
    """Mean imputation plus missing indicators that know about blocks.

    Appends one indicator per modality (1 where the whole modality is absent)
    and one per column that has NaN cells in training rows where its modality
    is present (cell-level missingness of a tabular modality). Expert blocks,
    absent as a whole, therefore get one indicator, not one per dimension.

    Parameters
    ----------
    modalities : dict or None, default=None
        ``{modality: column indices}``; None reads them from column names.

    Attributes
    ----------
    modalities_ : dict
        The resolved ``{modality: column indices}``.
    mean_ : ndarray of shape (n_features,)
        Column means over the non-NaN training cells (0 for empty columns).
    cell_indicator_columns_ : ndarray of int
        Columns with their own cell indicator.
    n_indicators_ : int
        Number of indicator columns appended.
    """

    def __init__(self, modalities=None):
        self.modalities = modalities

    def fit(self, X, y=None):
        X = validate_data(self, X, ensure_all_finite="allow-nan", dtype=np.float64)
        self.modalities_ = _resolve_groups(self, self.modalities, X.shape[1])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
            mean = np.nanmean(X, axis=0)
        self.mean_ = np.where(np.isfinite(mean), mean, 0.0)
        present = modality_presence(X, self.modalities_)
        cells = []
        for j, cols in enumerate(self.modalities_.values()):
            rows = present[:, j]
            if rows.any():
                nan_cols = np.isnan(X[np.ix_(rows, cols)]).any(axis=0)
                cells.extend(cols[nan_cols].tolist())
        self.cell_indicator_columns_ = np.asarray(sorted(cells), dtype=np.intp)
        self.n_indicators_ = len(self.modalities_) + len(self.cell_indicator_columns_)
        return self

    def transform(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, ensure_all_finite="allow-nan", dtype=np.float64, reset=False)
        absent = ~modality_presence(X, self.modalities_)
        cell_nan = np.isnan(X[:, self.cell_indicator_columns_])
        filled = np.where(np.isnan(X), self.mean_, X)
        return np.hstack([filled, absent.astype(float), cell_nan.astype(float)])


def make_logistic(modalities=None, *, C=0.1, max_iter=1000):
    """Mean imputation with block-aware missing indicators, scaling, logistic regression."""
    return Pipeline(
        [
            ("impute", BlockImputer(modalities)),
            ("scale", StandardScaler()),
            ("clf", LogisticRegression(C=C, max_iter=max_iter)),
        ]
    )


def make_hgb(*, max_iter=200, learning_rate=0.1, random_state=None):
    """Histogram gradient boosting on the NaN blocks, early stopping on 10% of the rows."""
    return HistGradientBoostingClassifier(
        max_iter=max_iter,
        learning_rate=learning_rate,
        early_stopping=True,
        validation_fraction=0.1,
        n_iter_no_change=10,
        random_state=random_state,
    )


def make_mlp(*, hidden=64, alpha=1e-2, max_iter=200, random_state=None):
    """Standardise (NaN-aware), zeros for missing values, one-hidden-layer MLP."""
    return Pipeline(
        [
            ("scale", StandardScaler()),
            ("zeros", SimpleImputer(strategy="constant", fill_value=0.0, keep_empty_features=True)),
            (
                "clf",
                MLPClassifier(
                    hidden_layer_sizes=(hidden,),
                    alpha=alpha,
                    early_stopping=True,
                    validation_fraction=0.1,
                    n_iter_no_change=10,
                    max_iter=max_iter,
                    random_state=random_state,
                ),
            ),
        ]
    )


def _proba_in_classes(model, X: np.ndarray, n_classes: int) -> np.ndarray:
    """Probabilities of a model fitted on encoded labels, over all ``n_classes``."""
    out = np.zeros((X.shape[0], n_classes))
    out[:, model.classes_.astype(int)] = model.predict_proba(X)
    return out


class LateFusionClassifier(ClassifierMixin, BaseEstimator):
    """One logistic regression per modality; average the present modalities' probabilities.

    Parameters
    ----------
    modalities : dict or None, default=None
        ``{modality: column indices}``; None reads them from column names.
    C : float, default=0.1
        Inverse regularisation strength of every per-modality model.
    max_iter : int, default=1000
        Iterations of each logistic regression.

    Attributes
    ----------
    classes_ : ndarray
        Class labels.
    prior_ : ndarray of shape (n_classes,)
        Training class frequencies, predicted for rows with no modality present.
    estimators_ : dict
        ``{modality: fitted pipeline or None}``; None when the training rows
        with that modality present hold fewer than two classes (the modality
        is then ignored).
    """

    def __init__(self, modalities=None, *, C=0.1, max_iter=1000):
        self.modalities = modalities
        self.C = C
        self.max_iter = max_iter

    def fit(self, X, y):
        X, y = validate_data(self, X, y, ensure_all_finite="allow-nan", dtype=np.float64)
        self._encoder = LabelEncoder().fit(y)
        self.classes_ = self._encoder.classes_
        y_enc = self._encoder.transform(y)
        self.prior_ = np.bincount(y_enc, minlength=len(self.classes_)) / len(y_enc)
        self.modalities_ = _resolve_groups(self, self.modalities, X.shape[1])
        present = modality_presence(X, self.modalities_)
        self.estimators_ = {}
        for j, (name, cols) in enumerate(self.modalities_.items()):
            rows = present[:, j]
            if len(np.unique(y_enc[rows])) < 2:
                self.estimators_[name] = None
                continue
            model = Pipeline(
                [
                    ("impute", SimpleImputer(keep_empty_features=True)),
                    ("scale", StandardScaler()),
                    ("clf", LogisticRegression(C=self.C, max_iter=self.max_iter)),
                ]
            )
            self.estimators_[name] = model.fit(X[np.ix_(rows, cols)], y_enc[rows])
        return self

    def predict_proba(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, ensure_all_finite="allow-nan", dtype=np.float64, reset=False)
        present = modality_presence(X, self.modalities_)
        total = np.zeros((X.shape[0], len(self.classes_)))
        count = np.zeros(X.shape[0])
        for j, (name, cols) in enumerate(self.modalities_.items()):
            model = self.estimators_[name]
            rows = present[:, j]
            if model is None or not rows.any():
                continue
            total[rows] += _proba_in_classes(model, X[np.ix_(rows, cols)], len(self.classes_))
            count[rows] += 1
        none = count == 0
        total[none] = self.prior_
        count[none] = 1
        return total / count[:, None]

    def predict(self, X):
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


class BestSingleModality(ClassifierMixin, BaseEstimator):
    """The best one-modality model, chosen by inner cross-validation on the training rows.

    Every candidate is :func:`make_logistic` on one modality's columns (rows
    without that modality get the imputed means and the absence indicator,
    so the model falls back to about the prior there). The modality with the
    best mean inner AUROC (macro one-vs-rest for multiclass) is refitted on
    all training rows.

    Parameters
    ----------
    modalities : dict or None, default=None
        ``{modality: column indices}``; None reads them from column names.
    C : float, default=0.1
        Inverse regularisation strength.
    cv : int, default=3
        Inner stratified folds.
    random_state : int or None, default=None
        Shuffling of the inner folds.

    Attributes
    ----------
    classes_ : ndarray
    modality_ : str
        The chosen modality.
    cv_scores_ : dict
        ``{modality: mean inner AUROC}``.
    estimator_ : Pipeline
        The refitted model on the chosen modality's columns.
    """

    def __init__(self, modalities=None, *, C=0.1, cv=3, random_state=None):
        self.modalities = modalities
        self.C = C
        self.cv = cv
        self.random_state = random_state

    def fit(self, X, y):
        X, y = validate_data(self, X, y, ensure_all_finite="allow-nan", dtype=np.float64)
        self._encoder = LabelEncoder().fit(y)
        self.classes_ = self._encoder.classes_
        y_enc = self._encoder.transform(y)
        self.modalities_ = _resolve_groups(self, self.modalities, X.shape[1])
        splitter = StratifiedKFold(self.cv, shuffle=True, random_state=self.random_state)
        folds = list(splitter.split(X, y_enc))
        self.cv_scores_ = {}
        for name, cols in self.modalities_.items():
            Xm = X[:, cols]
            scores = []
            for train, test in folds:
                model = self._candidate(len(cols)).fit(Xm[train], y_enc[train])
                proba = _proba_in_classes(model, Xm[test], len(self.classes_))
                scores.append(subset_score(y_enc[test], proba, np.arange(len(self.classes_))))
            self.cv_scores_[name] = float(np.mean(scores))
        self.modality_ = max(self.cv_scores_, key=self.cv_scores_.get)
        self._cols = self.modalities_[self.modality_]
        self.estimator_ = self._candidate(len(self._cols)).fit(X[:, self._cols], y_enc)
        return self

    def _candidate(self, n_cols: int) -> Pipeline:
        return make_logistic({"m": np.arange(n_cols)}, C=self.C)

    def predict_proba(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, ensure_all_finite="allow-nan", dtype=np.float64, reset=False)
        return _proba_in_classes(self.estimator_, X[:, self._cols], len(self.classes_))

    def predict(self, X):
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


def quiet_fit(estimator, X, y):
    """Fit ``clone(estimator)`` with convergence warnings silenced (they are expected here)."""
    model = clone(estimator)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(X, y)
