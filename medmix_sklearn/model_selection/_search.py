"""Hyperparameter search with Optuna, on one machine or many.

Nothing here schedules work: Optuna and joblib do. This module gives

- :func:`default_search_space`: Optuna distributions for the main parameters
  of :class:`~medmix_sklearn.MedMIXClassifier`, keyed for a Pipeline step;
- :func:`create_study`: an Optuna study on a shared storage (a journal file by
  default for a plain path, SQLite or any database URL Optuna accepts), so
  several processes or machines work on one study;
- :class:`SearchPipeline`: a :class:`~sklearn.pipeline.Pipeline` with
  ``partial_fit`` (so ``OptunaSearchCV(enable_pruning=True)`` can prune a
  trial epoch by epoch) and a categorical ``expert_set`` parameter (so the
  embedder's experts are searchable like any other hyperparameter).

How to search a Pipeline, prune trials and share a study between processes
or machines is in ``docs/scaling.md``. Optuna is imported when a function
here needs it, not when this module is.
"""

from __future__ import annotations

import inspect
import os

import joblib
from sklearn.pipeline import Pipeline

__all__ = ["SearchPipeline", "create_study", "default_search_space"]


def default_search_space(prefix="clf__", *, expert_sets=None, expert_set_param="expert_set"):
    """Optuna distributions for MedMIXClassifier's main hyperparameters.

    Parameters
    ----------
    prefix : str, default="clf\\__"
        Prepended to every classifier parameter: the Pipeline step name
        followed by ``"__"``, or ``""`` to search a bare classifier.
    expert_sets : dict or iterable of str, default=None
        Names of the expert sets of a :class:`SearchPipeline`; when given,
        a categorical over them is added under ``expert_set_param``.
    expert_set_param : str, default="expert_set"
        Key of that categorical (the :class:`SearchPipeline` parameter).

    Returns
    -------
    space : dict of str to optuna.distributions.BaseDistribution
        ``hidden_dim`` (categorical 32..256), ``lr`` (log-uniform 1e-4..1e-2),
        ``weight_decay`` (log-uniform 1e-6..1e-2), ``dropout`` (0..0.5),
        ``modality_dropout`` (0..0.5), ``aux_weight`` (0..1), ``expert_fusion``
        and ``modality_fusion`` (categoricals of every option). The training
        length is left out: it is ``max_iter`` with pruning, otherwise add
        ``{prefix}max_epochs`` yourself if wanted.

    Examples
    --------
    >>> space = default_search_space()
    >>> sorted(space)[:3]
    ['clf__aux_weight', 'clf__dropout', 'clf__expert_fusion']
    """
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    if not isinstance(prefix, str):
        raise TypeError(f"prefix must be a string such as 'clf__' or ''. Got {prefix!r} instead.")
    if prefix and not prefix.endswith("__"):
        raise ValueError(
            f"prefix must be a Pipeline step name followed by '__' (e.g. 'clf__'), "
            f"or '' for a bare classifier. Got {prefix!r} instead."
        )
    space = {
        "hidden_dim": CategoricalDistribution([32, 64, 128, 256]),
        "lr": FloatDistribution(1e-4, 1e-2, log=True),
        "weight_decay": FloatDistribution(1e-6, 1e-2, log=True),
        "dropout": FloatDistribution(0.0, 0.5),
        "modality_dropout": FloatDistribution(0.0, 0.5),
        "aux_weight": FloatDistribution(0.0, 1.0),
        "expert_fusion": CategoricalDistribution(["gate", "mean"]),
        "modality_fusion": CategoricalDistribution(["attention", "gate", "mean", "concat"]),
    }
    space = {f"{prefix}{name}": dist for name, dist in space.items()}
    if expert_sets is not None:
        names = [str(name) for name in expert_sets]
        if not names:
            raise ValueError("expert_sets names no expert set; give at least one.")
        space[expert_set_param] = CategoricalDistribution(names)
    return space


def _storage(storage):
    """Turn a path, URL or storage object into what ``optuna.create_study`` takes."""
    import optuna

    if storage is None or isinstance(storage, optuna.storages.BaseStorage):
        return storage
    if isinstance(storage, (str, os.PathLike)):
        text = os.fspath(storage)
        if "://" in text:
            return text  # sqlite:///..., postgresql://..., ...: Optuna's RDB storage
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(text))
    raise TypeError(
        "storage must be None (in memory), a file path (journal file), a database URL "
        "('sqlite:///study.db', 'postgresql://...') or an optuna storage. "
        f"Got {type(storage).__name__} instead."
    )


def create_study(study_name, storage=None, *, direction="maximize", sampler=None, pruner=None,
                 load_if_exists=True):
    """Create, or join, an Optuna study that several workers can share.

    Parameters
    ----------
    study_name : str
        Name of the study in the storage. Workers using the same name and
        storage work on the same study.
    storage : None, str, path-like or optuna.storages.BaseStorage, default=None
        - None: in memory (one process only).
        - a plain file path: an Optuna journal file
          (``JournalStorage(JournalFileBackend(path))``); safe for several
          processes on one machine.
        - a URL containing ``"://"``: passed to Optuna as is
          (``"sqlite:///study.db"``, ``"postgresql://user@host/db"``, ...).
        - a storage object: used as is (e.g. a journal on NFS with
          ``JournalFileOpenLock``).
    direction : {"maximize", "minimize"}, default="maximize"
        ``OptunaSearchCV`` requires ``"maximize"``.
    sampler : optuna.samplers.BaseSampler, default=None
        Optuna's default (TPE) when None.
    pruner : optuna.pruners.BasePruner, default=None
        Optuna's default (median) when None.
    load_if_exists : bool, default=True
        Join an existing study of that name instead of failing.

    Returns
    -------
    study : optuna.Study
    """
    import optuna

    if direction not in ("maximize", "minimize"):
        raise ValueError(f"direction must be 'maximize' or 'minimize'. Got {direction!r} instead.")
    return optuna.create_study(
        study_name=study_name,
        storage=_storage(storage),
        direction=direction,
        sampler=sampler,
        pruner=pruner,
        load_if_exists=load_if_exists,
    )


