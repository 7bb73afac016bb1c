"""Loss terms of the fusion network: pure torch, no scikit-learn.

The main term is a weighted cross-entropy of the fused logits. Each auxiliary
unimodal head adds a cross-entropy computed only on the rows where its
modality is present, so that every branch is predictive on its own; the
auxiliary terms are averaged over modalities and scaled by ``aux_weight``.
Per-row weights are ``sample_weight * class_weight[y]``, and every term is a
weighted mean (normalised by the sum of the weights it uses), so rescaling all
weights by a constant changes nothing.

Training-only teacher terms (added in training only, never to the validation
loss that early stopping watches):

- :func:`alignment_loss`: ``1 - cosine`` between a projection of a student
  token and a (standardised) teacher embedding, on the rows where both exist.
  On unit vectors the squared error is ``2 * (1 - cosine)``, so cosine covers
  the "MSE on normalised vectors" variant too.
- :func:`contrastive_alignment_loss`: InfoNCE between the same projections
  and the teacher embeddings of the other rows of the batch: each row's
  projection must pick its own teacher embedding among the batch's (and each
  teacher embedding its own student), so only what tells rows apart counts.
- :func:`distillation_loss`: ``T**2 * KL(teacher_T || student_T)`` between the
  teacher's class probabilities sharpened or softened by the temperature
  ``T`` and the student's softmax at ``T``, on the rows that have a soft label.
- :func:`consistency_loss`: ``KL(p_full || p_dropped)`` between the student's
  prediction with every present modality (no gradient) and its prediction
  under modality dropout; semi-supervised fits apply it to unlabelled rows.

Semi-supervised batches carry a ``labeled`` mask: the supervised terms (main
and auxiliary cross-entropy) use only labelled rows, while the teacher terms
and the consistency term use every row that has what they need. Their
held-out loss (early stopping) is :func:`teacher_validation_loss`: held-out
unlabelled rows are scored against the teacher's out-of-fold soft labels, so
that a fit with few labelled rows does not stop on a handful of them.
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


def alignment_loss(
    predictions: list[torch.Tensor],
    targets: torch.Tensor,
    mask: torch.Tensor,
    weights: torch.Tensor,
) -> torch.Tensor:
    """Mean over teacher blocks of the weighted mean ``1 - cosine`` on rows in ``mask``.

    Parameters
    ----------
    predictions : list of tensors of shape (n, d_j)
        Projections of student tokens, one per teacher block.
    targets : tensor of shape (n, sum(d_j))
        Teacher blocks side by side, in the order of ``predictions``.
    mask : bool tensor of shape (n, n_blocks)
        Rows where teacher block ``j`` and its student source both exist.
    weights : tensor of shape (n,)
        Per-row weights.

    Blocks with no row in ``mask`` are left out of the mean; with none at
    all the loss is an exact 0 that still has a graph.
    """
    dims = [p.shape[1] for p in predictions]
    terms = []
    for pred, target, m in zip(predictions, torch.split(targets, dims, dim=1), mask.unbind(dim=1)):
        w = weights * m.to(weights.dtype)
        total = w.sum()
        if total <= 0:
            continue
        cos = F.cosine_similarity(pred, target.to(pred.dtype), dim=1, eps=1e-6)
        terms.append(((1.0 - cos) * w).sum() / total)
    if not terms:
        return sum(p.sum() for p in predictions) * 0.0
    return torch.stack(terms).mean()


def contrastive_alignment_loss(
    predictions: list[torch.Tensor],
    targets: torch.Tensor,
    mask: torch.Tensor,
    weights: torch.Tensor,
    temperature: float = 0.1,
) -> torch.Tensor:
    """Mean over teacher blocks of a symmetric, row-weighted InfoNCE loss.

    For teacher block ``j``, on the rows ``i`` of ``mask[:, j]`` with positive
    weight, let ``s_ik = cos(prediction_i, target_k) / temperature``. The
    loss is the weighted mean over rows of ``(CE(s_i., i) + CE(s_.i, i)) / 2``:
    each projection must single out its own row's teacher embedding among
    the batch's, and each teacher embedding its own student projection.

    Parameters
    ----------
    predictions : list of tensors of shape (n, d_j)
        Projections of student tokens, one per teacher block.
    targets : tensor of shape (n, sum(d_j))
        Teacher blocks side by side, in the order of ``predictions``.
    mask : bool tensor of shape (n, n_blocks)
        Rows where teacher block ``j`` and its student source both exist.
    weights : tensor of shape (n,)
        Per-row weights (a row of weight 0 is neither anchor nor negative).
    temperature : float
        Softmax temperature of the similarities.

    Blocks with fewer than two usable rows (nothing to contrast) are left out
    of the mean; with none at all the loss is an exact 0 that still has a graph.
    """
    dims = [p.shape[1] for p in predictions]
    terms = []
    for pred, target, m in zip(predictions, torch.split(targets, dims, dim=1), mask.unbind(dim=1)):
        rows = m & (weights > 0)
        if int(rows.sum()) < 2:
            continue
        p = F.normalize(pred[rows], dim=1, eps=1e-6)
        t = F.normalize(target[rows].to(pred.dtype), dim=1, eps=1e-6)
        sim = p @ t.T / float(temperature)
        labels = torch.arange(sim.shape[0], device=sim.device)
        ce = 0.5 * (F.cross_entropy(sim, labels, reduction="none") + F.cross_entropy(sim.T, labels, reduction="none"))
        w = weights[rows].to(ce.dtype)
        terms.append((ce * w).sum() / w.sum())
    if not terms:
        return sum(p.sum() for p in predictions) * 0.0
    return torch.stack(terms).mean()


def teacher_validation_loss(
    logits: torch.Tensor,
    y: torch.Tensor,
    soft_target: torch.Tensor,
    soft_mask: torch.Tensor,
    labeled: torch.Tensor,
    weights: torch.Tensor,
) -> torch.Tensor:
    """Weighted mean cross-entropy against the label, or the teacher's soft label where there is none.

    The held-out loss of a semi-supervised fit: a labelled row scores
    ``-log p_student(y)``; an unlabelled row with a soft label scores
    ``-sum_c p_teacher(c) log p_student(c)`` (temperature 1: the teacher's
    out-of-fold probabilities as they are); an unlabelled row without one
    counts nothing. 0 (not NaN) when no row counts.
    """
    log_student = torch.log_softmax(logits, dim=1)
    hard = F.nll_loss(log_student, y, reduction="none")
    soft = -(soft_target.to(logits.dtype) * log_student).sum(dim=1)
    per_row = torch.where(labeled, hard, soft)
    w = weights * (labeled | soft_mask).to(weights.dtype)
    return (per_row * w).sum() / w.sum().clamp_min(torch.finfo(w.dtype).tiny)


def consistency_loss(logits: torch.Tensor, full_logits: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted mean ``KL(softmax(full_logits) || softmax(logits))``.

    ``full_logits`` (the prediction with every present modality) is the
    target and gets no gradient; ``logits`` is the prediction under modality
    dropout. Rows of weight 0 count nothing; 0 (with a graph) if all are 0.
    """
    total = weights.sum()
    if total <= 0:
        return logits.sum() * 0.0
    target = torch.softmax(full_logits.detach().to(logits.dtype), dim=1)
    log_student = torch.log_softmax(logits, dim=1)
    kl = (target * (torch.log(target.clamp_min(1e-12)) - log_student)).sum(dim=1)
    return (kl * weights).sum() / total


