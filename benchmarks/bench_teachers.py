"""Teacher benchmark: does training-only guidance lift MedMIXClassifier, at no inference cost?

One command::

    .venv/bin/python benchmarks/bench_teachers.py            # full run -> docs/benchmarks/teachers.{md,json}
    .venv/bin/python benchmarks/bench_teachers.py --quick    # minutes -> benchmarks/out/quick/teachers.{md,json}

Every data set is embedded once with :class:`MultimodalExpertEmbedder` (its
``fit_transform`` fills the teacher blocks; embedding cache in
``benchmarks/out/cache``, so a second run embeds nothing). Each fold then sees
what a Pipeline would: training rows with the teacher blocks, test rows with the
teacher blocks NaN (what ``transform`` writes). All methods share the folds
(stratified, 5 folds x 3 seeds; ``--quick``: 3 folds x 1 seed, fewer rows).

Settings

1. ``openi_privileged``: OpenI reports (target: abnormal). Students see the
   indication text (all-MiniLM-L6-v2) and age; the teachers are the findings and
   the impression texts (all-MiniLM-L6-v2), available at training time only.
2. ``gen_large_small``: :func:`make_multimodal_classification` (binary, 30% of
   each modality missing at random). Student experts efficientnet_lite0 and
   efficientnet_lite1 on the image, all-MiniLM-L6-v2 on the report, labs and
   demographics passed through; the teacher is efficientnet_lite2 on the same
   image (real ImageNet weights).
3. ``cost``: on OpenI, a Pipeline (embedder + classifier) with the teachers
   against one without: prediction time and pickle size, as ratios in one run.

Methods (per setting): the student without teacher; ``teacher="align"``;
``teacher=<logistic teacher>`` (soft-label distillation); both; and the
teacher estimator itself, which sees the teacher blocks at test time too (the
ceiling a student cannot reach). The teacher estimator is mean imputation
with one missing indicator, standardisation and a logistic regression (C=0.1)
on the student and teacher columns. MedMIXClassifier uses its defaults
(align_weight=1, distill_weight=1, distill_temperature=2, teacher_cv=5).

Verdict (issue 5): on setting 1 the best teacher mode should lift the
student's AUROC by >= 0.02 over no teacher, with the gain (per-seed mean over
folds) larger than its std across seeds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import pickle
import sys
import time
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, train_test_split

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from _baselines import make_logistic, quiet_fit  # noqa: E402
from _common import machine_description  # noqa: E402

FULL = dict(openi_rows=None, gen_n=800, n_folds=5, seeds=(0, 1, 2), cost_repeats=20)
QUICK = dict(openi_rows=600, gen_n=200, n_folds=3, seeds=(0,), cost_repeats=10)
LAB_COLUMNS = ["wbc", "crp", "heart_rate", "temperature", "spo2"]
TEACHER_PREFIX = "teacher__"
METHODS = ("none", "align", "distill", "align+distill", "teacher_ceiling")
LABELS = {
    "none": "Student, no teacher",
    "align": "Student, teacher='align'",
    "distill": "Student, teacher=LogReg (distillation)",
    "align+distill": "Student, teacher=('align', LogReg)",
    "teacher_ceiling": "Teacher LogReg with teacher blocks at test time (ceiling)",
}


def make_teacher():
    return make_logistic(C=0.1, max_iter=1000)


# -- data --------------------------------------------------------------------------------


def _embedder(modalities, teachers, cache_dir):
    from medmix_sklearn.embedding import MultimodalExpertEmbedder

    return MultimodalExpertEmbedder(
        modalities, teachers=teachers, cache_dir=cache_dir, device="cpu", batch_size=32, n_jobs=1
    )


def _embed(frame, modalities, teachers, cache_dir) -> tuple[pd.DataFrame, float]:
    embedder = _embedder(modalities, teachers, cache_dir).set_output(transform="pandas")
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Z = embedder.fit_transform(frame)
    return Z.astype(np.float32), time.perf_counter() - start


def openi_entries():
    from medmix_sklearn.experts import TextExpert

    text = TextExpert("all-MiniLM-L6-v2")
    students = [("indication", [text], "indication"), ("age", "passthrough", ["age"])]
    teachers = [("findings", [text], "findings"), ("impression", [text], "impression")]
    return students, teachers


def load_openi_frame(rows):
    from medmix_sklearn.datasets import load_openi

    X, y = load_openi(targets="abnormal", return_X_y=True)
    y = y.to_numpy().astype(int)
    if rows is not None and rows < len(X):
        keep, _ = train_test_split(np.arange(len(X)), train_size=rows, stratify=y, random_state=0)
        keep = np.sort(keep)
        X, y = X.iloc[keep].reset_index(drop=True), y[keep]
    return X, y


def openi_setting(rows, cache_dir):
    X, y = load_openi_frame(rows)
    students, teachers = openi_entries()
    Z, seconds = _embed(X, students, teachers, cache_dir)
    info = {"source": "load_openi (torchxrayvision package files)", "target": "abnormal",
            "students": "indication (all-MiniLM-L6-v2), age",
            "teachers": "findings, impression (all-MiniLM-L6-v2), training rows only"}
    return Z, y, info, seconds


def generator_setting(n, work, cache_dir):
    from medmix_sklearn.datasets import make_multimodal_classification
    from medmix_sklearn.experts import ImageExpert, TextExpert

    X, y = make_multimodal_classification(
        n, image_dir=os.path.join(work, "images", "teachers_gen"), random_state=0,
        missing_rate=0.3, missingness="random",
    )
    X["sex_m"] = (X["sex"] == "M").astype(float)
    students = [
        ("image", [ImageExpert("efficientnet_lite0"), ImageExpert("efficientnet_lite1")], "image_path"),
        ("text", [TextExpert("all-MiniLM-L6-v2")], "report"),
        ("labs", "passthrough", LAB_COLUMNS),
        ("demo", "passthrough", ["age", "sex_m"]),
    ]
    teachers = [("image", [ImageExpert("efficientnet_lite2")], "image_path")]
    Z, seconds = _embed(X, students, teachers, cache_dir)
    info = {"source": "make_multimodal_classification", "n_samples": n, "random_state": 0,
            "missing_rate": 0.3, "students": "image lite0+lite1, text MiniLM, labs, demo",
            "teachers": "image efficientnet_lite2 (training rows only)"}
    return Z, np.asarray(y), info, seconds


# -- evaluation --------------------------------------------------------------------------


def _student(method: str, seed: int):
    from medmix_sklearn import MedMIXClassifier

    teacher = {"none": None, "align": "align", "distill": make_teacher(),
               "align+distill": ("align", make_teacher())}[method]
    return MedMIXClassifier(teacher=teacher, random_state=seed)


def run_task(Z: pd.DataFrame, y, method, train, test, seed, fold) -> dict:
    import torch

    torch.set_num_threads(1)
    teacher_cols = [c for c in Z.columns if c.startswith(TEACHER_PREFIX)]
    X_train = Z.iloc[train]
    X_test = Z.iloc[test].copy()
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if method == "teacher_ceiling":
            model = quiet_fit(make_teacher(), X_train.to_numpy(), y[train])
            proba = model.predict_proba(X_test.to_numpy())[:, 1]
        else:
            X_test[teacher_cols] = np.nan  # what the embedder's transform writes
            model = _student(method, seed).fit(X_train, y[train])
            proba = model.predict_proba(X_test)[:, 1]
    return {"method": method, "seed": seed, "fold": fold, "auroc": float(roc_auc_score(y[test], proba)),
            "seconds": time.perf_counter() - start}


def evaluate(Z, y, settings, n_jobs) -> list[dict]:
    tasks = []
    for seed in settings["seeds"]:
        folds = StratifiedKFold(settings["n_folds"], shuffle=True, random_state=seed).split(Z, y)
        for fold, (train, test) in enumerate(folds):
            tasks += [(m, train, test, seed, fold) for m in METHODS]
    return Parallel(n_jobs=n_jobs, verbose=0)(
        delayed(run_task)(Z, y, m, train, test, seed, fold) for m, train, test, seed, fold in tasks
    )


def summarise(rows: list[dict]) -> dict:
    frame = pd.DataFrame(rows)
    per_seed = frame.groupby(["method", "seed"])["auroc"].mean().unstack("seed")
    out = {}
    for method in METHODS:
        sub = frame[frame.method == method]
        gain = per_seed.loc[method] - per_seed.loc["none"]
        out[method] = {
            "label": LABELS[method],
            "auroc_mean": float(sub.auroc.mean()),
            "auroc_std": float(sub.auroc.std(ddof=0)),
            "auroc_per_seed": [float(v) for v in per_seed.loc[method]],
            "gain_mean": float(gain.mean()),
            "gain_std_across_seeds": float(gain.std(ddof=0)),
            "fit_seconds_mean": float(sub.seconds.mean()),
        }
    return out


def verdict(methods: dict) -> dict:
    modes = [m for m in METHODS if m not in ("none", "teacher_ceiling")]
    best = max(modes, key=lambda m: methods[m]["gain_mean"])
    gain, std = methods[best]["gain_mean"], methods[best]["gain_std_across_seeds"]
    return {"best_mode": best, "gain": gain, "gain_std_across_seeds": std,
            "target": "gain >= 0.02 and gain > std across seeds",
            "met": bool(gain >= 0.02 and gain > std)}


# -- cost --------------------------------------------------------------------------------


def cost(rows, cache_dir, repeats) -> dict:
    """Pipelines with and without the teachers: prediction time and pickle size."""
    import torch
    from sklearn.pipeline import Pipeline

    from medmix_sklearn import MedMIXClassifier

    torch.set_num_threads(1)
    X, y = load_openi_frame(rows)
    train, test = train_test_split(np.arange(len(X)), test_size=0.25, stratify=y, random_state=0)
    students, teachers = openi_entries()
    X_test = X.iloc[test].drop(columns=["findings", "impression"])  # as in the clinic
    pipes = {
        "without": Pipeline([("embed", _embedder(students, None, cache_dir)),
                             ("clf", MedMIXClassifier(random_state=0))]),
        "with": Pipeline([("embed", _embedder(students, teachers, cache_dir)),
                          ("clf", MedMIXClassifier(teacher=("align", make_teacher()), random_state=0))]),
    }
    out, test_frames = {}, {}
    for name, pipe in pipes.items():
        pipe.set_output(transform="pandas")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pipe.fit(X.iloc[train], y[train])
        test_frames[name] = pipe.named_steps["embed"].transform(X_test)
        pipe.predict_proba(X_test)  # warm-up
    # Interleaved repeats, best of each: the machine is shared, and the best run is
    # the one least disturbed by other processes.
    times = {name: {"pipe": [], "clf": []} for name in pipes}
    for _ in range(repeats):
        for name, pipe in pipes.items():
            t0 = time.perf_counter()
            pipe.predict_proba(X_test)
            times[name]["pipe"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            pipe.named_steps["clf"].predict_proba(test_frames[name])
            times[name]["clf"].append(time.perf_counter() - t0)
    for name, pipe in pipes.items():
        clf = pipe.named_steps["clf"]
        proba = clf.predict_proba(test_frames[name])
        teacher_loaded = any(e.is_loaded for _, experts, _ in pipe.named_steps["embed"].teachers_
                             for e in experts)
        net_state = clf.__getstate__()["_net_state"]
        out[name] = {
            "classifier_weights_bytes": len(pickle.dumps((net_state["module"], net_state["optimizer"]))),
            "feature_names_bytes": len(pickle.dumps(clf.feature_names_in_)),
            "pipeline_predict_seconds": float(np.min(times[name]["pipe"])),
            "classifier_predict_seconds": float(np.min(times[name]["clf"])),
            "classifier_pickle_bytes": len(pickle.dumps(clf)),
            "pipeline_pickle_bytes": len(pickle.dumps(pipe)),
            "n_epochs": int(clf.n_iter_),
            "test_auroc": float(roc_auc_score(y[test], proba[:, 1])),
            "teacher_model_loaded_after_predict": bool(teacher_loaded),
        }
    w, wo = out["with"], out["without"]
    out["ratios_with_over_without"] = {
        key: w[key] / wo[key]
        for key in ("pipeline_predict_seconds", "classifier_predict_seconds",
                    "classifier_pickle_bytes", "classifier_weights_bytes", "pipeline_pickle_bytes")
    }
    out["n_test_rows"] = int(len(test))
    out["repeats"] = int(repeats)
    return out


# -- report ------------------------------------------------------------------------------


def _run_line(section: dict) -> str:
    run = section.get("run")
    return f"Run: `{run['command']}` ({run['date']})." if run else ""


def _reading(key: str, methods: dict) -> list[str]:
    """A few sentences that say what the numbers of one setting mean."""
    none, ceiling = methods["none"]["auroc_mean"], methods["teacher_ceiling"]["auroc_mean"]
    lines = []
    if ceiling < none:
        lines.append(
            f"The teacher estimator is weaker than the student here ({ceiling:.3f} with the teacher "
            f"blocks at test time, against {none:.3f}): its soft labels carry less than the labels "
            "themselves, so distilling them cannot help and costs a little."
        )
    elif key == "openi_privileged":
        lines.append(
            f"The teacher is nearly perfect ({ceiling:.3f}): the findings and impression all but state "
            "the label, so its out-of-fold soft labels are close to 0/1 and add little beyond y, and "
            "the part of them that is not y depends on the privileged text, which the indication "
            "cannot predict. Alignment likewise asks the student's representation of the indication "
            "to predict the findings and impression embeddings, which it does not determine."
        )
    gains = {m: r["gain_mean"] for m, r in methods.items() if m not in ("none", "teacher_ceiling")}
    within = all(abs(g) <= 2 * max(methods[m]["gain_std_across_seeds"], 0.005) for m, g in gains.items())
    if within:
        lines.append("Every teacher mode stays within about two standard deviations of no teacher.")
    return [" ".join(lines), ""] if lines else []


def report(doc: dict, out: str) -> str:
    meta = doc["meta"]
    lines = [
        "# Training-only teachers",
        "",
        f"Command: `{meta['command']}` ({meta['date']}; {meta['wall_seconds'] / 60:.1f} min; "
        f"{meta['n_folds']} folds x seeds {meta['seeds']}, the same folds for every method).",
        f"Machine: {meta['machine']}.",
    ]
    if meta.get("kept_from_previous_run"):
        lines.append("This run covered only part of the settings; each section names the run it comes from.")
    lines += [
        "",
        "Each fold trains on rows with the teacher blocks and tests on rows whose teacher blocks",
        "are NaN, as a Pipeline with `MultimodalExpertEmbedder(teachers=...)` does. AUROC mean and",
        "std over all folds and seeds; gain = per-seed mean AUROC minus that of the student without",
        "teacher, mean and std across seeds. Teacher estimator: mean imputation + one missing",
        "indicator, standardisation, logistic regression (C=0.1), on student + teacher columns.",
        "MedMIXClassifier defaults otherwise (align_weight=1, distill_weight=1,",
        "distill_temperature=2, teacher_cv=5).",
        "",
    ]
    for key, setting in doc["settings"].items():
        lines += [f"## {key}: {setting['title']}", "", _run_line(setting), "",
                  f"{setting['info'].get('students')}; teachers: {setting['info'].get('teachers')}; "
                  f"{setting['n_samples']} rows, {setting['positive_rate']:.0%} positive, "
                  f"embedding {setting['embed_seconds']:.0f} s.", "",
                  "| method | AUROC | gain vs none (std across seeds) | fit s |",
                  "| --- | --- | --- | --- |"]
        for method, r in setting["methods"].items():
            gain = "" if method == "none" else f"{r['gain_mean']:+.3f} ({r['gain_std_across_seeds']:.3f})"
            lines.append(f"| {r['label']} | {r['auroc_mean']:.3f} +/- {r['auroc_std']:.3f} | {gain} | "
                         f"{r['fit_seconds_mean']:.1f} |")
        v = setting["verdict"]
        lines += ["", f"Best teacher mode: **{v['best_mode']}**, gain {v['gain']:+.3f} "
                  f"(std across seeds {v['gain_std_across_seeds']:.3f}); target {v['target']}: "
                  f"**{'met' if v['met'] else 'not met'}**.", ""]
        lines += _reading(key, setting["methods"])
    c = doc["cost"]
    r = c["ratios_with_over_without"]
    lines += [
        "## cost: prediction time and pickle size (OpenI Pipeline, with teachers vs without)", "",
        _run_line(c), "",
        "Pipeline = embedder (indication MiniLM from the cache, age) + MedMIXClassifier; 'with' adds",
        "`teachers=[findings, impression]` to the embedder and `teacher=('align', LogReg)` to the",
        f"classifier. Best of {c.get('repeats', '')} interleaved repeats, {c['n_test_rows']} test rows, "
        "in one run.",
        "",
        "| quantity | without | with | ratio with/without |",
        "| --- | --- | --- | --- |",
    ]
    for key, label, fmt in [
        ("pipeline_predict_seconds", "Pipeline predict_proba (s)", "{:.4f}"),
        ("classifier_predict_seconds", "MedMIXClassifier predict_proba (s)", "{:.4f}"),
        ("classifier_pickle_bytes", "MedMIXClassifier pickle (bytes)", "{:,}"),
        ("classifier_weights_bytes", "network + optimizer state in it (bytes)", "{:,}"),
        ("feature_names_bytes", "feature_names_in_ in it (bytes)", "{:,}"),
        ("pipeline_pickle_bytes", "Pipeline pickle (bytes)", "{:,}"),
    ]:
        ratio = f"{r[key]:.3f}" if key in r else ""
        lines.append(f"| {label} | {fmt.format(c['without'][key])} | {fmt.format(c['with'][key])} | "
                     f"{ratio} |")
    lines += ["", f"Teacher model loaded after predict: {c['with']['teacher_model_loaded_after_predict']}; "
              f"epochs trained: without {c['without']['n_epochs']}, with {c['with']['n_epochs']} "
              "(prediction time does not depend on them). The weights are the same size with and "
              "without teacher; what the pickle gains is the teacher columns' names in "
              "`feature_names_in_` (scikit-learn checks them at predict) and the layout, not weights. "
              "Likewise the classifier's own predict time differs by what validating the teacher "
              "columns' names and slicing them away costs (their values are never converted or read); "
              "the Pipeline's time, which includes embedding the students from the cache, is the "
              "figure a deployment sees.", ""]
    text = "\n".join(lines)
    with open(os.path.join(out, "teachers.md"), "w") as fh:
        fh.write(text)
    return text


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rows, 3 folds, 1 seed")
    parser.add_argument("--out", default=None,
                        help="output folder (default docs/benchmarks, or benchmarks/out/quick with --quick)")
    parser.add_argument("--work", default=os.path.join(HERE, "out"), help="images and embedding cache")
    parser.add_argument("--n-jobs", type=int, default=2, help="parallel fits (processes)")
    parser.add_argument("--only", nargs="*", default=None, choices=["openi_privileged", "gen_large_small", "cost"],
                        help="settings to run (default: all)")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    out = args.out or (os.path.join(HERE, "out", "quick") if args.quick else os.path.join(ROOT, "docs", "benchmarks"))
    os.makedirs(out, exist_ok=True)
    cache_dir = os.path.join(args.work, "cache")
    only = set(args.only or ["openi_privileged", "gen_large_small", "cost"])
    machine = machine_description()
    start = time.perf_counter()

    argv_text = " ".join(sys.argv[1:] if argv is None else argv)
    run_info = {"command": f".venv/bin/python benchmarks/bench_teachers.py {argv_text}".strip(),
                "date": dt.datetime.now().isoformat(timespec="seconds"), "machine": machine}
    doc_settings = {}
    builders = {
        "openi_privileged": ("OpenI, privileged findings and impression text",
                             lambda: openi_setting(settings["openi_rows"], cache_dir)),
        "gen_large_small": ("Generator images, large image teacher",
                            lambda: generator_setting(settings["gen_n"], args.work, cache_dir)),
    }
    for key, (title, build) in builders.items():
        if key not in only:
            continue
        Z, y, info, seconds = build()
        print(f"[{time.perf_counter() - start:7.1f}s] {key}: embedded {Z.shape} in {seconds:.0f}s", flush=True)
        rows = evaluate(Z, y, settings, args.n_jobs)
        methods = summarise(rows)
        doc_settings[key] = {"title": title, "info": info, "n_samples": int(len(y)), "run": run_info,
                             "positive_rate": float(np.mean(y)), "embed_seconds": seconds,
                             "methods": methods, "verdict": verdict(methods), "folds": rows}
        print(f"[{time.perf_counter() - start:7.1f}s] {key}: "
              + ", ".join(f"{m} {r['auroc_mean']:.3f}" for m, r in methods.items()), flush=True)
    cost_doc = None
    if "cost" in only:
        cost_doc = cost(settings["openi_rows"], cache_dir, settings["cost_repeats"])
        cost_doc["run"] = run_info
        print(f"[{time.perf_counter() - start:7.1f}s] cost ratios: {cost_doc['ratios_with_over_without']}",
              flush=True)

    # A partial run (--only) keeps the other settings' results from the previous run.
    previous, kept = {}, []
    json_path = os.path.join(out, "teachers.json")
    if args.only and os.path.exists(json_path):
        with open(json_path) as fh:
            previous = json.load(fh)
        earlier = {k: previous["meta"][k] for k in ("command", "date", "machine")}
        for key, value in previous.get("settings", {}).items():
            if key not in doc_settings:
                doc_settings[key] = {"run": earlier, **value}
                kept.append(key)
        if cost_doc is None and previous.get("cost") is not None:
            cost_doc = {"run": earlier, **previous["cost"]}
            kept.append("cost")
    doc = {
        "meta": {
            "command": f".venv/bin/python benchmarks/bench_teachers.py {argv_text}".strip(),
            "date": dt.datetime.now().isoformat(timespec="seconds"),
            "machine": machine,
            "quick": args.quick,
            "n_folds": settings["n_folds"],
            "seeds": list(settings["seeds"]),
            "n_jobs": args.n_jobs,
            "wall_seconds": time.perf_counter() - start,
            "kept_from_previous_run": kept or None,
        },
        "settings": doc_settings,
        "cost": cost_doc,
    }
    with open(json_path, "w") as fh:
        json.dump(doc, fh, indent=1)
    if doc_settings and cost_doc is not None:
        report(doc, out)
    summary = {k: {"methods": {m: {kk: r[kk] for kk in ("auroc_mean", "auroc_std", "gain_mean",
                                                         "gain_std_across_seeds")}
                               for m, r in s["methods"].items()}, "verdict": s["verdict"]}
               for k, s in doc_settings.items()}
    print(json.dumps({"meta": doc["meta"], "settings": summary,
                      "cost": cost_doc and cost_doc["ratios_with_over_without"]}, indent=1))
    return doc


if __name__ == "__main__":
    main()
