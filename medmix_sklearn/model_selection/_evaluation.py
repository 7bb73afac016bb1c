"""Cross-validated comparison of classifiers on an embedded matrix.

:func:`evaluate_methods` is the evaluation that ``medmix cv``, ``medmix
demo``, the HTML report and ``benchmarks/`` share: every method is fitted on
the same missingness-stratified folds, predicts its held-out fold, and is
scored again with whole modalities blanked at random (the robustness curve).
:func:`default_baselines` gives the two scikit-learn baselines they compare
against.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Mapping, Sequence
from numbers import Integral

import numpy as np
import pandas as pd
from sklearn.utils import Bunch

from .._missing import blank_modalities, modality_columns, subset_score, teacher_columns
from ._split import MissingnessStratifiedKFold

__all__ = ["default_baselines", "evaluate_methods"]


def default_baselines(random_state=None) -> dict:
    """Two scikit-learn baselines for the NaN-block matrix, unfitted.

    Parameters
    ----------
    random_state : int or None, default=None
        Seeds the gradient boosting.

    Returns
    -------
    baselines : dict of str to estimator
        ``"HistGradientBoosting (NaN blocks)"``: gradient boosting on the
        matrix as it is (native NaN support); ``"LogisticRegression
        (mean-imputed)"``: mean imputation, standardisation and an L2
        logistic regression.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return {
        "HistGradientBoosting (NaN blocks)": HistGradientBoostingClassifier(
            max_iter=100, learning_rate=0.1, random_state=random_state
        ),
        "LogisticRegression (mean-imputed)": make_pipeline(
            SimpleImputer(strategy="mean", keep_empty_features=True),
            StandardScaler(),
            LogisticRegression(C=0.05, max_iter=2000),
        ),
    }


def _reads_teachers(estimator) -> bool:
    """Whether ``estimator`` (or its final step) has a ``teacher`` parameter."""
    params = estimator.get_params(deep=True) if hasattr(estimator, "get_params") else {}
    return any(key == "teacher" or key.endswith("__teacher") for key in params)


