"""Model files that say what made them: save_model, load_model, describe_model.

A model file holds the fitted estimator in a format that loads without
running code from the file (see :mod:`medmix_sklearn._modelfile`: JSON, numpy
arrays, safetensors, and skops for scikit-learn transformers), and its
provenance: the library version, each expert with the fingerprint of its
weights, the block layout and the training data's shape. Model files of
version 0.1 (joblib pickles) load only with ``trusted=True``.
Loading re-computes every expert's fingerprint and warns with
:class:`~medmix_sklearn.exceptions.ExpertFingerprintWarning` when the weights
on this machine differ from those the model was trained with (a changed
checkpoint file, another version of a weights package), because the
classifier's inputs would then mean something else.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import platform
import warnings
from collections.abc import Iterator
from typing import Any

import joblib

from ._files import atomic_write
from ._layout import parse_feature_names
from .exceptions import ExpertFingerprintWarning, UnsafeModelFileWarning

__all__ = ["describe_model", "load_model", "save_model"]

logger = logging.getLogger(__name__)

FORMAT = "medmix_sklearn.model"
_PICKLE_FORMAT_VERSION = 1  # medmix_sklearn 0.1: a joblib pickle


def _library_version() -> str:
    from . import __version__

    return __version__


def _package_versions() -> dict[str, str]:
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for dist in ("scikit-learn", "torch", "timm", "transformers", "skorch", "numpy", "pandas"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return versions


def find_embedders(estimator) -> Iterator[Any]:
    """Every MultimodalExpertEmbedder inside ``estimator`` (Pipelines, searches)."""
    from .embedding import MultimodalExpertEmbedder

    seen: set[int] = set()

    def walk(obj) -> Iterator[Any]:
        if obj is None or id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, MultimodalExpertEmbedder):
            yield obj
            return
        for _, step in getattr(obj, "steps", None) or ():
            yield from walk(step)
        best = getattr(obj, "best_estimator_", None)
        if best is not None:
            yield from walk(best)

    yield from walk(estimator)


def expert_entries(embedder) -> Iterator[tuple[str, str, list]]:
    """``(role, modality, experts)`` for each image or text entry of an embedder."""
    from .experts import BaseExpert

    fitted = hasattr(embedder, "modalities_")
    groups = (
        ("student", embedder.modalities_ if fitted else embedder.modalities or ()),
        ("teacher", embedder.teachers_ if fitted else embedder.teachers or ()),
    )
    for role, entries in groups:
        for entry in entries:
            name, spec = entry[0], entry[1]
            experts = [spec] if isinstance(spec, BaseExpert) else spec
            if isinstance(experts, (list, tuple)) and all(isinstance(e, BaseExpert) for e in experts):
                yield role, str(name), list(experts)


def _experts(estimator) -> list[tuple[dict, Any]]:
    """``(record without fingerprint, expert)`` for every expert, in a stable order."""
    out = []
    for e_index, embedder in enumerate(find_embedders(estimator)):
        for role, modality, experts in expert_entries(embedder):
            for expert in experts:
                record = {
                    "embedder": e_index,
                    "role": role,
                    "modality": modality,
                    "name": expert.name,
                    "class": type(expert).__name__,
                    "model": os.fspath(expert.model),
                }
                out.append((record, expert))
    return out


def _feature_names(estimator) -> list[str] | None:
    for embedder in find_embedders(estimator):
        if hasattr(embedder, "feature_names_out_"):
            return [str(n) for n in embedder.get_feature_names_out()]
    final = estimator
    while getattr(final, "steps", None):
        final = final.steps[-1][1]
    names = getattr(final, "feature_names_in_", None)
    return None if names is None else [str(n) for n in names]


def _training_data(estimator, X) -> dict:
    data: dict = {}
    if X is not None:
        shape = getattr(X, "shape", None) or (len(X), None)
        data["n_samples"], data["n_features"] = int(shape[0]), (
            None if shape[1] is None else int(shape[1])
        )
        columns = getattr(X, "columns", None)
        if columns is not None:
            data["columns"] = [str(c) for c in columns]
        rates = _missing_rates(estimator, X)
        if rates:
            data["missing_rate"] = rates
    else:
        n_features = getattr(estimator, "n_features_in_", None)
        data["n_samples"] = None
        data["n_features"] = None if n_features is None else int(n_features)
    return data


def _missing_rates(estimator, X) -> dict[str, float]:
    from ._missing import availability_patterns

    embedders = list(find_embedders(estimator))
    try:
        patterns = availability_patterns(X, embedders[0] if embedders else None)
    except Exception as exc:  # provenance must never stop a save
        logger.info("Could not compute the missing rates of the training data: %s", exc)
        return {}
    return {str(k): float(v) for k, v in (1.0 - patterns.mean(axis=0)).items()}


def describe_model(estimator, X=None) -> dict:
    """What a fitted model is made of, as a plain dict (the model card's content).

    Parameters
    ----------
    estimator : estimator
        A fitted estimator: a Pipeline with a
        :class:`~medmix_sklearn.MultimodalExpertEmbedder`, a bare
        :class:`~medmix_sklearn.MedMIXClassifier`, a fitted search, ...
    X : DataFrame or array-like, default=None
        The training data, to record its shape, columns and the missing rate
        of each modality.

    Returns
    -------
    card : dict
        ``library``, ``version``, ``created`` (UTC, ISO 8601), ``estimator``
        (class name), ``packages`` (versions), ``experts`` (one dict per
        expert: embedder, role, modality, name, class, model, output_dim,
        fingerprint), ``block_layout`` (``blocks``: modality, expert, dim,
        teacher; ``feature_names_out``) and ``training_data`` (n_samples,
        n_features, columns, missing_rate).
    """
    experts = []
    for record, expert in _experts(estimator):
        record = dict(record)
        try:
            record["output_dim"] = int(expert.output_dim)
        except Exception:  # an architecture that cannot be built here
            record["output_dim"] = None
        record["fingerprint"] = expert.fingerprint()
        experts.append(record)
    names = _feature_names(estimator)
    layout: dict = {"feature_names_out": names}
    if names is not None:
        layout["blocks"] = [
            {"modality": b.modality, "expert": b.expert, "dim": b.dim, "teacher": b.teacher}
            for b in parse_feature_names(names)
        ]
    return {
        "library": "medmix_sklearn",
        "version": _library_version(),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "estimator": type(estimator).__name__,
        "packages": _package_versions(),
        "experts": experts,
        "block_layout": layout,
        "training_data": _training_data(estimator, X),
    }


def save_model(estimator, path, *, X=None, metadata=None, compress=3):
    """Save a fitted estimator with its provenance to a model file.

    The file is a zip archive that :func:`load_model` reads without running
    code from it: the estimators as JSON, numeric arrays as ``.npy``, the
    fusion network's tensors as safetensors, fitted scikit-learn transformers
    in skops's format. It holds no training rows (a ``SearchPipeline``
    trained with ``partial_fit`` drops its embedded rows). It holds this
    library's estimators and experts and scikit-learn Pipelines as they are;
    any other object goes through skops, and loads only when skops trusts its
    types (save a search's ``best_estimator_``, not the search). An object
    neither can write fails with a ``ValueError`` that names it.

    Parameters
    ----------
    estimator : estimator
        A fitted estimator (see :func:`describe_model`).
    path : str or path-like
        Output file (conventionally ``*.medmix``); written atomically, with
        the mode a new file gets under the umask in force now.
    X : DataFrame or array-like, default=None
        The training data, whose shape and missing rates are recorded.
    metadata : dict, default=None
        Anything else to record (the command line, the data source...).
    compress : int, default=3
        zip (deflate) compression level, 0 to 9; 0 stores uncompressed.

    Returns
    -------
    path : str
        The path written.

    Raises
    ------
    sklearn.exceptions.NotFittedError
        The estimator is not fitted.
    """
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(estimator)
    provenance = describe_model(estimator, X)
    if metadata is not None:
        provenance["metadata"] = dict(metadata)
    from ._modelfile import write_model_file

    return atomic_write(
        path, lambda tmp: write_model_file(tmp, estimator, provenance, compress=compress),
        prefix=".model-", suffix=".medmix",
    )


def _read_pickle(path: str) -> dict:
    warnings.warn(
        f"Loading {path!r} as a pickle (a medmix_sklearn 0.1 joblib model file) runs code "
        "from the file: do this only for files you trust. Save it again with save_model "
        "to get a file that loads without running code.",
        UnsafeModelFileWarning,
        stacklevel=3,
    )
    try:
        payload = joblib.load(path)
    except Exception as exc:
        raise ValueError(
            f"{path!r} is not a medmix model file: it cannot be read as a joblib file "
            f"({type(exc).__name__}: {exc}). Model files are written by "
            "medmix_sklearn.save_model or `medmix fit`."
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        what = type(payload).__name__
        raise ValueError(
            f"{path!r} is not a medmix model file: it is a joblib file holding a {what} "
            f"without the {FORMAT!r} header. Save models with medmix_sklearn.save_model "
            "(or `medmix fit`) to load them here; a bare pickled estimator loads with "
            "joblib.load."
        )
    version = payload.get("format_version")
    if version != _PICKLE_FORMAT_VERSION:
        raise ValueError(
            f"{path!r} is a pickled medmix model file of format version {version!r}; "
            f"pickled model files have version {_PICKLE_FORMAT_VERSION}."
        )
    return payload


def _refuse(path: str) -> ValueError:
    with open(path, "rb") as fh:
        start = fh.read(8)
    return ValueError(
        f"{path!r} is not a medmix model file in the safe format (a zip archive with "
        f"medmix.json; this file starts with {start!r}), so it was not loaded: reading "
        "any other format could run code from the file. If it is a model file written by "
        "medmix_sklearn 0.1 (a joblib pickle) and you trust its source, load it with "
        "load_model(path, trusted=True), then save it again with save_model."
    )


def _check_fingerprints(estimator, recorded: list[dict], path: str) -> None:
    current = _experts(estimator)
    if len(current) != len(recorded):
        warnings.warn(
            f"The model in {path!r} recorded {len(recorded)} experts but holds "
            f"{len(current)}; their fingerprints cannot be checked.",
            ExpertFingerprintWarning,
            stacklevel=3,
        )
        return
    for saved, (record, expert) in zip(recorded, current):
        label = (
            f"Expert {record['name']!r} ({record['class']}, model {record['model']!r}) of "
            f"{'teacher ' if record['role'] == 'teacher' else ''}modality {record['modality']!r}"
        )
        expert.set_params()  # forgets the fingerprint cached before saving
        try:
            now = expert.fingerprint()
        except Exception as exc:
            warnings.warn(
                f"{label} cannot be verified: computing its fingerprint failed "
                f"({type(exc).__name__}: {exc}). The model was trained with fingerprint "
                f"{saved.get('fingerprint')}.",
                ExpertFingerprintWarning,
                stacklevel=3,
            )
            continue
        if now != saved.get("fingerprint"):
            warnings.warn(
                f"{label} differs from the one the model in {path!r} was trained with: "
                f"its fingerprint is now {now}, it was {saved.get('fingerprint')}. The "
                "weights file, weights package or preprocessing changed, so predictions "
                "may be wrong. Restore the original weights or refit the model.",
                ExpertFingerprintWarning,
                stacklevel=3,
            )


def load_model(path, *, check_fingerprints=True, return_provenance=False, trusted=False,
               trusted_types=None):
    """Load a model saved by :func:`save_model`, checking its experts.

    Loading runs no code from the file: only this library's estimators and
    experts and scikit-learn Pipelines are built from it, from JSON values,
    arrays and tensors; other scikit-learn objects are read by skops, with
    its default trusted types plus ``trusted_types``. A file in any other
    format is refused before anything in it is read as code, unless
    ``trusted=True``.

    Parameters
    ----------
    path : str or path-like
        A file written by :func:`save_model` (or ``medmix fit``).
    check_fingerprints : bool, default=True
        Re-compute each expert's fingerprint (hashing its weights file; no
        model is loaded) and warn when it differs from the recorded one.
    return_provenance : bool, default=False
        Also return the recorded provenance dict (see :func:`describe_model`).
    trusted : bool, default=False
        Also read model files of medmix_sklearn 0.1 (joblib pickles), with an
        :class:`~medmix_sklearn.exceptions.UnsafeModelFileWarning`: loading a
        pickle runs code from the file, so pass True only for files you trust.
    trusted_types : list of str, default=None
        Types skops may build beyond its defaults (for instance a fitted
        ``HistGradientBoostingClassifier``'s
        ``"sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"``),
        for files you trust; the error for an untrusted type names it.

    Returns
    -------
    estimator : estimator
        The fitted estimator.
    provenance : dict
        Only when ``return_provenance=True``.

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    ValueError
        The file is not a medmix model file in the safe format (and
        ``trusted`` is False), or holds types skops does not trust.

    Warns
    -----
    ExpertFingerprintWarning
        An expert's weights differ from those the model was trained with (the
        message names the expert and both fingerprints), or cannot be checked.
    """
    from ._modelfile import is_model_file, read_model_file

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No model file at {path!r}.")
    if is_model_file(path):
        estimator, payload = read_model_file(path, trusted_types=trusted_types)
    elif trusted:
        payload = _read_pickle(path)
        estimator = payload["estimator"]
    else:
        raise _refuse(path)
    provenance = payload.get("provenance") or {}
    saved_version = provenance.get("version")
    if saved_version is not None and saved_version != _library_version():
        logger.info(
            "%s was saved with medmix_sklearn %s; this is %s.",
            path, saved_version, _library_version(),
        )
    if check_fingerprints:
        _check_fingerprints(estimator, list(provenance.get("experts") or []), path)
    if return_provenance:
        return estimator, provenance
    return estimator
