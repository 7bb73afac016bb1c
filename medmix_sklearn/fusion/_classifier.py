"""MedMIXClassifier: expert and modality fusion under missing modalities.

The estimator reads the block layout (DESIGN.md section 4) from its input,
standardises each feature on the rows where it is present, replaces every NaN
before anything reaches torch, and trains :class:`MedMIXNetwork` through a
private skorch net ``net_``.

Defaults were checked by measurement with ``benchmarks/bench_classifier_speed.py
--sweep``: generated NaN-block data (1,500 training and 1,500 test rows, 3
modalities x 2 experts x 64 dimensions, 30/40/50% of the modalities missing
completely at random), test AUROC averaged over 2 seeds, one change at a time
from the defaults (2-core machine, 1 torch thread)::

    defaults                 0.870    hidden_dim=32     0.862   hidden_dim=128   0.865
    lr=3e-3                  0.868    lr=3e-4           0.866   weight_decay=1e-2 0.870
    dropout=0.0              0.871    dropout=0.3       0.874
    modality_dropout=0.0     0.873    modality_dropout=0.4      0.868
    aux_weight=0.0           0.872    aux_weight=1.0    0.868
    expert_fusion="mean"     0.869
    modality_fusion="gate"   0.873    "mean" 0.876      "concat" 0.869
    early_stopping=False, max_epochs=30                         0.836

Only early stopping matters clearly there (without it the network overfits);
every other change moves AUROC by less than about 0.007, within the noise of two
seeds. On this missing-completely-at-random generator, learned weighting,
modality dropout and auxiliary heads neither help nor hurt; the defaults keep
them at moderate values until the quality benchmark (its own issue) decides.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from numbers import Integral, Real

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data
from skorch.callbacks import EarlyStopping
from skorch.helper import predefined_split

from .._layout import SEP, TABULAR_EXPERT, Block, blocks_from_mapping, parse_feature_names
from ..exceptions import MissingModalityWarning
from ._losses import FusionLoss
from ._net import BatchIterator, BlockDataset, EpochLog, FusionNet
from ._network import EXPERT_FUSIONS, MODALITY_FUSIONS, FusionOutput, MedMIXNetwork

_DEFAULT_MODALITY = "features"


class MedMIXClassifier(ClassifierMixin, BaseEstimator):
    """Multimodal classifier that fuses experts within, and modalities across, what is present.

    Each expert block (``{modality}__{expert}__{k}`` columns) becomes one token;
    a per-sample gate weights the experts present in each modality; the
    modality tokens are weighted per sample over the modalities present, and
    the fused representation feeds a linear head. Absent blocks (all NaN) are
    masked, never imputed; a row with no modality present gets the learned
    prior. NaN cells inside a present tabular block are imputed with the
    feature mean and flagged by a missing-indicator input.

    Parameters
    ----------
    hidden_dim : int, default=64
        Width of the expert, modality and fused tokens.
    expert_fusion : {"gate", "mean"}, default="gate"
        Pooling of a modality's experts: a learned per-sample softmax gate over
        the experts present, or their plain mean.
    modality_fusion : {"attention", "gate", "mean", "concat"}, default="attention"
        Pooling over the modalities present: a learned query attending over
        modality tokens, a gated (attention-MIL) pooling, the plain mean, or a
        concatenation with zeros and the presence mask (the unmasked baseline;
        its ``explain`` modality weights are uniform over what is present).
    modality_dropout : float, default=0.2
        Probability, during training, of dropping each present modality of a
        row (at least one is always kept).
    aux_weight : float, default=0.3
        Weight of the auxiliary unimodal heads' loss, which trains each
        modality token to be predictive alone. 0 disables it.
    dropout : float, default=0.1
        Dropout on expert tokens and before the head.
    lr : float, default=1e-3
        AdamW learning rate.
    weight_decay : float, default=1e-4
        AdamW weight decay.
    batch_size : int, default=128
        Mini-batch size.
    max_epochs : int, default=60
        Maximum number of epochs of ``fit``.
    early_stopping : bool, default=True
        Hold out a stratified ``validation_fraction`` of the training rows and
        stop when their loss has not improved for ``patience`` epochs; the best
        epoch's weights are kept. Falls back to training on all rows, with a
        warning, when the split is impossible (too few rows per class).
    validation_fraction : float, default=0.1
        Share of rows held out for early stopping.
    patience : int, default=8
        Epochs without improvement before stopping.
    class_weight : dict, "balanced" or None, default=None
        Per-class weights multiplied into the sample weights.
    blocks : dict or None, default=None
        Explicit layout ``{modality: column indices}`` or ``{modality: {expert:
        column indices}}``, for input without layout column names. Overrides
        names when given. Without both, every column is one tabular modality.
    device : str, default="auto"
        Torch device; "auto" picks CUDA when available. Resolved in ``fit`` as
        ``device_``.
    random_state : int, RandomState instance or None, default=None
        Seeds weight initialisation, shuffling, dropout and the validation split.
        With an int, CPU training is reproducible.
    verbose : int, default=0
        Show a tqdm bar over epochs with the losses. Every epoch is also
        logged at INFO level on this module's logger.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels.
    n_features_in_ : int
        Number of input columns.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Column names, when X had string column names.
    blocks_ : list of Block
        The expert and tabular blocks used as inputs (teacher blocks excluded).
    modalities_ : list of str
        Modality names, in the order of the modality weights.
    device_ : str
        The device trained on.
    n_iter_ : int
        Epochs trained.
    net_ : skorch.NeuralNet
        The private training wrapper; its ``module_`` is the network.

    Examples
    --------
    >>> import numpy as np
    >>> from medmix_sklearn import MedMIXClassifier
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(60, 6)); y = (X[:, 0] > 0).astype(int)
    >>> X[:20, 3:] = np.nan  # modality "b" absent for 20 rows
    >>> clf = MedMIXClassifier(blocks={"a": [0, 1, 2], "b": [3, 4, 5]},
    ...                        max_epochs=5, random_state=0).fit(X, y)
    >>> clf.predict_proba(X).shape
    (60, 2)
    """

    _parameter_constraints: dict = {
        "hidden_dim": [Interval(Integral, 1, None, closed="left")],
        "expert_fusion": [StrOptions(set(EXPERT_FUSIONS))],
        "modality_fusion": [StrOptions(set(MODALITY_FUSIONS))],
        "modality_dropout": [Interval(Real, 0, 1, closed="left")],
        "aux_weight": [Interval(Real, 0, None, closed="left")],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "patience": [Interval(Integral, 1, None, closed="left")],
        "class_weight": [StrOptions({"balanced"}), dict, None],
        "blocks": [dict, None],
        "device": [str],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        *,
        hidden_dim=64,
        expert_fusion="gate",
        modality_fusion="attention",
        modality_dropout=0.2,
        aux_weight=0.3,
        dropout=0.1,
        lr=1e-3,
        weight_decay=1e-4,
        batch_size=128,
        max_epochs=60,
        early_stopping=True,
        validation_fraction=0.1,
        patience=8,
        class_weight=None,
        blocks=None,
        device="auto",
        random_state=None,
        verbose=0,
    ):
        self.hidden_dim = hidden_dim
        self.expert_fusion = expert_fusion
        self.modality_fusion = modality_fusion
        self.modality_dropout = modality_dropout
        self.aux_weight = aux_weight
        self.dropout = dropout
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.class_weight = class_weight
        self.blocks = blocks
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags

    # -- public API --------------------------------------------------------
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Fit the fusion network.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Block matrix; NaN marks absent blocks (and missing tabular cells).
        y : array-like of shape (n_samples,)
            Class labels (strings or integers).
        sample_weight : array-like of shape (n_samples,), default=None
            Per-row weights.

        Returns
        -------
        self : MedMIXClassifier
        """
        X, y = validate_data(self, X, y, ensure_all_finite="allow-nan", dtype=[np.float64, np.float32])
        sample_weight = _check_sample_weight(sample_weight, X, dtype=np.float64)
        check_classification_targets(y)
        self._encoder = LabelEncoder().fit(y)
        self.classes_ = self._encoder.classes_
        if len(self.classes_) < 2:
            raise ValueError(
                f"MedMIXClassifier needs samples of at least 2 classes; got 1 class "
                f"({self.classes_[0]!r}). Check y."
            )
        y_enc = self._encoder.transform(y)
        self._fit_preprocessing(X)
        self.seed_ = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        self._generator = torch.Generator().manual_seed(self.seed_)
        self.class_weight_ = self._class_weights(y_enc)
        dataset = self._dataset(X, y_enc, sample_weight)

        valid = None
        train_idx = np.arange(len(y_enc))
        if self.early_stopping:
            train_idx, valid_idx = self._validation_split(y_enc)
            if valid_idx is not None:
                valid = dataset.subset(valid_idx)
        self.net_ = self._build_net(valid)
        with self._rng(self.seed_):
            self.net_.fit(dataset.subset(train_idx) if valid is not None else dataset, None)
        self.n_iter_ = len(self.net_.history)
        return self

    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """Train one epoch on ``(X, y)``, continuing from the previous call.

        The first call fixes the layout, the feature standardisation and the
        classes; no validation split is held out.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        classes : array-like of shape (n_classes,), default=None
            All classes; needed on the first call if ``y`` may lack some.
            Taken from ``y`` when None on the first call.
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        self : MedMIXClassifier
        """
        first = not hasattr(self, "net_")
        if first:
            self._validate_params()
        X, y = validate_data(
            self, X, y, ensure_all_finite="allow-nan", dtype=[np.float64, np.float32], reset=first
        )
        sample_weight = _check_sample_weight(sample_weight, X, dtype=np.float64)
        check_classification_targets(y)
        if first:
            self._encoder = LabelEncoder().fit(np.unique(y) if classes is None else np.asarray(classes))
            self.classes_ = self._encoder.classes_
            if len(self.classes_) < 2:
                raise ValueError(
                    f"MedMIXClassifier needs at least 2 classes; got {list(self.classes_)!r}. "
                    "Pass all classes with `classes=` on the first call to partial_fit."
                )
            self._fit_preprocessing(X)
            self.seed_ = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
            self._generator = torch.Generator().manual_seed(self.seed_)
            self.class_weight_ = self._class_weights(self._encoder.transform(y))
            self.net_ = self._build_net(None)
            with self._rng(self.seed_):
                self.net_.initialize()
            self.n_iter_ = 0
        unseen = np.setdiff1d(np.unique(y), self.classes_)
        if unseen.size:
            raise ValueError(
                f"y contains labels {unseen.tolist()!r} that are not in classes_ "
                f"{self.classes_.tolist()!r}. Pass every class with `classes=` on the first call."
            )
        dataset = self._dataset(X, self._encoder.transform(y), sample_weight)
        with self._rng(self.seed_ + self.n_iter_ + 1):
            self.net_.partial_fit(dataset, None, epochs=1)
        self.n_iter_ += 1
        return self

    def decision_function(self, X):
        """Logits: log-odds of ``classes_[1]`` (binary) or per-class logits.

        Returns
        -------
        scores : ndarray of shape (n_samples,) or (n_samples, n_classes)
        """
        logits = self._forward(X).logits.double().numpy()
        if len(self.classes_) == 2:
            return logits[:, 1] - logits[:, 0]
        return logits

    def predict_proba(self, X):
        """Class probabilities, columns in the order of ``classes_``.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
        """
        return torch.softmax(self._forward(X).logits.double(), dim=1).numpy()

    def predict(self, X):
        """Predicted class labels.

        Returns
        -------
        y : ndarray of shape (n_samples,)
        """
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]

    def explain(self, X):
        """Per-sample expert and modality weights.

        Expert weights of a modality are non-negative and sum to 1 over that
        modality's experts present in the row (0 if the modality is absent);
        modality weights sum to 1 over the modalities present. Absent entries
        are exactly 0. A row with nothing present has all weights 0.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        weights : pandas.DataFrame of shape (n_samples, n_blocks + n_modalities)
            Columns ``expert_weight__{modality}__{expert}`` then
            ``modality_weight__{modality}``; the index of ``X`` when it is a
            DataFrame.
        """
        out = self._forward(X)
        columns = [f"expert_weight{SEP}{b.modality}{SEP}{b.expert}" for b in self.blocks_]
        columns += [f"modality_weight{SEP}{m}" for m in self.modalities_]
        values = torch.cat([out.expert_weights, out.modality_weights], dim=1).double().numpy()
        index = X.index if isinstance(X, pd.DataFrame) else None
        return pd.DataFrame(values, columns=columns, index=index)

    # -- persistence -------------------------------------------------------
    def __getstate__(self):
        state = dict(super().__getstate__())  # object.__getstate__ may return __dict__ itself
        net = state.pop("net_", None)
        if net is not None:
            # Tensors go to CPU, so a model trained on CUDA unpickles anywhere;
            # the skorch net is rebuilt around them on load.
            state["_net_state"] = {
                "module": {k: v.detach().cpu() for k, v in net.module_.state_dict().items()},
                "optimizer": _to_cpu(net.optimizer_.state_dict()),
                "history": net.history,
                "generator": self._generator.get_state(),
            }
        state.pop("_generator", None)
        return state

    def __setstate__(self, state):
        net_state = state.pop("_net_state", None)
        super().__setstate__(state)
        if net_state is None:
            return
        if str(self.device_).startswith("cuda") and not torch.cuda.is_available():
            self.device_ = "cpu"
        self._generator = torch.Generator()
        self.net_ = self._build_net(None)
        with self._rng(0):
            self.net_.initialize()
        self.net_.module_.load_state_dict(net_state["module"])
        self.net_.optimizer_.load_state_dict(net_state["optimizer"])
        self.net_.history = net_state["history"]
        self._generator.set_state(net_state["generator"])

    # -- internals ---------------------------------------------------------
    def _resolve_layout(self, n_features: int) -> list[Block]:
        names = getattr(self, "feature_names_in_", None)
        if self.blocks is not None:
            layout = blocks_from_mapping(self.blocks, n_features)
        elif names is not None and any(SEP in str(n) for n in names):
            layout = parse_feature_names(names)
        else:
            layout = [Block(_DEFAULT_MODALITY, TABULAR_EXPERT, tuple(range(n_features)))]
        # Teacher blocks are training-only targets, never inputs.
        students = [b for b in layout if not b.teacher]
        if not students:
            raise ValueError(
                "Every block of X is a teacher (training-only) block, so there is no input "
                "to predict from. Add student modalities."
            )
        return students

    def _fit_preprocessing(self, X: np.ndarray) -> None:
        """Learn the layout, per-feature standardisation and missing indicators."""
        self.blocks_ = self._resolve_layout(X.shape[1])
        self.modalities_ = list(dict.fromkeys(b.modality for b in self.blocks_))
        self._columns = np.concatenate([np.asarray(b.columns, dtype=np.intp) for b in self.blocks_])
        values = X[:, self._columns]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
            mean = np.nanmean(values, axis=0)
            std = np.nanstd(values, axis=0)
        mean = np.where(np.isfinite(mean), mean, 0.0)
        std = np.where(np.isfinite(std) & (std > 1e-12 * np.maximum(1.0, np.abs(mean))), std, 1.0)
        self._mean, self._scale = mean, std

        presence = self._presence(X)
        absent_everywhere = [
            m for m in self.modalities_
            if not presence[:, [i for i, b in enumerate(self.blocks_) if b.modality == m]].any()
        ]
        if absent_everywhere:
            warnings.warn(
                f"Modalities {absent_everywhere!r} are absent (all NaN) in every training row; "
                "they cannot be learned and will be ignored in practice.",
                MissingModalityWarning,
                stacklevel=4,
            )
        # Missing-indicator inputs for tabular columns with NaN cells in present rows.
        self._indicators = []
        for i, b in enumerate(self.blocks_):
            if b.expert != TABULAR_EXPERT:
                self._indicators.append(np.empty(0, dtype=np.intp))
                continue
            cells = np.isnan(X[np.ix_(presence[:, i], list(b.columns))])
            self._indicators.append(np.flatnonzero(cells.any(axis=0)))
        self.network_params_ = {
            "block_dims": [b.dim + len(ind) for b, ind in zip(self.blocks_, self._indicators)],
            "block_modality": [self.modalities_.index(b.modality) for b in self.blocks_],
            "block_norm": [b.expert != TABULAR_EXPERT for b in self.blocks_],
        }
        self.device_ = (
            ("cuda" if torch.cuda.is_available() else "cpu") if self.device == "auto" else self.device
        )
        try:
            torch.device(self.device_)
        except RuntimeError as exc:
            raise ValueError(
                f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N'; got {self.device!r}."
            ) from exc

    def _presence(self, X: np.ndarray) -> np.ndarray:
        """(n, n_blocks) bool: a block is present when any of its cells is not NaN."""
        return np.stack(
            [~np.isnan(X[:, list(b.columns)]).all(axis=1) for b in self.blocks_], axis=1
        )

    def _prepare(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Standardised, NaN-free float32 matrix in block order, and the block mask."""
        mask = self._presence(X)
        z = (X[:, self._columns] - self._mean) / self._scale
        nan = np.isnan(z)
        z[nan] = 0.0
        pieces, start = [], 0
        for b, ind in zip(self.blocks_, self._indicators):
            pieces.append(z[:, start : start + b.dim])
            if len(ind):
                pieces.append(nan[:, start + ind])
            start += b.dim
        x = np.concatenate(pieces, axis=1) if len(pieces) > 1 else pieces[0]
        return np.ascontiguousarray(x, dtype=np.float32), mask

    def _dataset(self, X, y=None, sample_weight=None) -> BlockDataset:
        x, mask = self._prepare(X)
        if sample_weight is not None and self.class_weight_ is not None:
            sample_weight = sample_weight * self.class_weight_[y]
        return BlockDataset(x, mask, y, sample_weight)

    def _class_weights(self, y_enc: np.ndarray) -> np.ndarray | None:
        """Per-class weights in the order of ``classes_`` (None without class_weight)."""
        if self.class_weight is None:
            return None
        if self.class_weight == "balanced":
            present = np.unique(y_enc)
            weights = np.ones(len(self.classes_))
            weights[present] = compute_class_weight("balanced", classes=present, y=y_enc)
            return weights
        unknown = set(self.class_weight) - set(self.classes_.tolist())
        if unknown:
            raise ValueError(
                f"class_weight names classes {sorted(map(str, unknown))} that are not in y; "
                f"classes are {self.classes_.tolist()!r}. Fix the keys of class_weight."
            )
        return np.array([float(self.class_weight.get(c, 1.0)) for c in self.classes_])

    def _validation_split(self, y_enc: np.ndarray):
        idx = np.arange(len(y_enc))
        try:
            train_idx, valid_idx = train_test_split(
                idx, test_size=self.validation_fraction, stratify=y_enc, random_state=self.seed_
            )
        except ValueError as exc:
            warnings.warn(
                f"early_stopping is on but a stratified validation split of "
                f"validation_fraction={self.validation_fraction} is impossible on "
                f"{len(y_enc)} rows ({exc}); training on all rows for max_epochs instead.",
                UserWarning,
                stacklevel=4,
            )
            return idx, None
        return np.sort(train_idx), np.sort(valid_idx)

    def _build_net(self, valid: BlockDataset | None) -> FusionNet:
        callbacks = [("epoch_log", EpochLog(verbose=self.verbose, total=self.max_epochs))]
        if valid is not None:
            callbacks.append(
                (
                    "early_stopping",
                    EarlyStopping(monitor="valid_loss", patience=self.patience, load_best=True, sink=_log_info),
                )
            )
        return FusionNet(
            module=MedMIXNetwork,
            module__n_classes=len(self.classes_),
            module__hidden_dim=self.hidden_dim,
            module__expert_fusion=self.expert_fusion,
            module__modality_fusion=self.modality_fusion,
            module__dropout=self.dropout,
            module__modality_dropout=self.modality_dropout,
            **{f"module__{k}": v for k, v in self.network_params_.items()},
            criterion=FusionLoss,
            criterion__aux_weight=self.aux_weight,
            optimizer=torch.optim.AdamW,
            lr=self.lr,
            optimizer__weight_decay=self.weight_decay,
            batch_size=self.batch_size,
            max_epochs=self.max_epochs,
            train_split=None if valid is None else predefined_split(valid),
            iterator_train=BatchIterator,
            iterator_train__shuffle=True,
            iterator_train__generator=self._generator,
            iterator_valid=BatchIterator,
            callbacks=callbacks,
            device=self.device_,
            verbose=0,
        )

    @contextlib.contextmanager
    def _rng(self, seed: int):
        """Fork torch's global RNG, seed it, and restore it afterwards."""
        devices = [torch.device(self.device_).index or 0] if str(self.device_).startswith("cuda") else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            yield

    def _forward(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, ensure_all_finite="allow-nan", dtype=[np.float64, np.float32], reset=False)
        out = self.net_.forward(self._dataset(X), training=False, device="cpu")
        return FusionOutput(*out)


def _log_info(message: str) -> None:
    logging.getLogger(__name__).info(message)


def _to_cpu(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj
