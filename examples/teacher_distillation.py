"""
Training-only teachers: a large image model guides the small deployed one
=========================================================================

The embedder's ``teachers=`` entries are embedded by ``fit_transform`` only
(columns ``teacher__{modality}__{expert}__{k}``); ``transform``, and so every
prediction, returns them as NaN without loading the teacher model.
``MedMIXClassifier(teacher=...)`` decides how training uses them:

- ``teacher="align"``: each student modality token learns to predict the
  teacher embedding of the same modality (through a small projection head);
- ``teacher=<classifier>``: that classifier is cross-fitted on student plus
  teacher columns inside ``fit`` and its out-of-fold probabilities are
  distilled into the network;
- ``teacher=("align", <classifier>)``: both;
- ``teacher="auto"`` (recommended): distillation from a default logistic
  teacher on the teacher columns alone, the setting that measured best in
  the teacher benchmark.

With ``unlabeled_value=-1``, rows whose label is -1 train through the teacher
terms alone (semi-supervised distillation; see docs/concepts.md).

The heads and the cross-fitted teacher are dropped at the end of ``fit``: the
fitted Pipeline costs the same to predict and to store as one without teachers.

Run::

    python examples/teacher_distillation.py          # EfficientNet-Lite0 student, Lite2 teacher
    python examples/teacher_distillation.py --tiny   # tiny random experts, seconds

Whether a teacher helps depends on the data; ``benchmarks/bench_teachers.py``
measures it. The ``--tiny`` scores say nothing about the method.
"""

from __future__ import annotations

import argparse
import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
from sklearn.base import clone
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import Pipeline

from medmix_sklearn import (
    ImageExpert,
    MedMIXClassifier,
    MultimodalExpertEmbedder,
    TextExpert,
)
from medmix_sklearn.datasets import make_multimodal_classification

LABS = ["wbc", "crp", "heart_rate", "temperature", "spo2"]


def build_embedder(*, tiny: bool, text_model=None, cache_dir="auto"):
    """Small students for every modality; a larger image model as training-only teacher."""
    if tiny:
        students = [ImageExpert("test_efficientnet", pretrained=False)]
        teachers = [ImageExpert("test_resnet", pretrained=False)]
    else:
        students = [ImageExpert("efficientnet_lite0")]
        teachers = [ImageExpert("efficientnet_lite2")]
    modalities = [("xray", students, "image_path")]
    if text_model or not tiny:
        modalities.append(("report", [TextExpert(text_model or "all-MiniLM-L6-v2")], "report"))
    modalities += [("labs", "passthrough", LABS), ("age", "passthrough", ["age"])]
    return MultimodalExpertEmbedder(
        modalities,
        # Same format as modalities; the name may repeat a student modality
        # ("xray"): alignment then targets that modality's token.
        teachers=[("xray", teachers, "image_path")],
        cache_dir=cache_dir,
    )


def main(tiny: bool = False, text_model=None, workdir=None):
    """Cross-validate the student with and without teachers.

    Parameters
    ----------
    tiny : bool, default=False
        Tiny random experts, few rows and epochs (for tests).
    text_model : str or path, default=None
        A text expert for the report (preset name or model directory); in
        tiny mode the report is left out unless this is given.
    workdir : str, default=None
        Folder for the generated images (and, with ``tiny``, the embedding
        cache); a temporary folder when None.

    Returns
    -------
    result : dict
        ``scores``: ``{method: AUROC per fold}``; ``train_columns`` and
        ``test_teacher_nan``: the width of ``fit_transform``'s output and
        whether ``transform`` left every teacher column NaN;
        ``teacher_blocks``: the teacher blocks the fitted classifier used.
    """
    workdir = workdir or tempfile.mkdtemp(prefix="medmix_example_")
    X, y = make_multimodal_classification(
        80 if tiny else 400, image_dir=os.path.join(workdir, "images"), missing_rate=0.3,
        random_state=0,
    )
    embedder = build_embedder(
        tiny=tiny, text_model=text_model,
        cache_dir=os.path.join(workdir, "cache") if tiny else "auto",
    )
    base = dict(max_epochs=5 if tiny else 60, random_state=0, teacher_cv=3 if tiny else 5)
    # The distillation teacher sees absent modalities as NaN: use a model that accepts NaN.
    teacher_model = HistGradientBoostingClassifier(max_iter=20 if tiny else 100, random_state=0)
    methods = {
        "no teacher": MedMIXClassifier(**base),
        "align": MedMIXClassifier(teacher="align", **base),
        "distill": MedMIXClassifier(teacher=teacher_model, **base),
        "align + distill": MedMIXClassifier(teacher=("align", teacher_model), **base),
        "auto": MedMIXClassifier(teacher="auto", **base),
    }
    cv = StratifiedKFold(n_splits=3 if tiny else 5, shuffle=True, random_state=0)
    scores = {}
    for name, clf in methods.items():
        pipe = Pipeline([("embed", clone(embedder)), ("clf", clf)])
        # Each fold: fit_transform embeds the training rows with teachers;
        # the test rows go through transform, which writes teacher blocks as NaN.
        scores[name] = cross_val_score(pipe, X, y, cv=cv, scoring="roc_auc")

    pipe = Pipeline([("embed", clone(embedder)), ("clf", methods["align + distill"])]).fit(X, y)
    train = pipe.named_steps["embed"].fit_transform(X)
    test = pipe.named_steps["embed"].transform(X)
    teacher_cols = [c for c in test.columns if c.startswith("teacher__")]
    return {
        "scores": scores,
        "train_columns": train.shape[1],
        "test_columns": test.shape[1],
        "test_teacher_nan": bool(test[teacher_cols].isna().all(axis=None)),
        "teacher_blocks": [b.key for b in pipe.named_steps["clf"].teacher_blocks_],
    }


if __name__ == "__main__":
    import matplotlib.pyplot as plt

    parser = argparse.ArgumentParser(description=__doc__ and __doc__.strip().splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny random experts, seconds")
    parser.add_argument("--text-model", help="text expert: preset name or model directory")
    args = parser.parse_args()
    result = main(tiny=args.tiny, text_model=args.text_model)
    for name, values in result["scores"].items():
        print(f"{name:16s} AUROC {np.mean(values):.3f} +- {np.std(values):.3f}")
    print(f"teacher blocks used in training: {result['teacher_blocks']}")
    print(f"transform leaves them NaN: {result['test_teacher_nan']}")

    # Fold AUROCs of the same student with and without the training-only teacher.
    names = list(result["scores"])
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.boxplot([result["scores"][n] for n in names])
    ax.set_xticks(range(1, len(names) + 1), names)
    ax.set_ylabel("AUROC per fold")
    ax.set_title("Student with and without a training-only teacher")
    fig.tight_layout()
    plt.show()
