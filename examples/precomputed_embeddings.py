"""
MedMIXClassifier on embeddings you already have: no experts, no embedder
========================================================================

:class:`~medmix_sklearn.MedMIXClassifier` reads the block layout from the
column names of a DataFrame (``{modality}__{expert}__{k}`` for an embedding,
``{modality}__{feature}`` for a tabular value). For a plain numpy array, give
the layout with ``blocks=``. Either way an absent modality is a row of NaN in
its blocks, and ``explain`` shows per row how the prediction weighted the
experts and modalities that were present.

The embeddings here are simulated (a latent factor per modality plus noise,
two "foundation models" per imaging modality, one of them much noisier) so the
script runs anywhere in seconds; replace them with your own table.

Run::

    python examples/precomputed_embeddings.py
    python examples/precomputed_embeddings.py --tiny   # fewer rows and epochs
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

from medmix_sklearn import MedMIXClassifier


def simulate(n_samples: int, *, missing_rate: float = 0.3, random_state: int = 0):
    """A DataFrame in the block layout, with whole modalities missing, and labels."""
    rng = np.random.default_rng(random_state)
    y = rng.integers(0, 2, n_samples)
    z = rng.normal(size=(n_samples, 2)) + 0.8 * (2 * y[:, None] - 1)
    blocks = {}
    # (modality, expert, width, latent factor, noise): "ct_large" is informative,
    # "ct_small" mostly noise, so the expert gate has something to learn.
    for modality, expert, dim, factor, noise in [
        ("ct", "ct_large", 16, 0, 0.5),
        ("ct", "ct_small", 8, 0, 4.0),
        ("notes", "clinical_bert", 16, 1, 1.0),
    ]:
        loading = rng.normal(size=dim)
        blocks[(modality, expert)] = z[:, [factor]] * loading + noise * rng.normal(size=(n_samples, dim))
    labs = np.column_stack([z[:, 0] + z[:, 1] + rng.normal(size=n_samples), 60 + 10 * rng.normal(size=n_samples)])

    columns, values = [], []
    for (modality, expert), emb in blocks.items():
        columns += [f"{modality}__{expert}__{k}" for k in range(emb.shape[1])]
        values.append(emb)
    columns += ["labs__crp", "labs__age"]
    values.append(labs)
    frame = pd.DataFrame(np.hstack(values).astype(np.float32), columns=columns)

    # A modality is absent for a row: NaN in every column of every expert of it.
    for modality in ("ct", "notes", "labs"):
        absent = rng.random(n_samples) < missing_rate
        cols = [c for c in columns if c.startswith(f"{modality}__")]
        frame.loc[absent, cols] = np.nan
    return frame, y


def main(tiny: bool = False):
    """Fit on a DataFrame with layout names, then on the same values as an array with ``blocks=``.

    Returns
    -------
    result : dict
        ``auroc_frame`` and ``auroc_array`` (held-out AUROC of each route),
        ``proba`` (held-out probabilities of the DataFrame route),
        ``weights`` (``explain`` of the held-out rows), ``modalities``
        (what the classifier read from the names) and ``blocks``
        (the column indices used for the array).
    """
    frame, y = simulate(300 if tiny else 2000)
    X_train, X_test, y_train, y_test = train_test_split(
        frame, y, test_size=0.3, stratify=y, random_state=0
    )
    params = dict(max_epochs=10 if tiny else 60, random_state=0)

    # 1. A DataFrame: the column names are the layout.
    clf = MedMIXClassifier(**params).fit(X_train, y_train)
    proba = clf.predict_proba(X_test)
    weights = clf.explain(X_test)

    # 2. A numpy array: say which columns form which block. A list is one
    # block (a tabular modality); a dict maps expert names to columns.
    names = list(frame.columns)

    def cols(prefix: str) -> list[int]:
        return [i for i, c in enumerate(names) if c.startswith(prefix)]

    blocks = {
        "ct": {"ct_large": cols("ct__ct_large__"), "ct_small": cols("ct__ct_small__")},
        "notes": {"clinical_bert": cols("notes__")},
        "labs": cols("labs__"),
    }
    clf_array = MedMIXClassifier(blocks=blocks, **params).fit(X_train.to_numpy(), y_train)
    proba_array = clf_array.predict_proba(X_test.to_numpy())

    return {
        "auroc_frame": roc_auc_score(y_test, proba[:, 1]),
        "auroc_array": roc_auc_score(y_test, proba_array[:, 1]),
        "proba": proba,
        "weights": weights,
        "modalities": clf.modality_names_,
        "blocks": blocks,
    }


if __name__ == "__main__":
    import matplotlib.pyplot as plt

    parser = argparse.ArgumentParser(description=__doc__ and __doc__.strip().splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="fewer rows and epochs")
    args = parser.parse_args()
    result = main(tiny=args.tiny)
    print(f"modalities read from the column names: {result['modalities']}")
    print(f"held-out AUROC, DataFrame with layout names: {result['auroc_frame']:.3f}")
    print(f"held-out AUROC, numpy array with blocks=:   {result['auroc_array']:.3f}")
    weights = result["weights"]
    print("mean expert weights of the CT experts, over rows with a CT:")
    has_ct = weights["modality_weight__ct"] > 0
    ct_experts = ["expert_weight__ct__ct_large", "expert_weight__ct__ct_small"]
    print(weights.loc[has_ct, ct_experts].mean().round(3).to_string())
    print("mean modality weights over all rows:")
    print(weights.filter(like="modality_weight__").mean().round(3).to_string())

    # The two CT experts' weights, row by row, on the rows that have a CT.
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ct = weights.loc[has_ct, ct_experts]
    ax.hist(ct["expert_weight__ct__ct_large"], bins=20, range=(0, 1))
    ax.set_xlabel("weight of ct_large within the CT modality")
    ax.set_ylabel("rows with a CT")
    ax.set_title("The expert gate is decided per row")
    fig.tight_layout()
    plt.show()