def distillation_loss(
    logits: torch.Tensor,
    soft_target: torch.Tensor,
    mask: torch.Tensor,
    weights: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Weighted mean ``T**2 * KL(teacher_T || student_T)`` over the rows in ``mask``.

    Parameters
    ----------
    logits : tensor of shape (n, n_classes)
        Student logits.
    soft_target : tensor of shape (n, n_classes)
        Teacher class probabilities (rows sum to 1). They are tempered as
        ``softmax(log(p) / T)``, the same as dividing the teacher's logits by
        ``T``; probabilities are clipped at 1e-6 first, so a hard 0/1 teacher
        stays finite.
    mask : bool tensor of shape (n,)
        Rows that have a soft label.
    weights : tensor of shape (n,)
        Per-row weights.
    temperature : float
        ``T > 0``; the ``T**2`` factor keeps the gradient scale independent of ``T``.
    """
    w = weights * mask.to(weights.dtype)
    total = w.sum()
    if total <= 0:
        return logits.sum() * 0.0
    t = float(temperature)
    target = torch.softmax(torch.log(soft_target.to(logits.dtype).clamp_min(1e-6)) / t, dim=1)
    log_student = torch.log_softmax(logits / t, dim=1)
    kl = (target * (torch.log(target.clamp_min(1e-12)) - log_student)).sum(dim=1)
    return (t * t) * (kl * w).sum() / total


class FusionLoss(nn.Module):
    """Main weighted cross-entropy plus ``aux_weight`` times the auxiliary terms.

    Parameters
    ----------
    aux_weight : float
        Weight of the auxiliary unimodal heads' loss; 0 disables it.
    class_weight : tensor of shape (n_classes,) or None
        Per-class weights multiplied into the per-row weights.
    align_weight : float
        Weight of :func:`alignment_loss` when alignment inputs are given.
    distill_weight : float
        Weight of :func:`distillation_loss` when soft labels are given.
    temperature : float
        Distillation temperature.
    contrastive_temperature : float
        Temperature of :func:`contrastive_alignment_loss`.
    consistency_weight : float
        Weight of :func:`consistency_loss` when the prediction without
        modality dropout is given.
    """

    def __init__(
        self,
        aux_weight: float = 0.0,
        class_weight: torch.Tensor | None = None,
        align_weight: float = 0.0,
        distill_weight: float = 0.0,
        temperature: float = 1.0,
        contrastive_temperature: float = 0.1,
        consistency_weight: float = 0.0,
    ) -> None:
        super().__init__()
        self.aux_weight = float(aux_weight)
        self.align_weight = float(align_weight)
        self.distill_weight = float(distill_weight)
        self.temperature = float(temperature)
        self.contrastive_temperature = float(contrastive_temperature)
        self.consistency_weight = float(consistency_weight)
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
        align: tuple | None = None,
        contrast: tuple | None = None,
        distill: tuple | None = None,
        labeled: torch.Tensor | None = None,
        full_logits: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Total loss of a batch.

        ``output`` is the network's :class:`FusionOutput` (or a tuple in its
        order). The auxiliary, teacher and consistency terms are added only
        when ``training`` is true, so the validation loss that early stopping
        watches is the main loss.

        ``align`` and ``contrast`` are ``(predictions, targets, mask)`` as taken
        by :func:`alignment_loss` and :func:`contrastive_alignment_loss` (both
        weighted by ``align_weight``); ``distill`` is ``(soft_target, mask)`` as
        taken by :func:`distillation_loss`. Either may be None.

        ``labeled`` (bool, shape (n,)) marks the rows with a label; the others
        get no supervised term (their ``y`` is ignored) and no class weight.
        ``full_logits`` is the prediction without modality dropout, the
        target of the consistency term on the unlabelled rows.

        Outside training, a batch with ``labeled`` and ``distill`` (held-out
        unlabelled rows with the teacher's soft labels) scores
        :func:`teacher_validation_loss`: the labelled rows against their
        label, the unlabelled ones against their soft label.
        """
        logits, aux_logits, _, _, modality_mask = output[:5]
        y = y.long()
        weights = row_weights(y, sample_weight, self.class_weight, dtype=logits.dtype)
        if labeled is not None:
            labeled = labeled.to(device=logits.device, dtype=torch.bool)
            # Unlabelled rows: no class weight (their y is a placeholder) and no supervised term.
            plain = row_weights(y, sample_weight, None, dtype=logits.dtype)
            weights = torch.where(labeled, weights, plain)
            supervised = weights * labeled.to(weights.dtype)
        else:
            supervised = weights
        if not training:
            if labeled is not None and distill is not None:
                soft_target, mask = distill
                mask = mask.to(device=logits.device, dtype=torch.bool)
                return teacher_validation_loss(logits, y, soft_target, mask, labeled, weights)
            return weighted_cross_entropy(logits, y, supervised)
        loss = weighted_cross_entropy(logits, y, supervised)
        if self.aux_weight > 0:
            loss = loss + self.aux_weight * auxiliary_loss(aux_logits, y, modality_mask, supervised)
        if align is not None and self.align_weight > 0:
            predictions, targets, mask = align
            loss = loss + self.align_weight * alignment_loss(predictions, targets, mask, weights)
        if contrast is not None and self.align_weight > 0:
            predictions, targets, mask = contrast
            loss = loss + self.align_weight * contrastive_alignment_loss(
                predictions, targets, mask, weights, self.contrastive_temperature
            )
        if distill is not None and self.distill_weight > 0:
            soft_target, mask = distill
            loss = loss + self.distill_weight * distillation_loss(
                logits, soft_target, mask, weights, self.temperature
            )
        if full_logits is not None and labeled is not None and self.consistency_weight > 0:
            unlabeled = weights * (~labeled).to(weights.dtype)
            loss = loss + self.consistency_weight * consistency_loss(logits, full_logits, unlabeled)
        return loss
