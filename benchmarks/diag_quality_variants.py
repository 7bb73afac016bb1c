"""Alternatives to MedMIX's default calibration and fused head, measured on the quality benchmark.

A diagnostic for docs/benchmarks/quality.md (issue 13). On the quality
benchmark's data sets, folds and amputations (for each of ``--seeds``, the
same folds and amputation seeds as ``robustness_curve(random_state=seed)``
there), it fits MedMIXClassifier with its defaults (``random_state=seed``)
once per fold and scores, from the same weights, AUROC and ECE at every p of:

- ``none``: the fused head, untempered (``calibration=None``);
- ``presence``: the default (``calibration="presence"``, as fitted);
- ``presence_blanked``: the temperatures per count refitted with each held-out
  row as observed weighted as one blanked copy (the default before the rows
  as observed carried half the weight);
- ``presence_uniform``: the same temperatures per count, fitted and applied
  towards equal probabilities (``softmax(logits / T)``) instead of the class
  shares;
- ``pattern``: one temperature per availability pattern instead of per count
  (same copies, towards the class shares, the pooled one where a pattern has
  too few rows, with the same prior towards it);
- ``count_affine``: a temperature and a bias vector per count;
- ``aux_route``: a row with one modality present answered by that modality's
  auxiliary unimodal head (untempered); other rows by the fused head;
- ``aux_blend``: the mean of the fused and the auxiliary heads' probabilities
  (untempered).
- ``aux_fitted``: a row with one modality present gets the log-probabilities
  ``(1 - a) * fused + a * auxiliary`` of that modality, ``a`` in [0, 1]
  fitted per modality on the held-out copies left with it alone (0 where
  they come from too few rows), then the temperatures per count fitted on
  the blended logits as ``"presence"`` does.

::

    .venv/bin/python benchmarks/diag_quality_variants.py --work WORK --seeds 0 1 2
    # -> docs/benchmarks/quality_variants.json (means over the folds of every seed)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import bench_quality as bq  # noqa: E402  (sets the single-thread environment first)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy.optimize import minimize, minimize_scalar  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402
from sklearn.model_selection import StratifiedKFold  # noqa: E402

from medmix_sklearn import MedMIXClassifier  # noqa: E402
from medmix_sklearn.fusion import _calibration as cal  # noqa: E402
from medmix_sklearn.model_selection import expected_calibration_error  # noqa: E402
from medmix_sklearn.model_selection._robustness import _amputer_for, _seed  # noqa: E402

VARIANTS = ("none", "presence", "presence_blanked", "presence_uniform", "pattern", "count_affine", "aux_route",
            "aux_blend", "aux_fitted")


class _Recording(MedMIXClassifier):
    """MedMIXClassifier that keeps the held-out copies its temperatures were fitted on.

    Each copy's record also gets the auxiliary heads' logits (``aux``) and
    the modalities present (``present``), from the same forward pass.
    """

    def _run_module(self, module, x, mask, temperatures="fitted", step=None):
        out = super()._run_module(module, x, mask, temperatures=temperatures, step=step)
        self._last_output = out
        return out

    def _held_out_logits(self, module, valid, rows, seed):
        part = super()._held_out_logits(module, valid, rows, seed)
        part["aux"] = self._last_output[1].double().numpy()
        part["present"] = self._last_output[4].double().numpy()
        return part

    def _fit_temperatures(self, held_out):
        self.held_out_ = held_out
        return super()._fit_temperatures(held_out)


def _softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _affine(logits, y, weight):
    """(log T, biases) minimising the weighted NLL of softmax(logits / T + b)."""
    k = logits.shape[1]

    def nll(theta):
        z = logits / np.exp(theta[0]) + np.r_[0.0, theta[1:]]
        z = z - z.max(axis=1, keepdims=True)
        log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return float(-(weight * log_p[np.arange(len(y)), y]).sum() / weight.sum())

    bounds = [(np.log(0.05), np.log(20.0))] + [(-5.0, 5.0)] * (k - 1)
    return minimize(nll, np.zeros(k), method="L-BFGS-B", bounds=bounds).x


def _log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _sole_blend(logits, aux, present, weights):
    """Log-probabilities: rows with one modality ``m`` present blend in its auxiliary head by ``weights[m]``."""
    out = _log_softmax(logits)
    sole = present.sum(axis=1) == 1
    m = present[sole].argmax(axis=1)
    a = weights[m][:, None]
    out[sole] = (1 - a) * out[sole] + a * _log_softmax(aux[sole, m])
    return out


def _fit_sole_weights(part, n_mod):
    """The blend weight of each modality, on the held-out copies left with it alone (NLL, bounded to [0, 1])."""
    weights = np.zeros(n_mod)
    sole = part["present"].sum(axis=1) == 1
    for m in range(n_mod):
        sel = sole & (part["present"][:, m] > 0)
        if not sel.any() or not cal.enough_rows(part["y"], part["rows"], sel):
            continue
        fused, own = _log_softmax(part["logits"][sel]), _log_softmax(part["aux"][sel, m])
        y, w = part["y"][sel], part["weight"][sel]

        def nll(a, fused=fused, own=own, y=y, w=w):
            z = _log_softmax((1 - a) * fused + a * own)
            return float(-(w * z[np.arange(len(y)), y]).sum() / w.sum())

        weights[m] = minimize_scalar(nll, bounds=(0.0, 1.0), method="bounded").x
    return weights


def _fit_variants(clf):
    part = {key: np.concatenate([p[key] for p in clf.held_out_]) for key in clf.held_out_[0]}
    n_mod = len(clf.modality_names_)
    log_prior = np.log(clf.calibration_prior_)
    zero = np.zeros_like(log_prior)
    out = {"presence_uniform": cal.fit_temperatures(part["logits"], part["y"], part["weight"], part["n_present"],
                                                    part["rows"], n_mod, zero)}
    # Undo the rows-as-observed share: copy 0 of each member's record is its rows as observed.
    weight = []
    for p in clf.held_out_:
        n_rows = len(np.unique(p["rows"]))
        n_copies = len(p["rows"]) // n_rows - 1
        weight.append(p["weight"] / cal.copy_weights(n_rows, n_copies))
    out["presence_blanked"] = cal.fit_temperatures(part["logits"], part["y"], np.concatenate(weight),
                                                   part["n_present"], part["rows"], n_mod, log_prior)
    # Patterns are not kept in the record; rebuild them from the copies' modality mask.
    out["pattern"] = None  # filled by _pattern_temperatures (needs the copies' patterns)
    affine = {}
    for k in range(1, n_mod + 1):
        sel = part["n_present"] == k
        if cal.enough_rows(part["y"], part["rows"], sel):
            affine[k] = _affine(part["logits"][sel], part["y"][sel], part["weight"][sel])
    affine["pooled"] = _affine(part["logits"], part["y"], part["weight"])
    out["count_affine"] = affine
    weights = _fit_sole_weights(part, n_mod)
    blended = _sole_blend(part["logits"], part["aux"], part["present"], weights)
    temperatures = cal.fit_temperatures(blended, part["y"], part["weight"], part["n_present"], part["rows"], n_mod,
                                        log_prior)
    out["aux_fitted"] = (weights, temperatures)
    return out


def _pattern_temperatures(clf, X_train):
    """Per-pattern temperatures from the held-out rows, copied and blanked as "presence" does."""
    # The copies of the (only) network's held-out rows, with their patterns.
    part = clf.held_out_[0]
    rows = part["rows"]
    n_mod = len(clf.modality_names_)
    ds = clf._dataset(np.asarray(X_train, dtype=np.float64))
    block_mod = np.asarray(clf.network_params_["block_modality"])
    # The record keeps each copy's count, not its pattern: redraw the same seeded blanking
    # (one network: its seed is seed_).
    unique_rows = rows[: len(np.unique(rows))]
    present = np.stack([ds.mask.numpy()[unique_rows][:, block_mod == j].any(axis=1) for j in range(n_mod)], axis=1)
    copies, keep = cal.blanked_copies(present, np.random.default_rng(clf.seed_), cal.n_copies_for(len(unique_rows)))
    assert np.array_equal(unique_rows[copies], rows)  # the same copies as the fit's
    codes = keep.astype(np.int64) @ (2 ** np.arange(n_mod))
    log_prior = np.log(clf.calibration_prior_)
    return cal.fit_temperatures(part["logits"], part["y"], part["weight"], codes, rows, 2**n_mod - 1, log_prior)


def _predict_all(clf, X, fitted):
    x_valid, where = clf._validate_predict_input(X)
    ds = clf._dataset(x_valid, where=where)
    module = clf.net_.module_
    raw = clf._run_module(module, ds.x, ds.mask, temperatures=None)
    logits = raw[0].double().numpy()
    aux = _softmax(raw[1].double().numpy())
    present = raw[4].double().numpy()
    count = present.sum(axis=1).astype(int)
    code = present.astype(np.int64) @ (2 ** np.arange(present.shape[1]))
    log_prior = np.log(clf.calibration_prior_)
    out = {"none": _softmax(logits), "presence": clf.predict_proba(X)}
    t = fitted["presence_blanked"][count][:, None]
    out["presence_blanked"] = _softmax((logits - log_prior) / t + log_prior)
    t = fitted["presence_uniform"][count][:, None]
    out["presence_uniform"] = _softmax(logits / t)
    t = fitted["pattern"][code][:, None]
    out["pattern"] = _softmax((logits - log_prior) / t + log_prior)
    z = logits.copy()
    for i, k in enumerate(count):
        if k == 0:
            continue
        theta = fitted["count_affine"].get(k, fitted["count_affine"]["pooled"])
        z[i] = logits[i] / np.exp(theta[0]) + np.r_[0.0, theta[1:]]
    out["count_affine"] = _softmax(z)
    aux_mean = (aux * present[:, :, None]).sum(axis=1) / np.maximum(present.sum(axis=1, keepdims=True), 1)
    out["aux_route"] = np.where((count == 1)[:, None], aux_mean, out["none"])
    out["aux_blend"] = 0.5 * out["none"] + 0.5 * aux_mean
    weights, temperatures = fitted["aux_fitted"]
    t = temperatures[count][:, None]
    out["aux_fitted"] = _softmax((_sole_blend(logits, raw[1].double().numpy(), present, weights) - log_prior) / t
                                 + log_prior)
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default=os.path.join(HERE, "out"), help="images and embedding cache")
    parser.add_argument("--only", nargs="*", default=["gen_label", "gen_random", "openi"],
                        help="data set name prefixes (openi includes openi_hard)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(HERE), "docs", "benchmarks",
                                                      "quality_variants.json"))
    parser.add_argument("--seeds", nargs="*", type=int, default=[0], help="CV seeds (default: 0)")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    datasets = bq.prepare(dict(bq.FULL), args.work, set(args.only))
    out = {"command": "benchmarks/diag_quality_variants.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "commit": bq.code_version(), "seeds": list(args.seeds), "results": {}}
    for data in datasets:
        start = time.perf_counter()
        X = pd.DataFrame(data.X, columns=data.names)
        y = data.y
        binary = len(np.unique(y)) == 2
        scores = {v: {} for v in VARIANTS}
        for cv_seed in args.seeds:
            seed = _seed(cv_seed)  # what robustness_curve(random_state=cv_seed) draws its amputations from
            folds = StratifiedKFold(bq.FULL["n_folds"], shuffle=True, random_state=cv_seed).split(data.X, y)
            for fold, (train, test) in enumerate(folds):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)
                    clf = _Recording(random_state=cv_seed, device="cpu").fit(X.iloc[train], y[train])
                fitted = _fit_variants(clf)
                fitted["pattern"] = _pattern_temperatures(clf, X.iloc[train].to_numpy())
                for m, mech in enumerate(bq.MECHANISMS):
                    for p in bq.P_GRID:
                        if p == 0 and m > 0:
                            continue
                        X_test = X.iloc[test]
                        if p > 0:
                            state = np.random.SeedSequence([seed, fold, m, 0, round(p * 1e6)]).generate_state(1)[0]
                            amputer = clone(_amputer_for(mech)).set_params(
                                p=float(p), random_state=int(state % np.iinfo(np.int32).max))
                            X_test = amputer.transform(X_test, y[test])
                        for name, proba in _predict_all(clf, X_test, fitted).items():
                            auc = roc_auc_score(y[test], proba[:, 1] if binary else proba, multi_class="ovr")
                            ece = expected_calibration_error(y[test], proba)
                            scores[name].setdefault(f"{mech}|{p}", []).append([float(auc), float(ece)])
        summary = {name: {cell: {"auroc": float(np.mean([a for a, _ in v])),
                                 "auroc_std": float(np.std([a for a, _ in v])),
                                 "ece": float(np.mean([e for _, e in v]))}
                          for cell, v in cells.items()} for name, cells in scores.items()}
        out["results"][data.name] = summary
        print(f"{data.name} ({time.perf_counter() - start:.0f}s)", flush=True)
        for name in VARIANTS:
            cells = summary[name]
            print(f"  {name:17s} AUROC " + " ".join(f"{cells[c]['auroc']:.3f}" for c in cells)
                  + " | ECE " + " ".join(f"{cells[c]['ece']:.3f}" for c in cells), flush=True)
    with open(args.out, "w") as fh:
        json.dump(out, fh, indent=1)
    return out


if __name__ == "__main__":
    main()
