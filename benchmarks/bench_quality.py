"""Quality benchmark: MedMIXClassifier against published and scikit-learn baselines.

One command::

    .venv/bin/python benchmarks/bench_quality.py --work WORK    # -> docs/benchmarks/
    .venv/bin/python benchmarks/bench_quality.py --quick        # a few minutes -> benchmarks/out/quick/

Every data set is embedded once with :class:`MultimodalExpertEmbedder`
(embedding cache in ``WORK/cache``, default ``benchmarks/out``, so a second
run embeds nothing); then every method runs on the same matrix with the same
stratified folds (default 5 folds x seeds 0, 1, 2, OpenI subsampled to 2,000
rows; ``--seeds`` for others, ``--quick``: 3 folds, smaller data). Each method
goes through :func:`medmix_sklearn.model_selection.robustness_curve`: fitted
on each training fold as it is, scored on the test fold with modalities
blanked by :class:`~medmix_sklearn.model_selection.ModalityAmputer` at p = 0,
0.25, 0.5, 0.75, under MCAR (each present modality independently) and MNAR
(by label: rows of the higher label codes lose more), one present modality
always kept. Metrics: AUROC (macro one-vs-rest for multiclass), AUPRC
(binary) and the expected calibration error (10 bins), at every p.

Restartable and splittable: each finished (data set, method, seed) is stored
at once in ``quality_runs.json`` in the output folder (under a file lock, so
several processes can fill it). A rerun skips what is stored (unless its
size or folds changed); ``--methods`` picks methods (names, shell patterns
such as ``'medmix*'``, or the groups ``sklearn``, ``published``,
``baselines``), ``--force`` recomputes them (after a default changes:
``--methods 'medmix*' --force``), and ``--report-only`` rewrites the page,
its JSON and plots from the store without fitting anything. Hand-written
findings in ``quality_notes.md`` of the output folder are appended to the page.

Fits run in ``--n-jobs`` processes (default 1) with one thread each: on a
shared 2-core machine, waiting OpenMP/torch threads made HistGradientBoosting
and MedMIXClassifier fits 10 to 40 times slower.

Data sets (default ``--only gen_random gen_label openi``)

- ``gen_random``: :func:`make_multimodal_classification`, binary, every modality
  (image, text, labs) missing at random for 30% of the rows.
- ``gen_label``: three classes, missingness depending on the label (sicker
  patients get more examinations), 30% on average.
- ``gen_train_missing_{r}``: one fully observed generated set, then image, text
  and labs blanked at random at rate r in {0.0, 0.3, 0.6} (training and test
  rows alike): the effect of the missing rate on what is learned.
- ``openi``: the OpenI chest X-ray reports (target: abnormal) from indication,
  findings and impression text and age; ``openi_hard``: indication and age only.

Images are embedded with efficientnet_lite0 and efficientnet_lite1 (ImageNet
weights), texts with all-MiniLM-L6-v2; labs and age pass through. Sex enters
the generated sets as a 0/1 column in a ``demo`` modality with age.

Methods: MedMIXClassifier with its defaults, with ``pattern_prior`` switched,
with every other ``calibration`` (``medmix_calibration_{value}``), and
(``--ablations``) the fusion ablations; the published fusion methods of
``benchmarks/fusion_baselines.py`` (MedFuse, FuseMoE, Flex-MoE, ShaSpec,
DrFuse) on the same training loop; the scikit-learn baselines of
``benchmarks/_baselines.py``.

Writes ``quality_runs.json`` (the store), ``quality.json``, ``quality.md`` and PNG plots to the
output folder.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fnmatch
import json
import os
import sys
import time
import warnings
from dataclasses import dataclass, field

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One thread per process, the joblib workers of robustness_curve included.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.model_selection import StratifiedKFold, train_test_split  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from _baselines import (  # noqa: E402
    BestSingleModality,
    LateFusionClassifier,
    make_hgb,
    make_logistic,
    make_mlp,
)
from _common import machine_description  # noqa: E402
from fusion_baselines import PUBLISHED_BASELINES  # noqa: E402

from medmix_sklearn import MedMIXClassifier  # noqa: E402
from medmix_sklearn._layout import parse_feature_names  # noqa: E402
from medmix_sklearn.model_selection import (  # noqa: E402
    availability_patterns,
    blank_modalities,
    modality_columns,
)

P_GRID = (0.0, 0.25, 0.5, 0.75)
#: MedMIXClassifier's calibration values; the default's run is "medmix", the others are variants.
CALIBRATIONS = (None, "temperature", "presence")
MECHANISMS = ("mcar", "mnar")
TRAIN_RATES = (0.0, 0.3, 0.6)
LR_C = 0.1
HGB_MAX_ITER = 200
LAB_COLUMNS = ["wbc", "crp", "heart_rate", "temperature", "spo2"]
DEFAULT_ONLY = ("gen_random", "gen_label", "openi")

FULL = dict(n_gen=800, n_folds=5, seeds=(0, 1, 2), openi_rows=2000, train_rates=TRAIN_RATES,
            sizing="OpenI subsampled to 2,000 of its 3,860 reports, stratified with seed 0, and 5 folds x "
                   "3 seeds for the baselines, MedMIX's defaults, pattern_prior and the calibration variants; "
                   "the study variants were run on seed 0 when the machine allowed one seed only; the cost "
                   "line above gives what it took")
QUICK = dict(n_gen=200, n_folds=3, seeds=(0,), openi_rows=600, train_rates=(0.0, 0.6),
             sizing="--quick: 200 generated rows, OpenI subsampled to 600, 3 folds x 1 seed")

SKLEARN_BASELINES = ("logreg_impute", "hgb", "late_fusion", "mlp_zeros", "best_single_modality")
PUBLISHED = tuple(PUBLISHED_BASELINES)
BASELINES = SKLEARN_BASELINES + PUBLISHED
LABELS = {
    "medmix": "MedMIX (defaults)",
    "medmix_pattern_prior": "MedMIX, pattern_prior switched",
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
    "medfuse": "MedFuse (LSTM over modalities)",
    "fusemoe": "FuseMoE (Laplace-gated sparse MoE)",
    "flexmoe": "Flex-MoE (combination bank, specialist experts)",
    "shaspec": "ShaSpec (shared + specific)",
    "drfuse": "DrFuse (shared/distinct, logit attention)",
}


#: MedMIX variants studied for label-dependent missingness (issue 13): always run on
#: STUDY_SETS, on every data set with --study-everywhere (before changing a default).
#: The store also keeps the rows of absent_tokens="modality" / "pattern" (learned tokens for
#: absent modalities, FuseMoE's and Flex-MoE's idea), measured at commit a67fbec: they did not
#: help, and the option was not kept (docs/benchmarks/quality.md).
STUDY = {
    "medmix_no_modality_dropout": ("medmix", {"modality_dropout": 0.0}, "MedMIX, modality dropout 0"),
    "medmix_pattern_prior_zero_init": ("medmix_zero_init", {"pattern_prior": True},
                                       "MedMIX, pattern_prior=True, biases started at 0"),
    "medmix_modality_dropout_0.4": ("medmix", {"modality_dropout": 0.4}, "MedMIX, modality dropout 0.4"),
    "medmix_modality_dropout_0.6": ("medmix", {"modality_dropout": 0.6}, "MedMIX, modality dropout 0.6"),
    "medmix_pattern_prior_calibration_temperature": (
        "medmix", {"pattern_prior": True, "calibration": "temperature"},
        "MedMIX, pattern_prior=True, calibration='temperature'"),
    "medmix_pattern_prior_calibration_none": (
        "medmix", {"pattern_prior": True, "calibration": None}, "MedMIX, pattern_prior=True, calibration=None"),
}
STUDY_SETS = ("gen_label",)


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


def methods_for(data: Dataset, ablations: bool = False, study_everywhere: bool = False) -> list[Method]:
    from medmix_sklearn import MedMIXClassifier

    out = [Method(b, b, label=LABELS[b]) for b in BASELINES]
    out.append(Method("medmix", "medmix", label=LABELS["medmix"]))
    default_prior = MedMIXClassifier().pattern_prior
    out.append(Method("medmix_pattern_prior", "medmix", {"pattern_prior": not default_prior},
                      label=f"MedMIX, pattern_prior={not default_prior}"))
    # Every calibration but the default's (issue 13: ECE when modalities go missing).
    default_calibration = MedMIXClassifier().calibration
    for value in CALIBRATIONS:
        if value != default_calibration:
            out.append(Method(f"medmix_calibration_{str(value).lower()}", "medmix", {"calibration": value},
                              label=f"MedMIX, calibration={value!r}"))
    if data.name in STUDY_SETS or study_everywhere:
        defaults = MedMIXClassifier().get_params()
        for name, (kind, params, label) in STUDY.items():
            if kind != "medmix" or any(defaults[k] != v for k, v in params.items()):  # not the defaults
                out.append(Method(name, kind, dict(params), label=label))
    if not (ablations and data.ablations):
        return out
    names = {m.name for m in out}
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
    return [m for i, m in enumerate(out) if m.name not in names or i < len(names)]


def _build(method: Method, seed: int):
    if method.kind == "medmix":
        from medmix_sklearn import MedMIXClassifier

        return MedMIXClassifier(random_state=seed, device="cpu", **method.params)
    if method.kind == "medmix_zero_init":
        return _ZeroInitPatternPrior(random_state=seed, device="cpu", **method.params)
    if method.kind in PUBLISHED_BASELINES:
        return PUBLISHED_BASELINES[method.kind](random_state=seed, device="cpu", **method.params)
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


class _ZeroInitPatternPrior(MedMIXClassifier):
    """MedMIXClassifier whose pattern biases start at 0, not at the pattern's class log-ratio.

    A study variant: the network already reads the presence mask, so a bias
    started at the full log-ratio may count the pattern twice.
    """

    def _fit_pattern_prior(self, X, y_enc, smoothing=10.0):
        return None


# -- evaluation --------------------------------------------------------------------------


def _scoring(n_classes: int) -> dict:
    from medmix_sklearn.model_selection import ece_scorer

    if n_classes == 2:
        return {"auroc": "roc_auc", "auprc": "average_precision", "ece": ece_scorer}
    return {"auroc": "roc_auc_ovr", "ece": ece_scorer}


def evaluate_one(data: Dataset, method: Method, seed: int, folds: list, n_jobs: int) -> tuple[pd.DataFrame, float]:
    """Long frame of one (data set, method, seed): mechanism, p, repeat, fold, metric, score (ECE positive)."""
    import warnings as _w

    from sklearn.exceptions import ConvergenceWarning

    from medmix_sklearn.model_selection import robustness_curve

    cols = method.columns if method.columns is not None else np.arange(data.X.shape[1])
    X = pd.DataFrame(data.X[:, cols], columns=data.names[cols])
    start = time.perf_counter()
    with _w.catch_warnings():
        _w.simplefilter("ignore", ConvergenceWarning)
        _w.simplefilter("ignore", UserWarning)
        curve = robustness_curve(
            _build(method, seed), X, data.y, probabilities=P_GRID, mechanism=list(MECHANISMS), cv=folds,
            scoring=_scoring(len(np.unique(data.y))), random_state=seed, n_jobs=n_jobs,
        )
    seconds = time.perf_counter() - start
    ece = curve["metric"] == "ece"
    curve.loc[ece, "score"] = -curve.loc[ece, "score"]  # the scorer returns minus the ECE
    return curve, seconds


# -- the store: one entry per (data set, method, seed) -----------------------------------

STORE_NAME = "quality_runs.json"


class RunStore:
    """Results per (data set, method, seed) in one JSON file of the output folder.

    Every finished (data set, method, seed) is written at once (under a file
    lock, read-merge-write, so several processes may fill one store, e.g. the
    baselines in one and MedMIX in another); a rerun skips the entries whose
    settings fingerprint matches, and ``--report-only`` rebuilds the page from
    the store alone.
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def load(self) -> dict:
        if not os.path.exists(self.path):
            return {"version": 1, "datasets": {}, "runs": {}, "invocations": []}
        with open(self.path) as fh:
            return json.load(fh)

    @contextlib.contextmanager
    def _locked(self):
        import fcntl

        with open(self.path + ".lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def update(self, change) -> dict:
        """Apply ``change(doc)`` to the stored document under the lock and write it back."""
        with self._locked():
            doc = self.load()
            change(doc)
            tmp = f"{self.path}.{os.getpid()}.tmp"
            with open(tmp, "w") as fh:
                json.dump(doc, fh, indent=0, separators=(",", ":"))
            os.replace(tmp, self.path)
        return doc


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def run_key(dataset: str, method: str, seed: int) -> str:
    return f"{dataset}|{method}|{seed}"


def fingerprint(data: Dataset, n_folds: int) -> dict:
    """What must match for a stored entry to be reused."""
    return {"n_rows": int(len(data.y)), "n_features": int(data.X.shape[1]), "n_folds": int(n_folds),
            "p_grid": list(P_GRID), "mechanisms": list(MECHANISMS)}


def code_version() -> str:
    """Short commit of the checkout the run uses, ``+dirty`` when its code has local changes."""
    import subprocess

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "medmix_sklearn", "benchmarks"],
                               cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def selected(name: str, patterns: list | None) -> bool:
    """Whether ``--methods`` selects ``name``: exact names, shell patterns, or a group."""
    if not patterns:
        return True
    groups = {"sklearn": SKLEARN_BASELINES, "published": PUBLISHED, "baselines": BASELINES}
    for pattern in patterns:
        if pattern in groups and name in groups[pattern]:
            return True
        if fnmatch.fnmatchcase(name, pattern):
            return True
    return False


