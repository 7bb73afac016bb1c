"""The private skorch net behind :class:`MedMIXClassifier` (held as ``net_``).

skorch runs the training loop; this module adds what the fusion network needs:
a dataset and batch iterator that slice whole tensors (no per-row Python
calls), a ``get_loss`` that passes per-row weights and the training flag to
:class:`~medmix_sklearn.fusion._losses.FusionLoss`, and a callback that logs
each epoch (a tqdm bar when ``verbose``). The train/validation split is made
by the classifier (stratified) and handed in through ``predefined_split``.

Training-only teacher terms live here too. The dataset may carry teacher
tensors (standardised teacher embeddings and their presence, soft labels and
theirs) next to ``x`` and ``mask``; ``infer`` never passes them to the network.
With an ``aligner`` spec, ``initialize_module`` adds the projection heads
(:class:`~medmix_sklearn.fusion._network.AlignmentHeads`) as a second module
``aligner_`` with its own optimizer ``aligner_optimizer_``, so that
:meth:`FusionNet.drop_teacher` removes both after training and neither the
module state nor the optimizer state of ``optimizer_`` ever holds teacher
weights.

Every random draw of training comes from the net's own generator
``generator_`` (seeded with ``random_state``): weight initialisation,
shuffling, dropout and modality dropout. Torch's process-wide generator is
never used, so nets trained in threads at the same time do not disturb each
other. On CUDA, dropout draws from a CUDA generator seeded from ``generator_``
at the start of each call to ``fit``/``partial_fit``; it lives only while
training.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
import torch
from skorch import NeuralNet
from skorch.callbacks import Callback, EpochTimer, PassthroughScoring
from skorch.utils import to_tensor

from ._network import AlignmentHeads, init_parameters

logger = logging.getLogger(__name__)


#: Teacher tensors a :class:`BlockDataset` may carry, with their dtypes.
TEACHER_KEYS = {
    "teacher_x": torch.float32,  # (n, sum of teacher block widths), standardised, 0 where absent
    "teacher_mask": torch.bool,  # (n, n_teacher_blocks)
    "soft_target": torch.float32,  # (n, n_classes) teacher probabilities
    "soft_mask": torch.bool,  # (n,) rows that have a soft label
    "labeled": torch.bool,  # (n,) rows with a label (semi-supervised fits only)
}
_NETWORK_INPUTS = ("x", "mask")


class BlockDataset(torch.utils.data.Dataset):
    """Rows of the block matrix; indexing with an index tensor returns a whole batch.

    ``teacher`` optionally maps names of :data:`TEACHER_KEYS` to per-row
    arrays; they travel with the batch to ``get_loss``, never to the network.
    """

    def __init__(
        self,
        x: np.ndarray,
        mask: np.ndarray,
        y: np.ndarray | None = None,
        sample_weight: np.ndarray | None = None,
        teacher: dict | None = None,
    ) -> None:
        self.x = torch.as_tensor(x, dtype=torch.float32)
        self.mask = torch.as_tensor(mask, dtype=torch.bool)
        n = self.x.shape[0]
        self.y = torch.zeros(n, dtype=torch.long) if y is None else torch.as_tensor(y, dtype=torch.long)
        self.sample_weight = (
            torch.ones(n, dtype=torch.float32)
            if sample_weight is None
            else torch.as_tensor(sample_weight, dtype=torch.float32)
        )
        self.teacher = {
            key: torch.as_tensor(value, dtype=TEACHER_KEYS[key]) for key, value in (teacher or {}).items()
        }

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, idx):
        batch = {"x": self.x[idx], "mask": self.mask[idx], "sample_weight": self.sample_weight[idx]}
        for key, value in self.teacher.items():
            batch[key] = value[idx]
        return batch, self.y[idx]

    def subset(self, idx: np.ndarray) -> BlockDataset:
        idx = torch.as_tensor(idx, dtype=torch.long)
        out = BlockDataset.__new__(BlockDataset)
        out.x, out.mask = self.x[idx], self.mask[idx]
        out.y, out.sample_weight = self.y[idx], self.sample_weight[idx]
        out.teacher = {key: value[idx] for key, value in self.teacher.items()}
        return out


class BatchIterator:
    """Minimal DataLoader replacement: shuffled index batches, sliced at once."""

    def __init__(
        self,
        dataset: BlockDataset,
        batch_size: int = 128,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        **_: object,
    ) -> None:
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.generator = generator

    def __len__(self) -> int:
        return -(-len(self.dataset) // self.batch_size)

    def __iter__(self) -> Iterator:
        n = len(self.dataset)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        for start in range(0, n, self.batch_size):
            yield self.dataset[order[start : start + self.batch_size]]


class EpochLog(Callback):
    """Log each epoch's losses; show a tqdm bar over epochs when ``verbose``."""

    def __init__(self, verbose: int = 0, total: int | None = None) -> None:
        self.verbose = verbose
        self.total = total

    def initialize(self):
        self.bar_ = None
        return self

    def on_train_begin(self, net, X=None, y=None, **kwargs) -> None:
        if self.verbose and self.bar_ is None:
            from tqdm.auto import tqdm

            self.bar_ = tqdm(total=self.total, desc="MedMIXClassifier", unit="epoch", leave=False)

    def on_epoch_end(self, net, **kwargs) -> None:
        row = net.history[-1]
        keys = ("train_loss", "valid_loss", "dur")
        values = {k: round(float(row[k]), 4) for k in keys if k in row}
        logger.info("epoch %d %s", row["epoch"], values)
        if self.bar_ is not None:
            self.bar_.set_postfix(values)
            self.bar_.update(1)

    def on_train_end(self, net, X=None, y=None, **kwargs) -> None:
        # A bar spans one fit; partial_fit calls keep updating the same bar
        # until it is full.
        if self.total is None or (self.bar_ is not None and self.bar_.n >= self.total):
            self.close()

    def close(self) -> None:
        """Close the progress bar (``fit`` ends here, early stopping or not)."""
        if self.bar_ is not None:
            self.bar_.close()
            self.bar_ = None

    def __getstate__(self):
        state = self.__dict__.copy()
        state["bar_"] = None
        return state