def evaluate_methods(estimators: Mapping, X: pd.DataFrame, y, *, cv=5, random_state=None,
                     missing_rates: Sequence[float] = (0.0,), keep_one=True,
                     openmp_threads=None, verbose=0) -> Bunch:
    """Cross-validate several classifiers on the same folds of an embedded matrix.

    Each estimator is cloned and fitted once per fold by
    :func:`sklearn.model_selection.cross_validate` (``return_estimator=True,
    return_indices=True``); the fitted fold models then predict their
    held-out rows as they are and, for each rate in ``missing_rates``, with
    whole modalities blanked at random by
    :func:`~medmix_sklearn.model_selection.blank_modalities`. Every method
    sees the same folds and the same blanked rows.

    Teacher (training-only, ``teacher__...``) columns are given to the
    estimators that have a ``teacher`` parameter
    (:class:`~medmix_sklearn.MedMIXClassifier`, or a Pipeline ending in it)
    for training, and are NaN in every test fold, as at prediction time; the
    other estimators never see them.

    Parameters
    ----------
    estimators : dict of str to estimator
        Unfitted classifiers with ``predict_proba``, by display name.
    X : DataFrame of shape (n_samples, n_features)
        Embedded matrix with block-layout column names (the embedder's
        output).
    y : array-like of shape (n_samples,)
        Labels.
    cv : int or cross-validation splitter, default=5
        An int gives a shuffled :class:`MissingnessStratifiedKFold` seeded
        with ``random_state``.
    random_state : int or None, default=None
        Seeds the folds (with an int ``cv``) and the blanking: fold ``k`` at
        rate ``r`` draws from ``np.random.default_rng([random_state, k,
        round(100 * r)])``.
    missing_rates : sequence of float, default=(0.0,)
        Probabilities of blanking each present modality of a test row.
    keep_one : bool, default=True
        Passed to ``blank_modalities``: a blanked row keeps at least one of
        its present modalities.
    openmp_threads : int or None, default=None
        OpenMP threads for the estimators without a ``teacher`` parameter
        (gradient boosting spin-waits on a busy machine); None leaves the
        setting alone.
    verbose : int, default=0
        Show a progress bar over the fits.

    Returns
    -------
    result : Bunch
        - ``proba``: ``{name: out-of-fold probabilities, (n_samples, n_classes)}``;
        - ``classes``: the classes, in the column order of ``proba``;
        - ``fold_scores``: DataFrame with columns ``fold``, ``method``,
          ``AUROC`` (see :func:`~medmix_sklearn.model_selection.subset_score`);
        - ``summary``: DataFrame, AUROC mean and sd over folds per method;
        - ``robustness``: DataFrame, AUROC over all rows per blanking rate
          (index) and method (columns);
        - ``weights``: the out-of-fold ``explain`` output of the estimators
          that have one (rows in X's order), or None;
        - ``estimators``: ``{name: list of fitted fold estimators}``;
        - ``splits``: the list of ``(train, test)`` index arrays.
    """
    from sklearn.model_selection import cross_validate

    if not isinstance(X, pd.DataFrame):
        raise TypeError(
            "evaluate_methods needs the embedded matrix as a DataFrame with block-layout "
            f"column names (the embedder's output). Got {type(X).__name__} instead."
        )
    if not estimators:
        raise ValueError("estimators is empty; give at least one {name: estimator}.")
    y = np.asarray(y)
    classes = np.unique(y)
    if isinstance(cv, Integral):
        cv = MissingnessStratifiedKFold(int(cv), shuffle=True, random_state=random_state)
    splits = list(cv.split(X, y))
    groups = modality_columns(X.columns)
    teachers = set(teacher_columns(X.columns).tolist())
    students = [c for c in range(X.shape[1]) if c not in teachers]
    seed = 0 if random_state is None else int(random_state)

    # The test rows as every method sees them: teacher columns NaN, then blanked.
    X_test = X.copy()
    if teachers:
        X_test.iloc[:, sorted(teachers)] = np.nan
    versions = {
        rate: [
            blank_modalities(X_test.iloc[test], groups, rate,
                             np.random.default_rng([seed, k, round(rate * 100)]),
                             keep_one=keep_one)
            for k, (_, test) in enumerate(splits)
        ]
        for rate in missing_rates
    }

    n, n_classes = len(y), len(classes)
    proba = {name: np.zeros((n, n_classes)) for name in estimators}
    masked = {rate: {name: np.zeros((n, n_classes)) for name in estimators} for rate in missing_rates}
    fold_scores, weights, fitted = [], [], {}
    from tqdm.auto import tqdm

    bar = tqdm(total=len(splits) * len(estimators), desc="cross-validation", unit="fit",
               disable=not verbose)
    for name, estimator in estimators.items():
        with_teachers = _reads_teachers(estimator)
        columns = X.columns if with_teachers else X.columns[students]
        limit = contextlib.nullcontext()
        if openmp_threads is not None and not with_teachers:
            from threadpoolctl import threadpool_limits

            limit = threadpool_limits(openmp_threads, "openmp")
        with warnings.catch_warnings(), limit:
            warnings.simplefilter("ignore", UserWarning)
            out = cross_validate(estimator, X[columns], y, cv=splits, scoring=_no_score,
                                 return_estimator=True, return_indices=True, error_score="raise")
            fitted[name] = list(out["estimator"])
            for k, (model, test) in enumerate(zip(out["estimator"], out["indices"]["test"])):
                proba[name][test] = model.predict_proba(X_test.iloc[test][columns])
                for rate, blanked in versions.items():
                    masked[rate][name][test] = model.predict_proba(blanked[k][columns])
                if hasattr(model, "explain"):
                    weights.append(model.explain(X_test.iloc[test][columns]).set_index(pd.Index(test)))
                fold_scores.append({"fold": k + 1, "method": name,
                                    "AUROC": subset_score(y[test], proba[name][test], classes)})
                bar.update(1)
    bar.close()
    fold_scores = pd.DataFrame(fold_scores)
    summary = fold_scores.groupby("method", sort=False)["AUROC"].agg(["mean", "std"])
    summary.columns = ["AUROC mean", "AUROC sd"]
    robustness = pd.DataFrame(
        {name: [subset_score(y, masked[rate][name], classes) for rate in missing_rates]
         for name in estimators},
        index=pd.Index(list(missing_rates), name="missing rate"),
    )
    return Bunch(
        proba=proba, classes=classes, fold_scores=fold_scores, summary=summary,
        robustness=robustness, weights=pd.concat(weights).sort_index() if weights else None,
        estimators=fitted, splits=splits,
    )


def _no_score(estimator, X, y) -> float:
    """A scorer that costs nothing: the held-out rows are scored after the fits."""
    return 0.0