def _stats(part: pd.Series) -> dict:
    return {"mean": float(part.mean()), "std": float(part.std(ddof=0)), "n": int(len(part))}


def _method_order(names) -> list:
    """The baselines, then MedMIX's defaults, then its variants in the order they were added."""
    names = list(dict.fromkeys(names))
    head = [n for n in BASELINES if n in names] + (["medmix"] if "medmix" in names else [])
    return head + [n for n in names if n not in head]


def summarise(frame: pd.DataFrame, labels: dict, seconds: dict) -> dict:
    key = ["seed", "fold"]
    out = {}
    for name in _method_order(frame.method.unique()):
        part = frame[frame.method == name]
        entry = {
            "label": labels[name],
            "family": "published" if name in PUBLISHED else "baseline" if name in SKLEARN_BASELINES else "medmix",
            "seconds_per_fold": seconds[name],
            "curves": {},
        }
        for mech in MECHANISMS:
            for metric in sorted(part.metric.unique()):
                for p in P_GRID:
                    cell = part[(part.mechanism == mech) & (part.metric == metric) & (part.p == p)]
                    ref = frame[(frame.method == "medmix") & (frame.mechanism == mech) & (frame.metric == metric)
                                & (frame.p == p)]
                    paired = (ref.set_index(key)["score"] - cell.set_index(key)["score"]).dropna()
                    entry["curves"][f"{mech}|{metric}|{p}"] = {**_stats(cell["score"]),
                                                                "medmix_minus_this": _stats(paired)}
        out[name] = entry
    return out


