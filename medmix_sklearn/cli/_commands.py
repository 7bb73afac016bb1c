"""The subcommands fit, predict, cv, tune, embed, cache and info."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import warnings

import numpy as np
import pandas as pd

from ._entries import (
    CLIError,
    _classifier,
    _columns_hint,
    _embedder,
    _prepare,
    _resolve_image_paths,
    coerce_numeric,
    read_table,
    write_table,
)

_MISSING_RATES = (0.0, 0.2, 0.4, 0.6, 0.8)


# --------------------------------------------------------------------------- #
# shared by cv, tune and demo
# --------------------------------------------------------------------------- #
def _as_frame(embedder, Xe) -> pd.DataFrame:
    return pd.DataFrame(np.asarray(Xe), columns=embedder.get_feature_names_out())


def _evaluate(estimators: dict, X: pd.DataFrame, y, *, folds: int, seed: int,
              rates, quiet: bool):
    """The library's evaluation, with one OpenMP thread for the baselines."""
    from ..model_selection import evaluate_methods

    # On a busy machine OpenMP spin-waiting makes gradient boosting many times slower.
    return evaluate_methods(estimators, X, y, cv=folds, random_state=seed,
                            missing_rates=rates, openmp_threads=1, verbose=not quiet)


def _print_summary(summary: pd.DataFrame) -> None:
    print(summary.to_string(float_format=lambda v: f"{v:.4f}"))


def _scoring(y) -> str:
    return "roc_auc" if len(np.unique(y)) == 2 else "roc_auc_ovr"