class FusionNet(NeuralNet):
    """skorch NeuralNet for :class:`MedMIXNetwork` and :class:`FusionLoss`.

    ``X`` is a :class:`BlockDataset`; skorch's printing is replaced by
    :class:`EpochLog` (given in ``callbacks``).

    Parameters
    ----------
    module, criterion, **kwargs
        As for :class:`skorch.NeuralNet`.
    aligner : dict or None, default=None
        Keyword arguments of :class:`AlignmentHeads` (``hidden_dim``,
        ``target_dims``, ``sources``) to train teacher alignment heads; None
        for none.
    random_state : int, default=0
        Seed of ``generator_``, the source of every random draw.
    alignment : tuple of {"cosine", "contrastive"}, default=("cosine",)
        Which alignment terms the heads' projections enter (both share the
        heads).
    """

    def __init__(self, module, criterion, *, aligner=None, random_state=0, alignment=("cosine",), **kwargs):
        super().__init__(module, criterion, **kwargs)
        self.aligner = aligner
        self.random_state = random_state
        self.alignment = alignment

    def initialize(self):
        self.generator_ = torch.Generator().manual_seed(int(self.random_state))
        return super().initialize()

    def initialize_module(self):
        super().initialize_module()
        init_parameters(self.module_, self.generator_)
        if self.aligner is not None:
            heads = init_parameters(AlignmentHeads(**self.aligner), self.generator_)
            self.aligner_ = heads.to(self.device)
        return self

    def get_iterator(self, dataset, training=False):
        iterator = super().get_iterator(dataset, training=training)
        if training:
            iterator.generator = self.generator_
        return iterator

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        super().on_train_begin(net, X=X, y=y, **kwargs)
        device = torch.device(self.device)
        if device.type == "cpu":
            self._dropout_generator = self.generator_
        else:
            seed = int(torch.randint(0, 2**62, (1,), generator=self.generator_))
            self._dropout_generator = torch.Generator(device=device).manual_seed(seed)

    def on_train_end(self, net, X=None, y=None, **kwargs):
        super().on_train_end(net, X=X, y=y, **kwargs)
        self.__dict__.pop("_dropout_generator", None)

    def initialize_optimizer(self, triggered_directly=None):
        # The network and the training-only heads get separate optimizers, so
        # that dropping the heads leaves optimizer_ exactly as without them.
        args, kwargs = self.get_params_for_optimizer("optimizer", self.module_.named_parameters())
        self.optimizer_ = self.optimizer(*args, **kwargs)
        if getattr(self, "aligner_", None) is not None:
            args, kwargs = self.get_params_for_optimizer("optimizer", self.aligner_.named_parameters())
            self.aligner_optimizer_ = self.optimizer(*args, **kwargs)
        return self

    def drop_teacher(self) -> None:
        """Remove the alignment heads and their optimizer (after training)."""
        for name in ("aligner_optimizer_", "aligner_"):
            if name in self.__dict__:
                delattr(self, name)
        self.aligner = None

    @property
    def _default_callbacks(self):
        return [
            ("epoch_timer", EpochTimer()),
            ("train_loss", PassthroughScoring(name="train_loss", on_train=True)),
            ("valid_loss", PassthroughScoring(name="valid_loss")),
        ]

    def _consistency(self, X, training: bool) -> bool:
        """Whether this training batch gets the consistency term (it has unlabelled rows)."""
        return (
            training
            and isinstance(X, dict)
            and "labeled" in X
            and getattr(self.criterion_, "consistency_weight", 0) > 0
            and not bool(torch.as_tensor(X["labeled"]).all())
        )

    def infer(self, x, **fit_params):
        inputs = {key: value for key, value in x.items() if key in _NETWORK_INPUTS}
        training = self.module_.training
        if training:
            fit_params = {**fit_params, "generator": self.__dict__.get("_dropout_generator")}
            if getattr(self, "aligner_", None) is not None:
                fit_params["return_tokens"] = True
        out = super().infer(inputs, **fit_params)
        if self._consistency(x, training):
            # The target of the consistency term: every present modality, no gradient.
            with torch.no_grad():
                full = super().infer(
                    inputs, generator=fit_params.get("generator"), drop_modalities=False
                )[0]
            out = tuple(out) + (full,)
        return out

    def get_loss(self, y_pred, y_true, X=None, training=False):
        y_true = to_tensor(y_true, device=self.device)
        sample_weight = align = contrast = distill = labeled = full_logits = None
        if isinstance(X, dict):
            if "sample_weight" in X:
                sample_weight = to_tensor(X["sample_weight"], device=self.device)
            if "labeled" in X:
                labeled = to_tensor(X["labeled"], device=self.device)
            if training and "teacher_x" in X and getattr(self, "aligner_", None) is not None:
                mod_tokens, fused = y_pred[5], y_pred[6]
                predictions, source_present = self.aligner_(mod_tokens, fused, y_pred[4])
                teacher_mask = to_tensor(X["teacher_mask"], device=self.device)
                spec = (predictions, to_tensor(X["teacher_x"], device=self.device), teacher_mask & source_present)
                align = spec if "cosine" in self.alignment else None
                contrast = spec if "contrastive" in self.alignment else None
            # Outside training, soft labels score held-out unlabelled rows (early stopping).
            if "soft_target" in X and (training or labeled is not None):
                distill = (
                    to_tensor(X["soft_target"], device=self.device),
                    to_tensor(X["soft_mask"], device=self.device),
                )
            if self._consistency(X, training):
                full_logits = y_pred[-1]
        loss = self.criterion_(
            y_pred, y_true, sample_weight, training=training, align=align, contrast=contrast,
            distill=distill, labeled=labeled, full_logits=full_logits,
        )
        penalty = getattr(self.module_, "penalty", None)
        if training and penalty is not None:
            # A network's own training-only regulariser (e.g. a mixture of
            # experts' load balancing), computed in its last forward.
            extra = penalty()
            if extra is not None:
                loss = loss + extra
        return loss