def _cell(m: dict, mech: str, metric: str, p: float) -> dict:
    return m["curves"][f"{mech}|{metric}|{p}"]


def collect(doc: dict, names: list | None = None) -> dict:
    """Per data set: title, info, the long frame and the summaries, from the stored entries.

    Only entries whose fingerprint matches the data set's current one count
    (an entry of an earlier size or fold count is stale).
    """
    results = {}
    for name, ds in doc["datasets"].items():
        if names is not None and name not in names:
            continue
        frames, labels, seconds, commits, method_seeds = [], {}, {}, {}, {}
        for entry in doc["runs"].values():
            if entry["dataset"] != name or entry["fingerprint"] != ds["fingerprint"]:
                continue
            part = pd.DataFrame(entry["scores"])
            part.insert(0, "seed", entry["seed"])
            part.insert(0, "method", entry["method"])
            frames.append(part)
            labels[entry["method"]] = entry["label"]
            seconds.setdefault(entry["method"], []).append(entry["seconds"] / ds["fingerprint"]["n_folds"])
            commits.setdefault(entry["method"], set()).add(entry["commit"])
            method_seeds.setdefault(entry["method"], set()).add(int(entry["seed"]))
        if not frames:
            continue
        frame = pd.concat(frames, ignore_index=True)
        results[name] = {"title": ds["title"], "info": ds["info"], "frame": frame,
                         "methods": summarise(frame, labels, {k: float(np.mean(v)) for k, v in seconds.items()}),
                         "commits": {k: sorted(v) for k, v in commits.items()},
                         "seeds": sorted(int(s) for s in frame.seed.unique()),
                         "method_seeds": {k: sorted(v) for k, v in method_seeds.items()}}
    return results


