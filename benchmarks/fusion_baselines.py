"""Published missing-modality fusion methods as scikit-learn classifiers.

Re-implemented from the papers' descriptions (no code taken from their
repositories), over the same input as :class:`~medmix_sklearn.MedMIXClassifier`:
the NaN-block matrix of :class:`~medmix_sklearn.MultimodalExpertEmbedder`,
layout from the column names (or ``blocks=``), a modality absent for a row
being NaN in all of its columns.

- :class:`MedFuseClassifier` (Hayat et al., MLHC 2022): the modality tokens
  form a sequence read by an LSTM; an absent modality shortens the sequence.
- :class:`FuseMoEClassifier` (Han et al., NeurIPS 2024): a sparse
  mixture-of-experts layer over the modality tokens with a Laplace gate
  (logits ``-||x - w_e||``), top-k routing and a load-balancing loss; absent
  modalities are learnable embeddings.
- :class:`FlexMoEClassifier` (Yun et al., NeurIPS 2024): absent modalities are
  filled from a learnable bank indexed by the observed combination; the
  router's top-1 expert is the one specialised to that combination (forced in
  training, learned by the router through a specialisation loss).
- :class:`ShaSpecClassifier` (Wang et al., CVPR 2023): shared and
  modality-specific encoders; an absent modality's feature is the mean of the
  shared features of the present ones; an alignment loss on the shared
  features and a modality-classification loss on the specific ones.
- :class:`DrFuseClassifier` (Yao et al., AAAI 2024), generalised from two to
  any number of modalities: a shared representation (the mean of the present
  modalities' shared features) and one distinct representation per modality,
  each with its own classifier; per-sample, per-class attention over the
  representations present pools their logits. Alignment of the shared
  features and orthogonality of shared and distinct ones are training losses.

What they share with MedMIX, so that a comparison measures the fusion and
nothing else: the per-feature standardisation, one encoder per expert block
(``LayerNorm -> Linear -> GELU -> Dropout``; no LayerNorm on tabular blocks),
and the training loop itself (every random draw from the estimator's own generator,
as for MedMIX): every class here subclasses
``MedMIXClassifier`` and changes only its network (``_network_spec``), so the
optimiser (AdamW), learning rate, batch size, epoch budget, stratified
early-stopping split and patience are the same code and the same defaults.
The experts of one modality are averaged (the papers have one encoder per
modality). Simplifications against the papers: the modality encoders are this
one linear layer over frozen embeddings, not the papers' CNN, LSTM or
transformer backbones; DrFuse's Jensen-Shannon alignment is a squared
distance to the mean shared feature.

Import with ``benchmarks/`` on ``sys.path`` and medmix_sklearn installed::

    import sys; sys.path.insert(0, "benchmarks")
    from fusion_baselines import FuseMoEClassifier
    FuseMoEClassifier(random_state=0).fit(X_embedded, y)
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import torch
from sklearn.utils._param_validation import Interval
from torch import nn
from torch.nn import functional as F

from medmix_sklearn import MedMIXClassifier
from medmix_sklearn.fusion._network import dropout as _dropout

__all__ = [
    "DrFuseClassifier",
    "FlexMoEClassifier",
    "FuseMoEClassifier",
    "MedFuseClassifier",
    "PUBLISHED_BASELINES",
    "ShaSpecClassifier",
]


# --------------------------------------------------------------------------- #
# torch: a shared stem, and one fusion network per method
# --------------------------------------------------------------------------- #
def _normal_(tensor: torch.Tensor, generator: torch.Generator, std: float) -> None:
    """Fill ``tensor`` with N(0, std**2) drawn from ``generator`` (on the CPU)."""
    with torch.no_grad():
        tensor.copy_(torch.randn(tensor.shape, generator=generator) * std)


def _uniform_(tensor: torch.Tensor, generator: torch.Generator, bound: float) -> None:
    with torch.no_grad():
        tensor.copy_((torch.rand(tensor.shape, generator=generator) * 2 - 1) * bound)


def _masked_softmax(scores: torch.Tensor, mask: torch.Tensor, dim: int) -> torch.Tensor:
    """Softmax over ``mask``; exactly 0 elsewhere and all 0 where nothing is true."""
    filled = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return torch.softmax(filled, dim=dim) * mask.to(scores.dtype)


class _Stem(nn.Module):
    """Expert blocks to modality tokens: one encoder per block, present experts averaged.

    Returns tokens ``(n, M, h)`` (zero where the modality is absent), the
    modality mask ``(n, M)`` and the expert weights ``(n, B)``.
    """

    def __init__(self, block_dims, block_modality, block_norm, hidden_dim: int, dropout: float) -> None:
        super().__init__()
        self.block_dims = [int(d) for d in block_dims]
        self.n_modalities = max(block_modality) + 1
        self.dropout = float(dropout)
        self.encoders = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(d) if norm else nn.Identity(), nn.Linear(d, hidden_dim), nn.GELU())
            for d, norm in zip(self.block_dims, block_norm)
        )
        member = torch.zeros(len(self.block_dims), self.n_modalities)
        member[torch.arange(len(self.block_dims)), torch.as_tensor(list(block_modality))] = 1.0
        self.register_buffer("membership", member, persistent=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None):
        mask = mask.bool()
        m = mask.to(x.dtype)
        tokens = []
        for b, xb in enumerate(torch.split(x, self.block_dims, dim=1)):
            present = m[:, b : b + 1]
            token = _dropout(self.encoders[b](xb * present), self.dropout, self.training, generator)
            tokens.append(token * present)
        tokens = torch.stack(tokens, dim=1)  # (n, B, h)
        member = self.membership.to(x.dtype)
        counts = m @ member  # (n, M) experts present per modality
        expert_weights = m / (counts.clamp_min(1.0) @ member.T)  # (n, B)
        mod_tokens = torch.einsum("nb,bm,nbh->nmh", expert_weights, member, tokens)
        return mod_tokens, counts > 0, expert_weights


class _BaselineNetwork(nn.Module):
    """Common frame: the stem, the output tuple, and the training-only penalty."""

    def __init__(self, block_dims, block_modality, block_norm, n_classes: int, hidden_dim: int,
                 dropout: float) -> None:
        super().__init__()
        self.stem = _Stem(block_dims, block_modality, block_norm, hidden_dim, dropout)
        self.n_modalities = self.stem.n_modalities
        self.n_classes = int(n_classes)
        self.hidden_dim = int(hidden_dim)
        self.dropout = float(dropout)
        self._penalty: torch.Tensor | None = None

    def _drop(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Dropout whose mask comes from the training loop's generator."""
        return _dropout(x, self.dropout, self.training, generator)

    def penalty(self) -> torch.Tensor | None:
        """The regulariser of the last training forward (None in evaluation), read once.

        Reading forgets it, so the module never holds a graph between steps
        (a copy or a pickle of the module would otherwise carry it).
        """
        penalty, self._penalty = self._penalty, None
        return penalty

    def _output(self, logits, mod_mask, expert_weights, aux_logits=None, modality_weights=None):
        dtype = logits.dtype
        if aux_logits is None:
            aux_logits = logits.new_zeros(logits.shape[0], self.n_modalities, self.n_classes)
        if modality_weights is None:
            m = mod_mask.to(dtype)
            modality_weights = m / m.sum(dim=1, keepdim=True).clamp_min(1.0)
        return (logits, aux_logits, expert_weights, modality_weights, mod_mask.to(dtype))


