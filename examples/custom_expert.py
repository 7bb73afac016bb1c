"""
Your own expert: TF-IDF and truncated SVD over report text
==========================================================

Any model that turns an item (a text, an image, a volume) into a fixed-length
vector can be an expert. Subclass :class:`~medmix_sklearn.experts.BaseExpert`,
say what determines the embedding, and the
:class:`~medmix_sklearn.MultimodalExpertEmbedder` gives it everything the built-in
experts get: the content-addressed cache, NaN blocks for absent items, decoding
on worker threads, a place in the block layout that
:class:`~medmix_sklearn.MedMIXClassifier` reads.

Here the expert is made of scikit-learn parts: a ``TfidfVectorizer`` and a
``TruncatedSVD`` (latent semantic analysis) fitted once on a reference corpus of
unlabelled reports, then frozen, like a pretrained model. It joins an image
expert and the lab values in a Pipeline that is cross-validated as a whole.
The guide "Writing your own expert" spells out the contract.

Run::

    python examples/custom_expert.py           # with the EfficientNet-Lite0 image expert
    python examples/custom_expert.py --tiny    # a tiny random image network, seconds
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import sklearn
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from medmix_sklearn import ImageExpert, MedMIXClassifier, MultimodalExpertEmbedder
from medmix_sklearn.datasets import make_multimodal_classification
from medmix_sklearn.exceptions import ItemReadError
from medmix_sklearn.experts import BaseExpert

LABS = ["wbc", "crp", "heart_rate", "temperature", "spo2"]

# %%
# The expert
# ----------
# ``__init__`` only stores its parameters, as in every scikit-learn estimator;
# assigning one later makes the expert forget its model and fingerprint. The
# reference corpus plays the part of the weights file: the fingerprint hashes
# it, so a different corpus can never be served embeddings from the cache that
# an older one produced. ``_load`` fits the two steps; ``_embed`` only
# transforms.


class TfidfSvdExpert(BaseExpert):
    """Embed texts with TF-IDF and truncated SVD, fitted once on a reference corpus.

    Parameters
    ----------
    corpus : sequence of str
        Reference texts the vectoriser and the SVD are fitted on (the
        expert's "weights"). Not the training rows: the expert stays frozen.
    n_components : int, default=16
        Embedding width.
    model : str, default="tfidf-svd"
        Label of the model; the default column name is derived from it.
    random_state : int, default=0
        Seed of the randomised SVD.
    name : str, default=None
        Name used in column names (default: derived from ``model``).
    """

    kind = "text"  # the embedder hands it the cells of a text column

    def __init__(self, corpus, *, n_components=16, model="tfidf-svd", random_state=0, name=None):
        self.corpus = corpus
        self.n_components = n_components
        self.model = model
        self.random_state = random_state
        self.name = name

    def _fingerprint_parts(self):
        # Everything that changes the vectors, and nothing that needs the model.
        corpus_hash = hashlib.sha256("\x00".join(self.corpus).encode("utf-8")).hexdigest()
        return {
            "model": self.model,
            "corpus_sha256": corpus_hash,
            "n_components": self.n_components,
            "random_state": self.random_state,
            "sklearn": sklearn.__version__,
        }

    @property
    def output_dim(self):
        return self.n_components

    def content_key(self, item):
        # The text itself, not its row: the same report twice is one cache entry.
        return hashlib.sha256(self.read(item).encode("utf-8")).hexdigest()

    def read(self, item):
        if not isinstance(item, str):
            raise ItemReadError(f"TfidfSvdExpert reads text; got {type(item).__name__} {item!r}.")
        return item

    def _load(self, device):
        # Runs on the CPU whatever the device; fitted once, then only transforms.
        model = make_pipeline(
            TfidfVectorizer(sublinear_tf=True, min_df=2),
            TruncatedSVD(self.n_components, random_state=self.random_state),
        )
        return model.fit(list(self.corpus))

    def _embed(self, model, items, *, device, batch_size):
        vectors = model.transform(items)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


# %%
# The Pipeline
# ------------
# The reference corpus is a separate set of generated reports, standing in for
# the unlabelled archive of a hospital; the rows that are cross-validated never
# enter it. The report modality gets the custom expert, the radiograph an image
# expert, the labs pass through.


def build_pipeline(corpus, *, tiny: bool, cache_dir=None):
    image = ImageExpert("test_efficientnet", pretrained=False) if tiny else ImageExpert("efficientnet_lite0")
    embedder = MultimodalExpertEmbedder(
        [
            ("xray", [image], "image_path"),
            ("report", [TfidfSvdExpert(corpus, n_components=16)], "report"),
            ("labs", StandardScaler(), LABS),
        ],
        cache_dir=cache_dir,
    )
    clf = MedMIXClassifier(max_epochs=15 if tiny else 60, random_state=0)
    return Pipeline([("embed", embedder), ("clf", clf)])


def main(tiny: bool = False, workdir=None, n_samples=None):
    """Cross-validate the Pipeline with the custom expert; return scores and weights.

    Parameters
    ----------
    tiny : bool, default=False
        A tiny random image network and fewer rows (for tests and the gallery).
    workdir : str, default=None
        Folder for the generated images and the embedding cache; a temporary
        folder when None.
    n_samples : int, default=None
        Rows to generate (400; 120 with ``tiny``).

    Returns
    -------
    result : dict
        ``scores`` (AUROC per fold), ``feature_names``, ``weights`` (``explain``
        on every row, a DataFrame), ``text_model_loaded`` (whether a second fit,
        which finds every embedding in the cache, built the text model: it
        should not), and
        ``fingerprints_differ`` (changing ``n_components`` changes the fingerprint).
    """
    workdir = workdir or tempfile.mkdtemp(prefix="medmix_custom_expert_")
    n_samples = n_samples or (120 if tiny else 400)
    X, y = make_multimodal_classification(
        n_samples, image_dir=os.path.join(workdir, "images"), missing_rate=0.3, random_state=0
    )
    archive, _ = make_multimodal_classification(300, missing_rate=0.0, random_state=1)
    corpus = archive["report"].tolist()
    cache_dir = os.path.join(workdir, "cache")

    pipe = build_pipeline(corpus, tiny=tiny, cache_dir=cache_dir)
    cv = StratifiedKFold(n_splits=3, shuffle=True, random_state=0)
    scores = cross_val_score(pipe, X, y, cv=cv, scoring="roc_auc")

    pipe.fit(X, y)
    embed = pipe.named_steps["embed"]
    weights = pipe.named_steps["clf"].explain(embed.transform(X))

    # Every embedding is in the cache now: a fresh Pipeline never builds the model.
    again = build_pipeline(corpus, tiny=tiny, cache_dir=cache_dir).fit(X, y)
    text_expert = again.named_steps["embed"].modalities_[1][1][0]

    expert = TfidfSvdExpert(corpus)
    before = expert.fingerprint()
    expert.n_components = 8
    return {
        "scores": scores,
        "feature_names": embed.get_feature_names_out(),
        "weights": weights,
        "text_model_loaded": text_expert.is_loaded,
        "fingerprints_differ": before != expert.fingerprint(),
    }


# %%
# Run it
# ------
# The expert's 16 columns are named ``report__tfidf-svd__0`` to ``__15``; rows
# without a report have NaN there and give the report modality zero weight.

if __name__ == "__main__":
    import matplotlib.pyplot as plt

    parser = argparse.ArgumentParser(description=__doc__ and __doc__.strip().splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny random image network, seconds")
    args = parser.parse_args()
    result = main(tiny=args.tiny)
    scores = result["scores"]
    names = list(result["feature_names"])
    print(f"AUROC per fold: {np.round(scores, 3)}  mean {scores.mean():.3f}")
    print(f"report columns: {[n for n in names if n.startswith('report__')][:3]} ...")
    print(f"text model built by a fit that finds every embedding cached: {result['text_model_loaded']}")
    print(f"n_components=8 changes the fingerprint: {result['fingerprints_differ']}")

    modality = result["weights"].filter(like="modality_weight__")
    modality.columns = [c.removeprefix("modality_weight__") for c in modality.columns]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    present = modality.where(modality > 0)  # a weight of 0 means the modality was absent
    ax.boxplot([present[c].dropna() for c in present.columns])
    ax.set_xticks(range(1, present.shape[1] + 1), list(present.columns))
    ax.set_ylabel("modality weight (rows where present)")
    ax.set_title("What the fused prediction leaned on, per row")
    fig.tight_layout()
    plt.show()