# -- verdict, plots, report --------------------------------------------------------------


def _verdict_cells() -> list[tuple[str, float]]:
    """(mechanism, p) of every distinct cell: p=0 is plain cross-validation, counted once (as MCAR)."""
    return [(mech, p) for mech in MECHANISMS for p in P_GRID if p > 0 or mech == MECHANISMS[0]]


def verdict(results: dict) -> dict:
    """The issue's targets, cell by cell (data set x mechanism x p), over the baselines present."""
    out = {}
    for name, res in results.items():
        methods = res["methods"]
        missing = [b for b in BASELINES + ("medmix",) if b not in methods]
        if "medmix" not in methods or "late_fusion" not in methods:
            out[name] = {"incomplete": missing}
            continue
        med = methods["medmix"]
        present = [b for b in BASELINES if b in methods]
        auroc_fail, ece_fail, auroc_cells, ece_cells = [], [], 0, 0
        for mech, p in _verdict_cells():
            mine = _cell(med, mech, "auroc", p)
            for other in present:
                theirs = _cell(methods[other], mech, "auroc", p)
                auroc_cells += 1
                if mine["mean"] < theirs["mean"] - theirs["std"]:
                    auroc_fail.append({"mechanism": mech, "p": p, "method": other, "medmix": mine["mean"],
                                       "other": theirs["mean"], "other_std": theirs["std"]})
            e_mine, e_late = _cell(med, mech, "ece", p), _cell(methods["late_fusion"], mech, "ece", p)
            ece_cells += 1
            if e_mine["mean"] > e_late["mean"] + e_late["std"]:
                ece_fail.append({"mechanism": mech, "p": p, "medmix": e_mine["mean"], "late_fusion": e_late["mean"],
                                 "late_fusion_std": e_late["std"]})
        above = {}  # every cell where some method's mean is above MedMIX's, level or not
        for other in present:
            for mech, p in _verdict_cells():
                d = _cell(methods[other], mech, "auroc", p)["mean"] - _cell(med, mech, "auroc", p)["mean"]
                if d > 0:
                    above.setdefault(other, []).append((mech, p, round(d, 4)))
        entry = {"auroc_cells": auroc_cells, "auroc_not_level": auroc_fail, "ece_cells": ece_cells,
                 "ece_worse": ece_fail, "means_above_medmix": above, "incomplete": missing}
        if name == "gen_label" and "hgb" in methods:
            hgb = {f"{mech}|{p}": (_cell(med, mech, "auroc", p)["mean"],
                                   _cell(methods["hgb"], mech, "auroc", p)["mean"],
                                   _cell(methods["hgb"], mech, "auroc", p)["std"])
                   for mech, p in _verdict_cells()}
            entry["vs_hgb"] = hgb
            entry["at_or_above_hgb"] = {k: a >= b for k, (a, b, _) in hgb.items()}
            entry["level_with_hgb"] = {k: a >= b - s for k, (a, b, s) in hgb.items()}
        out[name] = entry
    return out


def every_candidate(results: dict) -> dict:
    """The AUROC target with each method in MedMIX's place: can any method on the page meet it?

    For each data set and each method, the cells (mechanism x p) where its
    mean AUROC is below some other reference method's mean minus that
    method's std; the references are the baselines and MedMIX with its
    defaults. A data set where every method has such a cell is one where the
    target, as written, is met by none of them.
    """
    out = {}
    for name, res in results.items():
        methods = res["methods"]
        refs = [b for b in (*BASELINES, "medmix") if b in methods]
        rows = {}
        for cand, m in methods.items():
            failed = {}
            for mech, p in _verdict_cells():
                mine = _cell(m, mech, "auroc", p)["mean"]
                others = {o: _cell(methods[o], mech, "auroc", p) for o in refs if o != cand}
                above = [o for o, c in others.items() if mine < c["mean"] - c["std"]]
                if above:
                    failed[f"{mech}|{p}"] = above
            rows[cand] = failed
        out[name] = {"cells": len(_verdict_cells()), "not_level": rows}
    return out


