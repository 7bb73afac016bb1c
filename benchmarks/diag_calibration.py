"""Why MedMIX's ECE grows under amputation: confidence, accuracy and class-0 share per p.

A diagnostic for docs/benchmarks/quality.md (issue 13, calibration). On the
quality benchmark's data sets, folds and amputations (the same
``robustness_curve`` call, seed 0), it scores MedMIX with its defaults, with
``pattern_prior=True`` and late fusion with three extra measures at every p:

- ``gap``: mean top-label confidence minus accuracy (positive: overconfident);
- ``shift0``: mean predicted probability of class 0 minus its share in the
  test fold (on ``gen_label`` class 0 is the class that misses most
  modalities, so a model that reads "more missing" as "class 0" moves
  probability there when modalities are blanked at random);
- ``ece``: as in the benchmark.

::

    .venv/bin/python benchmarks/diag_calibration.py --work WORK   # -> docs/benchmarks/quality_calibration.json
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
from sklearn.model_selection import StratifiedKFold  # noqa: E402

METHODS = ("medmix", "medmix_pattern_prior", "late_fusion")


def _gap(estimator, X, y) -> float:
    proba = estimator.predict_proba(X)
    pred = estimator.classes_[proba.argmax(axis=1)]
    return float(proba.max(axis=1).mean() - (pred == np.asarray(y)).mean())


def _shift0(estimator, X, y) -> float:
    proba = estimator.predict_proba(X)
    return float(proba[:, 0].mean() - (np.asarray(y) == estimator.classes_[0]).mean())


def main(argv=None) -> dict:
    from sklearn.exceptions import ConvergenceWarning

    from medmix_sklearn.model_selection import ece_scorer, robustness_curve

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default=os.path.join(HERE, "out"), help="images and embedding cache")
    parser.add_argument("--only", nargs="*", default=["gen_label", "gen_random"])
    parser.add_argument("--out", default=os.path.join(os.path.dirname(HERE), "docs", "benchmarks",
                                                      "quality_calibration.json"))
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    settings = dict(bq.FULL)
    datasets = bq.prepare(settings, args.work, set(args.only))
    out = {"command": "benchmarks/diag_calibration.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "commit": bq.code_version(), "results": {}}
    for data in datasets:
        folds = list(StratifiedKFold(settings["n_folds"], shuffle=True, random_state=0).split(data.X, data.y))
        methods = {m.name: m for m in bq.methods_for(data)}
        X = pd.DataFrame(data.X, columns=data.names)
        rows = {}
        for name in METHODS:
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                warnings.simplefilter("ignore", UserWarning)
                curve = robustness_curve(bq._build(methods[name], 0), X, data.y, probabilities=bq.P_GRID,
                                         mechanism=list(bq.MECHANISMS), cv=folds, random_state=0,
                                         scoring={"ece": ece_scorer, "gap": _gap, "shift0": _shift0})
            curve.loc[curve.metric == "ece", "score"] *= -1
            table = curve.groupby(["mechanism", "metric", "p"])["score"].agg(["mean", "std"])
            rows[name] = {f"{m}|{k}|{p}": {"mean": float(r["mean"]), "std": float(r["std"])}
                          for (m, k, p), r in table.iterrows()}
            print(f"{data.name} {name} ({time.perf_counter() - start:.0f}s)", flush=True)
            for mech in bq.MECHANISMS:
                print("  " + mech + "  " + "  ".join(
                    f"{k} " + " ".join(f"{rows[name][f'{mech}|{k}|{p}']['mean']:+.3f}" for p in bq.P_GRID)
                    for k in ("ece", "gap", "shift0")), flush=True)
        out["results"][data.name] = rows
    with open(args.out, "w") as fh:
        json.dump(out, fh, indent=1)
    return out


if __name__ == "__main__":
    main()
