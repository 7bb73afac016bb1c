"""Temperature scaling of the fusion network, by how many modalities a row has.

:class:`MedMIXClassifier` with ``calibration=`` fits, after training, a
temperature ``T`` for the logits of each network on the rows its early
stopping held out. What it tempers is the evidence, not the class prior:
with ``log_prior`` the log class shares of the training rows, the
probabilities are

    softmax((logits - log_prior) / T + log_prior),

so ``T = 1`` changes nothing, ``T > 1`` moves a row towards the class shares
of the training data (what the model would say knowing nothing), not
towards equal probabilities, and each row's predicted class stays the same
when the classes are balanced. Dividing the logits alone (``softmax(logits /
T)``) would pull an uninformed row towards 1/K: on OpenI (62% abnormal), a
row left with age alone got 0.48 instead of about 0.6.

- ``"temperature"``: one temperature per network, fitted on the held-out rows
  as they are (Guo et al., "On calibration of modern neural networks", ICML
  2017).
- ``"presence"``: one temperature per number of modalities present in a row.
  The held-out rows are replicated, and in each copy the present modalities
  are blanked independently with a probability drawn uniformly from (0, 1)
  (at least one kept), so that every count of present modalities is seen
  even when training data are nearly complete; ``T[k]`` is then fitted on
  the copies left with ``k`` modalities. A network that grows overconfident
  as modalities go missing at prediction gets ``T[k] > 1`` for small ``k``.
  The rows as observed carry :data:`OBSERVED_SHARE` of the weight and the
  blanked copies the rest: the model will see rows missing what they miss
  in the clinic as well as rows that lost modalities for other reasons, and
  where the training missingness depends on the label the blanked copies
  alone would temper that signal away (on generated data with missingness by
  label, ECE at p=0 0.091 with the blanked copies all but alone, 0.076 with
  half the weight on the rows as observed; 3 seeds, docs/benchmarks/quality.md).

(Temperature scaling; for ``"presence"``, conditioning it on the count of
present modalities and fitting it on blanked copies are this library's.)

Every temperature minimises the (sample-weighted) negative log-likelihood
of the held-out labels, over ``log T`` in ``[log 0.05, log 20]``. A count
whose copies come from fewer than :data:`MIN_DISTINCT` distinct held-out
rows, or from fewer than :data:`MIN_PER_CLASS` of some class, gets the
temperature fitted on all copies together (itself 1 when the copies miss
that many rows of some class), and every count's own temperature is pulled
towards that pooled one by a Gaussian prior on ``log T`` (standard
deviation :data:`PRIOR_SD`, weighed against the NLL of the count's distinct
held-out rows), so that a count seen on few rows or few events cannot get
an extreme temperature; a row with no modality present (the network's
learned prior) is never scaled. The networks of an ensemble share
one set of temperatures, fitted on all their held-out rows, each scored by
the network that held it out: a member alone holds out too few rows on the
small data ensembles are for (a few events).

Pure numpy and torch; no scikit-learn estimator here.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.optimize import minimize_scalar

#: The values of MedMIXClassifier's ``calibration`` parameter (None: off).
CALIBRATIONS = ("temperature", "presence")
#: Fewest distinct held-out rows, in all and of every class, to fit a temperature.
MIN_DISTINCT = 20
MIN_PER_CLASS = 5
#: Standard deviation of the prior on a count's log temperature, around the pooled one.
PRIOR_SD = 0.5
#: Share of the "presence" weight on the held-out rows as observed (the rest: their blanked copies).
OBSERVED_SHARE = 0.5
#: Copies of the held-out rows with modalities blanked ("presence"), at most
#: MAX_COPIES per row and about MAX_TOTAL in all.
MAX_COPIES = 20
MAX_TOTAL = 20_000
_LOG_T_BOUNDS = (math.log(0.05), math.log(20.0))


def blanked_copies(
    modality_present: np.ndarray, rng: np.random.Generator, n_copies: int
) -> tuple[np.ndarray, np.ndarray]:
    """Rows to replicate and the modalities each copy keeps.

    Parameters
    ----------
    modality_present : ndarray of shape (n_rows, n_modalities), bool
        Modalities present in each held-out row, as observed.
    rng : numpy.random.Generator
    n_copies : int
        Blanked copies per row (the row as observed is copy 0, added too).

    Returns
    -------
    rows : ndarray of shape (n_rows * (n_copies + 1),)
        Index of the held-out row of each copy.
    keep : ndarray of shape (n_rows * (n_copies + 1), n_modalities), bool
        Modalities present in each copy: a subset of the row's, never empty
        when the row has any.
    """
    n, n_mod = modality_present.shape
    rows = np.tile(np.arange(n), n_copies + 1)
    present = modality_present[rows]
    rate = rng.uniform(size=(len(rows), 1))
    keep = present & (rng.uniform(size=present.shape) >= rate)
    keep[:n] = modality_present  # copy 0: as observed
    # At least one modality kept: a copy that lost all gets one of its row's back at random.
    lost = ~keep.any(axis=1) & present.any(axis=1)
    if lost.any():
        scores = np.where(present[lost], rng.uniform(size=(int(lost.sum()), n_mod)), -1.0)
        keep[np.flatnonzero(lost), scores.argmax(axis=1)] = True
    return rows, keep


def copy_weights(n_rows: int, n_copies: int) -> np.ndarray:
    """Weight multiplier of each copy of :func:`blanked_copies`, in its order.

    The rows as observed (copy 0) share :data:`OBSERVED_SHARE` of the total
    weight, the ``n_copies`` blanked copies the rest.

    Returns
    -------
    multiplier : ndarray of shape (n_rows * (n_copies + 1),)
    """
    out = np.ones(n_rows * (n_copies + 1))
    out[:n_rows] = OBSERVED_SHARE / (1.0 - OBSERVED_SHARE) * n_copies
    return out


def n_copies_for(n_rows: int) -> int:
    """Blanked copies per held-out row: MAX_COPIES, fewer when the rows are many."""
    return int(np.clip(MAX_TOTAL // max(n_rows, 1), 1, MAX_COPIES))


def fit_temperature(
    logits: np.ndarray,
    y: np.ndarray,
    weight: np.ndarray | None = None,
    log_prior: np.ndarray | None = None,
    *,
    center: float = 1.0,
    n_rows: float | None = None,
) -> float:
    """The temperature minimising the weighted NLL of ``softmax((logits - log_prior) / T + log_prior)``.

    Parameters
    ----------
    logits : ndarray of shape (n, n_classes)
    y : ndarray of shape (n,)
        Class indices.
    weight : ndarray of shape (n,), default=None
    log_prior : ndarray of shape (n_classes,), default=None
        Log class shares the tempering moves towards; None: zeros (equal
        probabilities, the classic ``softmax(logits / T)``).
    center : float, default=1.0
        Centre of the prior on ``log T`` (used with ``n_rows``).
    n_rows : float or None, default=None
        Distinct rows behind the copies: the mean NLL gets the penalty
        ``(log T - log center)**2 / (2 * PRIOR_SD**2 * n_rows)`` (the prior
        weighed against that many rows' NLL). None: no prior.

    Returns
    -------
    temperature : float
        In ``[0.05, 20]``; 1.0 when ``logits`` is empty.
    """
    if len(y) == 0:
        return 1.0
    logits = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y, dtype=np.intp)
    weight = np.ones(len(y)) if weight is None else np.asarray(weight, dtype=np.float64)
    total = weight.sum()
    if total <= 0:
        return 1.0
    prior = np.zeros(logits.shape[1]) if log_prior is None else np.asarray(log_prior, dtype=np.float64)
    evidence = logits - prior
    rows = np.arange(len(y))

    penalty = 0.0 if n_rows is None else 1.0 / (2.0 * PRIOR_SD**2 * max(float(n_rows), 1.0))
    log_center = math.log(center)

    def nll(log_t: float) -> float:
        scaled = evidence / math.exp(log_t) + prior
        top = scaled.max(axis=1)
        log_norm = top + np.log(np.exp(scaled - top[:, None]).sum(axis=1))
        mean = float((weight * (log_norm - scaled[rows, y])).sum() / total)
        return mean + penalty * (log_t - log_center) ** 2

    result = minimize_scalar(nll, bounds=_LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-4})
    return float(math.exp(result.x))


def fit_temperatures(
    logits: np.ndarray,
    y: np.ndarray,
    weight: np.ndarray,
    n_present: np.ndarray,
    rows: np.ndarray,
    n_modalities: int,
    log_prior: np.ndarray | None = None,
) -> np.ndarray:
    """One temperature per count of present modalities (``"presence"``).

    Parameters
    ----------
    logits : ndarray of shape (n_copies, n_classes)
    y, weight : ndarray of shape (n_copies,)
    n_present : ndarray of shape (n_copies,)
        Modalities present in each copy.
    rows : ndarray of shape (n_copies,)
        The held-out row each copy comes from (to count distinct rows).
    n_modalities : int
    log_prior : ndarray of shape (n_classes,), default=None
        As for :func:`fit_temperature`.

    Returns
    -------
    temperatures : ndarray of shape (n_modalities + 1,)
        ``temperatures[k]`` for rows with ``k`` modalities present;
        ``temperatures[0] == 1``.
    """
    everywhere = np.ones(len(y), dtype=bool)
    pooled = fit_temperature(logits, y, weight, log_prior) if enough_rows(y, rows, everywhere) else 1.0
    out = np.full(n_modalities + 1, pooled)
    out[0] = 1.0
    for k in range(1, n_modalities + 1):
        sel = n_present == k
        if enough_rows(y, rows, sel):
            n_rows = len(np.unique(rows[sel]))
            out[k] = fit_temperature(logits[sel], y[sel], weight[sel], log_prior, center=pooled, n_rows=n_rows)
    return out


def enough_rows(y: np.ndarray, rows: np.ndarray, sel: np.ndarray) -> bool:
    """Whether the copies ``sel`` come from enough distinct rows, in all and of every class."""
    pairs = np.unique(np.stack([rows[sel], y[sel]]), axis=1)
    if pairs.shape[1] < MIN_DISTINCT:
        return False
    per_class = np.bincount(pairs[1], minlength=int(y.max()) + 1 if len(y) else 0)
    return bool(per_class.min() >= MIN_PER_CLASS) if len(per_class) else False


def temper(output: tuple, temperatures: torch.Tensor, log_prior: torch.Tensor) -> tuple:
    """A network's output tuple with each row's logits tempered by its temperature.

    ``output[4]`` is the modality presence mask (:class:`FusionOutput`); the
    row's temperature is ``temperatures[number of modalities present]``, and
    its logits become ``(logits - log_prior) / T + log_prior``. Only the
    logits change.
    """
    logits, modality_mask = output[0], output[4]
    count = modality_mask.sum(dim=1).round().long()
    t = temperatures.to(device=logits.device, dtype=logits.dtype)[count].unsqueeze(1)
    prior = log_prior.to(device=logits.device, dtype=logits.dtype)
    return ((logits - prior) / t + prior, *output[1:])
