"""Small-data check of MedMIXClassifier's default calibration on MMIST-ccRCC.

With fewer than 200 training rows of the rarest class MedMIXClassifier trains
an ensemble of five networks, each holding out about 50 rows (a handful of
deaths) for early stopping; ``calibration="presence"`` fits its temperatures
on all of them together. This compares, from the same fitted weights, the
default (tempered) probabilities with the untempered ones
(``calibration=None`` gives those weights too: calibration does not change
training): AUROC and ECE at p=0 and with each test fold's modalities blanked
at random (MCAR, p=0.5), over 5 folds x ``--seeds`` seeds. The data folder is
as for ``benchmarks/bench_mmist.py`` (GPL data: never committed).

::

    .venv/bin/python benchmarks/diag_mmist_calibration.py --data PATH   # -> docs/benchmarks/mmist_calibration.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402
from sklearn.model_selection import StratifiedKFold  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv=None) -> dict:
    import torch

    from medmix_sklearn import MedMIXClassifier
    from medmix_sklearn.datasets import load_mmist_ccrcc
    from medmix_sklearn.model_selection import ModalityAmputer, expected_calibration_error

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="local copy of the MMIST-ccRCC Code folder (or the clone)")
    parser.add_argument("--seeds", type=int, default=2, help="CV repetitions (default 2)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(HERE), "docs", "benchmarks",
                                                      "mmist_calibration.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    X, y = load_mmist_ccrcc(args.data, return_X_y=True)
    y = np.asarray(y).astype(int)
    scores: dict = {}
    temperatures = []
    start = time.perf_counter()
    for seed in range(args.seeds):
        folds = StratifiedKFold(5, shuffle=True, random_state=seed).split(X, y)
        for fold, (train, test) in enumerate(folds):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                clf = MedMIXClassifier(random_state=seed, device="cpu").fit(X.iloc[train], y[train])
            fitted = clf.temperatures_
            temperatures.append(np.round(fitted, 3).tolist())
            for p in (0.0, 0.5):
                X_test = X.iloc[test]
                if p:
                    X_test = ModalityAmputer(p=p, mechanism="mcar", random_state=seed * 10 + fold).transform(
                        X_test, y[test])
                for name, value in (("none", None), ("presence", fitted)):
                    clf.temperatures_ = value
                    proba = clf.predict_proba(X_test)
                    scores.setdefault(f"{name}|{p}", []).append(
                        [float(roc_auc_score(y[test], proba[:, 1])), float(expected_calibration_error(y[test], proba))])
                clf.temperatures_ = fitted
            print(f"seed {seed} fold {fold}: temperatures {temperatures[-1]} ({time.perf_counter() - start:.0f}s)",
                  flush=True)
    summary = {}
    for key, values in scores.items():
        v = np.asarray(values)
        summary[key] = {"auroc": float(v[:, 0].mean()), "auroc_std": float(v[:, 0].std()),
                        "ece": float(v[:, 1].mean()), "ece_std": float(v[:, 1].std())}
        print(f"{key:14s} AUROC {v[:, 0].mean():.3f} ± {v[:, 0].std():.3f}  ECE {v[:, 1].mean():.3f} ± "
              f"{v[:, 1].std():.3f}")
    paired = np.asarray(scores["presence|0.0"])[:, 0] - np.asarray(scores["none|0.0"])[:, 0]
    print(f"paired AUROC presence - none at p=0: {paired.mean():+.4f} ± {paired.std():.4f}")
    out = {"command": "benchmarks/diag_mmist_calibration.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "summary": summary, "paired_auroc_p0": {"mean": float(paired.mean()), "std": float(paired.std())},
           "temperatures": temperatures}
    with open(args.out, "w") as fh:
        json.dump(out, fh, indent=1)
    return out


if __name__ == "__main__":
    main()