def plot(results: dict, out: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from medmix_sklearn.model_selection import plot_robustness_curves

    files = []
    for name, res in results.items():
        frame = res["frame"]
        fig, axes = plt.subplots(2, 2, figsize=(13, 8.5), sharex=True)
        for col, mech in enumerate(MECHANISMS):
            for row, metric in enumerate(("auroc", "ece")):
                ax = axes[row, col]
                curves = {res["methods"][m]["label"]: frame[(frame.method == m) & (frame.mechanism == mech)]
                          for m in res["methods"]}
                plot_robustness_curves(curves, ax=ax, metric=metric)
                for line in ax.get_lines():
                    if line.get_label() == LABELS["medmix"]:
                        line.set(color="black", linewidth=2.5, zorder=5)
                ax.set_ylabel("AUROC" if metric == "auroc" else "ECE (lower is better)")
                ax.set_title(f"{res['title']}: {mech.upper()}", fontsize=9)
                if (row, col) != (0, 0):
                    ax.get_legend().remove()
                else:
                    ax.legend(fontsize=6, loc="lower left", ncol=2)
        fig.tight_layout()
        path = os.path.join(out, f"robustness_{name}.png")
        fig.savefig(path, dpi=100)
        plt.close(fig)
        files.append(path)
    return files


def _fmt(c: dict) -> str:
    return f"{c['mean']:.3f} ± {c['std']:.3f}"


def _row_labels(res: dict) -> dict:
    """Table labels: MedMIX's defaults in bold; a method run with fewer seeds than its data set says so."""
    out = {}
    for method, m in res["methods"].items():
        label = f"**{m['label']}**" if method == "medmix" else m["label"]
        seeds = res.get("method_seeds", {}).get(method, res.get("seeds"))
        if seeds != res.get("seeds"):
            label += f", seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))} only"
        out[method] = label
    return out


def _candidate_section(doc: dict) -> list[str]:
    """Markdown: the AUROC target with every method in MedMIX's place (:func:`every_candidate`)."""
    table = doc.get("every_candidate") or {}
    if not table:
        return []
    names = list(table)
    methods = _method_order(m for name in names for m in doc["results"][name]["methods"])
    lines = [
        "### Could any method meet the AUROC target?",
        "",
        "The same AUROC rule with each method in MedMIX's place, against the baselines and MedMIX's "
        "defaults: the number of cells (mechanism x p) where its mean is below some other method's mean "
        "minus that method's std (0: it would meet the target).",
        "",
        "| method | " + " | ".join(f"`{n}`" for n in names) + " |",
        "| --- | " + " | ".join("---" for _ in names) + " |",
    ]
    for method in methods:
        cells = []
        for name in names:
            rows = table[name]["not_level"]
            if method not in rows:
                cells.append("")
                continue
            k = len(rows[method])
            cells.append(f"{'**0**' if k == 0 else k}/{table[name]['cells']}")
        home = next(n for n in names if method in doc["results"][n]["methods"])
        label = _row_labels(doc["results"][home])[method].replace("**", "")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")
    for name in names:
        rows = table[name]["not_level"]
        meeting = [m for m, failed in rows.items() if not failed]
        title = doc["results"][name]["title"]
        if meeting:
            lines.append(f"- {title}: met by {', '.join(f'`{m}`' for m in meeting)}.")
        else:
            fewest = min(len(f) for f in rows.values())
            best = [m for m, f in rows.items() if len(f) == fewest]
            lines.append(f"- {title}: met by **no method**; the fewest cells not level, {fewest}, "
                         f"for {', '.join(f'`{m}`' for m in best)}.")
    return lines


def report(doc: dict, out: str) -> str:
    meta, results, ver = doc["meta"], doc["results"], doc["verdict"]
    lines = ["# Quality benchmark: MedMIXClassifier vs published and scikit-learn baselines", ""]
    if meta["quick"]:
        lines += ["> **QUICK RUN** (`--quick`: small data, 3 folds x 1 seed). Smoke-test figures, "
                  "not the benchmark's results.", ""]
    if meta.get("pending"):
        lines += ["> **Partial results**: not yet in the store when this page was written: "
                  + "; ".join(meta["pending"]) + ".", ""]
    commits = sorted({c for res in results.values() for cs in res["commits"].values() for c in cs})
    lines += [
        f"- Regenerate this page from the stored results: `{meta['report_command']}`; recompute them "
        f"(each finished data set x method x seed is stored in `{STORE_NAME}` at once, a rerun skips "
        f"what is stored, `--methods` picks methods, `--force` recomputes them): `{meta['run_command']}`.",
        f"- Code: the figures come from commit(s) {', '.join(commits)} (per method below when they differ); "
        f"page written {meta['date']}.",
        f"- Cost: {meta['cpu_seconds'] / 60:.1f} min of fitting and scoring summed over the stored entries, "
        f"{meta['cpu_seconds_default'] / 60:.1f} min of it for the default methods (the baselines, MedMIX, and "
        "MedMIX with pattern_prior or calibration switched), the rest for the MedMIX study variants "
        f"(one thread each; the machine: {meta['machine']}).",
        f"- Protocol: {meta['n_folds']}-fold stratified CV x seeds {meta['seeds']} (the seeds of each data set "
        "are listed with it; a seed's folds are the same for every method); mean ± std over the folds of all "
        "seeds (the ± is the spread over folds x seeds, population std). One torch thread per process on a "
        f"2-core machine shared with other sessions ({meta['sizing']}); a method run with fewer seeds than its "
        "data set says so in the tables. "
        "Every method goes through "
        "`medmix_sklearn.model_selection.robustness_curve`: fitted once per training fold as it is, scored "
        "on the test fold with modalities blanked by `ModalityAmputer` at each p under MCAR (each present "
        "modality independently) and MNAR (by label: the probability rises with the label code, "
        "`sigmoid(a + 2 z)`, mean p), at least one present modality kept per row. p=0 is plain cross-validation "
        "(the MCAR and MNAR rows at p=0 are the same scores; the verdict counts that cell once, as MCAR).",
        "- Metrics: AUROC (macro one-vs-rest for multiclass), AUPRC (binary), ECE (10 equal-width bins; "
        "positive-class probability for two classes, top-label confidence otherwise).",
        "- Embeddings: images efficientnet_lite0 + efficientnet_lite1 (ImageNet weights, 1280-d "
        "each), texts all-MiniLM-L6-v2 (384-d), labs/age passthrough; embedded once, cached in the "
        "`--work` folder.",
        f"- scikit-learn baselines: logistic regression C={LR_C} (mean imputation + block missing indicators); "
        f"HistGradientBoosting (max_iter={HGB_MAX_ITER}, early stopping) on the NaN blocks; late fusion (a "
        "logistic regression per modality, probabilities averaged over the present ones); MLP (zeros for "
        "missing); best single modality (inner CV). Published methods (`benchmarks/fusion_baselines.py`, "
        "re-implemented from the papers): MedFuse, FuseMoE, Flex-MoE, ShaSpec, DrFuse, each on MedMIX's "
        "preprocessing and training loop (AdamW, lr, batch size, epochs, early stopping: the same code and "
        "defaults). MedMIXClassifier: library defaults; its variants change one parameter. No method is tuned "
        "per data set.",
        "",
        "## Verdict against the targets",
        "",
        "Targets (issue 13): at every data set, mechanism and p, MedMIX's mean AUROC at or above every "
        "baseline's mean minus that baseline's std (within one std counts as level); at or above "
        "HistGradientBoosting under label-dependent missingness; ECE no worse than late fusion's "
        "(mean at most late fusion's mean plus its std).",
        "",
    ]
    for name, v in ver.items():
        title = results[name]["title"]
        if "auroc_cells" not in v:
            lines.append(f"- **{title}**: not judged, missing from the store: {', '.join(v['incomplete'])}.")
            continue
        n_fail = len(v["auroc_not_level"])
        ok = "MET" if not n_fail else "NOT MET"
        gap = f" (without {', '.join(v['incomplete'])}: not in the store)" if v["incomplete"] else ""
        lines.append(f"- **{title}**: AUROC level or above in {v['auroc_cells'] - n_fail}/{v['auroc_cells']} "
                     f"cells{gap}: **{ok}**.")
        below: dict[str, list] = {}
        for f in v["auroc_not_level"]:
            below.setdefault(f["method"], []).append(
                f"{f['mechanism'].upper()} p={f['p']:g} {f['medmix']:.3f} vs {f['other']:.3f} ± {f['other_std']:.3f}")
        for method, cells in below.items():
            lines.append(f"  - below `{method}` (MedMIX vs it): " + "; ".join(cells) + ".")
        n_ece = len(v["ece_worse"])
        lines.append(f"  - ECE no worse than late fusion in {v['ece_cells'] - n_ece}/{v['ece_cells']} cells: "
                     f"**{'MET' if not n_ece else 'NOT MET'}**"
                     + "".join(f"; {f['mechanism'].upper()} p={f['p']}: MedMIX {f['medmix']:.3f} vs "
                               f"{f['late_fusion']:.3f} ± {f['late_fusion_std']:.3f}" for f in v["ece_worse"]) + ".")
        published_above = {k: c for k, c in v["means_above_medmix"].items() if k in PUBLISHED}
        if published_above:
            lines.append("  - A published method's mean is above MedMIX's (level or not) in: " + "; ".join(
                f"{k} ({', '.join(f'{m.upper()} p={p} +{d:.3f}' for m, p, d in cells)})"
                for k, cells in published_above.items()) + ".")
        if "vs_hgb" in v:
            above = sum(v["at_or_above_hgb"].values())
            level = sum(v["level_with_hgb"].values())
            per_p = "; ".join(f"{key.split('|')[0].upper()} p={key.split('|')[1]} {a:.3f} vs {b:.3f} ± {s:.3f}"
                              for key, (a, b, s) in v["vs_hgb"].items())
            met = "MET" if above == len(v["vs_hgb"]) else "MET within one std" if level == len(v["vs_hgb"]) \
                else "NOT MET"
            lines.append(f"  - Label-dependent missingness, MedMIX at or above HistGradientBoosting: mean at or "
                         f"above in {above}/{len(v['vs_hgb'])} cells, level within HGB's std in "
                         f"{level}/{len(v['vs_hgb'])}: **{met}** (MedMIX vs HGB: {per_p}).")
    lines += ["", *_candidate_section(doc), ""]
    for name, res in results.items():
        info, methods = res["info"], res["methods"]
        metrics = ["auroc", "auprc", "ece"] if any("mcar|auprc|0.0" in m["curves"] for m in methods.values()) \
            else ["auroc", "ece"]
        lines += [f"## {res['title']} (`{name}`)", "",
                  f"{info['n_samples']} rows, {info['n_features']} columns, classes {info['class_counts']}, "
                  f"presence per modality {info['presence_rate']}; seeds {res['seeds']}.", ""]
        if len({tuple(c) for c in res["commits"].values()}) > 1:
            lines += ["Commits: " + "; ".join(f"{m} {', '.join(c)}" for m, c in res["commits"].items()) + ".", ""]
        lines += ["At p=0 (cross-validation as it is):", "",
                  "| method | " + " | ".join(m.upper() for m in metrics)
                  + " | MedMIX − this, AUROC (paired) | s/fold |",
                  "| --- | " + " | ".join("---" for _ in metrics) + " | --- | --- |"]
        labels = _row_labels(res)
        for method, m in methods.items():
            label = labels[method]
            cells = [_fmt(_cell(m, "mcar", metric, 0.0)) for metric in metrics]
            paired = _cell(m, "mcar", "auroc", 0.0)["medmix_minus_this"]
            delta = "" if method == "medmix" or not paired["n"] else _fmt(paired)
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {delta} | {m['seconds_per_fold']:.1f} |")
        for mech in MECHANISMS:
            lines += ["", f"{mech.upper()} amputation of the test folds: AUROC (mean ± std over folds) and ECE "
                      "(mean) at p = 0.25, 0.5, 0.75:", "",
                      "| method | AUROC p=.25 | p=.5 | p=.75 | ECE p=.25 | p=.5 | p=.75 |",
                      "| --- | --- | --- | --- | --- | --- | --- |"]
            for method, m in methods.items():
                label = labels[method]
                a = [_fmt(_cell(m, mech, "auroc", p)) for p in P_GRID[1:]]
                e = [f"{_cell(m, mech, 'ece', p)['mean']:.3f}" for p in P_GRID[1:]]
                lines.append(f"| {label} | " + " | ".join(a + e) + " |")
        lines += ["", f"![robustness {name}](robustness_{name}.png)", ""]
    notes = os.path.join(out, "quality_notes.md")
    if os.path.exists(notes):  # hand-written findings, kept across regenerations
        with open(notes) as fh:
            lines += [fh.read().rstrip(), ""]
    path = os.path.join(out, "quality.md")
    with open(path, "w") as fh:
        fh.write("\n".join(lines))
    return path


def _default_method(name: str) -> bool:
    """Whether ``name`` is one of the methods every data set runs (not a study variant)."""
    return name in BASELINES or name in ("medmix", "medmix_pattern_prior") or name.startswith("medmix_calibration_")


def write_report(store: RunStore, out: str, names: list | None, settings: dict, machine: str, quick: bool,
                 expected: dict | None = None) -> dict:
    """quality.json, quality.md and the plots, from the store alone."""
    doc_store = store.load()
    results = collect(doc_store, names)
    pending = []
    for name, wanted in (expected or {}).items():
        have = set(results.get(name, {}).get("methods", {}))
        missing = [m for m in wanted if m not in have]
        if missing:
            pending.append(f"{name}: {', '.join(missing)}")
    seeds = sorted({s for res in results.values() for s in res["seeds"]})
    n_folds = sorted({doc_store["datasets"][n]["fingerprint"]["n_folds"] for n in results})
    current = [e for e in doc_store["runs"].values()
               if e["dataset"] in results and e["fingerprint"] == doc_store["datasets"][e["dataset"]]["fingerprint"]]
    cpu = sum(e["seconds"] for e in current)
    cpu_default = sum(e["seconds"] for e in current if _default_method(e["method"]))
    flags = " --quick" if quick else ""
    out_flag = "" if os.path.abspath(out) == os.path.join(ROOT, "docs", "benchmarks") else f" --out {out}"
    doc = {
        "meta": {
            "run_command": f".venv/bin/python benchmarks/bench_quality.py{flags}{out_flag} --work WORK --n-jobs 1",
            "report_command": f".venv/bin/python benchmarks/bench_quality.py{flags}{out_flag} --report-only",
            "date": _now(),
            "machine": machine,
            "quick": quick,
            "n_folds": n_folds[0] if len(n_folds) == 1 else n_folds,
            "seeds": seeds,
            "p_grid": list(P_GRID),
            "cpu_seconds": cpu,
            "cpu_seconds_default": cpu_default,
            "sizing": settings.get("sizing", ""),
            "pending": pending,
            "invocations": doc_store.get("invocations", [])[-20:],
        },
        "results": results,
    }
    doc["verdict"] = verdict(results)
    doc["every_candidate"] = every_candidate(results)
    plot(results, out)
    serialisable = {**doc, "results": {name: {k: v for k, v in res.items() if k != "frame"}
                                       for name, res in results.items()}}
    with open(os.path.join(out, "quality.json"), "w") as fh:
        json.dump(serialisable, fh, indent=1)
    report(doc, out)
    return doc


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small data, 3 folds, 1 seed (a few minutes)")
    parser.add_argument("--out", default=None,
                        help="output folder (default docs/benchmarks, or benchmarks/out/quick with --quick); "
                             f"the results store {STORE_NAME} lives there")
    parser.add_argument("--work", default=os.path.join(HERE, "out"), help="images and embedding cache")
    parser.add_argument("--n-jobs", type=int, default=1, help="folds fitted in parallel (processes, one thread each)")
    parser.add_argument("--embed-threads", type=int, default=None,
                        help="torch threads for embedding (default: torch's choice)")
    parser.add_argument("--only", nargs="*", default=list(DEFAULT_ONLY),
                        help="data set name prefixes to run (default: %(default)s)")
    parser.add_argument("--methods", nargs="*", default=None,
                        help="methods to run: names, shell patterns ('medmix*') or the groups sklearn, "
                             "published, baselines (default: all)")
    parser.add_argument("--force", action="store_true",
                        help="recompute the selected methods even when the store has them")
    parser.add_argument("--seeds", nargs="*", type=int, default=None, help="CV seeds (default: 0)")
    parser.add_argument("--ablations", action="store_true", help="also run MedMIX's fusion ablations")
    parser.add_argument("--study-everywhere", action="store_true",
                        help=f"run the label-missingness variants (STUDY) on every data set, not only {STUDY_SETS}")
    parser.add_argument("--prepare-only", action="store_true", help="embed the data sets and stop")
    parser.add_argument("--report-only", action="store_true",
                        help="fit nothing: rewrite quality.md, quality.json and the plots from the store")
    args = parser.parse_args(argv)
    settings = dict(QUICK if args.quick else FULL)
    if args.seeds:
        settings["seeds"] = tuple(args.seeds)
    out = args.out or (os.path.join(HERE, "out", "quick") if args.quick else os.path.join(ROOT, "docs", "benchmarks"))
    os.makedirs(out, exist_ok=True)
    store = RunStore(os.path.join(out, STORE_NAME))
    machine = machine_description()
    only = set(args.only) if args.only else None

    if args.report_only:
        names = [n for n in store.load()["datasets"] if only is None or any(n.startswith(o) for o in only)]
        doc = write_report(store, out, names, settings, machine, args.quick)
        print(f"wrote {out}/quality.json, quality.md and plots from {STORE_NAME}")
        return doc

    start = time.perf_counter()
    if args.embed_threads:
        import torch

        torch.set_num_threads(args.embed_threads)
    datasets = prepare(settings, args.work, only)
    print(f"[{time.perf_counter() - start:7.1f}s] embedded: "
          + ", ".join(f"{d.name} {d.X.shape}" for d in datasets), flush=True)
    if args.prepare_only:
        return {}

    import torch

    torch.set_num_threads(1)
    argv_text = " ".join(sys.argv[1:] if argv is None else argv)
    version = code_version()
    order = {name: i for i, name in enumerate(("gen_label", "gen_random", "openi_hard", "openi"))}
    datasets.sort(key=lambda d: order.get(d.name, len(order)))

    def register(doc):
        for data in datasets:
            doc["datasets"][data.name] = {"title": data.title, "info": _describe(data),
                                          "fingerprint": fingerprint(data, settings["n_folds"])}
        doc.setdefault("invocations", []).append(
            {"argv": argv_text, "commit": version, "date": _now()})

    stored = store.update(register)
    expected = {}
    for data in datasets:
        fp = fingerprint(data, settings["n_folds"])
        methods = methods_for(data, args.ablations, args.study_everywhere)
        expected[data.name] = [m.name for m in methods]
        for seed in settings["seeds"]:
            folds = list(StratifiedKFold(settings["n_folds"], shuffle=True, random_state=seed).split(data.X, data.y))
            for method in methods:
                if not selected(method.name, args.methods):
                    continue
                key = run_key(data.name, method.name, seed)
                old = stored["runs"].get(key)
                if old is not None and old["fingerprint"] == fp and not args.force:
                    continue
                frame, seconds = evaluate_one(data, method, seed, folds, args.n_jobs)
                entry = {"dataset": data.name, "method": method.name, "seed": seed, "label": method.label,
                         "params": {k: repr(v) for k, v in method.params.items()}, "fingerprint": fp,
                         "commit": version, "date": _now(),
                         "seconds": seconds, "scores": frame.to_dict(orient="list")}
                stored = store.update(lambda doc, key=key, entry=entry: doc["runs"].__setitem__(key, entry))
                at0 = frame[(frame.metric == "auroc") & (frame.p == 0) & (frame.mechanism == "mcar")].score
                print(f"[{time.perf_counter() - start:7.1f}s] {data.name} seed {seed} {method.name}: "
                      f"AUROC {at0.mean():.3f} ± {at0.std(ddof=0):.3f} ({seconds:.0f}s)", flush=True)
    # The page shows every data set of the store, not only this run's.
    doc = write_report(store, out, None, settings, machine, args.quick, expected)
    print(f"wrote {out}/quality.json, quality.md and plots in {(time.perf_counter() - start) / 60:.1f} min")
    return doc


if __name__ == "__main__":
    main()