class MedFuseNetwork(_BaselineNetwork):
    """Present modality tokens, in modality order, as a sequence into an LSTM."""

    def __init__(self, block_dims, block_modality, block_norm, n_classes, hidden_dim=64, dropout=0.1):
        super().__init__(block_dims, block_modality, block_norm, n_classes, hidden_dim, dropout)
        self.lstm = nn.LSTM(hidden_dim, hidden_dim, batch_first=True)
        self.null_token = nn.Parameter(torch.zeros(hidden_dim))
        self.head = nn.Linear(hidden_dim, n_classes)

    def _init_own_parameters(self, generator: torch.Generator) -> None:
        bound = 1.0 / math.sqrt(self.hidden_dim)
        for param in self.lstm.parameters():
            _uniform_(param, generator, bound)
        with torch.no_grad():
            self.null_token.zero_()

    def forward(self, x, mask, generator=None):
        tokens, mod_mask, expert_weights = self.stem(x, mask, generator)
        n, M, h = tokens.shape
        position = torch.arange(M, device=x.device)
        # Present modalities first, each group in modality order: absent ones
        # leave the sequence, which is then only `lengths` long.
        order = torch.argsort((~mod_mask).long() * M + position, dim=1)
        seq = tokens.gather(1, order.unsqueeze(2).expand(-1, -1, h))
        lengths = mod_mask.sum(dim=1)
        empty = (lengths == 0).unsqueeze(1).unsqueeze(2) & (position == 0).view(1, M, 1)
        seq = torch.where(empty, self.null_token.to(seq.dtype).expand_as(seq), seq)
        out, _ = self.lstm(seq)
        # A unidirectional LSTM's output at step t reads steps <= t only: the
        # padding after the last present modality is never read.
        last = out.gather(1, (lengths.clamp_min(1) - 1).view(n, 1, 1).expand(-1, 1, h)).squeeze(1)
        return self._output(self.head(self._drop(last, generator)), mod_mask, expert_weights)


