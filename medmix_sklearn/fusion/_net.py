"""The private skorch net behind :class:`MedMIXClassifier` (held as ``net_``).

skorch runs the training loop; this module adds what the fusion network needs:
a dataset and batch iterator that slice whole tensors (no per-row Python
calls), a ``get_loss`` that passes per-row weights and the training flag to
:class:`~medmix_sklearn.fusion._losses.FusionLoss`, and a callback that logs
each epoch (a tqdm bar when ``verbose``). The train/validation split is made
by the classifier (stratified) and handed in through ``predefined_split``.
Training-only terms (teachers) are meant to be added here later, as extra
modules in ``initialize_module`` and extra terms in ``get_loss``.
"""

from __future__ import annotations

import logging
from typing import Iterator

import numpy as np
import torch
from skorch import NeuralNet
from skorch.callbacks import Callback, EpochTimer, PassthroughScoring
from skorch.utils import to_tensor

logger = logging.getLogger(__name__)


class BlockDataset(torch.utils.data.Dataset):
    """Rows of the block matrix; indexing with an index tensor returns a whole batch."""

    def __init__(
        self,
        x: np.ndarray,
        mask: np.ndarray,
        y: np.ndarray | None = None,
        sample_weight: np.ndarray | None = None,
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

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, idx):
        return (
            {"x": self.x[idx], "mask": self.mask[idx], "sample_weight": self.sample_weight[idx]},
            self.y[idx],
        )

    def subset(self, idx: np.ndarray) -> "BlockDataset":
        idx = torch.as_tensor(idx, dtype=torch.long)
        out = BlockDataset.__new__(BlockDataset)
        out.x, out.mask = self.x[idx], self.mask[idx]
        out.y, out.sample_weight = self.y[idx], self.sample_weight[idx]
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
        if self.bar_ is not None and (self.total is None or self.bar_.n >= self.total):
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
    """

    @property
    def _default_callbacks(self):
        return [
            ("epoch_timer", EpochTimer()),
            ("train_loss", PassthroughScoring(name="train_loss", on_train=True)),
            ("valid_loss", PassthroughScoring(name="valid_loss")),
        ]

    def infer(self, x, **fit_params):
        x = dict(x)
        x.pop("sample_weight", None)
        return super().infer(x, **fit_params)

    def get_loss(self, y_pred, y_true, X=None, training=False):
        y_true = to_tensor(y_true, device=self.device)
        sample_weight = None
        if isinstance(X, dict) and "sample_weight" in X:
            sample_weight = to_tensor(X["sample_weight"], device=self.device)
        return self.criterion_(y_pred, y_true, sample_weight, training=training)
