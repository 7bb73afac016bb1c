"""MultimodalExpertEmbedder: a clinical DataFrame in, the block layout out."""

from __future__ import annotations

import logging
import os
import threading
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from numbers import Integral
from typing import Any

import numpy as np
import pandas as pd
from joblib import effective_n_jobs
from scipy import sparse
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context, clone
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import (
    _check_feature_names_in,
    check_array,
    check_is_fitted,
    validate_data,
)

from .._layout import (
    SEP,
    TABULAR_EXPERT,
    TEACHER,
    Block,
    check_block_name,
    expert_feature_names,
    tabular_feature_names,
)
from .._missing import is_missing, missing_cells, missing_mask
from ..exceptions import DeviceFallbackWarning, ItemReadError, ItemReadWarning, MissingModalityWarning
from ..experts import PRECISIONS, BaseExpert
from ._cache import EmbeddingCache, identity_of, resolve_cache_dir

__all__ = ["MultimodalExpertEmbedder"]

logger = logging.getLogger(__name__)

_PASSTHROUGH = "passthrough"
# How many unreadable items one warning lists before summarising the rest.
_MAX_LISTED_FAILURES = 5


def _describe_item(item: Any) -> str:
    if isinstance(item, (str, os.PathLike)):
        text = os.fspath(item)
        return repr(text if len(text) <= 120 else text[:117] + "...")
    if isinstance(item, np.ndarray):
        return f"<array of shape {item.shape}>"
    return f"<{type(item).__name__}>"


def _failure_text(item: Any, message: str) -> str:
    """The reader's message, prefixed with the item unless it names it already."""
    if isinstance(item, (str, os.PathLike)) and os.fspath(item) in message:
        return message
    return f"{_describe_item(item)} ({message})"


@dataclass(slots=True)
class _Entry:
    """One validated ``(name, experts or transformer, columns)`` entry."""

    name: str
    experts: list | None
    transformer: Any
    spec: Any
    teacher: bool
    index: int
    where: str

    @property
    def is_tabular(self) -> bool:
        return self.experts is None


