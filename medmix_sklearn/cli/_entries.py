"""Turning tables, options and TOML config files into modality entries."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ._main import _CONFIG_EXAMPLE, _DEFAULT_IMAGE_EXPERT, _DEFAULT_TEXT_EXPERT, CLIError  # noqa: F401


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
    from .._files import atomic_write

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
    from .._layout import sanitize_name

    return sanitize_name(text)


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
    from ..experts import ImageExpert, TextExpert

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


def numeric_cells(column: pd.Series) -> tuple[pd.Series, pd.Series]:
    """The column parsed as numbers, and where a present cell is not a number."""
    text = column.astype("string").str.strip()
    present = (column.notna() & (text != "")).fillna(False).astype(bool)
    parsed = pd.to_numeric(column.where(present), errors="coerce")
    return parsed, present & parsed.isna()


def coerce_numeric(frame: pd.DataFrame, columns, *, coerce: bool, where: str) -> list[str]:
    """Make the mostly-numeric text columns of ``frame`` numeric; return them.

    A column the user named as tabular whose present cells are mostly (at
    least half) numbers is numeric. Its other cells (``12,5``, ``>100``) are
    refused with a CLIError that names the column, the first rows and their
    values; with ``coerce`` they become NaN (missing) instead, counted in a
    :class:`~medmix_sklearn.exceptions.NumericCoercionWarning`. Columns
    that are mostly text stay categorical. ``frame`` is changed in place.
    """
    from ..exceptions import NumericCoercionWarning

    numeric = []
    for c in columns:
        column = frame[c]
        if pd.api.types.is_bool_dtype(column) or pd.api.types.is_numeric_dtype(column):
            continue
        parsed, bad = numeric_cells(column)
        n_present = int((parsed.notna() | bad).sum())
        if n_present == 0 or int(bad.sum()) * 2 > n_present:
            continue  # categorical
        if bad.any():
            rows = list(frame.index[bad.to_numpy()])
            cells = ", ".join(f"row {r!r}: {column[r]!r}" for r in rows[:5])
            more = f" (and {len(rows) - 5} more)" if len(rows) > 5 else ""
            if not coerce:
                raise CLIError(
                    f"{where}: column {c!r} holds numbers in {n_present - len(rows)} of its "
                    f"{n_present} filled cells, but not in {cells}{more} (rows counted from 0 "
                    "below the header). Fix those cells (a decimal point, no signs such as "
                    "'>'), or pass --coerce-numeric to read them as missing values."
                )
            warnings.warn(
                f"{where}: column {c!r}: {len(rows)} cells that are not numbers were read as "
                f"missing values (--coerce-numeric): {cells}{more}.",
                NumericCoercionWarning,
                stacklevel=2,
            )
        frame[c] = parsed.astype("float64")
        numeric.append(c)
    return numeric


def _tabular_transformer(frame: pd.DataFrame, columns: list[str], *, coerce: bool = False,
                         where: str = "--tabular"):
    """Numeric columns pass through; text or categorical columns are one-hot encoded.

    Mostly-numeric text columns are numeric (see :func:`coerce_numeric`).
    """
    coerce_numeric(frame, columns, coerce=coerce, where=where)
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


def _config_entries(config: dict, key: str, frame, pretrained: bool, used: set[str],
                    coerce: bool = False):
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
                transformer = _tabular_transformer(frame, columns, coerce=coerce, where=where)
            elif transformer == "passthrough":
                coerce_numeric(frame, columns, coerce=coerce, where=where)
            else:
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
    coerce = bool(getattr(args, "coerce_numeric", False))
    used: set[str] = set()
    modalities, image_columns = _config_entries(
        config, "modalities", frame, pretrained, used, coerce
    )
    teachers, teacher_images = _config_entries(config, "teachers", frame, pretrained, set(), coerce)
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
        transformer = _tabular_transformer(frame, columns, coerce=coerce, where="--tabular")
        modalities.append((name, transformer, columns))
    add("image", getattr(args, "teacher_image", None), "--teacher-image", teachers, None)
    add("text", getattr(args, "teacher_text", None), "--teacher-text", teachers, None)
    if not modalities:
        raise CLIError(
            "no modality given: use --image, --text and/or --tabular (or [[modalities]] "
            "in a --config file)."
        )
    return modalities, teachers, list(dict.fromkeys(image_columns))


def _embedder(args, modalities, teachers, config: dict):
    from ..embedding import MultimodalExpertEmbedder

    params = dict(config.get("embedder") or {})
    cache = getattr(args, "cache_dir", None)
    if cache is not None:
        params["cache_dir"] = None if cache.lower() == "none" else cache
    if getattr(args, "device", None):
        params["device"] = args.device
    if getattr(args, "batch_size", None):
        params["batch_size"] = args.batch_size
    if getattr(args, "precision", None):
        params["precision"] = args.precision
    params.setdefault("verbose", 0 if getattr(args, "quiet", False) else 1)
    try:
        return MultimodalExpertEmbedder(modalities, teachers=teachers or None, **params)
    except TypeError as exc:
        raise CLIError(f"--config [embedder]: {exc}.") from exc


def _classifier(args, config: dict, **overrides):
    from ..fusion import MedMIXClassifier

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