def _search(X: pd.DataFrame, y, *, trials: int, folds: int, seed: int, max_epochs: int,
            quiet: bool, storage=None, study_name="medmix", timeout=None, base=None):
    """Optuna search of MedMIXClassifier on an embedded matrix."""
    import optuna
    from tqdm.auto import tqdm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # optuna.terminator, on import
        from optuna_integration import OptunaSearchCV

    from ..fusion import MedMIXClassifier
    from ..model_selection import MissingnessStratifiedKFold, create_study, default_search_space

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = create_study(study_name, storage=storage,
                         sampler=optuna.samplers.TPESampler(seed=seed))
    bar = tqdm(total=trials, desc="optuna search", disable=quiet, unit="trial")

    def tick(study, trial):
        bar.update(1)
        with contextlib.suppress(ValueError):
            bar.set_postfix(best=f"{study.best_value:.3f}")

    base = base if base is not None else MedMIXClassifier(
        max_epochs=max_epochs, random_state=seed
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        search = OptunaSearchCV(
            base, default_search_space(prefix=""),
            cv=MissingnessStratifiedKFold(folds, shuffle=True, random_state=seed),
            scoring=_scoring(y), n_trials=trials, timeout=timeout, study=study,
            random_state=seed, refit=True, callbacks=[tick], error_score="raise",
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message=".*optuna.terminator", category=FutureWarning)
        search.fit(X, np.asarray(y))
    bar.close()
    return search


# --------------------------------------------------------------------------- #
# subcommands
# --------------------------------------------------------------------------- #
def _say(args, message: str) -> None:
    if not getattr(args, "quiet", False):
        print(message, file=sys.stderr)


def cmd_fit(args) -> int:
    from sklearn.pipeline import Pipeline

    from .._provenance import save_model

    config, frame, y, modalities, teachers = _prepare(args)
    pipe = Pipeline([
        ("embed", _embedder(args, modalities, teachers, config)),
        ("clf", _classifier(args, config, verbose=0 if args.quiet else 1)),
    ])
    _say(args, f"fitting on {len(frame)} rows, modalities: "
               f"{', '.join(name for name, _, _ in modalities)}")
    pipe.fit(frame, y.to_numpy())
    save_model(pipe, args.out, X=frame, metadata={
        "command": "medmix " + " ".join(args.argv), "data": os.path.abspath(args.data),
        "target": args.target or config.get("target"),
    })
    print(f"model written to {args.out}")
    return 0


def _input_columns(model) -> tuple[list[str], list[str], list[str]]:
    """The table columns a fitted model reads, those that hold image paths, and tabular ones."""
    from .._provenance import find_embedders

    needed: list[str] = []
    images: list[str] = []
    tabular: list[str] = []
    for embedder in find_embedders(model):
        for _, spec, labels in getattr(embedder, "modalities_", ()):
            needed.extend(str(label) for label in labels)
            if isinstance(spec, list) and spec and spec[0].kind == "image":
                images.extend(str(label) for label in labels)
            elif not isinstance(spec, list):
                tabular.extend(str(label) for label in labels)
    return list(dict.fromkeys(needed)), images, list(dict.fromkeys(tabular))


def cmd_predict(args) -> int:
    from .._provenance import load_model

    model = load_model(args.model)
    frame = read_table(args.data)
    needed, images, tabular = _input_columns(model)
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise CLIError(
            f"--data: the model needs columns {missing} that are not in the table. "
            f"{_columns_hint(frame)}"
        )
    frame = _resolve_image_paths(frame, images, args.data)
    coerce_numeric(frame, tabular, coerce=args.coerce_numeric, where="--data")
    proba = model.predict_proba(frame)
    classes = model.classes_
    out = pd.DataFrame({"row": frame.index})
    out["prediction"] = classes[np.argmax(proba, axis=1)]
    for j, c in enumerate(classes):
        out[f"proba_{c}"] = proba[:, j]
    if args.out:
        write_table(out, args.out)
        print(f"{len(out)} predictions written to {args.out}")
    else:
        out.to_csv(sys.stdout, index=False)
    return 0


def _embed_all(args, config, frame, modalities, teachers):
    embedder = _embedder(args, modalities, teachers, config)
    Xe = embedder.fit_transform(frame)
    return embedder, _as_frame(embedder, Xe)


def cmd_cv(args) -> int:
    from .._provenance import describe_model
    from ..model_selection import availability_patterns, default_baselines

    config, frame, y, modalities, teachers = _prepare(args)
    embedder, X = _embed_all(args, config, frame, modalities, teachers)
    y = y.to_numpy()
    methods = {"MedMIX": _classifier(args, config)}
    if args.baselines:
        methods.update(default_baselines(args.seed or 0))
    result = _evaluate(methods, X, y, folds=args.folds, seed=args.seed or 0,
                       rates=_MISSING_RATES if args.report else (0.0,), quiet=args.quiet)
    _print_summary(result.summary)
    if args.out:
        out = pd.DataFrame({"row": frame.index, "target": y})
        for method, p in result.proba.items():
            for j, c in enumerate(result.classes):
                out[f"{method}: proba_{c}"] = p[:, j]
        write_table(out, args.out)
        print(f"out-of-fold predictions written to {args.out}")
    if args.report:
        from ..report import write_report

        card = describe_model(embedder, frame)
        write_report(
            args.report, y_true=y, proba=result.proba, classes=result.classes,
            availability=availability_patterns(X), weights=result.weights,
            robustness=result.robustness, model_card=card,
            tables={"AUROC per fold": result.fold_scores.set_index("fold")},
            title=f"medmix cv: {os.path.basename(args.data)}",
        )
        print(f"report written to {args.report}")
    return 0


def cmd_tune(args) -> int:
    config, frame, y, modalities, teachers = _prepare(args)
    _, X = _embed_all(args, config, frame, modalities, teachers)
    base = _classifier(args, config)
    if args.max_epochs is None and "max_epochs" not in (config.get("classifier") or {}):
        base.set_params(max_epochs=30)
    search = _search(X, y.to_numpy(), trials=args.trials, folds=args.folds, seed=args.seed or 0,
                     max_epochs=base.max_epochs, quiet=args.quiet, storage=args.storage,
                     study_name=args.study_name, timeout=args.timeout, base=base)
    best = {"best_score": float(search.best_score_), "best_params": search.best_params_,
            "n_trials": len(search.trials_)}
    text = json.dumps(best, indent=2, default=str)
    print(text)
    if args.out:
        from .._files import atomic_write

        def write(tmp: str) -> None:
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(text + "\n")

        atomic_write(args.out, write, prefix=".best-", suffix=".json")
        print(f"best parameters written to {args.out}", file=sys.stderr)
    return 0


def cmd_embed(args) -> int:
    config, frame, _, modalities, teachers = _prepare(args)
    if getattr(args, "scheduler", None):
        summary = _fill_on_scheduler(args, config, frame, modalities, teachers)
        print(
            f"{summary['embedded']} items embedded on {summary['workers']} worker(s), "
            f"{summary['hits']} already cached, {summary['failures']} unreadable, in "
            f"{summary['seconds']:.1f} s ({summary['load_seconds']:.1f} s of it loading models)"
        )
        if not args.out:
            return 0
    embedder, X = _embed_all(args, config, frame, modalities, teachers)
    if args.out:
        write_table(X, args.out)
        print(f"{X.shape[0]} x {X.shape[1]} embedding matrix written to {args.out}")
    from ..embedding import resolve_cache_dir

    where = resolve_cache_dir(embedder.cache_dir)
    print(f"embedded {len(frame)} rows; cache: {where}")
    return 0


def _fill_on_scheduler(args, config, frame, modalities, teachers) -> dict:
    try:
        from distributed import Client
    except ImportError as exc:
        raise CLIError(
            "--scheduler needs dask.distributed: pip install 'medmix_sklearn[dask]'."
        ) from exc
    resources = None
    if args.resources:
        resources = {}
        for part in args.resources.split(","):
            name, sep, amount = part.partition("=")
            try:
                resources[name.strip()] = float(amount)
            except ValueError:
                sep = ""
            if not sep or not name.strip():
                raise CLIError(
                    f"--resources must look like NAME=N[,NAME=N] (e.g. GPU=1). Got "
                    f"{args.resources!r}."
                ) from None
    embedder = _embedder(args, modalities, teachers, config)
    with Client(args.scheduler) as client:
        return embedder.fill_cache(
            frame, client=client, partitions=args.partitions, resources=resources
        )


def cmd_cache(args) -> int:
    from ..embedding import EmbeddingCache, resolve_cache_dir

    where = args.cache_dir
    cache = EmbeddingCache(resolve_cache_dir("auto" if where is None else where))
    if args.action == "info":
        info = cache.info()
        if args.json:
            print(json.dumps(info, indent=2, default=_json_value))
            return 0
        print(f"cache {info['directory']}: {info['files']} files, {_size(info['bytes'])}")
        for expert in info["experts"]:
            label = expert.get("expert", "?")
            print(
                f"  {expert['folder']}  {label:<24} {expert['entries']:>10} entries  "
                f"{_size(expert['bytes']):>9}  {expert['files']} files"
            )
        records = info["file_records"]
        print(f"  file records: {records['entries']} entries, {_size(records['bytes'])}")
        if info["format1"]["entries"]:
            print(
                f"  format-1 entries: {info['format1']['entries']} "
                f"({_size(info['format1']['bytes'])}); `medmix cache migrate` moves them"
            )
        return 0
    if args.action == "migrate":
        print(f"{cache.migrate()} format-1 entries moved into the store")
        return 0
    keep = list(args.keep or [])
    for path in args.keep_model or []:
        from .._provenance import load_model

        _, provenance = load_model(path, check_fingerprints=False, return_provenance=True)
        keep += [e["fingerprint"] for e in provenance.get("experts") or [] if "fingerprint" in e]
    if not keep and (args.keep or args.keep_model):
        raise CLIError(
            "--keep-model named no expert fingerprint (a model without experts?); pruning "
            "would delete every expert. Give --keep FINGERPRINT or another model."
        )
    report = cache.prune(
        keep=keep if (args.keep or args.keep_model) else None,
        older_than=None if args.older_than is None else args.older_than * 86400.0,
        dry_run=args.dry_run,
    )
    if args.json:
        print(json.dumps(report, indent=2, default=_json_value))
        return 0
    verb = "would free" if args.dry_run else "freed"
    print(
        f"{len(report['experts_removed'])} expert folder(s), {report['entries_removed']} "
        f"entries and {report['file_records_removed']} file records removed; {verb} "
        f"{_size(report['bytes_freed'])}; {report['stale_locks_removed']} stale lock(s)"
    )
    return 0


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _json_value(value):
    """numpy scalars as Python numbers, anything else JSON lacks as text."""
    return value.item() if isinstance(value, np.generic) else str(value)


def cmd_info(args) -> int:
    from .._provenance import load_model

    _, provenance = load_model(args.model, return_provenance=True)
    provenance = dict(provenance)
    layout = dict(provenance.get("block_layout") or {})
    names = layout.pop("feature_names_out", None)
    if names is not None:
        layout["n_features_out"] = len(names)
    provenance["block_layout"] = layout
    print(json.dumps(provenance, indent=2, default=_json_value))
    return 0