class _SparseExperts(nn.Module):
    """``n_experts`` feed-forward experts, combined with given sparse gates."""

    def __init__(self, n_experts: int, hidden_dim: int, dropout: float) -> None:
        super().__init__()
        inner = 2 * hidden_dim
        self.w1 = nn.Parameter(torch.randn(n_experts, hidden_dim, inner) / math.sqrt(hidden_dim))
        self.b1 = nn.Parameter(torch.zeros(n_experts, inner))
        self.w2 = nn.Parameter(torch.randn(n_experts, inner, hidden_dim) / math.sqrt(inner))
        self.b2 = nn.Parameter(torch.zeros(n_experts, hidden_dim))
        self.dropout = float(dropout)
        self.norm = nn.LayerNorm(hidden_dim)

    def _init_own_parameters(self, generator: torch.Generator) -> None:
        _normal_(self.w1, generator, 1.0 / math.sqrt(self.w1.shape[1]))
        _normal_(self.w2, generator, 1.0 / math.sqrt(self.w2.shape[1]))
        with torch.no_grad():
            self.b1.zero_()
            self.b2.zero_()

    def forward(self, tokens: torch.Tensor, gates: torch.Tensor, generator=None) -> torch.Tensor:
        # tokens (T, h), gates (T, E) with k non-zero entries per row. Every
        # expert runs densely (cheap at these sizes); zero gates drop them.
        hidden = F.gelu(torch.einsum("th,ehf->tef", tokens, self.w1) + self.b1)
        hidden = _dropout(hidden, self.dropout, self.training, generator)
        out = torch.einsum("tef,efh->teh", hidden, self.w2) + self.b2
        return self.norm(tokens + torch.einsum("te,teh->th", gates, out))


def _top_k_gates(logits: torch.Tensor, k: int, forced: torch.Tensor | None = None) -> torch.Tensor:
    """Sparse gates (T, E): softmax over the top-k logits, 0 elsewhere.

    With ``forced`` (T,), that expert is always among the k and the rest are
    the best k-1 others.
    """
    if forced is None:
        top_value, top_index = logits.topk(k, dim=1)
    else:
        others = logits.scatter(1, forced.unsqueeze(1), torch.finfo(logits.dtype).min)
        rest_value, rest_index = others.topk(k - 1, dim=1)
        top_index = torch.cat([forced.unsqueeze(1), rest_index], dim=1)
        top_value = torch.cat([logits.gather(1, forced.unsqueeze(1)), rest_value], dim=1)
    return torch.zeros_like(logits).scatter(1, top_index, torch.softmax(top_value, dim=1))