class SearchPipeline(Pipeline):
    """A Pipeline that Optuna can prune epoch by epoch and whose experts are searchable.

    It behaves as :class:`~sklearn.pipeline.Pipeline` (``fit``, ``predict``,
    ``set_params``, ...) and adds two things for hyperparameter search:

    - ``partial_fit``: fits the transformer steps on the first call (the
      embedder embeds the rows, teachers included) and remembers the result;
      every call then runs the final step's ``partial_fit`` (one epoch for
      :class:`~medmix_sklearn.MedMIXClassifier`). A later call with the same
      ``X`` reuses the transformed rows; different rows are transformed with
      the fitted steps. This is what ``OptunaSearchCV(enable_pruning=True)``
      needs.
    - ``expert_set``: the name of one entry of ``expert_sets``; setting it
      (``set_params(expert_set="large")``, as Optuna's categorical does)
      applies that entry. This makes the choice of experts one categorical
      hyperparameter.

    Parameters
    ----------
    steps : list of (str, estimator) tuples
        As for :class:`~sklearn.pipeline.Pipeline`.
    expert_sets : dict of str to list or dict, default=None
        Named alternatives. A list is a value for the first step's
        ``modalities`` (the embedder's entries); a dict is any set of
        Pipeline parameters (``{"embed__modalities": [...],
        "embed__teachers": [...]}``).
    expert_set : str or None, default=None
        The entry of ``expert_sets`` in use; None leaves the steps as given.
    memory : str or object with the joblib.Memory interface, default=None
        As for :class:`~sklearn.pipeline.Pipeline`.
    transform_input : list of str, default=None
        As for :class:`~sklearn.pipeline.Pipeline`.
    verbose : bool, default=False
        As for :class:`~sklearn.pipeline.Pipeline`.
    """

    def __init__(self, steps, *, expert_sets=None, expert_set=None, memory=None,
                 transform_input=None, verbose=False):
        super().__init__(steps, memory=memory, transform_input=transform_input, verbose=verbose)
        self.expert_sets = expert_sets
        self.expert_set = expert_set

    def _expert_set_params(self, name) -> dict:
        sets = self.expert_sets or {}
        if name not in sets:
            raise ValueError(
                f"expert_set={name!r} is not a key of expert_sets; known sets are "
                f"{sorted(sets)}. Add it to expert_sets or pick one of those."
            )
        value = sets[name]
        if isinstance(value, dict):
            return dict(value)
        return {f"{self.steps[0][0]}__modalities": value}

    def set_params(self, **params):
        """Set parameters; ``expert_set=name`` also applies ``expert_sets[name]``.

        Returns
        -------
        self : SearchPipeline
        """
        super().set_params(**params)
        if params.get("expert_set") is not None:
            super().set_params(**self._expert_set_params(params["expert_set"]))
        return self

    def __getstate__(self):
        # The transformed training rows kept between partial_fit calls are a
        # cache, never part of a pickle or model file: a copy re-transforms X
        # with the fitted steps on its next partial_fit.
        state = super().__getstate__()
        if state.get("_partial_state") is not None:
            state["_partial_state"] = {"key": None, "Xt": None}
        return state

    def fit(self, X, y=None, **params):
        """Fit the pipeline (see :meth:`sklearn.pipeline.Pipeline.fit`); resets ``partial_fit``."""
        self._partial_state = None
        return super().fit(X, y, **params)

    def partial_fit(self, X, y=None, **params):
        """Fit the transformers once, then train the final step one increment.

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_samples, n_features)
            Training data, as for ``fit``.
        y : array-like of shape (n_samples,), default=None
            Targets.
        **params : dict
            Passed to the final step's ``partial_fit`` (e.g. ``classes``),
            except ``classes`` when that method does not take it.

        Returns
        -------
        self : SearchPipeline
        """
        final = self._final_estimator
        if not hasattr(final, "partial_fit"):
            raise AttributeError(
                f"The final step {self.steps[-1][0]!r} ({type(final).__name__}) has no "
                "partial_fit, so the pipeline cannot be trained incrementally. Use fit, or "
                "a final estimator with partial_fit such as MedMIXClassifier."
            )
        key = joblib.hash((X, y))
        state = getattr(self, "_partial_state", None)
        if state is None:
            Xt = X
            for _, _, transformer in self._iter(with_final=False, filter_passthrough=True):
                Xt = transformer.fit_transform(Xt, y)
            self._partial_state = state = {"key": key, "Xt": Xt}
        elif state["key"] != key:
            Xt = X
            for _, _, transformer in self._iter(with_final=False, filter_passthrough=True):
                Xt = transformer.transform(Xt)
            state.update(key=key, Xt=Xt)
        if "classes" in params and not _accepts(final.partial_fit, "classes"):
            params = {k: v for k, v in params.items() if k != "classes"}
        final.partial_fit(state["Xt"], y, **params)
        return self


def _accepts(method, name: str) -> bool:
    try:
        parameters = inspect.signature(method).parameters
    except (TypeError, ValueError):
        return True
    return name in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())
