"""Label-dependent missingness at test time only, and in training and test alike.

The quality benchmark (``bench_quality.py``) blanks modalities of the *test*
folds only: under its label-dependent mechanism (``"mnar"``) the models meet a
missingness that says something about the label, which they never saw in
training. A method then scores well there when its output for a row with a
modality blanked happens to be high, which no training signal asked for: the
best single modality (on OpenI indication + age, the indication text) goes from
0.762 AUROC on the folds as they are to 0.842 at p=0.5.

When missingness depends on the label in deployment, it usually did in the
data the model learns from as well. This script scores the same methods, on
the same folds and the same test-fold amputations, both ways:
``robustness_curve(amputate="test")`` (the quality page's protocol) and
``robustness_curve(amputate="train_and_test")`` (the training fold amputed by
the same mechanism and probability, one fit per probability), and writes
``docs/benchmarks/mnar_train.md``::

    .venv/bin/python benchmarks/bench_mnar_train.py --work /work/data/bench/quality_out \
        --sets openi_hard --out docs/benchmarks

``--work`` is the quality benchmark's work folder (cached embeddings; OpenI is
embedded there on first use). Results are stored per (data set, method) in
``mnar_train_runs.json`` beside the page, so a rerun skips what is stored
(``--force`` recomputes) and ``--report-only`` rewrites the page.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import bench_quality as quality  # noqa: E402  (sets the offline and one-thread variables)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.model_selection import StratifiedKFold  # noqa: E402

P_GRID = (0.0, 0.25, 0.5, 0.75)
MODES = ("test", "train_and_test")
STORE_NAME = "mnar_train_runs.json"
#: MedMIX variants of this page beyond bench_quality's.
EXTRA = {
    "medmix_pattern_prior_uncalibrated": quality.Method(
        "medmix_pattern_prior_uncalibrated", "medmix", {"pattern_prior": True, "calibration": None},
        label="MedMIX, pattern_prior=True, calibration=None"),
}
PAGE_NAME = "mnar_train.md"


def evaluate(data, method, seed: int, folds: list) -> dict:
    """AUROC and ECE per (mode, p, fold) of one method on one data set."""
    from sklearn.exceptions import ConvergenceWarning

    from medmix_sklearn.model_selection import ece_scorer, robustness_curve

    X = pd.DataFrame(data.X, columns=data.names)
    scoring = {"auroc": "roc_auc" if len(np.unique(data.y)) == 2 else "roc_auc_ovr", "ece": ece_scorer}
    curves, seconds = {}, {}
    for mode in MODES:
        # p=0 amputes nothing, so both modes share its scores: fitted once, in "test".
        probabilities = P_GRID if mode == "test" else [p for p in P_GRID if p > 0]
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            warnings.simplefilter("ignore", UserWarning)
            curve = robustness_curve(
                quality._build(method, seed), X, data.y, probabilities=probabilities, mechanism="mnar",
                cv=folds, scoring=scoring, random_state=seed, amputate=mode,
            )
        seconds[mode] = round(time.perf_counter() - start, 1)
        ece = curve["metric"] == "ece"
        curve.loc[ece, "score"] = -curve.loc[ece, "score"]
        curves[mode] = curve
    curves["train_and_test"] = pd.concat([curves["test"][curves["test"].p == 0], curves["train_and_test"]])
    rows = [row for mode in MODES for row in curves[mode].assign(mode=mode).to_dict("records")]
    return {"rows": rows, "seconds": seconds, "label": method.label or method.name,
            "code": quality.code_version(), "written": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}


def _load(path: str) -> dict:
    if os.path.exists(path):
        with open(path) as fh:
            return json.load(fh)
    return {"runs": {}}


def _save(doc: dict, path: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(doc, fh, indent=0)
    os.replace(tmp, path)


def _fmt(scores: pd.Series) -> str:
    return f"{scores.mean():.3f} ± {scores.std(ddof=0):.3f}"


def _auroc(run: dict, mode: str, p: float) -> pd.Series:
    frame = pd.DataFrame(run["rows"])
    return frame[(frame["mode"] == mode) & (frame.metric == "auroc") & (frame.p == p)]["score"]


def report(doc: dict, command: str) -> str:
    lines = [
        "# Label-dependent missingness: at test time only, and in training too",
        "",
        f"- Regenerate: `{command}` (stored results are reused; `--report-only` rewrites this page "
        "from `mnar_train_runs.json`, `--force` recomputes).",
        f"- Machine: {doc.get('machine', '?')}.",
        "- Protocol: the quality benchmark's data, folds (5-fold stratified, seed 0), methods and "
        "label-dependent mechanism (`ModalityAmputer(mechanism='mnar')`: a modality is blanked with "
        "probability `sigmoid(a + 2 z)` rising with the label code, mean p, at least one modality kept). "
        "`test`: the test folds are amputed, the models fitted on the training folds as they are (the "
        "quality page's protocol). `train and test`: the training fold is amputed too, by the same "
        "mechanism and p (an independent draw), and a model fitted per p; the test folds are amputed "
        "identically in both (draws of their own: the quality page, which amputes by two mechanisms "
        "from one seed, drew others). AUROC mean ± std over the folds; ECE mean (10 bins).",
        "- Why: with test-only amputation the missingness carries label information the models never "
        "saw in training, so a method gains there when its output for a row with a modality blanked "
        "happens to be high. When missingness depends on the label in deployment, it usually did in "
        "the training data too; then a method can learn it.",
        "",
    ]
    for entry in doc["runs"].values():
        lines += [f"## {entry['title']} (`{entry['data_set']}`)", ""]
        if "dependence" in entry:
            dep = entry["dependence"]
            lines += [f"The data as they are, before any amputation: the availability pattern against the label "
                      f"(`missingness_dependence`), {dep['n_patterns']} patterns, chi-squared p = {dep['pvalue']:.1e}, "
                      f"Cramér's V = {dep['cramers_v']:.2f}.", ""]
        header = "| method | mode | " + " | ".join(f"AUROC p={p:g}" for p in P_GRID) + " | " + \
            " | ".join(f"ECE p={p:g}" for p in P_GRID) + " | s |"
        lines += [header, "| " + " | ".join(["---"] * (2 + 2 * len(P_GRID) + 1)) + " |"]
        for method_name, run in entry["methods"].items():
            frame = pd.DataFrame(run["rows"])
            for mode in MODES:
                part = frame[frame["mode"] == mode]
                ece = [part[(part.metric == "ece") & (part.p == p)]["score"].mean() for p in P_GRID]
                label = f"**{run['label']}**" if method_name == "medmix" else run["label"]
                lines.append(f"| {label} | {mode.replace('_', ' ')} | "
                             + " | ".join(_fmt(_auroc(run, mode, p)) for p in P_GRID)
                             + " | " + " | ".join(f"{e:.3f}" for e in ece) + f" | {run['seconds'][mode]:.0f} |")
        lines.append("")
        lines += _verdict(entry)
    return "\n".join(lines) + "\n"


def _verdict(entry: dict) -> list[str]:
    """Per MedMIX run and mode: the best method per p, and the methods above MedMIX by more than their std."""
    out = []
    baselines = {name: run for name, run in entry["methods"].items() if not name.startswith("medmix")}
    for mode in MODES:
        best = []
        for p in P_GRID[1:]:
            means = {run["label"]: _auroc(run, mode, p).mean() for run in entry["methods"].values()}
            top = max(means, key=means.get)
            best.append(f"p={p:g} {top} {means[top]:.3f}")
        out.append(f"- Best mean AUROC, {mode.replace('_', ' ')}: " + "; ".join(best) + ".")
        for name, run in entry["methods"].items():
            if not name.startswith("medmix"):
                continue
            behind = []
            for p in P_GRID[1:]:
                mine = _auroc(run, mode, p).mean()
                for other in baselines.values():
                    scores = _auroc(other, mode, p)
                    if mine < scores.mean() - scores.std(ddof=0):
                        behind.append(f"{other['label']} at p={p:g} ({mine:.3f} vs {_fmt(scores)})")
            verdict = "level with or above every baseline at every p" if not behind else \
                "below " + "; ".join(behind)
            out.append(f"  - {run['label']}: {verdict}.")
    out.append("")
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True, help="the quality benchmark's work folder (cached embeddings)")
    parser.add_argument("--sets", default="openi_hard", help="data sets, comma-separated (openi_hard)")
    parser.add_argument("--methods", default=None, help="method names, comma-separated (bench_quality's "
                        "baselines and medmix; its MedMIX variants by name)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(HERE), "docs", "benchmarks"))
    parser.add_argument("--force", action="store_true", help="recompute stored results")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args(argv)

    from _common import machine_description

    store = os.path.join(args.out, STORE_NAME)
    doc = _load(store)
    sets = [s for s in args.sets.split(",") if s]
    command = ".venv/bin/python benchmarks/bench_mnar_train.py --work WORK --sets " + ",".join(sets)
    if not args.report_only:
        doc["machine"] = machine_description()
        seed = 0
        # OpenI's two data sets are prepared together, under the name "openi".
        only = set(sets) | ({"openi"} if any(s.startswith("openi") for s in sets) else set())
        for data in quality.prepare(quality.FULL, args.work, only):
            if data.name not in sets:
                continue
            entry = doc["runs"].setdefault(data.name, {"data_set": data.name, "title": data.title, "methods": {}})
            from medmix_sklearn.model_selection import missingness_dependence

            found = missingness_dependence(pd.DataFrame(data.X, columns=data.names), data.y)
            entry["dependence"] = {"pvalue": found.pvalue, "cramers_v": found.cramers_v,
                                   "n_patterns": found.n_patterns}
            folds = list(StratifiedKFold(quality.FULL["n_folds"], shuffle=True, random_state=seed)
                         .split(data.X, data.y))
            candidates = {m.name: m for m in quality.methods_for(data, study_everywhere=True)}
            candidates.update(EXTRA)
            wanted = args.methods.split(",") if args.methods else [*quality.BASELINES, "medmix"]
            unknown = [name for name in wanted if name not in candidates]
            if unknown:
                raise SystemExit(f"unknown methods {unknown}; known: {sorted(candidates)}")
            methods = [candidates[name] for name in wanted]
            for method in methods:
                if method.name in entry["methods"] and not args.force:
                    print(f"{data.name} {method.name}: stored", flush=True)
                    continue
                print(f"{data.name} {method.name} ...", end=" ", flush=True)
                entry["methods"][method.name] = evaluate(data, method, seed, folds)
                print(entry["methods"][method.name]["seconds"], flush=True)
                _save(doc, store)
    stored = list(dict.fromkeys(name for entry in doc["runs"].values() for name in entry["methods"]))
    if stored != [*quality.BASELINES, "medmix"]:
        command += " --methods " + ",".join(stored)
    page = os.path.join(args.out, PAGE_NAME)
    with open(page, "w") as fh:
        fh.write(report(doc, command))
    print(f"wrote {page}")


if __name__ == "__main__":
    main()