class FuseMoENetwork(_BaselineNetwork):
    """Laplace-gated sparse mixture of experts over the modality tokens."""

    def __init__(self, block_dims, block_modality, block_norm, n_classes, hidden_dim=64, dropout=0.1,
                 n_experts=4, top_k=2, balance_weight=0.01):
        super().__init__(block_dims, block_modality, block_norm, n_classes, hidden_dim, dropout)
        M = self.n_modalities
        self.top_k = min(int(top_k), int(n_experts))
        self.balance_weight = float(balance_weight)
        self.missing_embedding = nn.Parameter(0.02 * torch.randn(M, hidden_dim))
        self.modality_embedding = nn.Parameter(0.02 * torch.randn(M, hidden_dim))
        self.gate_centres = nn.Parameter(torch.randn(n_experts, hidden_dim) / math.sqrt(hidden_dim))
        self.experts = _SparseExperts(n_experts, hidden_dim, dropout)
        self.head = nn.Linear(hidden_dim, n_classes)

    def _init_own_parameters(self, generator: torch.Generator) -> None:
        _normal_(self.missing_embedding, generator, 0.02)
        _normal_(self.modality_embedding, generator, 0.02)
        _normal_(self.gate_centres, generator, 1.0 / math.sqrt(self.hidden_dim))

    def forward(self, x, mask, generator=None):
        tokens, mod_mask, expert_weights = self.stem(x, mask, generator)
        n, M, h = tokens.shape
        filled = torch.where(mod_mask.unsqueeze(2), tokens, self.missing_embedding.unsqueeze(0).to(tokens.dtype))
        flat = (filled + self.modality_embedding.to(tokens.dtype)).reshape(n * M, h)
        # Laplace gate: logits are minus the Euclidean distance to each expert's
        # centre (sqrt with an epsilon: its gradient is finite at distance 0).
        sq = (flat.unsqueeze(1) - self.gate_centres.to(flat.dtype).unsqueeze(0)).pow(2).sum(dim=2)
        logits_gate = -torch.sqrt(sq + 1e-6)
        gates = _top_k_gates(logits_gate, self.top_k)
        mixed = self.experts(flat, gates, generator).reshape(n, M, h)
        if self.training and self.balance_weight > 0:
            # Switch-style balance: n_experts * sum_e (share routed to e) * (mean gate prob of e).
            routed = (gates > 0).to(flat.dtype).mean(dim=0) / self.top_k
            prob = torch.softmax(logits_gate, dim=1).mean(dim=0)
            self._penalty = self.balance_weight * gates.shape[1] * (routed * prob).sum()
        else:
            self._penalty = None
        return self._output(self.head(self._drop(mixed.mean(dim=1), generator)), mod_mask, expert_weights)


class FlexMoENetwork(_BaselineNetwork):
    """Missing-modality bank per observed combination; top-1 expert specialised to it."""

    max_modalities = 10

    def __init__(self, block_dims, block_modality, block_norm, n_classes, hidden_dim=64, dropout=0.1,
                 n_experts=8, top_k=2, specialise_weight=0.1):
        super().__init__(block_dims, block_modality, block_norm, n_classes, hidden_dim, dropout)
        M = self.n_modalities
        if M > self.max_modalities:
            raise ValueError(
                f"FlexMoE keeps one bank entry per combination of modalities (2**M); got M={M} "
                f"modalities, more than {self.max_modalities}. Group columns into fewer modalities."
            )
        self.n_experts = int(n_experts)
        self.top_k = max(1, min(int(top_k), self.n_experts))
        self.specialise_weight = float(specialise_weight)
        self.bank = nn.Parameter(0.02 * torch.randn(2**M, M, hidden_dim))
        self.modality_embedding = nn.Parameter(0.02 * torch.randn(M, hidden_dim))
        self.register_buffer("bits", 2 ** torch.arange(M), persistent=False)
        self.router = nn.Linear(hidden_dim, self.n_experts)
        self.experts = _SparseExperts(self.n_experts, hidden_dim, dropout)
        self.head = nn.Linear(hidden_dim, n_classes)

    def _init_own_parameters(self, generator: torch.Generator) -> None:
        _normal_(self.bank, generator, 0.02)
        _normal_(self.modality_embedding, generator, 0.02)

    def forward(self, x, mask, generator=None):
        tokens, mod_mask, expert_weights = self.stem(x, mask, generator)
        n, M, h = tokens.shape
        combination = (mod_mask.long() * self.bits).sum(dim=1)  # (n,) observed combination
        filled = torch.where(mod_mask.unsqueeze(2), tokens, self.bank[combination].to(tokens.dtype))
        flat = (filled + self.modality_embedding.to(tokens.dtype)).reshape(n * M, h)
        logits_route = self.router(flat)
        specialist = (combination % self.n_experts).repeat_interleave(M)  # (n * M,)
        forced = specialist if self.training else None
        gates = _top_k_gates(logits_route, self.top_k, forced=forced)
        mixed = self.experts(flat, gates, generator).reshape(n, M, h)
        if self.training and self.specialise_weight > 0:
            # The router learns to send a combination to its specialist, which
            # it must pick on its own at prediction time.
            self._penalty = self.specialise_weight * F.cross_entropy(logits_route, specialist)
        else:
            self._penalty = None
        return self._output(self.head(self._drop(mixed.mean(dim=1), generator)), mod_mask, expert_weights)


