"""The exploratory MedMIX variants of the MMIST-ccRCC notes, on the benchmark's folds.

One variant per call (AUROC mean ± std over the folds, and the paired change
against the same variant on the clinical block alone)::

    .venv/bin/python benchmarks/mmist_explore.py --data PATH VARIANT [--subsets clinical,clinical+wsi]

Variants (``--list``): the rows of "Second round" in
``benchmarks/mmist_ccrcc_notes.md``. ``seeds5`` averages five single networks
of ``random_state`` ``100 * seed + i`` (before ``n_members`` existed);
``epc`` sets the bottleneck's rarest-class rows per component, a module
constant rather than a parameter. Folds: stratified 5-fold CV over seeds 0..1,
as ``bench_mmist.py --seeds 2`` (``--seeds 5``: 0..4, as the MMIST page's run).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from bench_mmist import ALL, columns, death_proba  # noqa: E402
from joblib import Parallel, delayed  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402
from sklearn.model_selection import StratifiedKFold  # noqa: E402

OLD = dict(n_members=1, linear_path=False, hidden_dim=64)
#: name -> (MedMIXClassifier parameters, seeds averaged, bottleneck rows per component,
#: None for the library's)
VARIANTS = {
    "one_network": (OLD, 1, 5),
    "one_network_linear": ({**OLD, "linear_path": True}, 1, 5),
    "seeds5": (OLD, 5, 5),
    "seeds5_linear": ({**OLD, "linear_path": True}, 5, 5),
    "members5_linear_epc10": (dict(n_members=5, linear_path=True, hidden_dim=64), 1, 10),
    "members5_linear_epc10_dropout0.1": (dict(n_members=5, linear_path=True, hidden_dim=64,
                                              modality_dropout=0.1), 1, 10),
    "members5_linear_epc10_width32": (dict(n_members=5, linear_path=True, hidden_dim=32), 1, 10),
    "members5_linear_epc10_width16": (dict(n_members=5, linear_path=True, hidden_dim=16), 1, 10),
    "defaults": ({}, 1, None),
    "defaults_uncalibrated": ({"calibration": None}, 1, None),
    "defaults_epc5": ({}, 1, 5),
    "defaults_epc5_uncalibrated": ({"calibration": None}, 1, 5),
    "defaults_epc2": ({}, 1, 2),
    "defaults_unreduced": ({"expert_bottleneck": None}, 1, None),
}
SUBSETS = ["clinical", "clinical+genomics", "clinical+ct", "clinical+mri", "clinical+wsi", ALL]


def fit_score(variant: str, X, y, train, test, seed: int) -> float:
    import torch

    import medmix_sklearn.fusion._classifier as classifier_module
    from medmix_sklearn import MedMIXClassifier

    torch.set_num_threads(1)
    params, n_seeds, per_component = VARIANTS[variant]
    if per_component is not None:  # None: the library's own value
        classifier_module._BOTTLENECK_EVENTS_PER_COMPONENT = per_component
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = np.mean([
            death_proba(MedMIXClassifier(random_state=seed if n_seeds == 1 else 100 * seed + i, **params)
                        .fit(X.iloc[train], y[train]), X.iloc[test])
            for i in range(n_seeds)
        ], axis=0)
    return float(roc_auc_score((y[test] == 0).astype(int), p))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("variant", nargs="?", choices=sorted(VARIANTS))
    parser.add_argument("--data", help="local copy of the MMIST-ccRCC Code folder (or the clone)")
    parser.add_argument("--subsets", default=",".join(SUBSETS), help="comma-separated modality subsets")
    parser.add_argument("--n-jobs", type=int, default=2, help="parallel fits (processes, one thread each)")
    parser.add_argument("--seeds", type=int, default=2, help="CV repetitions (seeds 0..N-1; default 2)")
    parser.add_argument("--list", action="store_true", help="list the variants and stop")
    args = parser.parse_args(argv)
    if args.list or args.variant is None:
        for name, (params, n_seeds, per_component) in VARIANTS.items():
            print(f"{name}: {params}, seeds averaged {n_seeds}, rows per component {per_component}")
        return {}
    if not args.data:
        parser.error("--data is required to run a variant")
    from medmix_sklearn.datasets import load_mmist_ccrcc

    bunch = load_mmist_ccrcc(args.data)
    X, y = bunch.data, bunch.target.to_numpy()
    folds = [(seed, tr, te) for seed in range(args.seeds)
             for tr, te in StratifiedKFold(5, shuffle=True, random_state=seed).split(X, y)]
    scores = {}
    for subset in args.subsets.split(","):
        Xs = X[columns(bunch, subset)]
        scores[subset] = np.array(Parallel(n_jobs=args.n_jobs)(
            delayed(fit_score)(args.variant, Xs, y, tr, te, seed) for seed, tr, te in folds
        ))
    base = scores.get("clinical")
    for subset, auc in scores.items():
        change = "" if base is None or subset == "clinical" else f" ({(auc - base).mean():+.3f})"
        print(f"{args.variant:35s} {subset:30s} {auc.mean():.3f} ± {auc.std():.3f}{change}")
    return {k: v.tolist() for k, v in scores.items()}


if __name__ == "__main__":
    main()