class MultimodalExpertEmbedder(TransformerMixin, BaseEstimator):
    """Embed images, texts and tabular values into one block-structured matrix.

    Each modality entry is ``(name, experts_or_transformer, columns)``, as in
    :class:`~sklearn.compose.ColumnTransformer`. An image, text or volume entry
    takes a list of frozen experts of one kind (:class:`~medmix_sklearn.ImageExpert`,
    :class:`~medmix_sklearn.TextExpert`, :class:`~medmix_sklearn.VolumeExpert`, ...)
    and one column of file paths, arrays or texts; every expert contributes a block of columns
    ``{name}__{expert}__{k}``. A tabular entry takes ``"passthrough"`` or any
    scikit-learn transformer (cloned and fitted in :meth:`fit`) and a list of
    columns; it contributes ``{name}__{feature}`` columns.

    A modality that is absent for a row (``None``, NaN, ``pd.NA``, an empty or
    whitespace-only text or path; for a tabular entry, all of its columns NaN)
    is NaN in every column of every block of that modality for that row. An
    item that cannot be read (missing file, corrupt image) makes only that
    expert's block NaN for that row, with an :class:`ItemReadWarning`.

    Embeddings are cached on disk by expert fingerprint and item content, so
    the same item is embedded once across cross-validation folds, refits and
    processes; a fully cached pass never loads a model.

    Parameters
    ----------
    modalities : list of tuple
        ``(name, experts_or_transformer, columns)`` entries. ``name`` is a valid
        block name (letters, digits, ``_``, ``.``, ``-``; no ``__``), unique,
        and not ``"teacher"``. ``experts_or_transformer`` is an expert, a list
        of experts of one kind, ``"passthrough"``, or a transformer.
        ``columns`` is one column (label or position) for experts; for a
        tabular entry, a label, a position, a list of them, a slice, a boolean
        mask or a callable that takes X and returns one of these.
    teachers : list of tuple, default=None
        Training-only entries, in the same format. Their blocks are named
        ``teacher__{name}__...``; they are computed by :meth:`fit_transform`
        only and returned as NaN by :meth:`transform`, which never loads or
        runs a teacher model and does not need the teacher columns.
    cache_dir : "auto", str, path-like or None, default="auto"
        Embedding cache directory. ``"auto"`` uses ``$MEDMIX_CACHE_DIR``, else
        the user cache directory (``~/.cache/medmix_sklearn``). ``None``
        disables the disk cache; identical items within one call are still
        embedded once.
    device : str, default="auto"
        Torch device for the experts; ``"auto"`` picks ``"cuda"`` when
        available, else ``"cpu"``. Resolved in :meth:`fit` as ``device_``.
    precision : {"float32", "autocast"}, default="float32"
        Numeric precision of the experts on CUDA (the CPU always runs float32).
        ``"float32"`` runs them in full float32 with TF32 off: embeddings equal
        to the CPU's to rounding, so a model fitted on a GPU predicts the same
        where its experts run on the CPU. ``"autocast"`` runs them under
        autocast (bfloat16 where supported, else float16): faster where the
        model rather than image decoding bounds the speed, but the embeddings
        move (up to 6e-3 cosine distance for EfficientNet-Lite0), and a
        classifier trained on them can predict differently from the CPU's
        float32 embeddings (``benchmarks/gpu_check.py`` measures both). The
        precision is part of the cache key: entries of one are never read as
        the other.
    batch_size : int, default=32
        Items per forward pass. Only one batch (plus the next one being
        decoded) is held in memory at a time.
    verbose : int, default=0
        When positive, show a progress bar over batches and log cache hits
        and misses at INFO level.
    on_error : {"warn", "raise"}, default="warn"
        What to do with an unreadable item: warn and make that expert's block
        NaN for that row, or raise :class:`~medmix_sklearn.exceptions.ItemReadError`.
    n_jobs : int, default=None
        Threads that read and decode items (and hash files for the cache)
        while the model embeds the previous batch. ``None`` means 1, ``-1``
        all CPUs.
    trust_file_stat : bool, default=True
        Remember each image file's content key in the cache by the file's
        identity (resolved path, size, modification and change times, inode,
        device), so that a warm pass costs one ``stat`` per file and reads no
        image. A file whose size or times changed is hashed again, and so is a
        file modified less than a few seconds before it was hashed. Turn it off
        on file systems whose times cannot be trusted: ones that do not update
        modification times, or tools that rewrite files and then restore their
        old times and size (some sync or archive tools with "preserve times")
        on a file system without change times.

    Attributes
    ----------
    n_features_in_ : int
        Number of columns of X seen in :meth:`fit`.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Column names of X seen in :meth:`fit`, when they are all strings.
    feature_names_out_ : ndarray of shape (n_features_out,)
        Output column names (see :meth:`get_feature_names_out`).
    blocks_ : list of Block
        The student (non-teacher) output blocks in order: modality, expert
        (``"tabular"`` for a tabular entry) and output column indices. The
        same attribute on :class:`~medmix_sklearn.MedMIXClassifier` lists the
        blocks it reads.
    teacher_blocks_ : list of Block
        The training-only teacher blocks, after the student blocks.
    modality_names_ : list of str
        The (student) modality names, in order.
    output_dims_ : dict
        ``{block key: width}``, block key ``{modality}__{expert}`` (with a
        ``teacher__`` prefix for teacher blocks).
    modalities_ : list of tuple
        The entries as fitted: ``(name, experts or fitted transformer, column
        labels)``. Experts and transformers are clones of those given: ``fit``
        never loads a model into, or fits, the objects in ``modalities``.
    teachers_ : list of tuple
        Same as ``modalities_`` for the teacher entries.
    device_ : str
        The torch device the experts run on.

    See Also
    --------
    medmix_sklearn.embedding.EmbeddingCache : The on-disk embedding cache.
    sklearn.compose.ColumnTransformer : The entry format this follows.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from sklearn.preprocessing import StandardScaler
    >>> X = pd.DataFrame({"age": [60.0, np.nan, 40.0], "hr": [80.0, np.nan, 70.0]})
    >>> embedder = MultimodalExpertEmbedder([("labs", StandardScaler(), ["age", "hr"])])
    >>> Xt = embedder.fit_transform(X)
    >>> Xt
       labs__age  labs__hr
    0        1.0       1.0
    1        NaN       NaN
    2       -1.0      -1.0
    >>> Xt.dtypes.unique().tolist()
    [dtype('float32')]
    >>> embedder.get_feature_names_out().tolist()
    ['labs__age', 'labs__hr']

    A DataFrame in gives a DataFrame out, whose column names carry the block
    layout; ``set_output(transform="default")`` gives a float32 array instead.

    >>> embedder.set_output(transform="default").fit_transform(X).dtype
    dtype('float32')
    """

    _parameter_constraints: dict = {
        "modalities": [list, tuple],
        "teachers": [list, tuple, None],
        "cache_dir": [str, os.PathLike, None],
        "device": [str],
        "precision": [StrOptions(set(PRECISIONS))],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "verbose": ["verbose"],
        "on_error": [StrOptions({"warn", "raise"})],
        # joblib's convention: 0 means nothing, so it is refused.
        "n_jobs": [Interval(Integral, None, -1, closed="right"),
                   Interval(Integral, 1, None, closed="left"), None],
        "trust_file_stat": ["boolean"],
    }

    def __init__(
        self,
        modalities,
        *,
        teachers=None,
        cache_dir="auto",
        device="auto",
        precision="float32",
        batch_size=32,
        verbose=0,
        on_error="warn",
        n_jobs=None,
        trust_file_stat=True,
    ):
        self.modalities = modalities
        self.teachers = teachers
        self.cache_dir = cache_dir
        self.device = device
        self.precision = precision
        self.batch_size = batch_size
        self.verbose = verbose
        self.on_error = on_error
        self.n_jobs = n_jobs
        self.trust_file_stat = trust_file_stat

    # -- nested parameters --------------------------------------------------
    def _nested(self):
        """``(key prefix, list parameter, index, name, spec)`` of every well-formed entry."""
        for prefix, param in (("", "modalities"), (f"{TEACHER}{SEP}", "teachers")):
            entries = getattr(self, param)
            if not isinstance(entries, (list, tuple)):
                continue  # an invalid value: fit reports it
            for index, entry in enumerate(entries):
                if isinstance(entry, (tuple, list)) and len(entry) == 3 and isinstance(entry[0], str):
                    yield prefix, param, index, entry[0], entry[1]

    def get_params(self, deep=True):
        """Parameters of the embedder and, with ``deep``, of its experts and transformers.

        Like :class:`~sklearn.compose.ColumnTransformer`, ``deep=True`` adds
        ``{modality}`` (the entry's experts or transformer),
        ``{modality}__{param}`` (a transformer's parameters), and for experts
        ``{modality}__{i}`` (the ``i``-th expert of the entry) and
        ``{modality}__{i}__{param}``. Teacher entries are prefixed with
        ``teacher__`` (``teacher__xray__0__image_size``). In a Pipeline these
        read ``embed__xray__0__image_size``, so searches can tune them.

        Parameters
        ----------
        deep : bool, default=True
            Include the nested parameters.

        Returns
        -------
        params : dict
        """
        params = super().get_params(deep=False)
        if not deep:
            return params
        for prefix, _, _, name, spec in self._nested():
            key = f"{prefix}{name}"
            params[key] = spec
            if isinstance(spec, BaseExpert):
                spec = [spec]
            if _is_expert_spec(spec):
                for i, expert in enumerate(spec):
                    params[f"{key}{SEP}{i}"] = expert
                    for param, value in expert.get_params(deep=True).items():
                        params[f"{key}{SEP}{i}{SEP}{param}"] = value
            elif hasattr(spec, "get_params") and not isinstance(spec, type):
                for param, value in spec.get_params(deep=True).items():
                    params[f"{key}{SEP}{param}"] = value
        return params

    def set_params(self, **params):
        """Set parameters, including those of the experts and transformers.

        Keys are those of :meth:`get_params` with ``deep=True``:
        ``xray__0__image_size=96`` sets a parameter of the first expert of
        modality ``"xray"``; ``xray__0=expert`` replaces that expert;
        ``labs=StandardScaler()`` replaces a tabular entry's transformer;
        ``labs__with_mean=False`` sets one of its parameters. ``modalities``
        and ``teachers``, when given, are applied first.

        Returns
        -------
        self : MultimodalExpertEmbedder
        """
        own = {k: v for k, v in params.items() if k in self._get_param_names()}
        super().set_params(**own)
        nested = {k: v for k, v in params.items() if k not in own}
        entries = {f"{prefix}{name}": (param, index)
                   for prefix, param, index, name, _ in self._nested()}
        for key, value in nested.items():
            head, _, rest = key.partition(SEP)
            if head == TEACHER:
                name, _, rest = rest.partition(SEP)
                head = f"{TEACHER}{SEP}{name}"
            if head not in entries:
                known = sorted(set(self._get_param_names()) | set(entries))
                raise ValueError(
                    f"Invalid parameter {key!r} for MultimodalExpertEmbedder: {head!r} is "
                    f"neither a parameter nor a modality name. Valid names: {known}. Nested "
                    "names are {modality}__{param}, {modality}__{i}__{param} for experts, "
                    "and teacher__{modality}__... for teachers."
                )
            param, index = entries[head]
            entry_list = list(getattr(self, param))
            name, spec, columns = entry_list[index]
            if not rest:
                spec = value
            elif _is_expert_spec(spec):
                experts = [spec] if isinstance(spec, BaseExpert) else list(spec)
                position, _, sub = rest.partition(SEP)
                if not position.isdigit() or int(position) >= len(experts):
                    raise ValueError(
                        f"Invalid parameter {key!r}: modality {head!r} has {len(experts)} "
                        f"expert(s), addressed as {head}__0 .. {head}__{len(experts) - 1}. "
                        f"Got {position!r} instead."
                    )
                if sub:
                    experts[int(position)].set_params(**{sub: value})
                else:
                    experts[int(position)] = value
                spec = experts
            elif hasattr(spec, "set_params"):
                spec.set_params(**{rest: value})
            else:
                raise ValueError(
                    f"Invalid parameter {key!r}: modality {head!r} is {spec!r}, which has "
                    "no parameters. Replace it with "
                    f"set_params({head}=transformer) instead."
                )
            entry_list[index] = (name, spec, columns)
            setattr(self, param, entry_list)
        return self

    # -- tags ---------------------------------------------------------------
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.input_tags.string = self._accepts_strings()
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags

    def _accepts_strings(self) -> bool:
        entries = list(self.modalities or ()) + list(self.teachers or ())
        for entry in entries:
            try:
                spec = entry[1]
            except (TypeError, IndexError, KeyError):
                continue
            if isinstance(spec, str):
                continue
            if _is_expert_spec(spec):
                return True
            try:
                if spec.__sklearn_tags__().input_tags.string:
                    return True
            except AttributeError:
                pass
        return False

    # -- fitting ------------------------------------------------------------
    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y=None):
        """Check the entries against X, fit the tabular transformers, record the layout.

        No expert is run: embeddings are computed by :meth:`transform` and
        :meth:`fit_transform`.

        Parameters
        ----------
        X : pandas or polars DataFrame of shape (n_samples, n_features)
            One row per patient or study. A numpy array is accepted when every
            entry is tabular (columns are then positions).
        y : None
            Ignored.

        Returns
        -------
        self : MultimodalExpertEmbedder
            The fitted embedder.
        """
        self._fit(X)
        return self

    @_fit_context(prefer_skip_nested_validation=False)
    def fit_transform(self, X, y=None, **fit_params):
        """Fit, then embed X, teacher blocks included.

        Parameters
        ----------
        X : pandas or polars DataFrame of shape (n_samples, n_features)
            The training table, with the teacher columns.
        y : None
            Ignored.
        **fit_params : dict
            Ignored; accepted for Pipeline compatibility.

        Returns
        -------
        X_out : DataFrame or ndarray of shape (n_samples, n_features_out), dtype float32
            A DataFrame with the block-layout column names when X is a
            DataFrame (see :meth:`transform`), else an ndarray.
        """
        X = _as_pandas(X)
        frame = self._fit(X)
        return self._as_output(self._transform(frame, with_teachers=True), X)

    def transform(self, X):
        """Embed X; teacher blocks are NaN and cost nothing.

        Parameters
        ----------
        X : pandas or polars DataFrame of shape (n_samples, n_features)
            Needs the columns of the (non-teacher) modalities; extra columns
            are ignored and the order does not matter.

        Returns
        -------
        X_out : DataFrame or ndarray of shape (n_samples, n_features_out), dtype float32
            When X is a DataFrame and ``set_output`` was not called, a
            DataFrame with X's index and the block-layout column names: the
            names carry the layout that :class:`MedMIXClassifier` reads, so a
            plain ``Pipeline`` keeps it. ``set_output(transform="default")``
            gives an ndarray; ``set_output(transform="pandas")`` a DataFrame.
        """
        check_is_fitted(self)
        X = _as_pandas(X)
        frame = self._check_transform_input(X)
        return self._as_output(self._transform(frame, with_teachers=False), X)

    def fill_cache(
        self, X, *, client=None, partitions=None, resources=None, teachers=True, preload=True
    ):
        """Embed every item of X that the cache lacks, in this process or on a Dask cluster.

        Nothing is fitted and nothing is returned but a summary: afterwards,
        :meth:`fit`, :meth:`transform`, cross-validation and searches, in any
        process that uses the same cache, read the embeddings and load no
        model. Each distinct item is embedded once per call, even when it
        repeats in X.

        Parameters
        ----------
        X : pandas DataFrame
            The table, with the columns of the expert entries.
        client : dask.distributed.Client, default=None
            Spread the items over the cluster's workers, in partitions of
            distinct items. Each worker process loads each expert once (the
            first task that needs it) and writes to the shared cache, so
            ``cache_dir`` must be a folder every worker can reach (a shared
            file system on several machines). Workers resolve
            ``device="auto"`` themselves; entries are filed under the
            fingerprint of the device class and precision they ran at (see
            :meth:`BaseExpert.fingerprint`), so fill on the kind of device the
            later fits use. None runs in this process.
        partitions : int, default=None
            Partitions per expert entry; by default four per worker.
        resources : dict, default=None
            Dask resources each task needs, for example ``{"GPU": 1}`` to run
            only on workers started with ``--resources GPU=1``.
        teachers : bool, default=True
            Also fill the teacher experts' entries (:meth:`fit_transform`
            reads them; :meth:`transform` does not).
        preload : bool, default=True
            With a client: first load every expert on every worker (that has
            ``resources``), all workers at once, then send the partitions; the
            loading is timed apart as ``load_seconds``. False loads an expert
            on a worker only when one of its partitions has an item to embed
            (a warm cache then loads no model). Ignored without a client.

        Returns
        -------
        summary : dict
            ``rows``, ``items`` (distinct items looked at, summed over
            experts), ``hits``, ``embedded``, ``failures`` (unreadable
            items), ``seconds`` (the whole call), ``load_seconds`` (of which
            loading models: the preload step on a cluster, else the longest
            time one process spent loading), ``workers``, ``torch_threads``
            (torch's intra-op threads in each process that embedded, by worker
            address or ``"local"``) and ``experts``, the same counts per
            ``"{modality}/{expert}"``.
        """
        import time

        start = time.perf_counter()
        if resolve_cache_dir(self.cache_dir) is None:
            raise ValueError(
                "fill_cache needs a disk cache, but cache_dir=None. Pass cache_dir='auto' "
                "or a folder (shared by every worker when client is given)."
            )
        if not isinstance(X, pd.DataFrame):
            raise TypeError(
                f"fill_cache needs a pandas DataFrame. Got {type(X).__name__} instead."
            )
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, Integral) or (
            self.batch_size < 1
        ):
            raise ValueError(f"batch_size must be a positive integer. Got {self.batch_size!r}.")
        if partitions is not None and (
            isinstance(partitions, bool) or not isinstance(partitions, Integral) or partitions < 1
        ):
            raise ValueError(f"partitions must be a positive integer. Got {partitions!r}.")
        entries = self._validate_entries(self.modalities, teacher=False)
        if teachers:
            entries += self._validate_entries(self.teachers or [], teacher=True)
        jobs = []
        for entry in entries:
            if entry.is_tabular:
                continue
            label = X.columns[_resolve_columns(entry, X)[0]]
            values = X[label].tolist()
            missing = missing_cells(values)
            _, items = _factorize([v for v, m in zip(values, missing.tolist()) if not m])
            if items:
                jobs.append((entry.name, list(entry.experts), items))
        config = {
            "cache_dir": os.fspath(resolve_cache_dir(self.cache_dir)),
            "device": self.device,
            "batch_size": int(self.batch_size),
            "n_jobs": self.n_jobs,
            "trust_file_stat": bool(self.trust_file_stat),
        }
        summary = {"rows": int(X.shape[0]), "experts": {}}
        if client is None:
            summary["workers"] = 1
            results = [_fill_part(config, name, experts, items) for name, experts, items in jobs]
            preloaded = None
        else:
            config["share_experts"] = True
            results, summary["workers"], preloaded = _fill_on_dask(
                client, config, jobs, partitions, resources, self.batch_size, preload
            )
        # Loading time per process; processes load in parallel.
        loading: dict[str, float] = {}
        summary["torch_threads"] = {}
        for result in results:
            worker = result.pop("_worker")
            loading[worker] = loading.get(worker, 0.0) + result.pop("_load_seconds")
            summary["torch_threads"][worker] = result.pop("_torch_threads")
        if preloaded is not None:
            summary["load_seconds"] = preloaded["seconds"] + max(loading.values(), default=0.0)
            summary["torch_threads"].update(preloaded["torch_threads"])
        else:
            summary["load_seconds"] = max(loading.values(), default=0.0)
        for result in results:
            for where, counts in result.items():
                total = summary["experts"].setdefault(
                    where, {"items": 0, "hits": 0, "embedded": 0, "failures": 0}
                )
                for name in total:
                    total[name] += counts[name]
        for name in ("items", "hits", "embedded", "failures"):
            summary[name] = sum(c[name] for c in summary["experts"].values())
        summary["seconds"] = time.perf_counter() - start
        return summary

    def _as_output(self, values: np.ndarray, X):
        # A DataFrame by default, because the column names are the block layout;
        # an explicit set_output(...) choice is left to scikit-learn's wrapper.
        explicit = getattr(self, "_sklearn_output_config", {}).get("transform")
        if explicit is None and isinstance(X, pd.DataFrame):
            # No copy: ``values`` is this call's own array.
            return pd.DataFrame(values, columns=self.feature_names_out_, index=X.index, copy=False)
        return values

    def get_feature_names_out(self, input_features=None):
        """Output column names, in the block layout.

        Parameters
        ----------
        input_features : array-like of str, default=None
            Input names; must match ``feature_names_in_`` when that is set.
            Used to name passthrough columns of an array fitted without names.

        Returns
        -------
        feature_names_out : ndarray of str objects
        """
        check_is_fitted(self)
        input_features = _check_feature_names_in(self, input_features)
        if hasattr(self, "feature_names_in_") or list(input_features) == list(
            self._input_names
        ):
            return self.feature_names_out_.copy()
        names, _, _ = self._layout(np.asarray(input_features, dtype=object))
        return np.asarray(names, dtype=object)

    # -- fit internals ------------------------------------------------------
    def _fit(self, X) -> pd.DataFrame:
        students = self._validate_entries(self.modalities, teacher=False)
        teachers = self._validate_entries(self.teachers or [], teacher=True)
        if not students:
            raise ValueError(
                "modalities is empty: give at least one (name, experts_or_transformer, "
                "columns) entry."
            )
        frame = self._check_fit_input(X, students + teachers)
        self.device_ = _resolve_device(self.device)

        fitted = {}
        self._widths: dict[tuple, int] = {}
        for entry in students + teachers:
            positions = _resolve_columns(entry, frame)
            labels = list(frame.columns[positions])
            if entry.is_tabular:
                fitted[id(entry)] = (self._fit_tabular(entry, frame, labels), labels)
            else:
                # The fitted embedder owns its experts, as it owns its fitted
                # transformers: the user's expert objects are never loaded.
                experts = [clone(expert) for expert in entry.experts]
                for expert in experts:
                    # Builds the architecture at most, never the weights.
                    _check_output_dim(expert, entry)
                values = frame[labels[0]].tolist()
                if not any(not is_missing(v) for v in values):
                    warnings.warn(
                        f"{entry.where} ({entry.name!r}): column {labels[0]!r} is empty "
                        "or missing in every row; its blocks will be NaN.",
                        MissingModalityWarning,
                        stacklevel=3,
                    )
                fitted[id(entry)] = (experts, labels)
        self.modalities_ = [(e.name, *fitted[id(e)]) for e in students]
        self.teachers_ = [(e.name, *fitted[id(e)]) for e in teachers]
        self._input_names = np.asarray(
            getattr(self, "feature_names_in_", [f"x{i}" for i in range(frame.shape[1])]),
            dtype=object,
        )
        self._input_labels = list(frame.columns)
        names, blocks, dims = self._layout(self._input_names)
        self.feature_names_out_ = np.asarray(names, dtype=object)
        self.blocks_ = [b for b in blocks if not b.teacher]
        self.teacher_blocks_ = [b for b in blocks if b.teacher]
        self.modality_names_ = [name for name, _, _ in self.modalities_]
        self.output_dims_ = dims
        return frame

    def _validate_entries(self, entries, *, teacher: bool) -> list[_Entry]:
        param = "teachers" if teacher else "modalities"
        out: list[_Entry] = []
        seen: set[str] = set()
        for index, entry in enumerate(entries):
            where = f"{param}[{index}]"
            if not isinstance(entry, (tuple, list)) or len(entry) != 3:
                raise ValueError(
                    f"{where} must be a (name, experts_or_transformer, columns) tuple. "
                    f"Got {entry!r} instead."
                )
            name, spec, columns = entry
            _check_name(name, "modality name", where)
            if name == TEACHER:
                raise ValueError(
                    f"{where} is named {TEACHER!r}, which is reserved for training-only "
                    "blocks. Rename the modality, or pass it through teachers= if it "
                    "is a teacher."
                )
            if name in self._get_param_names():
                raise ValueError(
                    f"{where} is named {name!r}, which is also a MultimodalExpertEmbedder "
                    "parameter; nested parameter names ({modality}__{param}) would be "
                    "ambiguous. Rename the modality."
                )
            if name in seen:
                raise ValueError(
                    f"{where} reuses the modality name {name!r}; names in {param} must "
                    "be unique."
                )
            seen.add(name)
            if isinstance(spec, str):
                if spec != _PASSTHROUGH:
                    raise ValueError(
                        f"{where} ({name!r}) gives {spec!r}; the only string accepted is "
                        f"{_PASSTHROUGH!r}. Pass an expert, a list of experts or a "
                        "transformer instead."
                    )
                out.append(_Entry(name, None, spec, columns, teacher, index, where))
            elif _is_expert_spec(spec):
                experts = [spec] if isinstance(spec, BaseExpert) else list(spec)
                _check_experts(experts, name, where)
                if not (isinstance(columns, (str, Integral)) and not isinstance(columns, bool)):
                    raise ValueError(
                        f"{where} ({name!r}) uses experts, which read ONE column: give a "
                        f"column name (or position). Got {columns!r} instead."
                    )
                out.append(_Entry(name, experts, None, columns, teacher, index, where))
            elif hasattr(spec, "fit") and hasattr(spec, "transform"):
                out.append(_Entry(name, None, spec, columns, teacher, index, where))
            else:
                raise ValueError(
                    f"{where} ({name!r}): expected an expert or a list of experts "
                    "(ImageExpert, TextExpert), 'passthrough', or a transformer with "
                    f"fit and transform. Got {spec!r} instead."
                )
        return out

    def _check_fit_input(self, X, entries: list[_Entry]) -> pd.DataFrame:
        X = _as_pandas(X)
        if isinstance(X, pd.DataFrame):
            validate_data(self, X, skip_check_array=True)
            if X.shape[0] == 0:
                raise ValueError(
                    f"Found array with 0 sample(s) (shape={X.shape}) while a minimum "
                    "of 1 is required by MultimodalExpertEmbedder."
                )
            if not X.columns.is_unique:
                duplicated = sorted(map(str, X.columns[X.columns.duplicated()].unique()))
                raise ValueError(
                    f"X has duplicated column names {duplicated}; every column must have "
                    "a unique name."
                )
            self._fitted_on_frame = True
            return X
        expert_entries = [e for e in entries if not e.is_tabular]
        if expert_entries and not sparse.issparse(X):
            raise TypeError(
                "MultimodalExpertEmbedder needs a pandas DataFrame when a modality uses "
                f"experts ({expert_entries[0].where}: {expert_entries[0].name!r}). Got "
                f"{type(X).__name__} instead. Build one with pd.DataFrame(X, columns=...)."
            )
        array = validate_data(
            self, X, dtype=self._array_dtype(), ensure_all_finite="allow-nan"
        )
        self._fitted_on_frame = False
        return pd.DataFrame(array)

    def _array_dtype(self):
        return None if self._accepts_strings() else "numeric"

    def _fit_tabular(self, entry: _Entry, frame: pd.DataFrame, labels: list):
        if entry.transformer == _PASSTHROUGH:
            _to_float(frame[labels], entry)
            if missing_mask(frame[labels]).all():
                warnings.warn(
                    f"{entry.where} ({entry.name!r}) is NaN in every row; its block will "
                    "be NaN.",
                    MissingModalityWarning,
                    stacklevel=4,
                )
            return _PASSTHROUGH
        present = ~missing_mask(frame[labels]).all(axis=1)
        if not present.any():
            raise ValueError(
                f"{entry.where} ({entry.name!r}): columns {labels} are missing in every "
                "row, so its transformer cannot be fitted. Drop the entry or pass rows "
                "where it is present."
            )
        transformer = clone(entry.transformer)
        transformer.fit(frame.loc[present, labels])
        # The width, for naming when the transformer has no get_feature_names_out.
        first = frame.loc[present, labels].iloc[:1]
        self._widths[(entry.teacher, entry.name)] = _dense(transformer.transform(first)).shape[1]
        return transformer

    def _layout(self, input_names) -> tuple[list[str], list[Block], dict[str, int]]:
        names: list[str] = []
        blocks: list[Block] = []
        for teacher, fitted in ((False, self.modalities_), (True, self.teachers_)):
            for name, spec, labels in fitted:
                if isinstance(spec, list):
                    for expert in spec:
                        cols = expert_feature_names(
                            name, expert.name, int(expert.output_dim), teacher=teacher
                        )
                        start = len(names)
                        names.extend(cols)
                        blocks.append(
                            Block(name, expert.name, tuple(range(start, len(names))), teacher)
                        )
                else:
                    width = self._widths.get((teacher, name))
                    features = self._tabular_features(spec, labels, input_names, width)
                    start = len(names)
                    names.extend(tabular_feature_names(name, features, teacher=teacher))
                    blocks.append(
                        Block(name, TABULAR_EXPERT, tuple(range(start, len(names))), teacher)
                    )
        if len(set(names)) != len(names):
            duplicated = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(
                f"The output column names {duplicated[:5]} are duplicated; rename the "
                "tabular features or modalities so that every output name is unique."
            )
        dims = {block.key: block.dim for block in blocks}
        return names, blocks, dims

    def _tabular_features(self, spec, labels: list, input_names, width) -> list[str]:
        positions = [self._input_labels.index(label) for label in labels]
        inputs = np.asarray([str(input_names[p]) for p in positions], dtype=object)
        if spec == _PASSTHROUGH:
            features = list(inputs)
        else:
            features = None
            if hasattr(spec, "get_feature_names_out"):
                try:
                    features = [str(f) for f in spec.get_feature_names_out(inputs)]
                except Exception:  # any failure means "no names"
                    features = None
            if features is None or len(features) != width:
                features = [str(k) for k in range(width)]
        # "__" inside a feature name would read back as an expert block.
        return [f.replace(SEP, "_") for f in features]

    # -- transform internals ------------------------------------------------
    def _check_transform_input(self, X) -> pd.DataFrame:
        X = _as_pandas(X)
        if isinstance(X, pd.DataFrame) and self._fitted_on_frame:
            needed = [label for _, _, labels in self.modalities_ for label in labels]
            missing = [label for label in dict.fromkeys(needed) if label not in X.columns]
            if missing:
                raise ValueError(
                    f"X lacks the column(s) {missing} used by the modalities at fit time. "
                    f"Columns are: {list(X.columns)}."
                )
            if X.shape[0] == 0:
                raise ValueError(
                    f"Found array with 0 sample(s) (shape={X.shape}) while a minimum "
                    "of 1 is required by MultimodalExpertEmbedder."
                )
            return X
        if any(isinstance(spec, list) for _, spec, _ in self.modalities_ + self.teachers_):
            raise TypeError(
                "MultimodalExpertEmbedder was fitted with experts and needs a pandas "
                f"DataFrame. Got {type(X).__name__} instead."
            )
        array = validate_data(
            self, X, reset=False, dtype=self._array_dtype(), ensure_all_finite="allow-nan"
        )
        return pd.DataFrame(array, columns=self._input_labels)

    def _transform(self, frame: pd.DataFrame, *, with_teachers: bool) -> np.ndarray:
        n_rows = frame.shape[0]
        out = np.full((n_rows, len(self.feature_names_out_)), np.nan, dtype=np.float32)
        directory = resolve_cache_dir(self.cache_dir)
        cache = EmbeddingCache(directory) if directory is not None else None
        # None means 1 (unless a joblib.parallel_config says otherwise), -1 all CPUs.
        n_threads = effective_n_jobs(self.n_jobs)
        blocks = iter(self.blocks_ + self.teacher_blocks_)
        device = None  # resolved at the first expert entry
        with ThreadPoolExecutor(max_workers=n_threads) as pool, _closing(cache):
            for teacher, fitted in ((False, self.modalities_), (True, self.teachers_)):
                for name, spec, labels in fitted:
                    if isinstance(spec, list):
                        entry_blocks = [next(blocks) for _ in spec]
                    else:
                        entry_blocks = [next(blocks)]
                    if teacher and not with_teachers:
                        continue
                    if isinstance(spec, list):
                        if device is None:
                            device = self._run_device()
                        self._embed_entry(
                            name, spec, labels[0], entry_blocks, frame, out, cache, pool, device
                        )
                    else:
                        cols = list(entry_blocks[0].columns)
                        out[:, cols] = self._transform_tabular(
                            name, spec, labels, frame, len(cols)
                        )
                    if teacher:
                        # Free teacher models: transform never needs them again.
                        for expert in spec if isinstance(spec, list) else ():
                            expert.unload()
        return out

    def _transform_tabular(self, name: str, spec, labels: list, frame: pd.DataFrame, width: int):
        sub = frame[labels]
        if spec == _PASSTHROUGH:
            return _to_float(sub, name)
        # Fitted on present rows only, so transform only those: a transformer that
        # rejects NaN still works, and absent rows stay NaN.
        block = np.full((len(sub), width), np.nan, dtype=np.float32)
        present = ~missing_mask(sub).all(axis=1)
        if present.any():
            values = _dense(spec.transform(sub.loc[present]))
            if values.shape[1] != width:
                raise RuntimeError(
                    f"The transformer of modality {name!r} returned {values.shape[1]} "
                    f"columns, but {width} at fit time."
                )
            outputs = [f"output {k}" for k in range(width)]
            block[present] = check_float32_range(
                np.asarray(values, dtype=np.float64), outputs, sub.index[present], name
            )
        return block

    def _embed_entry(
        self,
        modality: str,
        experts: list,
        column,
        blocks: list[Block],
        frame: pd.DataFrame,
        out: np.ndarray,
        cache: EmbeddingCache | None,
        pool: ThreadPoolExecutor,
        device: str,
    ) -> None:
        values = frame[column].tolist()
        rows = np.flatnonzero(~missing_cells(values))
        items = [values[i] for i in rows.tolist()]
        # Each distinct item is hashed, looked up and embedded once; rows take
        # their item's vector through ``codes`` (position of the row's item in
        # ``uniques``).
        codes, uniques = _factorize(items)

        def row_label(i: int):
            # Plain Python labels read better in messages.
            return frame.index[int(rows[i]):int(rows[i]) + 1].tolist()[0]

        # Experts of one class hash content the same way: hash each item once.
        keys_by_class: dict[type, list] = {}
        for expert, block in zip(experts, blocks):
            keys = keys_by_class.get(type(expert))
            if keys is None:
                keys = self._content_keys(expert, uniques, cache, pool)
                keys_by_class[type(expert)] = keys
            # first: each distinct key -> one unique item that has it;
            # position: each unique item -> its key's rank in first (-1: unreadable).
            first, position, unreadable = _rank_keys(keys)
            failures: list[tuple[Any, Any, str]] = []
            if unreadable:
                bad = np.zeros(len(uniques), dtype=bool)
                bad[unreadable] = True
                failures = [
                    (row_label(i), items[i], str(keys[codes[i]]))
                    for i in np.flatnonzero(bad[codes]).tolist()
                ]
                if self.on_error == "raise":
                    self._report_failures(expert, column, failures)

            def report(u: int, message: str, expert=expert) -> None:
                i = int(np.flatnonzero(codes == u)[0])
                self._report_failures(expert, column, [(row_label(i), items[i], message)])

            vectors, found, failed_keys, _ = self._vectors_for(
                expert, first, uniques, cache, pool, f"{modality}/{expert.name}", device,
                report=report, n_rows=len(rows),
            )
            source = position[codes] if len(codes) else np.empty(0, dtype=np.intp)
            have = source >= 0
            have[have] = found[source[have]]
            if have.any():
                _put_block(out, rows[have], block.columns, vectors[source[have]])
            if failed_keys:
                failed = np.zeros(len(first), dtype=bool)
                failed[[position[first[key]] for key in failed_keys]] = True
                in_failed = (source >= 0) & failed[np.maximum(source, 0)]
                failures += [
                    (row_label(i), items[i], failed_keys[keys[codes[i]]])
                    for i in np.flatnonzero(in_failed).tolist()
                ]
            if failures:
                self._report_failures(expert, column, failures)

    def _content_keys(
        self,
        expert: BaseExpert,
        items: list,
        cache: EmbeddingCache | None,
        pool: ThreadPoolExecutor,
    ) -> list:
        """Content key of each item (or its ItemReadError), files remembered by identity."""
        keys: list = [None] * len(items)
        todo = list(range(len(items)))
        identities: dict[int, Any] = {}
        namespace = f"{type(expert).__module__}.{type(expert).__qualname__}"
        # A text expert that keeps the default item_files has no files to stat.
        no_files = expert.kind == "text" and type(expert).item_files is BaseExpert.item_files
        if cache is not None and self.trust_file_stat and items and not no_files:
            files = [expert.item_files(item) for item in items]
            with_files = [i for i, f in enumerate(files) if f is not None]
            if with_files:
                found = _chunked_map(pool, lambda i: identity_of(files[i]), with_files)
                identities = {i: ident for i, ident in zip(with_files, found) if ident is not None}
                positions = list(identities)
                known = cache.get_file_keys(namespace, [identities[i] for i in positions])
                for i, key in zip(positions, known):
                    if key is not None:
                        keys[i] = key
                todo = [i for i in todo if keys[i] is None]
        if no_files:
            # Texts: hashing is cheaper than handing them to threads.
            computed = expert.content_keys([items[i] for i in todo])
        else:
            computed = _chunked_map(pool, lambda i: _content_key(expert, items[i]), todo)
        remember = []
        for i, key in zip(todo, computed):
            keys[i] = key
            if isinstance(key, str) and i in identities:
                remember.append(i)
        if remember:
            # Only identities that did not change while the files were hashed.
            again = _chunked_map(pool, lambda i: identity_of(expert.item_files(items[i])), remember)
            pairs = [
                (identities[i], keys[i]) for i, now in zip(remember, again) if now == identities[i]
            ]
            try:
                cache.put_file_keys(namespace, pairs)
            except OSError as exc:
                logger.warning("Could not write file records to the embedding cache: %s", exc)
        return keys

    def _vectors_for(
        self,
        expert: BaseExpert,
        first: dict,
        items: list,
        cache: EmbeddingCache | None,
        pool: ThreadPoolExecutor,
        where: str,
        device: str,
        *,
        report=None,
        keep: bool = True,
        n_rows: int | None = None,
        on_load=None,
    ) -> tuple[np.ndarray | None, np.ndarray, dict, dict]:
        """Embeddings of the unique keys: from the cache, else computed in batches.

        ``first`` maps each unique key to the position of one item that has it.
        Returns the embeddings (rows in the order of ``first``; None when
        ``keep`` is False), a mask of the keys that have one, ``{key: message}``
        for unreadable items, and counts (hits, embedded, failed).
        """
        dim = int(expert.output_dim)
        keys = list(first)
        fingerprint = expert.fingerprint(device, self.precision) if cache is not None else ""
        if cache is not None and keys and keep:
            # One lookup; its arrays are this call's own.
            vectors, found = cache.get_array(fingerprint, keys, dim)
        elif cache is not None and keys:
            # Nothing kept: bounded memory, in steps.
            found = np.zeros(len(keys), dtype=bool)
            vectors = None
            for start in range(0, len(keys), 65536):
                _, found[start : start + 65536] = cache.get_array(
                    fingerprint, keys[start : start + 65536], dim
                )
        else:
            found = np.zeros(len(keys), dtype=bool)
            vectors = np.empty((len(keys), dim), dtype=np.float32) if keep else None
        hits = int(found.sum())
        todo = np.flatnonzero(~found).tolist()
        if todo and on_load is not None and not expert.is_loaded:
            # Loaded before the first batch, so that the caller can time it.
            import time

            start = time.perf_counter()
            expert._get_model(device)
            on_load(time.perf_counter() - start)
        if todo and cache is not None:
            cache.describe(
                fingerprint,
                {"expert": expert.name, "class": type(expert).__name__, "dim": dim,
                 "precision": expert.precision(device)},
            )
        if expert.kind == "text":
            # Similar lengths in a batch cut padding.
            todo.sort(key=lambda j: len(str(items[first[keys[j]]])))
        failed: dict[str, str] = {}
        batches = [todo[i : i + self.batch_size] for i in range(0, len(todo), self.batch_size)]

        # One task per thread and batch, not one per item: for short texts the
        # per-task cost would exceed the reading.
        n_threads = _pool_size(pool)

        def submit(batch: list) -> list[Future]:
            picked = [items[first[keys[j]]] for j in batch]
            step = max(1, -(-len(picked) // n_threads))
            return [
                pool.submit(_read_many, expert, picked[i : i + step])
                for i in range(0, len(picked), step)
            ]

        from tqdm.auto import tqdm

        progress = tqdm(total=len(batches), desc=where, unit="batch", leave=False,
                        disable=not self.verbose or not batches)
        # Decode up to two batches ahead so the model never waits for input.
        pending = [submit(batch) for batch in batches[:2]]
        for b, batch in enumerate(batches):
            decoded_futures = pending.pop(0)
            if b + 2 < len(batches):
                pending.append(submit(batches[b + 2]))
            good, decoded = [], []
            values = [value for future in decoded_futures for value in future.result()]
            for j, value in zip(batch, values):
                if isinstance(value, ItemReadError):
                    failed[keys[j]] = str(value)
                    if self.on_error == "raise" and report is not None:
                        for futures in pending:
                            for future in futures:
                                future.cancel()
                        report(first[keys[j]], str(value))
                else:
                    good.append(j)
                    decoded.append(value)
            if decoded:
                embedded = self._run_expert(expert, decoded, dim, where, device)
                found[good] = True
                if keep:
                    vectors[good] = embedded
                if cache is not None:
                    try:
                        cache.put_many(fingerprint, zip([keys[j] for j in good], embedded))
                    except OSError as exc:
                        logger.warning("Could not write to the embedding cache: %s", exc)
            progress.update(1)
        progress.close()
        counts = {"hits": hits, "embedded": len(todo) - len(failed), "failed": len(failed)}
        logger.log(
            logging.INFO if self.verbose else logging.DEBUG,
            "%s: %d rows, %d unique items, %d cache hits, %d embedded, %d unreadable",
            where,
            len(first) if n_rows is None else n_rows,
            len(keys),
            hits,
            counts["embedded"],
            len(failed),
        )
        return vectors, found, failed, counts

    def __setstate__(self, state):
        # Embedders saved before ``precision`` existed ran CUDA under autocast.
        super().__setstate__({"precision": "autocast", **dict(state)})

    def _run_device(self) -> str:
        """The device to embed on now: ``device_``, or the CPU when it is gone.

        A model fitted where CUDA exists records ``device_="cuda"``; loaded on
        a machine without it, the experts run on the CPU with a warning (their
        fingerprint then names CPU float32, so GPU cache entries are not mixed in).
        """
        device = str(self.device_)
        if device.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                autocast = self.precision == "autocast"
                warnings.warn(
                    f"This MultimodalExpertEmbedder was fitted with device_={device!r}, but "
                    "CUDA is not available here; its experts run on the CPU instead (in "
                    "float32, so items are embedded afresh rather than read from cache "
                    "entries made on the GPU)."
                    + (" It was fitted with precision='autocast': the classifier after it "
                       "was trained on autocast embeddings, and on these float32 ones it "
                       "can predict differently; fit with precision='float32' for a model "
                       "that predicts the same on either device." if autocast else "")
                    + " Refit with device='cpu' to silence this warning.",
                    DeviceFallbackWarning,
                    stacklevel=4,
                )
                return "cpu"
        return device

    def _run_expert(
        self, expert: BaseExpert, decoded: list, dim: int, where: str, device: str
    ) -> np.ndarray:
        import torch

        with torch.inference_mode():
            embedded = expert.embed(
                decoded, device=device, batch_size=self.batch_size, precision=self.precision
            )
        embedded = np.asarray(embedded, dtype=np.float32)
        expected = (len(decoded), dim)
        if embedded.shape != expected:
            raise RuntimeError(
                f"Expert {where} returned embeddings of shape {embedded.shape} for "
                f"{len(decoded)} items; expected {expected}."
            )
        return embedded

    def _report_failures(self, expert: BaseExpert, column, failures: list) -> None:
        if self.on_error == "raise":
            label, item, message = failures[0]
            raise ItemReadError(
                f"Expert {expert.name!r} could not read row {label!r} of column "
                f"{column!r}: {_failure_text(item, message)}. Pass on_error='warn' to get "
                "a NaN block for that row instead."
            )
        listed = "; ".join(
            f"row {label!r}: {_failure_text(item, message)}"
            for label, item, message in failures[:_MAX_LISTED_FAILURES]
        )
        more = len(failures) - _MAX_LISTED_FAILURES
        if more > 0:
            listed += f"; and {more} more"
        warnings.warn(
            f"Expert {expert.name!r} could not read {len(failures)} item(s) of column "
            f"{column!r}; its block is NaN for those rows. {listed}",
            ItemReadWarning,
            stacklevel=2,
        )


# -- helpers ----------------------------------------------------------------
def _is_expert_spec(spec: Any) -> bool:
    if isinstance(spec, BaseExpert):
        return True
    return (
        isinstance(spec, (list, tuple))
        and len(spec) > 0
        and all(isinstance(e, BaseExpert) for e in spec)
    )


def _check_name(name, what: str, where: str) -> None:
    try:
        check_block_name(name, what=what)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def _check_experts(experts: list, modality: str, where: str) -> None:
    kinds = {expert.kind for expert in experts}
    if len(kinds) > 1:
        raise ValueError(
            f"{where} ({modality!r}) mixes experts of kinds {sorted(kinds)}; all experts "
            "of one modality must read the same kind of item. Split them into separate "
            "modalities."
        )
    seen: set[str] = set()
    for expert in experts:
        _check_name(expert.name, "expert name", where)
        if expert.name in seen:
            raise ValueError(
                f"{where} ({modality!r}) has two experts named {expert.name!r}; expert "
                "names must be unique within a modality because they name the output "
                "columns."
            )
        seen.add(expert.name)


def _check_output_dim(expert: BaseExpert, entry: _Entry) -> None:
    dim = expert.output_dim
    if not isinstance(dim, Integral) or dim < 1:
        raise ValueError(
            f"Expert {expert.name!r} in {entry.where} reports output_dim={dim!r}; "
            "expected a positive integer."
        )


def _resolve_columns(entry: _Entry, frame: pd.DataFrame) -> list[int]:
    """Positions in ``frame`` of the columns an entry names."""
    spec = entry.spec
    columns = frame.columns
    n = len(columns)
    if callable(spec):
        spec = spec(frame)
    if isinstance(spec, slice):
        positions = list(range(n))[spec] if _slice_is_positional(spec) else None
        if positions is None:
            start = columns.get_loc(spec.start) if spec.start is not None else 0
            stop = columns.get_loc(spec.stop) + 1 if spec.stop is not None else n
            positions = list(range(start, stop))
    elif isinstance(spec, (str, Integral)) and not isinstance(spec, bool):
        positions = [_position(spec, columns, entry)]
    else:
        values = spec if isinstance(spec, list) else list(np.asarray(spec, dtype=object).ravel())
        if values and all(isinstance(v, (bool, np.bool_)) for v in values):
            if len(values) != n:
                raise ValueError(
                    f"{entry.where} ({entry.name!r}) gives a boolean mask of length "
                    f"{len(values)}, but X has {n} columns."
                )
            positions = [i for i, keep in enumerate(values) if keep]
        else:
            positions = [_position(v, columns, entry) for v in values]
    if not positions:
        raise ValueError(
            f"{entry.where} ({entry.name!r}) selects no columns. Got {entry.spec!r}."
        )
    return positions


def _slice_is_positional(spec: slice) -> bool:
    return all(v is None or isinstance(v, Integral) for v in (spec.start, spec.stop))


def _position(value, columns: pd.Index, entry: _Entry) -> int:
    if isinstance(value, (Integral, np.integer)) and not isinstance(value, (bool, np.bool_)):
        n = len(columns)
        if not -n <= int(value) < n:
            raise ValueError(
                f"{entry.where} ({entry.name!r}) names column position {int(value)}, but "
                f"X has {n} columns."
            )
        return int(value) % n
    if value in columns:
        return columns.get_loc(value)
    raise ValueError(
        f"{entry.where} ({entry.name!r}) names column {value!r}, which is not in X. "
        f"Columns are: {list(columns)}."
    )


def _to_float(sub: pd.DataFrame, entry) -> np.ndarray:
    name = entry.name if isinstance(entry, _Entry) else entry
    try:
        values = check_array(
            sub, dtype=np.float64, ensure_all_finite="allow-nan", ensure_min_samples=0
        )
    except (ValueError, TypeError) as exc:
        for column in sub.columns:
            bad = non_numeric_cells(sub[column])
            if bad:
                raise ValueError(
                    f"Modality {name!r} passes column {column!r} through, but it holds "
                    f"values that are not numbers: {_cells_text(bad)}. Fix those cells "
                    "(a decimal point, no signs such as '>'), turn them into NaN (for "
                    "instance pd.to_numeric(X[column], errors='coerce')), or, for a "
                    "categorical column, give the modality a OneHotEncoder."
                ) from exc
        raise ValueError(
            f"Modality {name!r} passes columns {list(sub.columns)} through, but they are "
            f"not all numeric ({exc}). Encode them first, e.g. with OneHotEncoder as the "
            "modality's transformer."
        ) from exc
    return check_float32_range(values, list(sub.columns), sub.index, name)


def _as_pandas(X):
    """A polars DataFrame as a pandas one (through its ``to_pandas``); anything else as is."""
    if type(X).__module__.split(".")[0] == "polars" and hasattr(X, "to_pandas"):
        return X.to_pandas()
    return X


def non_numeric_cells(column: pd.Series) -> list[tuple[Any, Any]]:
    """``(row label, value)`` of the cells of ``column`` that are present but not numbers."""
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        return []
    present = ~column.map(is_missing).to_numpy(dtype=bool)
    parsed = pd.to_numeric(column.where(present), errors="coerce").to_numpy()
    bad = present & np.isnan(parsed.astype(np.float64))
    return list(zip(column.index[bad].tolist(), column[bad].tolist()))


def _cells_text(cells: list, limit: int = 5) -> str:
    text = ", ".join(f"row {label!r}: {value!r}" for label, value in cells[:limit])
    if len(cells) > limit:
        text += f" (and {len(cells) - limit} more)"
    return text


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def check_float32_range(values: np.ndarray, columns: list, rows, name) -> np.ndarray:
    """``values`` as float32; a ValueError names the column and row of a value beyond its range."""
    with np.errstate(invalid="ignore"):
        too_big = np.abs(values) > _FLOAT32_MAX
    if too_big.any():
        rows = list(rows)
        cells = [
            f"row {rows[i]!r}, column {columns[j]!r}: {values[i, j]!r}"
            for i, j in zip(*np.nonzero(too_big))
        ]
        more = f" (and {len(cells) - 5} more)" if len(cells) > 5 else ""
        raise ValueError(
            f"Modality {name!r} has values beyond float32's range (+-{_FLOAT32_MAX:.4g}), "
            f"which the embedding matrix holds: {'; '.join(cells[:5])}{more}. Rescale the "
            "column (for instance to other units or a logarithm), or fix the cells."
        )
    return values.astype(np.float32)


def _dense(values) -> np.ndarray:
    if sparse.issparse(values):
        values = values.toarray()
    return np.asarray(values, dtype=np.float32)


def _content_key(expert: BaseExpert, item: Any):
    try:
        return expert.content_key(item)
    except ItemReadError as exc:
        return exc


def _factorize(items: list) -> tuple[np.ndarray, list]:
    """``(codes, uniques)``: each distinct item once, in first-seen order.

    ``uniques[codes[i]]`` is ``items[i]``. Items of different types are never
    merged (``1`` and ``True`` stay apart); items that cannot be hashed (arrays,
    images in memory) are each their own distinct item.
    """
    if not items:
        return np.empty(0, dtype=np.intp), []
    values = np.fromiter(items, dtype=object, count=len(items))
    if pd.api.types.infer_dtype(values, skipna=False) == "string":
        # All str: pandas' hash table, in C.
        codes, uniques = pd.factorize(values)
        return codes.astype(np.intp, copy=False), list(uniques)
    seen: dict = {}
    codes = np.empty(len(items), dtype=np.intp)
    uniques: list = []
    for i, value in enumerate(items):
        try:
            code = seen.setdefault((value.__class__, value), len(uniques))
        except TypeError:
            code = len(uniques)
        if code == len(uniques):
            uniques.append(value)
        codes[i] = code
    return codes, uniques


def _rank_keys(keys: list) -> tuple[dict, np.ndarray, list]:
    """Distinct keys of the unique items, in first-seen order.

    ``keys`` holds a content key (str) or an ItemReadError per unique item.
    Returns ``first`` (key -> the first item with it), ``position`` (item ->
    its key's rank in ``first``, -1 when the item is unreadable) and the
    unreadable items' positions.
    """
    values = np.fromiter(keys, dtype=object, count=len(keys))
    if len(keys) and pd.api.types.infer_dtype(values, skipna=False) == "string":
        first = dict(zip(keys, range(len(keys))))
        if len(first) == len(keys):  # all distinct (the usual case): nothing to merge
            return first, np.arange(len(keys), dtype=np.intp), []
        codes, distinct = pd.factorize(values)
        # Where each distinct key first appears: codes are in first-seen order.
        running = np.maximum.accumulate(codes)
        starts = np.flatnonzero(np.r_[True, running[1:] > running[:-1]])
        first = dict(zip(distinct.tolist(), starts.tolist()))
        return first, codes.astype(np.intp, copy=False), []
    first, rank = {}, {}
    position = np.full(len(keys), -1, dtype=np.intp)
    unreadable = []
    for u, key in enumerate(keys):
        if isinstance(key, str):
            j = rank.get(key)
            if j is None:
                j = rank[key] = len(first)
                first[key] = u
            position[u] = j
        else:
            unreadable.append(u)
    return first, position, unreadable


def _put_block(out: np.ndarray, rows: np.ndarray, columns, values: np.ndarray) -> None:
    """``out[rows, columns] = values``, a slice of columns when they are contiguous."""
    columns = np.asarray(columns, dtype=np.intp)
    if len(columns) and (np.diff(columns) == 1).all():
        out[rows, columns[0] : columns[-1] + 1] = values
    else:
        out[np.ix_(rows, columns)] = values


# Experts already loaded in this (worker) process, by class and fingerprint: a
# Dask worker loads each expert once, whatever the number of tasks it runs.
_LOADED_EXPERTS: dict[tuple, tuple[BaseExpert, threading.Lock]] = {}
_LOADED_LOCK = threading.Lock()


def _shared_expert(expert: BaseExpert) -> tuple[BaseExpert, threading.Lock]:
    params = repr(sorted(expert.get_params(deep=False).items()))
    key = (type(expert).__module__, type(expert).__qualname__, expert.fingerprint(), params)
    with _LOADED_LOCK:
        if key not in _LOADED_EXPERTS:
            _LOADED_EXPERTS[key] = (expert, threading.Lock())
        return _LOADED_EXPERTS[key]


def _worker_name() -> str:
    """This Dask worker's address, or ``"local"`` outside a worker."""
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return "local"


def _torch_threads() -> int:
    import torch

    return int(torch.get_num_threads())


def _fill_part(config: dict, modality: str, experts: list, items: list) -> dict:
    """Embed the items the cache lacks, for each expert; return counts per expert.

    The result also holds ``_worker`` (this worker's address), ``_load_seconds``
    (time spent loading models here) and ``_torch_threads``.
    """
    embedder = MultimodalExpertEmbedder(
        [],
        cache_dir=config["cache_dir"],
        device=config["device"],
        batch_size=config["batch_size"],
        n_jobs=config["n_jobs"],
        trust_file_stat=config["trust_file_stat"],
    )
    embedder.device_ = _resolve_device(config["device"])
    counts: dict = {"_worker": _worker_name(), "_load_seconds": 0.0,
                    "_torch_threads": _torch_threads()}

    def add_load(seconds: float) -> None:
        counts["_load_seconds"] += seconds

    cache = EmbeddingCache(config["cache_dir"])
    keys_by_class: dict[type, list] = {}
    with ThreadPoolExecutor(max_workers=effective_n_jobs(config["n_jobs"])) as pool, _closing(cache):
        for given in experts:
            if config.get("share_experts"):
                expert, lock = _shared_expert(given)
            else:
                expert, lock = given, threading.Lock()
            where = f"{modality}/{expert.name}"
            keys = keys_by_class.get(type(expert))
            if keys is None:
                keys = embedder._content_keys(expert, items, cache, pool)
                keys_by_class[type(expert)] = keys
            first, _, unreadable = _rank_keys(keys)
            with lock:
                _, _, _, part = embedder._vectors_for(
                    expert, first, items, cache, pool, where, embedder.device_, keep=False,
                    on_load=add_load,
                )
            counts[where] = {
                "items": len(items),
                "hits": part["hits"],
                "embedded": part["embedded"],
                "failures": part["failed"] + len(unreadable),
            }
    return counts


def _preload(config: dict, experts: list) -> dict:
    """Load each expert in this worker process (kept for the partitions); return timings."""
    import time

    start = time.perf_counter()
    device = _resolve_device(config["device"])
    for given in experts:
        expert, lock = _shared_expert(given)
        with lock:
            expert._get_model(device)
    return {"seconds": time.perf_counter() - start, "torch_threads": _torch_threads()}


def _fill_on_dask(client, config, jobs, partitions, resources, batch_size, preload=True):
    """Run ``_fill_part`` over partitions of each job on the cluster.

    Returns the partitions' results, the number of workers and, with
    ``preload``, ``{"seconds": wall time of the loading step, "torch_threads":
    {worker: n}}`` (else None).
    """
    import time

    try:
        from distributed import as_completed, wait
    except ImportError as exc:  # pragma: no cover - dask is in the test extra
        from ..exceptions import MissingExtraError

        raise MissingExtraError(
            "fill_cache(client=...) needs dask.distributed: pip install 'medmix_sklearn[dask]'."
        ) from exc
    try:  # newer versions list only a few workers unless asked for all
        info = client.scheduler_info(n_workers=-1)
    except TypeError:  # pragma: no cover - older dask.distributed
        info = client.scheduler_info()
    workers = info.get("workers", {})
    n_workers = max(1, len(workers))
    preloaded = None
    if preload and jobs:
        # Every worker able to take the tasks loads every expert at once, so no
        # partition waits behind a load and loading is timed apart.
        able = [
            address for address, info in workers.items()
            if all(info.get("resources", {}).get(k, 0) >= v for k, v in (resources or {}).items())
        ]
        experts = [expert for _, entry_experts, _ in jobs for expert in entry_experts]
        start = time.perf_counter()
        loads = [
            client.submit(_preload, config, experts, workers=[address],
                          allow_other_workers=False, resources=resources, pure=False)
            for address in able
        ]
        wait(loads)
        results = dict(zip(able, client.gather(loads)))
        preloaded = {
            "seconds": time.perf_counter() - start,
            "torch_threads": {a: r["torch_threads"] for a, r in results.items()},
        }
    n_parts = partitions or 4 * n_workers
    futures = []
    for name, experts, items in jobs:
        size = max(int(batch_size), -(-len(items) // n_parts))
        for start in range(0, len(items), size):
            futures.append(
                client.submit(
                    _fill_part,
                    config,
                    name,
                    experts,
                    items[start : start + size],
                    resources=resources,
                    pure=False,
                )
            )
    results = [future.result() for future in as_completed(futures)]
    return results, n_workers, preloaded


def _chunked_map(pool: ThreadPoolExecutor, func, values: list, chunk: int = 512) -> list:
    """``[func(v) for v in values]`` on the pool, in chunks (cheap calls, many items).

    Inline when the pool has one thread: the caller would only wait for it.
    """
    if len(values) <= chunk or _pool_size(pool) <= 1:
        return [func(v) for v in values]
    parts = [values[i : i + chunk] for i in range(0, len(values), chunk)]
    out: list = []
    for result in pool.map(lambda part: [func(v) for v in part], parts):
        out.extend(result)
    return out


@contextmanager
def _closing(cache: EmbeddingCache | None):
    try:
        yield cache
    finally:
        if cache is not None:
            cache.close()


def _read(expert: BaseExpert, item: Any):
    try:
        return expert.preprocess(expert.read(item))
    except ItemReadError as exc:
        return exc


def _read_many(expert: BaseExpert, items: list) -> list:
    return [_read(expert, item) for item in items]


def _pool_size(pool: ThreadPoolExecutor) -> int:
    return int(getattr(pool, "_max_workers", 1))


def _resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise ValueError(
            f"device must be 'auto' or a torch device such as 'cpu', 'cuda' or "
            f"'cuda:1'. Got {device!r} instead."
        ) from exc
    return device