class ShaSpecNetwork(_BaselineNetwork):
    """Shared and specific features; absent features from the present shared ones."""

    def __init__(self, block_dims, block_modality, block_norm, n_classes, hidden_dim=64, dropout=0.1,
                 align_weight=0.1, domain_weight=0.1):
        super().__init__(block_dims, block_modality, block_norm, n_classes, hidden_dim, dropout)
        M = self.n_modalities
        self.align_weight = float(align_weight)
        self.domain_weight = float(domain_weight)
        self.shared = nn.Sequential(nn.Linear(hidden_dim, hidden_dim), nn.GELU())
        self.specific = nn.ModuleList(
            nn.Sequential(nn.Linear(hidden_dim, hidden_dim), nn.GELU()) for _ in range(M)
        )
        self.domain_classifier = nn.Linear(hidden_dim, M)
        self.head = nn.Linear(M * hidden_dim, n_classes)

    def forward(self, x, mask, generator=None):
        tokens, mod_mask, expert_weights = self.stem(x, mask, generator)
        n, M, h = tokens.shape
        m = mod_mask.to(tokens.dtype).unsqueeze(2)  # (n, M, 1)
        shared = self.shared(tokens) * m
        specific = torch.stack([enc(tokens[:, j]) for j, enc in enumerate(self.specific)], dim=1) * m
        mean_shared = shared.sum(dim=1) / m.sum(dim=1).clamp_min(1.0)  # (n, h)
        # Present: shared + specific; absent: the mean shared feature of the
        # present ones (0 when none is present: the head's bias, the prior).
        features = torch.where(mod_mask.unsqueeze(2), shared + specific, mean_shared.unsqueeze(1))
        logits = self.head(self._drop(features.flatten(1), generator))
        if self.training:
            rows, cols = torch.nonzero(mod_mask, as_tuple=True)
            penalty = logits.new_zeros(())
            if self.domain_weight > 0 and len(rows):
                penalty = penalty + self.domain_weight * F.cross_entropy(
                    self.domain_classifier(specific[rows, cols]), cols)
            several = mod_mask.sum(dim=1) > 1
            if self.align_weight > 0 and several.any():
                dist = ((shared - mean_shared.unsqueeze(1)) ** 2).sum(dim=2) * mod_mask.to(shared.dtype)
                penalty = penalty + self.align_weight * (dist[several].sum() / mod_mask[several].sum())
            self._penalty = penalty
        else:
            self._penalty = None
        return self._output(logits, mod_mask, expert_weights)


