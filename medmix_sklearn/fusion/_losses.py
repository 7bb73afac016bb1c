"""Loss terms of the fusion network: pure torch, no scikit-learn.

The main term is a weighted cross-entropy of the fused logits. Each auxiliary
unimodal head adds a cross-entropy computed only on the rows where its
modality is present, so that every branch is predictive on its own; the
auxiliary terms are averaged over modalities and scaled by ``aux_weight``.
Per-row weights are ``sample_weight * class_weight[y]``, and every term is a
weighted mean (normalised by the sum of the weights it uses), so rescaling all
weights by a constant changes nothing.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def row_weights(
    y: torch.Tensor,
    sample_weight: torch.Tensor | None = None,
    class_weight: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Per-row weights ``sample_weight * class_weight[y]`` (ones if both are None)."""
    w = torch.ones(y.shape[0], dtype=dtype, device=y.device)
    if sample_weight is not None:
        w = w * sample_weight.to(device=y.device, dtype=dtype)
    if class_weight is not None:
        w = w * class_weight.to(device=y.device, dtype=dtype)[y]
    return w


def weighted_cross_entropy(logits: torch.Tensor, y: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted mean cross-entropy; 0 (not NaN) when the weights sum to 0."""
    ce = F.cross_entropy(logits, y, reduction="none")
    return (ce * weights).sum() / weights.sum().clamp_min(torch.finfo(weights.dtype).tiny)


def auxiliary_loss(
    aux_logits: torch.Tensor, y: torch.Tensor, modality_mask: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Mean over modalities of each unimodal head's weighted CE on rows where it is present.

    Modalities absent from every row of the batch are left out of the mean.
    """
    n, n_mod, n_classes = aux_logits.shape
    ce = F.cross_entropy(aux_logits.reshape(n * n_mod, n_classes), y.repeat_interleave(n_mod), reduction="none")
    w = modality_mask.to(weights.dtype) * weights.unsqueeze(1)  # (n, M)
    per_mod_total = w.sum(dim=0)
    per_mod = (ce.reshape(n, n_mod) * w).sum(dim=0) / per_mod_total.clamp_min(torch.finfo(w.dtype).tiny)
    seen = per_mod_total > 0
    if not seen.any():
        return aux_logits.sum() * 0.0
    return per_mod[seen].mean()


class FusionLoss(nn.Module):
    """Main weighted cross-entropy plus ``aux_weight`` times the auxiliary terms.

    Parameters
    ----------
    aux_weight : float
        Weight of the auxiliary unimodal heads' loss; 0 disables it.
    class_weight : tensor of shape (n_classes,) or None
        Per-class weights multiplied into the per-row weights.
    """

    def __init__(self, aux_weight: float = 0.0, class_weight: torch.Tensor | None = None) -> None:
        super().__init__()
        self.aux_weight = float(aux_weight)
        if class_weight is not None:
            class_weight = torch.as_tensor(class_weight, dtype=torch.float32)
        self.register_buffer("class_weight", class_weight)

    def forward(
        self,
        output,
        y: torch.Tensor,
        sample_weight: torch.Tensor | None = None,
        *,
        training: bool = True,
    ) -> torch.Tensor:
        """Total loss of a batch.

        ``output`` is the network's :class:`FusionOutput` (or a tuple in its
        order). The auxiliary terms are added only when ``training`` is true,
        so the validation loss that early stopping watches is the main loss.
        """
        logits, aux_logits, _, _, modality_mask = output[:5]
        y = y.long()
        weights = row_weights(y, sample_weight, self.class_weight, dtype=logits.dtype)
        loss = weighted_cross_entropy(logits, y, weights)
        if training and self.aux_weight > 0:
            loss = loss + self.aux_weight * auxiliary_loss(aux_logits, y, modality_mask, weights)
        return loss
