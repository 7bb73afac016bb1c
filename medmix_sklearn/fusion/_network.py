"""The MedMIX fusion network: pure torch, no scikit-learn.

Input is one float tensor ``x`` whose columns are the blocks laid side by side
(block ``b`` occupies ``block_dims[b]`` consecutive columns) and a boolean
``mask`` of shape ``(n_samples, n_blocks)`` that says which blocks are present.
NaN must already have been replaced (the classifier writes 0); the network
additionally zeroes every absent block, so whatever finite values an absent
block holds cannot change any output.

Per expert block: ``LayerNorm -> Linear(hidden_dim) -> GELU -> Dropout`` gives
one token (tabular blocks skip the LayerNorm: a row-wise norm over a handful
of unrelated clinical variables would erase their scale). The experts of one
modality are pooled with per-sample weights over the experts present
("gate": masked softmax of a learned score; "mean": uniform). Modality tokens
plus learned modality-type embeddings get per-sample weights over the
modalities present. "attention" (the default) scores each token against a
learned query, scales each modality's value by its weight and concatenates the
slots with the presence mask, so complementary modalities keep their own
coordinates and the availability pattern itself is an input (missingness can be
informative: sicker patients get more imaging). "gate" and "mean" pool the
weighted tokens into one vector; "concat" concatenates them unweighted with
zeros and the mask (the non-masked baseline). A row with no modality present
gets a learned null representation, hence the learned prior.

Randomness never comes from torch's process-wide generator: weights are drawn
by :func:`init_parameters` and dropout and modality dropout by ``forward``,
both from a ``torch.Generator`` the caller owns, so that fits running in
threads at the same time do not disturb each other.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

EXPERT_FUSIONS = ("gate", "mean")
MODALITY_FUSIONS = ("attention", "gate", "mean", "concat")


class FusionOutput(NamedTuple):
    """What :meth:`MedMIXNetwork.forward` returns.

    ``forward`` returns the plain tuple (skorch concatenates each field over
    batches and rebuilds tuples with ``type(x)(generator)``, which a
    NamedTuple does not accept); ``FusionOutput(*out)`` names the fields.
    """

    logits: torch.Tensor  # (n, n_classes)
    aux_logits: torch.Tensor  # (n, n_modalities, n_classes)
    expert_weights: torch.Tensor  # (n, n_blocks), sum to 1 within a present modality
    modality_weights: torch.Tensor  # (n, n_modalities), sum to 1 over present ones
    modality_mask: torch.Tensor  # (n, n_modalities) float, presence before dropout


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Softmax over the entries where ``mask`` is true; exactly 0 elsewhere.

    A slice with no true entry gives all zeros (never NaN).
    """
    filled = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return torch.softmax(filled, dim=dim) * mask.to(scores.dtype)


def dropout(x: torch.Tensor, p: float, training: bool, generator: torch.Generator | None) -> torch.Tensor:
    """Inverted dropout whose mask is drawn from ``generator``.

    The same as :func:`torch.nn.functional.dropout` when ``generator`` is
    None (then torch's process-wide generator is used).
    """
    if not training or p == 0.0:
        return x
    if generator is None:
        return nn.functional.dropout(x, p, training=True)
    if p >= 1.0:
        return torch.zeros_like(x)
    keep = torch.empty_like(x).bernoulli_(1.0 - p, generator=generator)
    return x * keep / (1.0 - p)


def _draw(tensor: torch.Tensor, init, generator: torch.Generator, **kwargs) -> None:
    """Fill ``tensor`` in place with ``init(cpu_tensor, generator=generator, **kwargs)``.

    Drawing on the CPU with a CPU generator gives the same weights whatever
    the device the module lives on.
    """
    with torch.no_grad():
        values = torch.empty(tensor.shape, dtype=torch.float32)
        init(values, generator=generator, **kwargs)
        tensor.copy_(values)