class DrFuseNetwork(_BaselineNetwork):
    """Shared and distinct representations, per-class attention pooling of their logits."""

    def __init__(self, block_dims, block_modality, block_norm, n_classes, hidden_dim=64, dropout=0.1,
                 align_weight=0.1, orthogonal_weight=0.1):
        super().__init__(block_dims, block_modality, block_norm, n_classes, hidden_dim, dropout)
        M = self.n_modalities
        self.align_weight = float(align_weight)
        self.orthogonal_weight = float(orthogonal_weight)
        self.shared = nn.Sequential(nn.Linear(hidden_dim, hidden_dim), nn.GELU())
        self.distinct = nn.ModuleList(
            nn.Sequential(nn.Linear(hidden_dim, hidden_dim), nn.GELU()) for _ in range(M)
        )
        # Representation 0 is the shared one, 1..M the distinct ones.
        self.rep_heads_weight = nn.Parameter(torch.randn(M + 1, hidden_dim, n_classes) / math.sqrt(hidden_dim))
        self.rep_heads_bias = nn.Parameter(torch.zeros(M + 1, n_classes))
        self.rep_type = nn.Parameter(0.02 * torch.randn(M + 1, hidden_dim))
        self.attention = nn.Sequential(nn.Linear(hidden_dim, hidden_dim), nn.Tanh(), nn.Linear(hidden_dim, n_classes))
        self.prior = nn.Parameter(torch.zeros(n_classes))

    def _init_own_parameters(self, generator: torch.Generator) -> None:
        _normal_(self.rep_heads_weight, generator, 1.0 / math.sqrt(self.hidden_dim))
        _normal_(self.rep_type, generator, 0.02)
        with torch.no_grad():
            self.rep_heads_bias.zero_()
            self.prior.zero_()

    def forward(self, x, mask, generator=None):
        tokens, mod_mask, expert_weights = self.stem(x, mask, generator)
        n, M, h = tokens.shape
        m = mod_mask.to(tokens.dtype).unsqueeze(2)
        shared = self.shared(tokens) * m
        distinct = torch.stack([enc(tokens[:, j]) for j, enc in enumerate(self.distinct)], dim=1) * m
        mean_shared = shared.sum(dim=1) / m.sum(dim=1).clamp_min(1.0)
        reps = torch.cat([mean_shared.unsqueeze(1), distinct], dim=1)  # (n, M + 1, h)
        rep_mask = torch.cat([mod_mask.any(dim=1, keepdim=True), mod_mask], dim=1)
        rep_logits = torch.einsum("nrh,rhc->nrc", self._drop(reps, generator), self.rep_heads_weight)
        rep_logits = rep_logits + self.rep_heads_bias
        scores = self.attention(reps + self.rep_type.to(reps.dtype))  # (n, M + 1, C)
        weights = _masked_softmax(scores, rep_mask.unsqueeze(2).expand_as(scores), dim=1)
        logits = (weights * rep_logits).sum(dim=1)
        logits = torch.where(rep_mask.any(dim=1, keepdim=True), logits, self.prior.to(logits.dtype).expand_as(logits))
        if self.training:
            penalty = logits.new_zeros(())
            several = mod_mask.sum(dim=1) > 1
            if self.align_weight > 0 and several.any():
                dist = ((shared - mean_shared.unsqueeze(1)) ** 2).sum(dim=2) * mod_mask.to(shared.dtype)
                penalty = penalty + self.align_weight * (dist[several].sum() / mod_mask[several].sum())
            if self.orthogonal_weight > 0 and mod_mask.any():
                cos = F.cosine_similarity(shared, distinct, dim=2, eps=1e-6)
                penalty = penalty + self.orthogonal_weight * (cos.pow(2)[mod_mask]).mean()
            self._penalty = penalty
        else:
            self._penalty = None
        # Per-modality weights for explain(): the attention on each distinct
        # representation, averaged over classes.
        mod_weights = weights[:, 1:].mean(dim=2)
        return self._output(logits, mod_mask, expert_weights, aux_logits=rep_logits[:, 1:],
                            modality_weights=mod_weights)


# --------------------------------------------------------------------------- #
# scikit-learn: MedMIXClassifier's preprocessing and training loop, another network
# --------------------------------------------------------------------------- #
_SHARED = (
    "hidden_dim", "dropout", "lr", "weight_decay", "batch_size", "max_epochs", "early_stopping",
    "validation_fraction", "patience", "blocks", "device", "random_state", "verbose",
)

_SHARED_DOC = """
    hidden_dim, dropout, lr, weight_decay, batch_size, max_epochs, early_stopping, \
validation_fraction, patience, blocks, device, random_state, verbose
        As for :class:`~medmix_sklearn.MedMIXClassifier`, with its defaults
        (the same training loop runs)."""


class _PublishedFusionClassifier(MedMIXClassifier):
    """MedMIXClassifier's preprocessing and training loop around another network.

    Subclasses set ``_network`` and ``_method_params`` (the names of their own
    parameters, passed to the network) and may set ``_aux_weight`` (the
    weight of per-modality heads' loss, for networks that return them).
    """

    _network: type = MedFuseNetwork
    _method_params: tuple = ()
    _aux_weight: float = 0.0
    # MedMIXClassifier's fit reads these; the published methods have no teacher
    # and no class weights, and every row is labelled.
    teacher = None
    unlabeled_value = None
    consistency_weight = 0.0
    class_weight = None
    pattern_prior = False
    _parameter_constraints: dict = {k: MedMIXClassifier._parameter_constraints[k] for k in _SHARED}

    def _network_spec(self):
        module_params = {
            "n_classes": len(self.classes_),
            "hidden_dim": self.hidden_dim,
            "dropout": self.dropout,
            **self.network_params_,
            **{name: getattr(self, name) for name in self._method_params},
        }
        criterion_params = {"aux_weight": self._aux_weight, "align_weight": 0.0, "distill_weight": 0.0}
        return self._network, module_params, criterion_params

    def _set_shared(self, hidden_dim, dropout, lr, weight_decay, batch_size, max_epochs, early_stopping,
                    validation_fraction, patience, blocks, device, random_state, verbose):
        self.hidden_dim = hidden_dim
        self.dropout = dropout
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.blocks = blocks
        self.device = device
        self.random_state = random_state
        self.verbose = verbose


