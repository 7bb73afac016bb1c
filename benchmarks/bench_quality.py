"""Quality benchmark: MedMIXClassifier against scikit-learn baselines, with missing modalities.

One command::

    .venv/bin/python benchmarks/bench_quality.py            # full run -> docs/benchmarks/
    .venv/bin/python benchmarks/bench_quality.py --quick    # a few minutes -> benchmarks/out/quick/

Every data set is embedded once with :class:`MultimodalExpertEmbedder`
(embedding cache in ``benchmarks/out/cache``, so a second run embeds nothing);
then every method runs on the same matrix with the same stratified folds
(5 folds x 3 seeds; ``--quick``: 3 folds x 1 seed, smaller data). Fits run in
``--n-jobs`` processes (default 2) with one thread each: on a shared 2-core
machine, waiting OpenMP/torch threads made HistGradientBoosting and
MedMIXClassifier fits 10 to 40 times slower. The first run embeds about 2,000
generated images with two CNNs and 12,000 texts (tens of minutes on 2 CPU
cores); later runs read the cache.

Data sets

- ``gen_random``: :func:`make_multimodal_classification`, binary, every modality
  (image, text, labs) missing at random for 30% of the rows.
- ``gen_label``: three classes, missingness depending on the label (sicker
  patients get more examinations), 30% on average.
- ``gen_train_missing_{r}``: one fully observed generated set, then image, text
  and labs blanked at random at rate r in {0.0, 0.3, 0.6} (training and test
  rows alike): the effect of the missing rate on what is learned.
- ``openi``: the OpenI chest X-ray reports (target: abnormal) from indication,
  findings and impression text and age.
- ``openi_hard``: indication text and age only (the same embeddings).

Images are embedded with efficientnet_lite0 and efficientnet_lite1 (ImageNet
weights), texts with all-MiniLM-L6-v2; labs and age pass through. Sex enters
the generated sets as a 0/1 column in a ``demo`` modality with age.

Methods: MedMIXClassifier with its defaults and ablations (expert fusion gate
vs mean vs a single expert; modality fusion attention vs mean vs concat;
modality dropout off; auxiliary heads off) and the baselines of
``benchmarks/_baselines.py``. Metrics: AUROC and AUPRC (macro one-vs-rest
for multiclass), mean and std over all folds and seeds. Robustness: every
fitted model also predicts the test rows after blanking each modality
independently with probability p (at least one present modality kept per row).

Writes ``quality.json``, ``quality.md`` and PNG plots to the output folder.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
import warnings
from dataclasses import dataclass, field

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from sklearn.model_selection import StratifiedKFold, train_test_split

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from _baselines import (  # noqa: E402
    BestSingleModality,
    LateFusionClassifier,
    make_hgb,
    make_logistic,
    make_mlp,
    quiet_fit,
)
from _common import machine_description  # noqa: E402

from medmix_sklearn._layout import parse_feature_names  # noqa: E402
from medmix_sklearn.model_selection import (  # noqa: E402
    availability_patterns,
    blank_modalities,
    modality_columns,
    subset_score,
)

P_GRID = (0.0, 0.25, 0.5, 0.75)
TRAIN_RATES = (0.0, 0.3, 0.6)
LR_C = 0.1
HGB_MAX_ITER = 200
LAB_COLUMNS = ["wbc", "crp", "heart_rate", "temperature", "spo2"]

FULL = dict(n_gen=800, n_folds=5, seeds=(0, 1, 2), openi_rows=None, train_rates=TRAIN_RATES)
QUICK = dict(n_gen=200, n_folds=3, seeds=(0,), openi_rows=600, train_rates=(0.0, 0.6))

BASELINES = ("logreg_impute", "hgb", "late_fusion", "mlp_zeros", "best_single_modality")
LABELS = {
    "medmix": "MedMIX (defaults)",
    "medmix_expert_mean": "MedMIX, expert fusion mean",
    "medmix_modality_mean": "MedMIX, modality fusion mean",
    "medmix_modality_concat": "MedMIX, modality fusion concat",
    "medmix_no_modality_dropout": "MedMIX, modality dropout 0",
    "medmix_no_aux": "MedMIX, aux heads off",
    "logreg_impute": "LogReg, mean impute + indicators",
    "hgb": "HistGradientBoosting (NaN blocks)",
    "late_fusion": "Late fusion (LogReg per modality)",
    "mlp_zeros": "MLP, zeros for missing",
    "best_single_modality": "Best single modality (inner CV)",
}


# -- data --------------------------------------------------------------------------------


@dataclass
class Dataset:
    name: str
    title: str
    X: np.ndarray  # float32 NaN-block matrix
    names: np.ndarray  # column names (the block layout)
    y: np.ndarray  # encoded labels 0..K-1
    info: dict = field(default_factory=dict)
    ablations: bool = True

    @property
    def groups(self) -> dict[str, np.ndarray]:
        return modality_columns(self.names)


def _embed(frame: pd.DataFrame, modalities: list, cache_dir: str) -> tuple[np.ndarray, np.ndarray, float]:
    from medmix_sklearn.embedding import MultimodalExpertEmbedder

    embedder = MultimodalExpertEmbedder(
        modalities, cache_dir=cache_dir, device="cpu", batch_size=32, n_jobs=1
    )
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Z = embedder.fit_transform(frame)
    return np.asarray(Z, dtype=np.float32), embedder.get_feature_names_out(), time.perf_counter() - start


def _generator_modalities() -> list:
    from medmix_sklearn.experts import ImageExpert, TextExpert

    return [
        ("image", [ImageExpert("efficientnet_lite0"), ImageExpert("efficientnet_lite1")], "image_path"),
        ("text", [TextExpert("all-MiniLM-L6-v2")], "report"),
        ("labs", "passthrough", LAB_COLUMNS),
        ("demo", "passthrough", ["age", "sex_m"]),
    ]


def _generated(name: str, title: str, out: str, n: int, seed: int, **kwargs) -> Dataset:
    from medmix_sklearn.datasets import make_multimodal_classification

    X, y = make_multimodal_classification(
        n, image_dir=os.path.join(out, "images", name), random_state=seed, **kwargs
    )
    X["sex_m"] = (X["sex"] == "M").astype(float)
    Z, names, seconds = _embed(X, _generator_modalities(), os.path.join(out, "cache"))
    info = {"source": "make_multimodal_classification", "n_samples": n, "random_state": seed,
            **kwargs, "embed_seconds": round(seconds, 1)}
    return Dataset(name, title, Z, names, y.to_numpy(), info)


def _blank_at_random(data: Dataset, rate: float, modalities: tuple, seed: int) -> Dataset:
    """A copy of ``data`` with each listed modality blanked for a ``rate`` share of rows."""
    groups = {m: data.groups[m] for m in modalities}
    X = blank_modalities(data.X, groups, rate, np.random.default_rng([seed, round(rate * 1000)]),
                         keep_one=False).astype(data.X.dtype)
    info = {**data.info, "blanked_at_random": list(modalities), "train_missing_rate": rate}
    return Dataset(f"gen_train_missing_{rate:.1f}", f"Generator, missing rate {rate:.1f} (random)",
                   X, data.names, data.y, info, ablations=False)


def _openi(out: str, rows: int | None) -> tuple[Dataset, Dataset]:
    from medmix_sklearn.datasets import load_openi
    from medmix_sklearn.experts import TextExpert

    X, y = load_openi(targets="abnormal", return_X_y=True)
    y = y.to_numpy().astype(int)
    if rows is not None and rows < len(X):
        keep, _ = train_test_split(np.arange(len(X)), train_size=rows, stratify=y, random_state=0)
        keep = np.sort(keep)
        X, y = X.iloc[keep].reset_index(drop=True), y[keep]
    text = TextExpert("all-MiniLM-L6-v2")
    modalities = [
        ("indication", [text], "indication"),
        ("findings", [text], "findings"),
        ("impression", [text], "impression"),
        ("age", "passthrough", ["age"]),
    ]
    Z, names, seconds = _embed(X, modalities, os.path.join(out, "cache"))
    info = {"source": "load_openi (torchxrayvision package files)", "target": "abnormal",
            "n_samples": len(X), "embed_seconds": round(seconds, 1)}
    full = Dataset("openi", "OpenI: indication + findings + impression + age", Z, names, y, info)
    keep = np.array([n.split("__")[0] in ("indication", "age") for n in names])
    hard = Dataset("openi_hard", "OpenI (hard): indication + age", Z[:, keep], names[keep], y,
                   {**info, "columns": "indication and age only"})
    return full, hard


def _describe(data: Dataset) -> dict:
    groups = data.groups
    present = availability_patterns(data.X, groups).to_numpy()
    blocks = [b for b in parse_feature_names(data.names) if not b.teacher]
    return {
        **data.info,
        "n_samples": int(len(data.y)),
        "n_features": int(data.X.shape[1]),
        "class_counts": np.bincount(data.y).tolist(),
        "blocks": {f"{b.modality}__{b.expert}": b.dim for b in blocks},
        "presence_rate": {m: round(float(present[:, j].mean()), 3) for j, m in enumerate(groups)},
    }


def prepare(settings: dict, out: str, only: set | None) -> list[Dataset]:
    n = settings["n_gen"]
    sets: list[Dataset] = []

    def wanted(name: str) -> bool:
        return only is None or any(name.startswith(o) for o in only)

    if wanted("gen_random"):
        sets.append(_generated("gen_random", "Generator: binary, 30% missing at random", out, n, 0,
                               missing_rate=0.3, missingness="random"))
    if wanted("gen_label"):
        sets.append(_generated("gen_label", "Generator: 3 classes, 30% missing by label", out, n, 1,
                               n_classes=3, missing_rate=0.3, missingness="label"))
    if wanted("gen_train_missing"):
        base = _generated("gen_complete", "Generator: binary, fully observed", out, n, 2,
                          missing_rate=0.0)
        for rate in settings["train_rates"]:
            sets.append(_blank_at_random(base, rate, ("image", "text", "labs"), seed=2))
    if wanted("openi"):
        full, hard = _openi(out, settings["openi_rows"])
        sets += [d for d in (full, hard) if wanted(d.name)]
    return sets


# -- methods -----------------------------------------------------------------------------


@dataclass
class Method:
    name: str
    kind: str  # a baseline name, or "medmix"
    params: dict = field(default_factory=dict)
    columns: np.ndarray | None = None  # column subset (single-expert ablation)
    label: str = ""


def methods_for(data: Dataset) -> list[Method]:
    out = [Method(b, b, label=LABELS[b]) for b in BASELINES]
    out.append(Method("medmix", "medmix", label=LABELS["medmix"]))
    if not data.ablations:
        return out
    blocks = [b for b in parse_feature_names(data.names) if not b.teacher]
    multi = {}
    for b in blocks:
        multi.setdefault(b.modality, []).append(b)
    multi = {m: bs for m, bs in multi.items() if len(bs) > 1}
    if multi:
        out.append(Method("medmix_expert_mean", "medmix", {"expert_fusion": "mean"},
                          label=LABELS["medmix_expert_mean"]))
        for modality, experts in multi.items():
            for keep in experts:
                drop = {c for b in experts if b is not keep for c in b.columns}
                cols = np.array([c for c in range(len(data.names)) if c not in drop])
                out.append(Method(f"medmix_only_{keep.expert}", "medmix", columns=cols,
                                  label=f"MedMIX, {modality} expert {keep.expert} only"))
    out += [
        Method("medmix_modality_mean", "medmix", {"modality_fusion": "mean"},
               label=LABELS["medmix_modality_mean"]),
        Method("medmix_modality_concat", "medmix", {"modality_fusion": "concat"},
               label=LABELS["medmix_modality_concat"]),
        Method("medmix_no_modality_dropout", "medmix", {"modality_dropout": 0.0},
               label=LABELS["medmix_no_modality_dropout"]),
        Method("medmix_no_aux", "medmix", {"aux_weight": 0.0}, label=LABELS["medmix_no_aux"]),
    ]
    return out


def _build(method: Method, seed: int):
    if method.kind == "medmix":
        from medmix_sklearn.fusion import MedMIXClassifier

        return MedMIXClassifier(random_state=seed, device="cpu", **method.params)
    if method.kind == "logreg_impute":
        return make_logistic(C=LR_C)
    if method.kind == "hgb":
        return make_hgb(max_iter=HGB_MAX_ITER, random_state=seed)
    if method.kind == "late_fusion":
        return LateFusionClassifier(C=LR_C)
    if method.kind == "mlp_zeros":
        return make_mlp(random_state=seed)
    if method.kind == "best_single_modality":
        return BestSingleModality(C=LR_C, random_state=seed)
    raise ValueError(f"Unknown method kind {method.kind!r}.")


# -- evaluation --------------------------------------------------------------------------


def scores(y: np.ndarray, proba: np.ndarray) -> tuple[float, float]:
    """AUROC and AUPRC; macro one-vs-rest for more than two classes."""
    classes = np.arange(proba.shape[1])
    return subset_score(y, proba, classes), subset_score(y, proba, classes, "average_precision")


def run_task(X, names, y, groups, method: Method, train, test, seed: int, fold: int, threads: int):
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    cols = method.columns if method.columns is not None else np.arange(X.shape[1])
    frame = lambda A: pd.DataFrame(A[:, cols], columns=names[cols])  # noqa: E731
    with threadpool_limits(threads), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        model = quiet_fit(_build(method, seed), frame(X[train]), y[train])
        fit_seconds = time.perf_counter() - start
        result = {"method": method.name, "seed": seed, "fold": fold, "fit_seconds": fit_seconds}
        for p in P_GRID:
            X_test = X[test]
            if p > 0:
                X_test = blank_modalities(X_test, groups, p, np.random.default_rng([seed, fold, round(p * 100)]),
                                          keep_one=True)
            auroc, auprc = scores(y[test], model.predict_proba(frame(X_test)))
            result[f"auroc@{p}"] = float(auroc)
            result[f"auprc@{p}"] = float(auprc)
    return result


def evaluate(data: Dataset, settings: dict, n_jobs: int) -> list[dict]:
    methods = methods_for(data)
    groups = data.groups
    tasks = []
    for seed in settings["seeds"]:
        splitter = StratifiedKFold(settings["n_folds"], shuffle=True, random_state=seed)
        for fold, (train, test) in enumerate(splitter.split(data.X, data.y)):
            for method in methods:
                tasks.append((method, train, test, seed, fold))
    # One thread per fit: on a shared 2-core machine, OpenMP (HistGradientBoosting) and
    # torch threads that wait on each other made fits 10 to 40 times slower.
    return Parallel(n_jobs=n_jobs)(
        delayed(run_task)(data.X, data.names, data.y, groups, m, tr, te, s, f, 1)
        for m, tr, te, s, f in tasks
    )


def summarise(data: Dataset, rows: list[dict]) -> dict:
    frame = pd.DataFrame(rows)
    methods = {m.name: m for m in methods_for(data)}
    ref = frame[frame.method == "medmix"].set_index(["seed", "fold"])["auroc@0.0"]
    out = {}
    for name, method in methods.items():
        part = frame[frame.method == name]
        paired = ref - part.set_index(["seed", "fold"])["auroc@0.0"]
        out[name] = {
            "label": method.label,
            "family": "baseline" if name in BASELINES else "medmix",
            "auroc_mean": float(part["auroc@0.0"].mean()),
            "auroc_std": float(part["auroc@0.0"].std(ddof=0)),
            "auprc_mean": float(part["auprc@0.0"].mean()),
            "auprc_std": float(part["auprc@0.0"].std(ddof=0)),
            "medmix_minus_this_auroc_mean": float(paired.mean()),
            "medmix_minus_this_auroc_std": float(paired.std(ddof=0)),
            "fit_seconds_mean": float(part["fit_seconds"].mean()),
            "robustness_auroc": {
                str(p): {"mean": float(part[f"auroc@{p}"].mean()), "std": float(part[f"auroc@{p}"].std(ddof=0))}
                for p in P_GRID
            },
            "n_scores": int(len(part)),
        }
    return out


# -- verdict, plots, report --------------------------------------------------------------


def verdict(results: dict) -> dict:
    out = {}
    for name, res in results.items():
        methods = res["methods"]
        med = methods["medmix"]
        baselines = {k: v for k, v in methods.items() if k in BASELINES}
        best_name = max(baselines, key=lambda k: baselines[k]["auroc_mean"])
        best = baselines[best_name]
        entry = {"medmix_auroc": med["auroc_mean"], "best_baseline": best_name,
                 "best_baseline_auroc": best["auroc_mean"], "best_baseline_std": best["auroc_std"]}
        if name.startswith("gen"):
            below = {k: v["auroc_mean"] - med["auroc_mean"] for k, v in baselines.items()
                     if v["auroc_mean"] > med["auroc_mean"]}
            entry["at_or_above_every_baseline"] = not below
            entry["baselines_above_medmix"] = below
            loss = lambda m: m["robustness_auroc"]["0.0"]["mean"] - m["robustness_auroc"]["0.5"]["mean"]  # noqa: E731
            entry["auroc_loss_p0.5_medmix"] = loss(med)
            entry["auroc_loss_p0.5_hgb"] = loss(methods["hgb"])
            entry["robustness_target_met"] = loss(med) <= 0.5 * max(loss(methods["hgb"]), 0.0)
        else:
            entry["level_within_one_std"] = med["auroc_mean"] >= best["auroc_mean"] - best["auroc_std"]
        out[name] = entry
    return out


def plot(results: dict, out: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    for name, res in results.items():
        fig, ax = plt.subplots(figsize=(7.5, 4.5))
        for method, m in res["methods"].items():
            ys = [m["robustness_auroc"][str(p)]["mean"] for p in P_GRID]
            if method == "medmix":
                style = dict(color="black", lw=2.5, marker="o", zorder=5)
            elif m["family"] == "baseline":
                style = dict(lw=1.5, marker="s")
            else:
                style = dict(lw=1, ls="--", marker=".", alpha=0.7)
            ax.plot(P_GRID, ys, label=m["label"], **style)
        ax.set_xlabel("p (probability each test modality is blanked; one always kept)")
        ax.set_ylabel("AUROC")
        ax.set_title(res["title"], fontsize=10)
        ax.set_xticks(P_GRID)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6.5, loc="lower left", ncol=2)
        fig.tight_layout()
        path = os.path.join(out, f"robustness_{name}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        files.append(path)

    sweep = {k: v for k, v in results.items() if k.startswith("gen_train_missing")}
    if sweep:
        rates = [v["info"]["train_missing_rate"] for v in sweep.values()]
        fig, ax = plt.subplots(figsize=(6.5, 4.2))
        for method in next(iter(sweep.values()))["methods"]:
            ys = [v["methods"][method]["auroc_mean"] for v in sweep.values()]
            es = [v["methods"][method]["auroc_std"] for v in sweep.values()]
            style = dict(color="black", lw=2.5, zorder=5) if method == "medmix" else dict(lw=1.3)
            ax.errorbar(rates, ys, yerr=es, marker="o", capsize=3, label=LABELS.get(method, method), **style)
        ax.set_xlabel("missing rate of image, text and labs (training and test rows)")
        ax.set_ylabel("AUROC")
        ax.set_xticks(rates)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        ax.set_title("Generator: AUROC against the missing rate", fontsize=10)
        fig.tight_layout()
        path = os.path.join(out, "train_missing_rate.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        files.append(path)
    return files


def _fmt(mean: float, std: float) -> str:
    return f"{mean:.3f} ± {std:.3f}"


def report(doc: dict, out: str) -> str:
    meta, results, ver = doc["meta"], doc["results"], doc["verdict"]
    lines = ["# Quality benchmark: MedMIXClassifier vs scikit-learn baselines", ""]
    if meta["quick"]:
        lines += ["> **QUICK RUN** (`--quick`: small data, 3 folds x 1 seed). Smoke-test figures, "
                  "not the benchmark's results.", ""]
    lines += [
        f"- Command: `{meta['command']}`",
        f"- Date: {meta['date']}; wall time {meta['wall_seconds'] / 60:.1f} min "
        f"(embeddings: {meta['embed_seconds'] / 60:.1f} min of it)",
        f"- Machine: {meta['machine']}",
        f"- Protocol: {meta['n_folds']}-fold stratified CV x seeds {meta['seeds']} (the same folds "
        "for every method); mean ± std over all folds and seeds. AUROC and AUPRC macro one-vs-rest "
        "for multiclass. Robustness: the models trained on the folds as they are predict the test "
        "rows with each modality blanked (all its columns NaN) independently with probability p, "
        "at least one present modality kept per row.",
        "- Embeddings: images efficientnet_lite0 + efficientnet_lite1 (ImageNet weights, 1280-d "
        "each), texts all-MiniLM-L6-v2 (384-d), labs/age passthrough; every data set embedded "
        "once, cached in `benchmarks/out/cache`.",
        f"- Baselines: logistic regression C={LR_C} (mean imputation, one missing indicator per "
        "modality plus one per column with NaN cells, standardised); HistGradientBoosting "
        f"(max_iter={HGB_MAX_ITER}, early stopping) on the NaN blocks; late fusion (a logistic "
        "regression per modality on its present rows, averaged over the present modalities, prior "
        "when none); MLP (64 hidden, standardised, zeros for missing, early stopping); best single "
        "modality (the logistic regression on one modality, chosen by 3-fold inner CV on the "
        "training folds). MedMIXClassifier: library defaults (random_state=seed, device cpu). "
        "No method is tuned per data set. `MedMIX − this` is the mean ± std over folds of the paired "
        "AUROC difference on the same test fold (positive: MedMIX better).",
        "",
        "## Verdict against the targets",
        "",
    ]
    for name, v in ver.items():
        title = results[name]["title"]
        if "at_or_above_every_baseline" in v:
            above = ", ".join(f"{k} (+{d:.3f})" for k, d in v["baselines_above_medmix"].items())
            ok = "MET" if v["at_or_above_every_baseline"] else "NOT MET"
            rob = "MET" if v["robustness_target_met"] else "NOT MET"
            lines.append(
                f"- **{title}** — at or above every baseline: **{ok}** (MedMIX {v['medmix_auroc']:.3f}; "
                f"best baseline {v['best_baseline']} {v['best_baseline_auroc']:.3f}"
                + (f"; above MedMIX: {above}" if above else "") + "). "
                f"AUROC lost at p=0.5: MedMIX {v['auroc_loss_p0.5_medmix']:.3f} vs HGB "
                f"{v['auroc_loss_p0.5_hgb']:.3f} (target ≤ half of HGB's): **{rob}**."
            )
        else:
            ok = "MET" if v["level_within_one_std"] else "NOT MET"
            lines.append(
                f"- **{title}** — level with the best baseline within one std: **{ok}** (MedMIX "
                f"{v['medmix_auroc']:.3f}; best baseline {v['best_baseline']} "
                f"{_fmt(v['best_baseline_auroc'], v['best_baseline_std'])})."
            )
    lines += ["", "Ablations (mean AUROC; the best MedMIX variant against the defaults):", ""]
    for name, res in results.items():
        variants = {k: v for k, v in res["methods"].items() if v["family"] == "medmix"}
        if len(variants) < 2:
            continue
        best = max(variants, key=lambda k: variants[k]["auroc_mean"])
        others = ", ".join(f"{k.removeprefix('medmix_')} {v['auroc_mean']:.3f}"
                           for k, v in variants.items() if k != "medmix")
        lines.append(f"- `{name}`: defaults {variants['medmix']['auroc_mean']:.3f}; best variant "
                     f"`{best}` {variants[best]['auroc_mean']:.3f} ({others}).")
    lines.append("")
    for name, res in results.items():
        info = res["info"]
        lines += [f"## {res['title']} (`{name}`)", "",
                  f"{info['n_samples']} rows, {info['n_features']} columns, classes {info['class_counts']}, "
                  f"presence per modality {info['presence_rate']}.", "",
                  "| method | AUROC | AUPRC | MedMIX − this (paired) | AUROC p=0.25 | p=0.5 | p=0.75 | fit s |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for method, m in res["methods"].items():
            r = m["robustness_auroc"]
            label = f"**{m['label']}**" if method == "medmix" else m["label"]
            delta = (
                ""
                if method == "medmix"
                else _fmt(m["medmix_minus_this_auroc_mean"], m["medmix_minus_this_auroc_std"])
            )
            lines.append(
                f"| {label} | {_fmt(m['auroc_mean'], m['auroc_std'])} | {_fmt(m['auprc_mean'], m['auprc_std'])} "
                f"| {delta} | {r['0.25']['mean']:.3f} | {r['0.5']['mean']:.3f} | {r['0.75']['mean']:.3f} "
                f"| {m['fit_seconds_mean']:.1f} |"
            )
        lines += ["", f"![robustness {name}](robustness_{name}.png)", ""]
    if any(k.startswith("gen_train_missing") for k in results):
        lines += ["## AUROC against the missing rate", "", "![missing rate](train_missing_rate.png)", ""]
    path = os.path.join(out, "quality.md")
    with open(path, "w") as fh:
        fh.write("\n".join(lines))
    return path


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small data, 3 folds, 1 seed (a few minutes)")
    parser.add_argument("--out", default=None,
                        help="output folder (default docs/benchmarks, or benchmarks/out/quick with --quick)")
    parser.add_argument("--work", default=os.path.join(HERE, "out"), help="images and embedding cache")
    parser.add_argument("--n-jobs", type=int, default=2, help="parallel fits (processes, one thread each)")
    parser.add_argument("--embed-threads", type=int, default=None,
                        help="torch threads for embedding (default: torch's choice)")
    parser.add_argument("--only", nargs="*", default=None, help="data set name prefixes to run")
    parser.add_argument("--prepare-only", action="store_true", help="embed the data sets and stop")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    out = args.out or (os.path.join(HERE, "out", "quick") if args.quick else os.path.join(ROOT, "docs", "benchmarks"))
    os.makedirs(out, exist_ok=True)
    machine = machine_description()
    start = time.perf_counter()
    if args.embed_threads:
        import torch

        torch.set_num_threads(args.embed_threads)

    datasets = prepare(settings, args.work, set(args.only) if args.only else None)
    embed_seconds = time.perf_counter() - start
    print(f"[{embed_seconds:7.1f}s] embedded: " + ", ".join(f"{d.name} {d.X.shape}" for d in datasets), flush=True)
    if args.prepare_only:
        return {}

    results = {}
    for data in datasets:
        t0 = time.perf_counter()
        rows = evaluate(data, settings, args.n_jobs)
        results[data.name] = {"title": data.title, "info": _describe(data), "methods": summarise(data, rows),
                              "scores": rows}
        best = results[data.name]["methods"]
        print(f"[{time.perf_counter() - start:7.1f}s] {data.name} done in {time.perf_counter() - t0:.0f}s: "
              + ", ".join(f"{k} {v['auroc_mean']:.3f}" for k, v in best.items()), flush=True)

    argv_text = " ".join(sys.argv[1:] if argv is None else argv)
    doc = {
        "meta": {
            "command": f".venv/bin/python benchmarks/bench_quality.py {argv_text}".strip(),
            "date": dt.datetime.now().isoformat(timespec="seconds"),
            "machine": machine,
            "quick": args.quick,
            "n_folds": settings["n_folds"],
            "seeds": list(settings["seeds"]),
            "p_grid": list(P_GRID),
            "n_jobs": args.n_jobs,
            "embed_seconds": embed_seconds,
            "wall_seconds": time.perf_counter() - start,
        },
        "results": results,
    }
    doc["verdict"] = verdict(results)
    plot(results, out)
    with open(os.path.join(out, "quality.json"), "w") as fh:
        json.dump(doc, fh, indent=1)
    report(doc, out)
    print(f"wrote {out}/quality.json, quality.md and plots in {doc['meta']['wall_seconds'] / 60:.1f} min")
    return doc


if __name__ == "__main__":
    main()
