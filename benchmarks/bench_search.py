"""What an Optuna search over the whole Pipeline costs, in embedding passes.

The embedding cache should make a search pay for the experts once: a
``n_trials``-trial, 3-fold ``OptunaSearchCV`` over
``Pipeline([embedder, MedMIXClassifier])`` on a cold cache should take about
one cold embedding pass plus the classifier fits. This script measures, on
one machine and in one run:

- ``t_embed_cold``: one ``fit_transform`` of the training rows, empty cache;
- ``t_search_pipeline``: the search over the full Pipeline on the raw table,
  with another empty cache (so its first fold pays the cold pass);
- ``t_search_matrix``: the same trials (the first search's parameters
  replayed with ``enqueue_trial``, same folds) over the classifier alone on
  the pre-embedded matrix, i.e. the ``n_trials x 3`` classifier fits and
  their scoring.

and prints ``ratio = t_search_pipeline / t_embed_cold`` next to the expected
``1 + t_search_matrix / t_embed_cold``. Their gap is what the cache lookups
(hashing every item's bytes, reading the vectors) cost per fit.

Then the best parameters are refitted on the training rows and scored on
held-out rows per availability pattern (label-dependent missingness), which
is where a model that leans on complete rows shows.

Usage::

    python benchmarks/bench_search.py            # 600 rows, lite0 + MiniLM, 20 trials
    python benchmarks/bench_search.py --quick    # 180 rows, tiny image model, 6 trials

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import optuna
from optuna_integration import OptunaSearchCV
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from medmix_sklearn.datasets import make_multimodal_classification
from medmix_sklearn.embedding import MultimodalExpertEmbedder
from medmix_sklearn.experts import ImageExpert, TextExpert
from medmix_sklearn.fusion import MedMIXClassifier
from medmix_sklearn.model_selection import (
    MissingnessStratifiedKFold,
    availability_patterns,
    default_search_space,
    missingness_report,
    pattern_labels,
)

LABS = ["wbc", "crp", "heart_rate", "temperature", "spo2"]


def _modalities(quick: bool) -> list:
    image = (
        ImageExpert("test_efficientnet", pretrained=False) if quick
        else ImageExpert("efficientnet_lite0")
    )
    return [
        ("xray", [image], "image_path"),
        ("report", [TextExpert("all-MiniLM-L6-v2")], "report"),
        ("labs", StandardScaler(), LABS),
    ]


def _search(estimator, space, X, y, cv, n_trials: int, seed: int,
            enqueue=()) -> tuple[float, OptunaSearchCV]:
    study = optuna.create_study(direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=seed))
    for params in enqueue:  # replay another search's parameters, trial by trial
        study.enqueue_trial(params)
    search = OptunaSearchCV(estimator, space, cv=cv, scoring="roc_auc", study=study,
                            n_trials=n_trials, refit=False, error_score="raise")
    start = time.perf_counter()
    search.fit(X, y)
    return time.perf_counter() - start, search


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small data, tiny image model")
    parser.add_argument("--trials", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    quick = args.quick
    n_samples = 180 if quick else 600
    n_trials = args.trials or (6 if quick else 20)
    max_epochs = 10 if quick else 30

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    workdir = tempfile.mkdtemp(prefix="bench_search_")
    X, y = make_multimodal_classification(
        n_samples, image_dir=os.path.join(workdir, "images"), missingness="label",
        missing_rate=0.3, random_state=args.seed,
    )
    y = y.to_numpy()
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=1 / 3, random_state=args.seed, stratify=y
    )
    modalities = _modalities(quick)

    # 1. one cold embedding pass over the training rows
    embedder = MultimodalExpertEmbedder(modalities, cache_dir=os.path.join(workdir, "cache1"))
    start = time.perf_counter()
    E_train = embedder.fit(X_train, y_train).set_output(transform="pandas").transform(X_train)
    t_embed = time.perf_counter() - start

    clf = MedMIXClassifier(max_epochs=max_epochs, random_state=args.seed)
    cv = MissingnessStratifiedKFold(3, shuffle=True, random_state=args.seed,
                                    modalities=modalities)

    # 2. the search over the full Pipeline, cold cache
    pipe = Pipeline([
        ("embed", MultimodalExpertEmbedder(modalities, cache_dir=os.path.join(workdir, "cache2"))),
        ("clf", clf),
    ])
    t_pipe, search = _search(pipe, default_search_space("clf__"), X_train, y_train, cv,
                             n_trials, args.seed)

    # 3. the same parameters on the pre-embedded matrix: classifier fits only
    cv_matrix = MissingnessStratifiedKFold(3, shuffle=True, random_state=args.seed)
    replay = [{k.removeprefix("clf__"): v for k, v in t.params.items()}
              for t in search.study_.trials]
    t_matrix, search_matrix = _search(clf, default_search_space(""), E_train, y_train,
                                      cv_matrix, n_trials, args.seed, enqueue=replay)
    same_folds = all(
        np.array_equal(a[1], b[1])
        for a, b in zip(cv.split(X_train, y_train), cv_matrix.split(E_train, y_train))
    )

    # 4. per-pattern AUROC of the best model on held-out rows
    best = pipe.set_params(**search.best_params_).fit(X_train, y_train)
    report = missingness_report(best, X_test, y_test, modalities)
    train_patterns = pattern_labels(availability_patterns(X_train, modalities))

    n_fits = 3 * n_trials
    result = {
        "quick": quick,
        "n_train": int(len(y_train)),
        "n_test": int(len(y_test)),
        "n_trials": n_trials,
        "n_folds": 3,
        "max_epochs": max_epochs,
        "experts": {name: [e.name for e in experts] if isinstance(experts, list)
                    else type(experts).__name__ for name, experts, _ in modalities},
        "t_embed_cold_s": round(t_embed, 3),
        "t_search_pipeline_s": round(t_pipe, 3),
        "t_search_matrix_s": round(t_matrix, 3),
        "t_per_classifier_fit_s": round(t_matrix / n_fits, 3),
        "ratio": round(t_pipe / t_embed, 2),
        "expected_ratio": round(1 + t_matrix / t_embed, 2),
        "overhead_per_fit_s": round((t_pipe - t_embed - t_matrix) / n_fits, 3),
        "same_folds_raw_vs_matrix": bool(same_folds),
        "same_params_raw_vs_matrix": replay == [t.params for t in search_matrix.study_.trials],
        "best_cv_roc_auc_pipeline": round(float(search.best_score_), 4),
        "best_cv_roc_auc_matrix": round(float(search_matrix.best_score_), 4),
        "best_params": search.best_params_,
        "train_pattern_counts": {k: int(v) for k, v in
                                 zip(*np.unique(train_patterns, return_counts=True))},
        "test_report": [
            {"level": level, "subset": subset,
             "n": int(row["n"]), "n_classes": int(row["n_classes"]),
             **{k: None if np.isnan(row[k]) else round(float(row[k]), 4)
                for k in ("prevalence", "roc_auc", "average_precision")}}
            for (level, subset), row in report.iterrows()
        ],
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