class MedFuseClassifier(_PublishedFusionClassifier):
    __doc__ = f"""MedFuse (Hayat et al., MLHC 2022): an LSTM over the present modality tokens.

    The tokens of the modalities present for a row, in modality order, form a
    sequence; an absent modality shortens it. The LSTM's last hidden state
    feeds a linear head. A row with nothing present reads a learned null token.

    Parameters
    ----------{_SHARED_DOC}
    """

    _network = MedFuseNetwork

    def __init__(self, *, hidden_dim=64, dropout=0.1, lr=1e-3, weight_decay=1e-4, batch_size=128,
                 max_epochs=60, early_stopping=True, validation_fraction=0.1, patience=8, blocks=None,
                 device="auto", random_state=None, verbose=0):
        self._set_shared(hidden_dim, dropout, lr, weight_decay, batch_size, max_epochs, early_stopping,
                         validation_fraction, patience, blocks, device, random_state, verbose)


class FuseMoEClassifier(_PublishedFusionClassifier):
    __doc__ = f"""FuseMoE (Han et al., NeurIPS 2024): Laplace-gated sparse mixture of experts.

    Each modality token (a learnable embedding where the modality is absent,
    plus a modality-type embedding) is routed to its ``top_k`` closest
    experts (gate logits ``-||x - w_e||``); the expert outputs, gated and
    added to the token, are averaged over the modalities and fed to a linear
    head. Training adds ``balance_weight`` times the load-balancing loss.

    Parameters
    ----------{_SHARED_DOC}
    n_experts : int, default=4
        Number of experts.
    top_k : int, default=2
        Experts per token.
    balance_weight : float, default=0.01
        Weight of the load-balancing loss.
    """

    _network = FuseMoENetwork
    _method_params = ("n_experts", "top_k", "balance_weight")
    _parameter_constraints = {
        **_PublishedFusionClassifier._parameter_constraints,
        "n_experts": [Interval(Integral, 1, None, closed="left")],
        "top_k": [Interval(Integral, 1, None, closed="left")],
        "balance_weight": [Interval(Real, 0, None, closed="left")],
    }

    def __init__(self, *, n_experts=4, top_k=2, balance_weight=0.01, hidden_dim=64, dropout=0.1, lr=1e-3,
                 weight_decay=1e-4, batch_size=128, max_epochs=60, early_stopping=True,
                 validation_fraction=0.1, patience=8, blocks=None, device="auto", random_state=None,
                 verbose=0):
        self.n_experts = n_experts
        self.top_k = top_k
        self.balance_weight = balance_weight
        self._set_shared(hidden_dim, dropout, lr, weight_decay, batch_size, max_epochs, early_stopping,
                         validation_fraction, patience, blocks, device, random_state, verbose)


class FlexMoEClassifier(_PublishedFusionClassifier):
    __doc__ = f"""Flex-MoE (Yun et al., NeurIPS 2024): a missing-modality bank and specialised experts.

    An absent modality's token comes from a learnable bank indexed by the
    row's observed combination of modalities (``2**n_modalities`` entries, so
    at most 10 modalities). Each token is routed to ``top_k`` experts; in
    training the first of them is the expert specialised to the combination
    (``combination % n_experts``), and a cross-entropy term with weight
    ``specialise_weight`` teaches the router to choose it at prediction time.

    Parameters
    ----------{_SHARED_DOC}
    n_experts : int, default=8
        Number of experts.
    top_k : int, default=2
        Experts per token.
    specialise_weight : float, default=0.1
        Weight of the router's specialisation loss.
    """

    _network = FlexMoENetwork
    _method_params = ("n_experts", "top_k", "specialise_weight")
    _parameter_constraints = {
        **_PublishedFusionClassifier._parameter_constraints,
        "n_experts": [Interval(Integral, 1, None, closed="left")],
        "top_k": [Interval(Integral, 1, None, closed="left")],
        "specialise_weight": [Interval(Real, 0, None, closed="left")],
    }

    def __init__(self, *, n_experts=8, top_k=2, specialise_weight=0.1, hidden_dim=64, dropout=0.1,
                 lr=1e-3, weight_decay=1e-4, batch_size=128, max_epochs=60, early_stopping=True,
                 validation_fraction=0.1, patience=8, blocks=None, device="auto", random_state=None,
                 verbose=0):
        self.n_experts = n_experts
        self.top_k = top_k
        self.specialise_weight = specialise_weight
        self._set_shared(hidden_dim, dropout, lr, weight_decay, batch_size, max_epochs, early_stopping,
                         validation_fraction, patience, blocks, device, random_state, verbose)


