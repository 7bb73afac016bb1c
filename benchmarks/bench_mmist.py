"""MMIST-ccRCC benchmark: MedMIXClassifier against baselines on the MMIST paper's own data.

One command (the data folder is a local clone of
https://github.com/Multi-Modal-IST/multi-modal-ist.github.io, or its
``benchmarks/ccRCC/Code`` folder; see :func:`medmix_sklearn.datasets.load_mmist_ccrcc`)::

    .venv/bin/python benchmarks/bench_mmist.py --data PATH                 # -> docs/benchmarks/
    .venv/bin/python benchmarks/bench_mmist.py --data PATH --quick         # 1 seed -> benchmarks/out/mmist/
    .venv/bin/python benchmarks/bench_mmist.py --data PATH --candidates    # also the fusion candidates

Task: 12-month survival (``vital_status_12``, 75 deaths among 618 patients),
from clinical (14 columns), genomics (3 mutations, 462 patients), CT (512-d,
239 patients), MRI (512-d, 52 patients) and WSI (1,024-d, all patients)
blocks, features averaged over a patient's volumes or slides.

Evaluation

- Repeated stratified 5-fold cross-validation over all 618 patients, seeds
  0..S-1 (``--seeds``, default 3): the same folds for every method, so the
  differences are paired; mean and standard deviation over the S x 5 folds.
- The official train/test split (497/121): every seeded method is fitted
  with seeds 0..S-1 and its scores averaged. Balanced accuracy is reported
  there too, at the threshold of the training prevalence (a row is called a
  death when its predicted death probability exceeds the training death
  rate): the MMIST paper reports balanced accuracy on this split.

Methods: MedMIXClassifier with its defaults; the scikit-learn baselines of
``benchmarks/_baselines.py`` (logistic regression with imputation,
HistGradientBoosting, late fusion, MLP); the published fusion methods of
``benchmarks/fusion_baselines.py`` (MedFuse, FuseMoE, Flex-MoE, ShaSpec,
DrFuse) with their defaults, on all modalities; and every modality subset of
interest for MedMIX and the logistic regression (each modality alone,
clinical plus one modality, all). ``--candidates`` adds the MedMIX variants
measured while looking for the cause of the fusion loss on this data.

Writes ``mmist_ccrcc.json`` and ``mmist_ccrcc.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

from _baselines import LateFusionClassifier, make_hgb, make_logistic, make_mlp, quiet_fit  # noqa: E402
from _common import machine_description  # noqa: E402
from fusion_baselines import PUBLISHED_BASELINES  # noqa: E402
from joblib import Parallel, delayed  # noqa: E402
from sklearn.metrics import balanced_accuracy_score, roc_auc_score  # noqa: E402
from sklearn.model_selection import StratifiedKFold  # noqa: E402

MODALITIES = ("clinical", "genomics", "ct", "mri", "wsi")
ALL = "+".join(MODALITIES)
SUBSETS = [*MODALITIES, *(f"clinical+{m}" for m in MODALITIES[1:]), ALL]

#: What the MMIST authors report on the official test split (balanced accuracy,
#: %), from the benchmark page of the data set's repository
#: (https://multi-modal-ist.github.io/benchmarks/ccRCC/, "Baseline with MIL" and
#: "Multi-Modal with MIL", Mota et al. 2024, arXiv:2405.01658): per modality
#: with multiple-instance learning, and the fusion variants on all patients.
PAPER = {
    "CT alone (MIL)": 61.59,
    "MRI alone (MIL)": 50.00,
    "WSI alone (MIL)": 53.42,
    "clinical + genomics alone (MIL)": 73.16,
    "late fusion, weighted sum": 73.15,
    "late fusion, learned weights": 69.35,
    "early fusion, mean": 82.32,
    "early fusion, concatenation": 78.45,
    "early fusion, mean, with reconstruction": 84.70,
    "early fusion, concatenation, with reconstruction": 83.27,
}


def medmix(**params):
    def build(seed):
        from medmix_sklearn import MedMIXClassifier

        return MedMIXClassifier(random_state=seed, **params)

    return build


#: Baselines: name -> builder(seed).
BASELINES = {
    "LogReg + imputation": lambda seed: make_logistic(),
    "HistGradientBoosting": lambda seed: make_hgb(random_state=seed),
    "Late fusion (LogReg per modality)": lambda seed: LateFusionClassifier(),
    "MLP": lambda seed: make_mlp(random_state=seed),
}


def _published(cls):
    return lambda seed: cls(random_state=seed)


#: The published fusion methods of ``fusion_baselines.py``, with their defaults
#: (one network each, on MedMIX's training loop; no input bottleneck).
BASELINES.update({cls.__name__.removesuffix("Classifier"): _published(cls) for cls in PUBLISHED_BASELINES.values()})

#: MedMIX variants measured while looking for the cause (``--candidates``).
CANDIDATES = {
    "one network, no linear path, width 64 (the defaults before)": dict(n_members=1),
    "one network with the linear path, width 32": dict(n_members=1, linear_path=True, hidden_dim=32),
}
#: MedMIX's modality subsets on the official split (besides all modalities).
OFFICIAL_SUBSETS = ("clinical", "clinical+genomics", "ct", "mri", "wsi")
CANDIDATE_SUBSETS = ["clinical", *(f"clinical+{m}" for m in MODALITIES[1:]), ALL]


def columns(bunch, subset: str) -> list[str]:
    return [c for m in subset.split("+") for c in bunch.modalities[m]]


def death_proba(model, X) -> np.ndarray:
    """Predicted probability of class 0 (death within 12 months)."""
    proba = model.predict_proba(X)
    return proba[:, list(model.classes_).index(0)]


def scores(y: np.ndarray, p_death: np.ndarray, threshold: float) -> dict:
    death = (y == 0).astype(int)
    return {
        "auroc": float(roc_auc_score(death, p_death)),
        "balanced_accuracy": float(balanced_accuracy_score(death, (p_death > threshold).astype(int))),
    }


def fit_score(build, seed, X, y, train, test) -> dict:
    import torch

    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = quiet_fit(build(seed), X.iloc[train], y[train])
        p = death_proba(model, X.iloc[test])
    return scores(y[test], p, threshold=float(np.mean(y[train] == 0)))


def jobs(candidates: bool) -> list[tuple[str, str, object]]:
    """(method, subset, builder) of every evaluation."""
    out = [("MedMIX (defaults)", s, medmix()) for s in SUBSETS]
    out += [(name, ALL, b) for name, b in BASELINES.items()]
    out += [("LogReg + imputation", s, BASELINES["LogReg + imputation"]) for s in SUBSETS if s != ALL]
    if candidates:
        out += [(f"MedMIX, {name}", s, medmix(**p)) for name, p in CANDIDATES.items() for s in CANDIDATE_SUBSETS]
    return out


def run(bunch, seeds: int, candidates: bool, log, n_jobs: int = 1) -> dict:
    X, y = bunch.data, bunch.target.to_numpy()
    folds = [
        (seed, k, train, test)
        for seed in range(seeds)
        for k, (train, test) in enumerate(StratifiedKFold(5, shuffle=True, random_state=seed).split(X, y))
    ]
    official_train = np.flatnonzero(bunch.split.to_numpy() == "train")
    official_test = np.flatnonzero(bunch.split.to_numpy() == "test")
    results: dict = {"cv": {}, "official": {}}
    start = time.perf_counter()
    todo = jobs(candidates)
    tasks = [(j, "cv", seed, tr, te) for j in range(len(todo)) for seed, _, tr, te in folds]
    # The official split: what the page shows (every method on all modalities, MedMIX's subsets).
    shown = [j for j, (method, subset, _) in enumerate(todo)
             if subset == ALL and not method.startswith("MedMIX, ")
             or method == "MedMIX (defaults)" and subset in OFFICIAL_SUBSETS]
    tasks += [(j, "official", seed, official_train, official_test) for j in shown for seed in range(seeds)]
    done = Parallel(n_jobs=n_jobs)(
        delayed(fit_score)(todo[j][2], seed, X[columns(bunch, todo[j][1])], y, tr, te)
        for j, _, seed, tr, te in tasks
    )
    for (j, part, *_), score in zip(tasks, done):
        method, subset, _ = todo[j]
        results[part].setdefault(method, {}).setdefault(subset, []).append(score)
    for method, subsets in results["cv"].items():
        for subset, rows in subsets.items():
            auc = [r["auroc"] for r in rows]
            log(f"{method:45s} {subset:35s} CV AUROC {np.mean(auc):.3f} +- {np.std(auc):.3f}")
    log(f"[{time.perf_counter() - start:7.1f}s] done")
    return results


def summary(values: list[float]) -> dict:
    return {"mean": float(np.mean(values)), "std": float(np.std(values))}


def summarise(results: dict) -> dict:
    out: dict = {"cv": {}, "official": {}, "paired": {}, "drops": {}}
    for part in ("cv", "official"):
        for method, subsets in results[part].items():
            for subset, rows in subsets.items():
                out[part].setdefault(method, {})[subset] = {
                    metric: summary([r[metric] for r in rows]) for metric in ("auroc", "balanced_accuracy")
                }
    ours = [r["auroc"] for r in results["cv"]["MedMIX (defaults)"][ALL]]
    for method in BASELINES:
        theirs = [r["auroc"] for r in results["cv"][method][ALL]]
        diff = np.subtract(ours, theirs)
        out["paired"][method] = {**summary(diff.tolist()), "folds_medmix_ahead": int((diff >= 0).sum()),
                                 "folds": len(diff)}
    for method, subsets in results["cv"].items():
        if "clinical" not in subsets:
            continue
        base = np.array([r["auroc"] for r in subsets["clinical"]])
        drops = {}
        for m in MODALITIES[1:]:
            key = f"clinical+{m}"
            if key in subsets:
                diff = np.array([r["auroc"] for r in subsets[key]]) - base
                drops[key] = summary(diff.tolist())
        if ALL in subsets:
            drops[ALL] = summary((np.array([r["auroc"] for r in subsets[ALL]]) - base).tolist())
        out["drops"][method] = drops
    return out


def _fmt(s: dict, scale: float = 1.0) -> str:
    digits = 3 if scale == 1.0 else 1
    return f"{s['mean'] * scale:.{digits}f} ± {s['std'] * scale:.{digits}f}"


def verdict(summ: dict) -> dict:
    cv = summ["cv"]
    ours = cv["MedMIX (defaults)"][ALL]["auroc"]["mean"]
    best_name = max(BASELINES, key=lambda m: cv[m][ALL]["auroc"]["mean"])
    best = cv[best_name][ALL]["auroc"]["mean"]
    worst_drop = min(summ["drops"]["MedMIX (defaults)"].items(), key=lambda kv: kv[1]["mean"])
    return {
        "medmix_auroc": ours,
        "best_baseline": best_name,
        "best_baseline_auroc": best,
        "at_or_above_every_baseline": bool(ours >= best),
        "worst_added_modality": worst_drop[0],
        "worst_added_modality_change": worst_drop[1]["mean"],
        "no_modality_costs_more_than_0.01": bool(worst_drop[1]["mean"] >= -0.01),
    }


def report(doc: dict, out: str, notes: str) -> str:
    summ, v, meta = doc["summary"], doc["verdict"], doc["meta"]
    cv, off = summ["cv"], summ["official"]
    lines = [
        "# MMIST-ccRCC: 12-month survival in kidney cancer",
        "",
        f"Generated by `{meta['command']}` on {meta['date']} ({meta['seconds']:.0f} s).",
        f"Machine: {meta['machine']}.",
        "",
        "Data: MMIST-ccRCC (Mota et al., CVPR 2024 workshop, arXiv:2405.01658), read with",
        "`medmix_sklearn.datasets.load_mmist_ccrcc` from a clone of",
        "https://github.com/Multi-Modal-IST/multi-modal-ist.github.io (folder `benchmarks/ccRCC/Code`,",
        "GPL-3.0, not copied here). 618 patients, 75 deaths within 12 months. Blocks: clinical (14",
        "columns, all patients), genomics (3 mutations, 462), CT (512-d, 239), MRI (512-d, 52), WSI",
        "(1,024-d, 618); CT/MRI/WSI features averaged over a patient's volumes or slides. Every",
        "feature file of the folder is in the snapshot read (736 CT, 522 MRI, 2,907 WSI files; the",
        "476 WSI files of TCGA slides whose patient is not in the clinical table are ignored). The",
        "repository's README counts 248 CT and 48 MRI patients; the feature files cover 239 and 52.",
        "",
        f"Protocol: stratified 5-fold CV repeated over seeds 0..{meta['seeds'] - 1} (the same",
        f"{5 * meta['seeds']} folds for every method, so differences are paired), AUROC of death within",
        "12 months, mean ± std over the folds. Official split: 497 train / 121 test (16 deaths),",
        f"seeded methods fitted with {meta['seeds']} seeds and averaged.",
        "",
        "## Verdict",
        "",
        f"- MedMIX defaults, all modalities: AUROC {v['medmix_auroc']:.3f}; best baseline "
        f"({v['best_baseline']}) {v['best_baseline_auroc']:.3f}. At or above every baseline: "
        f"**{'yes' if v['at_or_above_every_baseline'] else 'NO'}**.",
        f"- Worst change from adding one modality (or all) to the clinical block: "
        f"{v['worst_added_modality']} {v['worst_added_modality_change']:+.3f}. Never more than 0.01 "
        f"lost: **{'yes' if v['no_modality_costs_more_than_0.01'] else 'NO'}**.",
        "",
        "## All modalities, repeated CV",
        "",
        "| method | AUROC | MedMIX minus method (paired) | folds MedMIX ≥ |",
        "| --- | --- | --- | --- |",
        f"| MedMIX (defaults) | {_fmt(cv['MedMIX (defaults)'][ALL]['auroc'])} | | |",
    ]
    for m in BASELINES:
        p = summ["paired"][m]
        lines.append(f"| {m} | {_fmt(cv[m][ALL]['auroc'])} | {p['mean']:+.3f} ± {p['std']:.3f} | "
                     f"{p['folds_medmix_ahead']}/{p['folds']} |")
    lines += [
        "",
        "## Modality subsets, repeated CV (AUROC)",
        "",
        "Each modality alone is scored on every test row (rows without it get the prior).",
        "",
        "| subset | MedMIX (defaults) | change vs clinical | LogReg + imputation | change vs clinical |",
        "| --- | --- | --- | --- | --- |",
    ]
    for s in SUBSETS:
        row = [s]
        for m in ("MedMIX (defaults)", "LogReg + imputation"):
            row.append(_fmt(cv[m][s]["auroc"]))
            d = summ["drops"][m].get(s)
            row.append(f"{d['mean']:+.3f} ± {d['std']:.3f}" if d else "")
        lines.append("| " + " | ".join(row) + " |")
    cands = [m for m in cv if m.startswith("MedMIX, ")]
    if cands:
        lines += [
            "",
            "## Fusion candidates, repeated CV (AUROC)",
            "",
            "MedMIX with other settings, same folds. 'worst change' is the largest drop from",
            "adding one modality (or all) to the clinical block, paired over folds.",
            "",
            "| variant | clinical | clinical+genomics | clinical+ct | clinical+mri | clinical+wsi | all "
            "| worst change |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for m in ["MedMIX (defaults)", *cands]:
            drops = summ["drops"][m]
            worst = min(drops.items(), key=lambda kv: kv[1]["mean"])
            cells = [f"{cv[m][s]['auroc']['mean']:.3f} ± {cv[m][s]['auroc']['std']:.3f}" for s in CANDIDATE_SUBSETS]
            lines.append(f"| {m.replace('MedMIX, ', '')} | " + " | ".join(cells)
                         + f" | {worst[0]} {worst[1]['mean']:+.3f} |")
    lines += [
        "",
        "## Official split (test: 121 patients, 16 deaths)",
        "",
        "Balanced accuracy at the threshold of the training death rate. With 16 deaths in the test",
        "set one patient moves the sensitivity by 6 points: these figures are noisy.",
        "",
        "| method | subset | AUROC | balanced accuracy (%) |",
        "| --- | --- | --- | --- |",
    ]
    for m in ["MedMIX (defaults)", *BASELINES]:
        lines.append(f"| {m} | all | {_fmt(off[m][ALL]['auroc'])} | {_fmt(off[m][ALL]['balanced_accuracy'], 100)} |")
    for s in OFFICIAL_SUBSETS:
        m = "MedMIX (defaults)"
        lines.append(f"| {m} | {s} | {_fmt(off[m][s]['auroc'])} | {_fmt(off[m][s]['balanced_accuracy'], 100)} |")
    lines += [
        "",
        "Reported by the MMIST authors on the same split (balanced accuracy, %; they report no",
        "AUROC), from the data set's benchmark page https://multi-modal-ist.github.io/benchmarks/ccRCC/",
        "(Mota et al. 2024, multiple-instance learning over volumes and slides; their pipelines",
        "also differ in features and thresholds, so the comparison is indicative):",
        "",
        "| MMIST paper | balanced accuracy (%) |",
        "| --- | --- |",
    ]
    lines += [f"| {k} | {val:.2f} |" for k, val in PAPER.items()]
    if notes:
        lines += ["", notes.strip()]
    text = "\n".join(lines) + "\n"
    with open(os.path.join(out, "mmist_ccrcc.md"), "w") as fh:
        fh.write(text)
    return text


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="local copy of the MMIST-ccRCC Code folder (or the clone); "
                                       "not needed with --report-only")
    parser.add_argument("--seeds", type=int, default=3, help="CV repetitions / seeds (default 3)")
    parser.add_argument("--quick", action="store_true", help="1 seed, output to benchmarks/out/mmist")
    parser.add_argument("--candidates", action="store_true", help="also measure the fusion candidates")
    parser.add_argument("--out", default=None, help="output folder (default docs/benchmarks)")
    parser.add_argument("--notes", default=None, help="markdown file appended to the page")
    parser.add_argument("--n-jobs", type=int, default=2, help="parallel fits (processes, one thread each)")
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite the page from the JSON of the last run (with --notes)")
    args = parser.parse_args(argv)
    out = args.out or (os.path.join(HERE, "out", "mmist") if args.quick else os.path.join(ROOT, "docs", "benchmarks"))
    notes = open(args.notes).read() if args.notes else ""
    if args.report_only:
        with open(os.path.join(out, "mmist_ccrcc.json")) as fh:
            doc = json.load(fh)
        if args.notes and "--notes" not in doc["meta"]["command"]:
            doc["meta"]["command"] += f" --notes {os.path.relpath(args.notes, ROOT)}"
        with open(os.path.join(out, "mmist_ccrcc.json"), "w") as fh:
            json.dump(doc, fh, indent=1)
        print(report(doc, out, notes))
        return doc
    if not args.data:
        parser.error("--data is required (except with --report-only)")
    import torch

    torch.set_num_threads(1)
    from medmix_sklearn.datasets import load_mmist_ccrcc

    seeds = 1 if args.quick else args.seeds
    os.makedirs(out, exist_ok=True)
    machine = machine_description()
    start = time.perf_counter()
    bunch = load_mmist_ccrcc(args.data)
    results = run(bunch, seeds, args.candidates, lambda s: print(s, flush=True), args.n_jobs)
    summ = summarise(results)
    command = "python benchmarks/bench_mmist.py --data PATH"
    command += " --quick" if args.quick else (f" --seeds {args.seeds}" if args.seeds != 3 else "")
    command += " --candidates" if args.candidates else ""
    command += f" --notes {os.path.relpath(args.notes, ROOT)}" if args.notes else ""
    doc = {
        "meta": {
            "command": command,
            "date": dt.date.today().isoformat(),
            "seconds": time.perf_counter() - start,
            "machine": machine,
            "seeds": seeds,
        },
        "summary": summ,
        "verdict": verdict(summ),
        "paper_balanced_accuracy": PAPER,
        "folds": results,
    }
    with open(os.path.join(out, "mmist_ccrcc.json"), "w") as fh:
        json.dump(doc, fh, indent=1)
    print(report(doc, out, notes))
    return doc


if __name__ == "__main__":
    main()