def init_parameters(module: nn.Module, generator: torch.Generator) -> nn.Module:
    """Re-initialise every parameter of ``module`` from ``generator``.

    Linear layers get torch's default initialisation (Kaiming-uniform weights
    and a uniform bias of bound ``1/sqrt(fan_in)``), LayerNorms ones and zeros;
    a module's own parameters are set by its ``_init_own_parameters(generator)``
    when it has one. Nothing is drawn from torch's process-wide generator.
    Returns ``module``.
    """
    for sub in module.modules():
        if isinstance(sub, nn.Linear):
            fan_in = sub.weight.shape[1]
            bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            _draw(sub.weight, nn.init.kaiming_uniform_, generator, a=math.sqrt(5))
            if sub.bias is not None:
                _draw(sub.bias, nn.init.uniform_, generator, a=-bound, b=bound)
        elif isinstance(sub, nn.LayerNorm):
            sub.reset_parameters()
        own = getattr(sub, "_init_own_parameters", None)
        if own is not None:
            own(generator)
    return module


def masked_uniform(mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Uniform weights over the true entries of ``mask``; all zeros if none."""
    m = mask.to(torch.get_default_dtype())
    return m / m.sum(dim=dim, keepdim=True).clamp_min(1.0)


class _ZeroLinear(nn.Linear):
    """A linear layer that starts at zero (the linear path adds nothing until trained)."""

    def _init_own_parameters(self, generator: torch.Generator) -> None:
        with torch.no_grad():
            self.weight.zero_()
            if self.bias is not None:
                self.bias.zero_()


class ExpertEncoder(nn.Module):
    """One expert block to one ``hidden_dim`` token."""

    def __init__(self, in_dim: int, hidden_dim: int, dropout: float, *, norm: bool) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(in_dim) if norm else nn.Identity()
        self.proj = nn.Linear(in_dim, hidden_dim)
        self.act = nn.GELU()
        self.drop = nn.Dropout(dropout)  # holds p; the mask comes from the caller's generator

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return dropout(self.act(self.proj(self.norm(x))), self.drop.p, self.training, generator)


class MedMIXNetwork(nn.Module):
    """Expert fusion within modalities, then fusion across the modalities present.

    Parameters
    ----------
    block_dims : sequence of int
        Width of each block in ``x``, in column order.
    block_modality : sequence of int
        Modality index (``0 .. n_modalities - 1``) of each block; the blocks of
        one modality need not be adjacent.
    block_norm : sequence of bool
        Whether each block gets a LayerNorm (expert embeddings) or not (tabular).
    n_classes : int
        Number of output logits.
    hidden_dim : int
        Token width.
    expert_fusion : {"gate", "mean"}
    modality_fusion : {"attention", "gate", "mean", "concat"}
    dropout : float
        Dropout on tokens and before the head.
    modality_dropout : float
        Probability, in training, of dropping each present modality of a row;
        at least one present modality is always kept.
    pattern_prior : bool
        Add a learned logit bias per availability pattern (which modalities
        are present, before modality dropout) to the head's logits: the
        class prior given the pattern, for data where missingness depends on
        the label. ``2**n_modalities`` entries, so at most 12 modalities.
    pattern_init : array-like of shape (2**n_modalities, n_classes) or None
        Starting values of the pattern biases (the classifier passes the
        smoothed log-ratio of each pattern's class frequencies to the overall
        ones, so the prior acts from the first epoch); None: zeros.
    linear_path : bool
        Add a linear map of ``x`` (the blocks of the modalities kept after
        modality dropout; absent ones zero) to the logits, starting at zero.
    """

    max_pattern_modalities = 12

    def __init__(
        self,
        block_dims: Sequence[int],
        block_modality: Sequence[int],
        block_norm: Sequence[bool],
        n_classes: int,
        hidden_dim: int = 64,
        expert_fusion: str = "gate",
        modality_fusion: str = "attention",
        dropout: float = 0.1,
        modality_dropout: float = 0.0,
        pattern_prior: bool = False,
        pattern_init: Sequence[Sequence[float]] | None = None,
        linear_path: bool = False,
    ) -> None:
        super().__init__()
        if expert_fusion not in EXPERT_FUSIONS:
            raise ValueError(f"expert_fusion must be one of {EXPERT_FUSIONS}; got {expert_fusion!r}.")
        if modality_fusion not in MODALITY_FUSIONS:
            raise ValueError(
                f"modality_fusion must be one of {MODALITY_FUSIONS}; got {modality_fusion!r}."
            )
        if not (len(block_dims) == len(block_modality) == len(block_norm)) or not block_dims:
            raise ValueError("block_dims, block_modality and block_norm must be equally long and non-empty.")
        n_modalities = max(block_modality) + 1
        if sorted(set(block_modality)) != list(range(n_modalities)):
            raise ValueError(f"block_modality must cover 0..n_modalities-1; got {list(block_modality)}.")

        self.block_dims = [int(d) for d in block_dims]
        self.n_modalities = n_modalities
        self.n_blocks = len(self.block_dims)
        self.hidden_dim = hidden_dim
        self.expert_fusion = expert_fusion
        self.modality_fusion = modality_fusion
        self.modality_dropout = float(modality_dropout)

        self.encoders = nn.ModuleList(
            ExpertEncoder(d, hidden_dim, dropout, norm=bool(n))
            for d, n in zip(self.block_dims, block_norm)
        )
        # One-hot (n_blocks, n_modalities) membership: pooling experts into
        # modalities is a batched einsum rather than a loop over modalities.
        member = torch.zeros(self.n_blocks, n_modalities)
        member[torch.arange(self.n_blocks), torch.as_tensor(list(block_modality))] = 1.0
        self.register_buffer("membership", member, persistent=False)
        # Per-expert gate: a score from the token, plus a learned per-expert bias.
        self.expert_score = nn.ModuleList(nn.Linear(hidden_dim, 1) for _ in range(self.n_blocks))

        self.modality_embedding = nn.Parameter(torch.zeros(n_modalities, hidden_dim))
        nn.init.normal_(self.modality_embedding, std=0.02)
        self.null_token = nn.Parameter(torch.zeros(hidden_dim))
        if modality_fusion == "attention":
            self.query = nn.Parameter(torch.randn(hidden_dim) / math.sqrt(hidden_dim))
            self.key = nn.Linear(hidden_dim, hidden_dim)
            self.value = nn.Linear(hidden_dim, hidden_dim)
        elif modality_fusion == "gate":
            self.gate = nn.Sequential(nn.Linear(hidden_dim, hidden_dim), nn.Tanh(), nn.Linear(hidden_dim, 1))
        if modality_fusion in ("attention", "concat"):
            self.concat_proj = nn.Sequential(
                nn.Linear(n_modalities * hidden_dim + n_modalities, hidden_dim), nn.GELU()
            )
        self.head = nn.Sequential(nn.LayerNorm(hidden_dim), nn.Dropout(dropout), nn.Linear(hidden_dim, n_classes))
        self.pattern_prior = bool(pattern_prior)
        if self.pattern_prior:
            if n_modalities > self.max_pattern_modalities:
                raise ValueError(
                    f"pattern_prior keeps one bias per availability pattern (2**n_modalities); got "
                    f"{n_modalities} modalities, more than {self.max_pattern_modalities}. Set "
                    "pattern_prior=False or group columns into fewer modalities."
                )
            # (2**M, C): row `code` is the logit bias of the pattern whose bit j
            # says modality j is present.
            init = torch.zeros(2**n_modalities, n_classes)
            if pattern_init is not None:
                init = torch.as_tensor(pattern_init, dtype=torch.float32).reshape(init.shape).clone()
            self.pattern_logits = nn.Parameter(init)
            self.register_buffer("pattern_bits", 2 ** torch.arange(n_modalities), persistent=False)
        self.linear_path = bool(linear_path)
        if self.linear_path:
            self.linear = _ZeroLinear(sum(self.block_dims), n_classes, bias=False)
            self.register_buffer(
                "column_block", torch.repeat_interleave(torch.arange(self.n_blocks), torch.as_tensor(self.block_dims)),
                persistent=False,
            )
        # Auxiliary unimodal heads, all modalities at once: (M, h, C).
        self.aux_head_weight = nn.Parameter(torch.empty(n_modalities, hidden_dim, n_classes))
        self.aux_head_bias = nn.Parameter(torch.zeros(n_modalities, n_classes))
        nn.init.normal_(self.aux_head_weight, std=1.0 / math.sqrt(hidden_dim))

    def _init_own_parameters(self, generator: torch.Generator) -> None:
        """Draw the parameters that are not inside a Linear or LayerNorm (see ``init_parameters``)."""
        h = self.hidden_dim
        _draw(self.modality_embedding, nn.init.normal_, generator, std=0.02)
        _draw(self.aux_head_weight, nn.init.normal_, generator, std=1.0 / math.sqrt(h))
        with torch.no_grad():
            self.null_token.zero_()
            self.aux_head_bias.zero_()
        if self.modality_fusion == "attention":
            _draw(self.query, nn.init.normal_, generator, std=1.0 / math.sqrt(h))

    # -- pieces -----------------------------------------------------------
    def _expert_tokens(
        self, x: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens (n, B, h) with absent blocks zeroed, and gate scores (n, B)."""
        tokens, scores = [], []
        for b, xb in enumerate(torch.split(x, self.block_dims, dim=1)):
            present = mask[:, b : b + 1].to(xb.dtype)
            # Multiplying by the 0/1 mask (cheaper than torch.where) zeroes any
            # finite value in an absent block, before and after the encoder.
            token = self.encoders[b](xb * present, generator) * present
            tokens.append(token)
            scores.append(self.expert_score[b](token))
        return torch.stack(tokens, dim=1), torch.cat(scores, dim=1)

    def _expert_weights(self, scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Per-sample weights (n, B) that sum to 1 within each present modality."""
        member = self.membership.bool()  # (B, M)
        # (n, B, M): a block's score counts only in its own modality's softmax.
        allowed = mask.unsqueeze(2) & member.unsqueeze(0)
        if self.expert_fusion == "gate":
            w = masked_softmax(scores.unsqueeze(2).expand_as(allowed), allowed, dim=1)
        else:
            w = masked_uniform(allowed, dim=1).to(scores.dtype)
        return w.sum(dim=2)

    def _drop_modalities(self, mod_mask: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Drop present modalities at random, keeping at least one per row."""
        drop = torch.rand(mod_mask.shape, device=mod_mask.device, generator=generator) < self.modality_dropout
        kept = mod_mask & ~drop
        emptied = mod_mask.any(dim=1) & ~kept.any(dim=1)
        if emptied.any():
            # Restore one present modality, chosen uniformly, for emptied rows.
            pick = torch.rand(mod_mask.shape, device=mod_mask.device, generator=generator)
            pick = pick.masked_fill(~mod_mask, -1.0)
            one = nn.functional.one_hot(pick.argmax(dim=1), self.n_modalities).bool()
            kept = kept | (one & emptied.unsqueeze(1))
        return kept

    def _fuse_modalities(self, tokens: torch.Tensor, mod_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Fused representation (n, h) and modality weights (n, M)."""
        typed = tokens + self.modality_embedding.unsqueeze(0)
        if self.modality_fusion == "attention":
            keys = self.key(typed)
            scores = keys @ self.query / math.sqrt(self.hidden_dim)
            weights = masked_softmax(scores, mod_mask, dim=1)
            # Each modality keeps its own slot, scaled by its weight (times the
            # number present, so weights average 1): a weighted sum into one
            # vector measured worse, because complementary modalities then
            # compete for the same coordinates (docs/benchmarks/quality.md).
            m = mod_mask.to(tokens.dtype)
            scaled = self.value(typed) * (weights * m.sum(dim=1, keepdim=True)).unsqueeze(2)
            fused = self.concat_proj(torch.cat([scaled.flatten(1), m], dim=1))
        elif self.modality_fusion == "gate":
            weights = masked_softmax(self.gate(typed).squeeze(2), mod_mask, dim=1)
            fused = torch.einsum("nm,nmh->nh", weights, typed)
        elif self.modality_fusion == "mean":
            weights = masked_uniform(mod_mask, dim=1).to(tokens.dtype)
            fused = torch.einsum("nm,nmh->nh", weights, typed)
        else:  # concat: zeros for absent modalities, plus the mask itself
            m = mod_mask.to(tokens.dtype)
            flat = (typed * m.unsqueeze(2)).flatten(1)
            fused = self.concat_proj(torch.cat([flat, m], dim=1))
            # No learned weighting exists; report uniform over present modalities.
            weights = masked_uniform(mod_mask, dim=1).to(tokens.dtype)
        any_present = mod_mask.any(dim=1, keepdim=True)
        fused = torch.where(any_present, fused, self.null_token.unsqueeze(0).expand_as(fused))
        return fused, weights

    # -- forward ----------------------------------------------------------
    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        return_tokens: bool = False,
        generator: torch.Generator | None = None,
        drop_modalities: bool = True,
    ) -> tuple[torch.Tensor, ...]:
        """Run the network.

        Parameters
        ----------
        x : tensor of shape (n_samples, sum(block_dims))
            Finite values; absent blocks may hold anything finite.
        mask : bool tensor of shape (n_samples, n_blocks)
            Which blocks are present.
        return_tokens : bool, default=False
            Also return the modality tokens ``(n, n_modalities, hidden_dim)``
            (before modality dropout; absent ones are zero) and the fused
            representation ``(n, hidden_dim)``, after the :class:`FusionOutput`
            fields. Training uses them for the teacher alignment terms.
        generator : torch.Generator, default=None
            Source of the dropout and modality-dropout draws in training (on
            the device of ``x``); None uses torch's process-wide generator.
        drop_modalities : bool, default=True
            Apply modality dropout (in training mode only). False gives the
            prediction with every present modality, the target of the
            semi-supervised consistency term.

        Returns
        -------
        output : tuple of tensors
            The fields of :class:`FusionOutput`, in order (then the tokens
            when ``return_tokens``).
        """
        mask = mask.bool()
        tokens, scores = self._expert_tokens(x, mask, generator)
        expert_weights = self._expert_weights(scores, mask)
        # (n, M, h): weighted sum of each modality's expert tokens.
        mod_tokens = torch.einsum("nb,bm,nbh->nmh", expert_weights, self.membership.to(x.dtype), tokens)
        mod_mask = (mask.to(x.dtype) @ self.membership.to(x.dtype)) > 0
        fuse_mask = mod_mask
        if self.training and drop_modalities and self.modality_dropout > 0:
            fuse_mask = self._drop_modalities(mod_mask, generator)
        fused, modality_weights = self._fuse_modalities(mod_tokens, fuse_mask)
        norm, drop, linear = self.head
        logits = linear(dropout(norm(fused), drop.p, self.training, generator))
        if self.linear_path:
            # Blocks of the modalities kept (after modality dropout), column by column.
            block_kept = mask & (fuse_mask.to(x.dtype) @ self.membership.T.to(x.dtype) > 0)
            logits = logits + self.linear(x * block_kept[:, self.column_block].to(x.dtype))
        if self.pattern_prior:
            # The observed pattern (before modality dropout): the prior given
            # what is present is information, whatever dropout hides.
            code = (mod_mask.long() * self.pattern_bits).sum(dim=1)
            logits = logits + self.pattern_logits[code].to(logits.dtype)
        aux_logits = torch.einsum("nmh,mhc->nmc", mod_tokens, self.aux_head_weight) + self.aux_head_bias
        out = (logits, aux_logits, expert_weights, modality_weights, mod_mask.to(x.dtype))
        if return_tokens:
            return out + (mod_tokens, fused)
        return out


class FusionEnsemble(nn.Module):
    """Several fusion networks of one class whose predicted probabilities are averaged.

    :class:`MedMIXClassifier` trains the members one by one (each with its own
    initialisation, shuffling and early-stopping split) and then holds them in
    this module, so that prediction, ``explain``, model files and
    ``partial_fit`` see one network. ``forward`` returns the
    :class:`FusionOutput` fields of the ensemble: ``logits`` are the log of
    the members' mean probabilities (so a softmax gives the averaged
    probabilities), ``aux_logits`` likewise per modality, the expert and
    modality weights are the members' means.

    Parameters
    ----------
    member : type
        The network class (:class:`MedMIXNetwork` or a published baseline's).
    n_members : int
        Number of members.
    **member_params
        Keyword arguments of each member.
    """

    def __init__(self, member: type, n_members: int, **member_params) -> None:
        super().__init__()
        if int(n_members) < 1:
            raise ValueError(f"n_members must be at least 1; got {n_members!r}.")
        self.members = nn.ModuleList(member(**member_params) for _ in range(int(n_members)))

    @staticmethod
    def _mean_log_proba(logits: Sequence[torch.Tensor]) -> torch.Tensor:
        log_proba = torch.stack([torch.log_softmax(z, dim=-1) for z in logits])
        return torch.logsumexp(log_proba, dim=0) - math.log(len(logits))

    def forward(self, x: torch.Tensor, mask: torch.Tensor, **kwargs) -> tuple[torch.Tensor, ...]:
        return self.combine([member(x, mask, **kwargs) for member in self.members])

    @classmethod
    def combine(cls, outputs: Sequence[tuple]) -> tuple[torch.Tensor, ...]:
        """The ensemble's output from its members' output tuples (what ``forward`` returns).

        :class:`MedMIXClassifier` calls it with members' outputs whose logits
        it has tempered (``calibration=``) before they are averaged.
        """
        fields = list(zip(*outputs))
        averaged = [
            cls._mean_log_proba(fields[0]),
            cls._mean_log_proba(fields[1]),
            *(torch.stack(field).mean(dim=0) for field in fields[2:4]),
            fields[4][0],
        ]
        # Training-time extras (tokens for the teacher terms): their mean.
        averaged += [torch.stack(field).mean(dim=0) for field in fields[5:]]
        return tuple(averaged)

    def penalty(self) -> torch.Tensor | None:
        """Mean of the members' own regularisers (None when they have none)."""
        terms = [member.penalty() for member in self.members if hasattr(member, "penalty")]
        terms = [t for t in terms if t is not None]
        return torch.stack(terms).mean() if terms else None


class AlignmentHeads(nn.Module):
    """Training-only projection heads from student tokens to teacher embeddings.

    Head ``j`` maps a ``hidden_dim`` student representation through
    ``Linear -> GELU -> Linear`` to the width of teacher block ``j``. Its
    source is the token of student modality ``sources[j]``, or the fused
    representation when ``sources[j]`` is -1 (a teacher modality the students
    lack, such as privileged report text). The student is projected into the
    teacher's space, not the other way round, so the targets stay fixed and
    the alignment cannot collapse onto a constant.

    Parameters
    ----------
    hidden_dim : int
        Width of the student tokens.
    target_dims : sequence of int
        Width of each teacher block.
    sources : sequence of int
        Student modality index of each teacher block, or -1 for the fused
        representation.
    """

    def __init__(self, hidden_dim: int, target_dims: Sequence[int], sources: Sequence[int]) -> None:
        super().__init__()
        if len(target_dims) != len(sources) or not target_dims:
            raise ValueError("target_dims and sources must be equally long and non-empty.")
        self.target_dims = [int(d) for d in target_dims]
        self.sources = [int(s) for s in sources]
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Linear(hidden_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, d))
            for d in self.target_dims
        )

    def forward(
        self, mod_tokens: torch.Tensor, fused: torch.Tensor, mod_mask: torch.Tensor
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Predictions of each teacher block, and where their source is present.

        Parameters
        ----------
        mod_tokens : tensor of shape (n, n_modalities, hidden_dim)
        fused : tensor of shape (n, hidden_dim)
        mod_mask : tensor of shape (n, n_modalities)
            Student modality presence (bool or 0/1).

        Returns
        -------
        predictions : list of tensors of shape (n, target_dims[j])
        source_present : bool tensor of shape (n, n_heads)
            True where the source token exists (always, for the fused one).
        """
        preds, present = [], []
        mod_mask = mod_mask.bool()
        for head, source in zip(self.heads, self.sources):
            if source < 0:
                preds.append(head(fused))
                present.append(torch.ones(fused.shape[0], dtype=torch.bool, device=fused.device))
            else:
                preds.append(head(mod_tokens[:, source]))
                present.append(mod_mask[:, source])
        return preds, torch.stack(present, dim=1)