class ShaSpecClassifier(_PublishedFusionClassifier):
    __doc__ = f"""ShaSpec (Wang et al., CVPR 2023): shared and specific features.

    A shared encoder (one for all modalities) and a specific encoder per
    modality; a present modality's feature is their sum, an absent one's is
    the mean shared feature of the present modalities. The features are
    concatenated into a linear head. Training adds an alignment loss (squared
    distance of each shared feature to the row's mean) and a
    modality-classification loss on the specific features.

    Parameters
    ----------{_SHARED_DOC}
    align_weight : float, default=0.1
        Weight of the shared-feature alignment loss.
    domain_weight : float, default=0.1
        Weight of the modality-classification loss.
    """

    _network = ShaSpecNetwork
    _method_params = ("align_weight", "domain_weight")
    _parameter_constraints = {
        **_PublishedFusionClassifier._parameter_constraints,
        "align_weight": [Interval(Real, 0, None, closed="left")],
        "domain_weight": [Interval(Real, 0, None, closed="left")],
    }

    def __init__(self, *, align_weight=0.1, domain_weight=0.1, hidden_dim=64, dropout=0.1, lr=1e-3,
                 weight_decay=1e-4, batch_size=128, max_epochs=60, early_stopping=True,
                 validation_fraction=0.1, patience=8, blocks=None, device="auto", random_state=None,
                 verbose=0):
        self.align_weight = align_weight
        self.domain_weight = domain_weight
        self._set_shared(hidden_dim, dropout, lr, weight_decay, batch_size, max_epochs, early_stopping,
                         validation_fraction, patience, blocks, device, random_state, verbose)


class DrFuseClassifier(_PublishedFusionClassifier):
    __doc__ = f"""DrFuse (Yao et al., AAAI 2024), for any number of modalities.

    A shared representation (mean of the present modalities' shared features)
    and a distinct one per present modality each get a linear classifier; a
    per-sample, per-class attention over the representations present (absent
    ones masked) pools their logits. Training adds the distinct heads'
    cross-entropy (``aux_weight``), an alignment loss on the shared features
    and an orthogonality loss between shared and distinct features.

    Parameters
    ----------{_SHARED_DOC}
    aux_weight : float, default=0.3
        Weight of the distinct heads' cross-entropy.
    align_weight : float, default=0.1
        Weight of the shared-feature alignment loss.
    orthogonal_weight : float, default=0.1
        Weight of the shared/distinct orthogonality loss.
    """

    _network = DrFuseNetwork
    _method_params = ("align_weight", "orthogonal_weight")
    _parameter_constraints = {
        **_PublishedFusionClassifier._parameter_constraints,
        "aux_weight": [Interval(Real, 0, None, closed="left")],
        "align_weight": [Interval(Real, 0, None, closed="left")],
        "orthogonal_weight": [Interval(Real, 0, None, closed="left")],
    }

    def __init__(self, *, aux_weight=0.3, align_weight=0.1, orthogonal_weight=0.1, hidden_dim=64,
                 dropout=0.1, lr=1e-3, weight_decay=1e-4, batch_size=128, max_epochs=60,
                 early_stopping=True, validation_fraction=0.1, patience=8, blocks=None, device="auto",
                 random_state=None, verbose=0):
        self.aux_weight = aux_weight
        self.align_weight = align_weight
        self.orthogonal_weight = orthogonal_weight
        self._set_shared(hidden_dim, dropout, lr, weight_decay, batch_size, max_epochs, early_stopping,
                         validation_fraction, patience, blocks, device, random_state, verbose)

    def _network_spec(self):
        module, module_params, criterion_params = super()._network_spec()
        return module, module_params, {**criterion_params, "aux_weight": self.aux_weight}


#: ``{name: class}`` of every published method here, in the order above.
PUBLISHED_BASELINES = {
    "medfuse": MedFuseClassifier,
    "fusemoe": FuseMoEClassifier,
    "flexmoe": FlexMoEClassifier,
    "shaspec": ShaSpecClassifier,
    "drfuse": DrFuseClassifier,
}
