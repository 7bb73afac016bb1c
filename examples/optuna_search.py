"""
Hyperparameter search with Optuna: over the embedded matrix, or over the whole Pipeline
=======================================================================================

Two routes, both with :func:`~medmix_sklearn.model_selection.default_search_space`,
:class:`~medmix_sklearn.model_selection.MissingnessStratifiedKFold` (folds that
keep each availability pattern's share) and a study on shared storage from
:func:`~medmix_sklearn.model_selection.create_study`:

- ``matrix`` (the cheap one): embed once with ``fit_transform``, then search
  :class:`~medmix_sklearn.MedMIXClassifier` alone on the embedded DataFrame
  (``default_search_space(prefix="")``).
- ``pipeline``: search ``Pipeline([embedder, classifier])`` on the raw table
  (``default_search_space("clf__")``). Every fold refits the embedder, but the
  embedding cache answers every item after the first, so the experts still run
  about once per item.

The study lives in a journal file (``--storage``). Start the same command in
several terminals, or on several machines that share the file system (and the
``MEDMIX_CACHE_DIR``), and they work on one study together; a database URL
such as ``sqlite:///search.db`` or ``postgresql://...`` works too.

Run::

    python examples/optuna_search.py                        # offline presets, 20 trials
    python examples/optuna_search.py --route pipeline
    python examples/optuna_search.py --storage search.journal --trials 10   # in 2 terminals
    python examples/optuna_search.py --tiny                  # tiny random experts, seconds
"""

from __future__ import annotations

import argparse
import os
import tempfile
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import optuna
from optuna_integration import OptunaSearchCV
from sklearn.pipeline import Pipeline

from medmix_sklearn import (
    ImageExpert,
    MedMIXClassifier,
    MultimodalExpertEmbedder,
    TextExpert,
)
from medmix_sklearn.datasets import make_multimodal_classification
from medmix_sklearn.model_selection import (
    MissingnessStratifiedKFold,
    create_study,
    default_search_space,
)

LABS = ["wbc", "crp", "heart_rate", "temperature", "spo2"]


def modalities(*, tiny: bool, text_model=None) -> list:
    if tiny:
        entries = [("xray", [ImageExpert("test_efficientnet", pretrained=False)], "image_path")]
        if text_model:
            entries.append(("report", [TextExpert(text_model)], "report"))
    else:
        entries = [
            ("xray", [ImageExpert("efficientnet_lite0"), ImageExpert("efficientnet_lite1")], "image_path"),
            ("report", [TextExpert(text_model or "all-MiniLM-L6-v2")], "report"),
        ]
    return entries + [("labs", "passthrough", LABS), ("age", "passthrough", ["age"])]


def main(
    tiny: bool = False,
    text_model=None,
    route: str = "matrix",
    n_trials=None,
    storage=None,
    study_name: str = "medmix_example",
    workdir=None,
):
    """Run the search; return the fitted ``OptunaSearchCV``.

    Parameters
    ----------
    tiny : bool, default=False
        Tiny random experts, few rows, trials and epochs (for tests).
    text_model : str or path, default=None
        A text expert (preset name or model directory); in tiny mode the text
        modality is left out unless this is given.
    route : {"matrix", "pipeline"}, default="matrix"
        Search the classifier on the embedded matrix, or the whole Pipeline.
    n_trials : int, default=None
        Trials this process runs (20; 2 with ``tiny``).
    storage : str, default=None
        Journal file path or database URL of the study. None: a journal file
        in ``workdir``, so a second run continues the same study.
    study_name : str, default="medmix_example"
        Name of the study in the storage.
    workdir : str, default=None
        Folder for the generated images, the journal file and (with ``tiny``)
        the embedding cache; a temporary folder when None.

    Returns
    -------
    search : OptunaSearchCV
        Fitted; ``best_params_``, ``best_score_``, ``study_`` and
        ``best_estimator_`` as usual.
    """
    if route not in ("matrix", "pipeline"):
        raise ValueError(f"route must be 'matrix' or 'pipeline'. Got {route!r} instead.")
    workdir = workdir or tempfile.mkdtemp(prefix="medmix_example_")
    n_trials = n_trials or (2 if tiny else 20)
    max_epochs = 4 if tiny else 40
    X, y = make_multimodal_classification(
        60 if tiny else 400, image_dir=os.path.join(workdir, "images"), missing_rate=0.3,
        missingness="label", random_state=0,
    )
    entries = modalities(tiny=tiny, text_model=text_model)
    embedder = MultimodalExpertEmbedder(
        entries, cache_dir=os.path.join(workdir, "cache") if tiny else "auto"
    )
    clf = MedMIXClassifier(max_epochs=max_epochs, random_state=0)
    # Stratify on the label and on which modalities each row has; the splitter
    # reads the availability pattern from the raw table through the entries.
    cv = MissingnessStratifiedKFold(3, shuffle=True, random_state=0, modalities=entries)

    if route == "matrix":
        # Embed once; the DataFrame's column names carry the block layout, so
        # the splitter needs no entries here (modalities=None reads the names).
        estimator, data = clf, embedder.fit_transform(X)
        space = default_search_space(prefix="")
        cv = MissingnessStratifiedKFold(3, shuffle=True, random_state=0)
    else:
        estimator = Pipeline([("embed", embedder), ("clf", clf)])
        data = X
        space = default_search_space("clf__")

    storage = storage or os.path.join(workdir, f"{study_name}.journal")
    study = create_study(study_name, storage=storage, sampler=optuna.samplers.TPESampler(seed=0))
    search = OptunaSearchCV(
        estimator, space, cv=cv, scoring="roc_auc", study=study, n_trials=n_trials,
        random_state=0,
    )
    search.fit(data, y)
    return search


if __name__ == "__main__":
    import matplotlib.pyplot as plt

    parser = argparse.ArgumentParser(description=__doc__ and __doc__.strip().splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny random experts, seconds")
    parser.add_argument("--text-model", help="text expert: preset name or model directory")
    parser.add_argument("--route", choices=("matrix", "pipeline"), default="matrix")
    parser.add_argument("--trials", type=int, help="trials run by this process")
    parser.add_argument("--storage", help="journal file or database URL shared by the workers")
    parser.add_argument("--study-name", default="medmix_example")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message=".*optuna.terminator.*", category=FutureWarning)
    search = main(tiny=args.tiny, text_model=args.text_model, route=args.route,
                  n_trials=args.trials, storage=args.storage, study_name=args.study_name)
    print(f"trials in the study: {len(search.study_.trials)}")
    print(f"best cross-validated AUROC: {search.best_score_:.3f}")
    for name, value in sorted(search.best_params_.items()):
        print(f"  {name} = {value}")

    # Every trial of the study (this process's and any other's), and the best so far.
    values = [t.value for t in search.study_.trials if t.value is not None]
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot(range(len(values)), values, "o", label="trial")
    ax.plot(range(len(values)), np.maximum.accumulate(values), "-", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel("cross-validated AUROC")
    ax.legend(frameon=False)
    fig.tight_layout()
    plt.show()
