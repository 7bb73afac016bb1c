"""One self-contained HTML report: metrics, plots (inline PNG) and a model card."""

from __future__ import annotations

import base64
import datetime as _dt
import html
import numbers
from collections.abc import Mapping

import numpy as np
import pandas as pd

from .._files import atomic_write
from .._missing import pattern_labels, subset_score
from . import _plots

__all__ = ["render_report", "write_report"]

_SEP = "__"
_EXPERT_PREFIX = f"expert_weight{_SEP}"
_MODALITY_PREFIX = f"modality_weight{_SEP}"

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 0;
       color: #1d1d1f; background: #fafafa; line-height: 1.45; }
main { max-width: 1100px; margin: 0 auto; padding: 1.5rem 2rem 3rem; background: #fff; }
h1 { font-size: 1.7rem; margin-bottom: 0.2rem; }
h2 { border-bottom: 2px solid #0072B2; padding-bottom: 0.2rem; margin-top: 2.2rem; }
h3 { margin-top: 1.4rem; }
.meta { color: #666; font-size: 0.9rem; }
nav ol { columns: 2; font-size: 0.95rem; }
table { border-collapse: collapse; margin: 0.6rem 0 1rem; font-size: 0.88rem; }
th, td { border: 1px solid #d8d8d8; padding: 0.25rem 0.55rem; text-align: left;
         vertical-align: top; }
th { background: #f0f4f8; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
code { font-size: 0.82rem; word-break: break-all; }
figure { margin: 0.8rem 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.88rem; }
.note { color: #555; font-size: 0.9rem; }
"""


# --------------------------------------------------------------------------- #
# input checks
# --------------------------------------------------------------------------- #
def _check_inputs(y_true, proba, classes):
    y = np.asarray(y_true)
    if y.ndim != 1 or y.size == 0:
        raise ValueError(
            f"y_true must be a non-empty 1-d array of labels. Got shape {y.shape} instead."
        )
    if classes is None:
        classes = np.unique(y)
    classes = np.asarray(classes)
    if classes.ndim != 1 or len(classes) < 2:
        raise ValueError(
            f"classes must list at least two class labels. Got {classes.tolist()!r} instead."
        )
    unknown = sorted(set(np.unique(y).tolist()) - set(classes.tolist()), key=str)
    if unknown:
        raise ValueError(
            f"y_true contains labels {unknown[:5]!r} that are not in classes "
            f"{classes.tolist()!r}. Pass the classifier's classes_."
        )
    if not isinstance(proba, Mapping):
        proba = {"model": proba}
    if not proba:
        raise ValueError("proba is an empty dict; give at least one method's probabilities.")
    methods: dict[str, np.ndarray] = {}
    for method, p in proba.items():
        p = np.asarray(p, dtype=float)
        if p.ndim == 1:
            if len(classes) != 2:
                raise ValueError(
                    f"proba[{method!r}] is 1-d, which means the positive-class "
                    f"probability of a binary problem, but there are {len(classes)} "
                    "classes. Pass an array of shape (n_samples, n_classes)."
                )
            p = np.column_stack([1.0 - p, p])
        if p.shape != (len(y), len(classes)):
            raise ValueError(
                f"proba[{method!r}] has shape {p.shape}; expected ({len(y)}, {len(classes)}) "
                "(one row per label in y_true, one column per class)."
            )
        if not np.all(np.isfinite(p)):
            rows = np.flatnonzero(~np.isfinite(p).all(axis=1))
            raise ValueError(
                f"proba[{method!r}] has non-finite values in rows {rows[:5].tolist()}."
            )
        sums = p.sum(axis=1, keepdims=True)
        if np.allclose(sums, 1.0, atol=1e-3):
            p = p / sums  # float32 rounding; exact sums keep log loss quiet
        methods[str(method)] = p
    return y, classes, methods


def _check_frame(frame, name: str, n: int) -> pd.DataFrame | None:
    if frame is None:
        return None
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"{name} must be a pandas DataFrame. Got {type(frame).__name__} instead.")
    if len(frame) != n:
        raise ValueError(
            f"{name} has {len(frame)} rows but y_true has {n}; rows must match one to one."
        )
    return frame.reset_index(drop=True)


# --------------------------------------------------------------------------- #
# metrics
# --------------------------------------------------------------------------- #
def _safe(fn, *args, **kwargs) -> float:
    try:
        return float(fn(*args, **kwargs))
    except ValueError:  # a single class in the subset
        return float("nan")


def _bins(confidence: np.ndarray, outcome: np.ndarray, n_bins: int):
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, n_bins - 1)
    predicted, observed, counts = [], [], []
    for b in range(n_bins):
        mask = index == b
        if mask.any():
            predicted.append(confidence[mask].mean())
            observed.append(outcome[mask].mean())
            counts.append(int(mask.sum()))
    return np.array(predicted), np.array(observed), np.array(counts)


def _calibration(y, p, classes, n_bins: int):
    """Reliability bins: positive-class probability (binary) or top-label confidence."""
    if len(classes) == 2:
        return _bins(p[:, 1], (y == classes[1]).astype(float), n_bins)
    top = p.argmax(axis=1)
    return _bins(p.max(axis=1), (classes[top] == y).astype(float), n_bins)


def _metrics(y, methods, classes, n_bins: int) -> pd.DataFrame:
    from sklearn.metrics import accuracy_score, average_precision_score, brier_score_loss, log_loss

    from ..model_selection import expected_calibration_error

    rows = {}
    for method, p in methods.items():
        predicted = classes[p.argmax(axis=1)]
        row = {"AUROC": subset_score(y, p, classes)}
        if len(classes) == 2:
            positive = y == classes[1]
            row["AUPRC"] = _safe(average_precision_score, positive, p[:, 1]) if positive.any() else float("nan")
            row["Brier score"] = float(brier_score_loss(positive, p[:, 1]))
        row["accuracy"] = float(accuracy_score(y, predicted))
        row["log loss"] = _safe(log_loss, y, np.clip(p, 1e-15, 1.0), labels=classes)
        row["ECE"] = expected_calibration_error(y, p, n_bins=n_bins, classes=classes)
        rows[method] = row
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "method"
    return frame


def _robustness_table(robustness) -> pd.DataFrame:
    """Mean score per missing rate (index) and method (columns).

    Takes that table as it is, or the long output of
    :func:`~medmix_sklearn.model_selection.robustness_curve` (one frame, with
    a ``method`` column or not, or ``{method: frame}``), averaged over folds
    and repeats.
    """
    if isinstance(robustness, Mapping):
        frames = []
        for method, frame in robustness.items():
            if not isinstance(frame, pd.DataFrame):
                raise TypeError(f"robustness[{method!r}] must be a robustness_curve DataFrame. "
                                f"Got {type(frame).__name__} instead.")
            frames.append(frame.assign(method=str(method)))
        robustness = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if not isinstance(robustness, pd.DataFrame):
        raise TypeError(
            "robustness must be a DataFrame indexed by missing rate, one column per method, "
            "or robustness_curve output (a frame or {method: frame}). "
            f"Got {type(robustness).__name__} instead."
        )
    if not {"p", "score"} <= set(robustness.columns):
        return robustness
    long = robustness
    if "metric" in long.columns:
        long = long[long["metric"] == long["metric"].iloc[0]]
    if "method" not in long.columns:
        long = long.assign(method="score")
    if "mechanism" in long.columns and long["mechanism"].nunique() > 1:
        long = long.assign(method=long["method"].astype(str) + " (" + long["mechanism"].astype(str) + ")")
    table = long.groupby(["p", "method"], sort=False)["score"].mean().unstack("method")
    table.index.name = "missing rate"
    return table


def _roc_curves(y, methods, classes):
    from sklearn.metrics import roc_curve
    from sklearn.preprocessing import label_binarize

    curves = {}
    if len(np.unique(y)) < 2:
        return curves
    for method, p in methods.items():
        if len(classes) == 2:
            fpr, tpr, _ = roc_curve(y == classes[1], p[:, 1])
        else:
            onehot = label_binarize(y, classes=classes)
            fpr, tpr, _ = roc_curve(onehot.ravel(), p.ravel())
        curves[method] = (fpr, tpr, subset_score(y, p, classes))
    return curves


def _pattern_table(y, methods, classes, availability: pd.DataFrame) -> pd.DataFrame:
    names = pattern_labels(availability)
    order = pd.Series(names).value_counts(sort=True)
    rows = {}
    for pattern in order.index:
        mask = names == pattern
        row: dict = {"n": int(mask.sum())}
        if len(classes) == 2:
            row["prevalence"] = float(np.mean(y[mask] == classes[1]))
        for method, p in methods.items():
            row[method] = subset_score(y[mask], p[mask], classes)
        rows[pattern] = row
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "pattern"
    return frame


def _weight_groups(weights: pd.DataFrame, availability: pd.DataFrame | None):
    """``{panel: {label: values over the rows where the modality is present}}``."""

    def present(modality: str, fallback: np.ndarray) -> np.ndarray:
        if availability is not None and modality in availability.columns:
            return availability[modality].to_numpy(dtype=bool)
        return fallback

    groups: dict[str, dict[str, np.ndarray]] = {}
    modality_cols = [c for c in weights.columns if str(c).startswith(_MODALITY_PREFIX)]
    if modality_cols:
        panel = {}
        for col in modality_cols:
            modality = str(col)[len(_MODALITY_PREFIX):]
            values = weights[col].to_numpy(dtype=float)
            panel[modality] = values[present(modality, values > 0)]
        groups["Modality weights"] = panel
    experts: dict[str, list] = {}
    for col in weights.columns:
        text = str(col)
        if text.startswith(_EXPERT_PREFIX):
            modality, _, expert = text[len(_EXPERT_PREFIX):].partition(_SEP)
            experts.setdefault(modality, []).append((expert or modality, col))
    for modality, cols in experts.items():
        if len(cols) < 2:
            continue  # one expert always has weight 1
        block = weights[[c for _, c in cols]].to_numpy(dtype=float)
        rows = present(modality, np.nansum(block, axis=1) > 0)
        groups[f"Experts of {modality}"] = {
            expert: weights[col].to_numpy(dtype=float)[rows] for expert, col in cols
        }
    return groups


# --------------------------------------------------------------------------- #
# HTML pieces
# --------------------------------------------------------------------------- #
def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, numbers.Integral):
        return f"{int(value):,}"
    if isinstance(value, numbers.Real):
        value = float(value)
        if np.isnan(value):
            return "–"
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
            return f"{value:.3g}"
        return f"{value:.4g}" if abs(value) > 1 else f"{value:.3f}"
    return str(value)


def _cell(value, *, header: bool = False) -> str:
    if header:
        return f"<th>{_e(value)}</th>"
    numeric = isinstance(value, numbers.Number) and not isinstance(value, (bool, np.bool_))
    cls = ' class="num"' if numeric else ""
    return f"<td{cls}>{_e(_fmt(value))}</td>"


def _table(frame: pd.DataFrame, *, index: bool = True, caption: str | None = None) -> str:
    parts = ["<table>"]
    if caption:
        parts.append(f"<caption>{_e(caption)}</caption>")
    header = ([frame.index.name or ""] if index else []) + [str(c) for c in frame.columns]
    parts.append("<thead><tr>" + "".join(_cell(h, header=True) for h in header) + "</tr></thead>")
    parts.append("<tbody>")
    for label, row in zip(frame.index, frame.itertuples(index=False, name=None)):
        cells = ([f"<th>{_e(label)}</th>"] if index else []) + [_cell(v) for v in row]
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</tbody></table>")
    return "".join(parts)


def _image(png: bytes, alt: str, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{_e(alt)}">'
        f"<figcaption>{_e(caption)}</figcaption></figure>"
    )


def _is_fingerprint(key: str, value) -> bool:
    return isinstance(value, str) and ("fingerprint" in key.lower() or "sha" in key.lower())


def _card_value(value, key: str = "") -> str:
    """Render a model-card value: nested dicts and lists of dicts become tables."""
    if isinstance(value, pd.DataFrame):
        return _table(value)
    if isinstance(value, pd.Series):
        return _table(value.to_frame())
    if isinstance(value, Mapping):
        if not value:
            return "–"
        rows = "".join(
            f"<tr><th>{_e(k)}</th><td>{_card_value(v, str(k))}</td></tr>" for k, v in value.items()
        )
        return f'<table class="kv">{rows}</table>'
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, Mapping) for v in value):
        columns: list = []
        for item in value:
            columns.extend(k for k in item if k not in columns)
        head = "".join(f"<th>{_e(c)}</th>" for c in columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{_card_value(item.get(c), str(c))}</td>" for c in columns) + "</tr>"
            for item in value
        )
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    if isinstance(value, (list, tuple, np.ndarray)):
        items = list(value)
        if len(items) > 40:
            shown = ", ".join(_fmt(v) for v in items[:40])
            return _e(f"{shown}, … ({len(items)} in all)")
        return _e(", ".join(_fmt(v) for v in items)) if items else "–"
    if _is_fingerprint(key, value):
        return f"<code>{_e(value)}</code>"
    return _e(_fmt(value))


def _section(anchor: str, heading: str, body: str) -> str:
    return f'<section id="{_e(anchor)}"><h2>{_e(heading)}</h2>{body}</section>'


# --------------------------------------------------------------------------- #
# public
# --------------------------------------------------------------------------- #
def render_report(
    *,
    y_true,
    proba,
    classes=None,
    availability=None,
    weights=None,
    robustness=None,
    model_card=None,
    tables=None,
    title="MedMIX report",
    n_bins=10,
) -> str:
    """Return the report as one HTML string; see :func:`write_report` for the parameters."""
    y, classes, methods = _check_inputs(y_true, proba, classes)
    n = len(y)
    availability = _check_frame(availability, "availability", n)
    weights = _check_frame(weights, "weights", n)
    if availability is not None:
        availability = availability.astype(bool)
    if robustness is not None:
        robustness = _robustness_table(robustness)
    if model_card is not None and not isinstance(model_card, Mapping):
        raise TypeError(f"model_card must be a dict. Got {type(model_card).__name__} instead.")
    if not isinstance(n_bins, numbers.Integral) or n_bins < 2:
        raise ValueError(f"n_bins must be an integer >= 2. Got {n_bins!r} instead.")

    sections: list[tuple[str, str, str]] = []
    binary = len(classes) == 2

    # Summary
    metrics = _metrics(y, methods, classes, n_bins)
    counts = pd.Series(y).value_counts().reindex(classes, fill_value=0)
    summary = (
        f"<p>{_e(n)} samples, {_e(len(classes))} classes "
        f"({_e(', '.join(f'{c}: {k}' for c, k in counts.items()))}); "
        f"{_e(len(methods))} method(s): {_e(', '.join(methods))}.</p>"
        + _table(metrics)
        + '<p class="note">AUROC is one-vs-rest macro-averaged for more than two classes; '
        "ECE is the expected calibration error over "
        f"{_e(n_bins)} equal-width bins (of the positive-class probability for two classes, "
        "of the top-label confidence otherwise).</p>"
    )
    sections.append(("summary", "Summary", summary))

    # ROC
    curves = _roc_curves(y, methods, classes)
    if curves:
        what = f"positive class {classes[1]}" if binary else "micro-averaged one-vs-rest"
        sections.append((
            "roc", "ROC curves",
            _image(_plots.roc_figure(curves, f"ROC ({what})"), "ROC curves",
                   f"ROC curves, {what}. The dotted line is chance."),
        ))
    else:
        sections.append(("roc", "ROC curves", "<p>Only one class in y_true: no ROC curve.</p>"))

    # Calibration
    cal = {m: _calibration(y, p, classes, n_bins) for m, p in methods.items()}
    xlabel, ylabel = (
        ("Mean predicted probability", "Observed frequency") if binary
        else ("Top-label confidence", "Accuracy")
    )
    sections.append((
        "calibration", "Calibration",
        _image(_plots.calibration_figure(cal, xlabel, ylabel), "Calibration curves",
               "Reliability diagram: points on the diagonal are well calibrated."),
    ))

    # Robustness
    if robustness is not None and len(robustness):
        frame = robustness.sort_index()
        frame.index.name = frame.index.name or "missing rate"
        sections.append((
            "robustness", "AUROC against the missing rate",
            _image(_plots.robustness_figure(frame, "AUROC"), "AUROC against the missing rate",
                   "Each modality removed at random at test time with the given probability.")
            + _table(frame),
        ))

    # Availability patterns
    if availability is not None and availability.shape[1]:
        patterns = _pattern_table(y, methods, classes, availability)
        rates = pd.DataFrame({
            "present": availability.sum(axis=0).astype(int),
            "missing rate": 1.0 - availability.mean(axis=0),
        })
        rates.index.name = "modality"
        body = (
            "<p>Metrics on the rows that share one availability pattern (the modalities "
            "present). AUROC is undefined (–) where a pattern has one class only.</p>"
            + _image(_plots.pattern_figure(patterns, list(methods)), "AUROC per availability pattern",
                     "AUROC per availability pattern and method.")
            + _table(patterns)
            + "<h3>Missingness per modality</h3>" + _table(rates)
        )
        sections.append(("patterns", "Metrics per availability pattern", body))

    # Weights
    if weights is not None:
        groups = _weight_groups(weights, availability)
        if groups:
            stats = []
            for panel, series in groups.items():
                for label, values in series.items():
                    finite = values[np.isfinite(values)]
                    stats.append({
                        "group": panel, "name": label, "rows": int(finite.size),
                        "mean": float(finite.mean()) if finite.size else float("nan"),
                        "median": float(np.median(finite)) if finite.size else float("nan"),
                    })
            body = (
                "<p>Per-sample weights the fusion gave each modality and, within a modality "
                "with several experts, each expert; over the rows where the modality is "
                "present.</p>"
                + _image(_plots.weights_figure(groups), "Distribution of fusion weights",
                         "Box plots of per-sample weights (whiskers at 1.5 IQR).")
                + _table(pd.DataFrame(stats), index=False)
            )
            sections.append(("weights", "Modality and expert weights", body))

    # Extra tables
    for i, (heading, frame) in enumerate((tables or {}).items()):
        if not isinstance(frame, pd.DataFrame):
            frame = pd.DataFrame(frame)
        sections.append((f"table-{i}", str(heading), _table(frame)))

    # Model card
    if model_card:
        sections.append(("model-card", "Model card", _card_value(dict(model_card))))

    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    toc = "".join(f'<li><a href="#{_e(a)}">{_e(h)}</a></li>' for a, h, _ in sections)
    body = "".join(_section(a, h, b) for a, h, b in sections)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body><main>"
        f"<h1>{_e(title)}</h1><p class=\"meta\">Generated {_e(stamp)} by medmix_sklearn.</p>"
        f"<nav><ol>{toc}</ol></nav>{body}</main></body></html>\n"
    )


def write_report(
    path,
    *,
    y_true,
    proba,
    classes=None,
    availability=None,
    weights=None,
    robustness=None,
    model_card=None,
    tables=None,
    title="MedMIX report",
    n_bins=10,
):
    """Write one self-contained HTML report of a classifier's held-out predictions.

    The file has no external resources (plots are inline PNG images, styles
    inline, no JavaScript), so it can be mailed or archived as is.

    Parameters
    ----------
    path : str or path-like
        Output file; its folder is created if needed. Written atomically.
    y_true : array-like of shape (n_samples,)
        True labels.
    proba : array-like of shape (n_samples, n_classes) or (n_samples,), or dict
        Predicted probabilities (columns in the order of ``classes``; a 1-d
        array is the positive-class probability of a binary problem), or a
        dict ``{method name: probabilities}`` to compare several methods.
    classes : array-like of shape (n_classes,), default=None
        Class labels in the column order of ``proba`` (the classifier's
        ``classes_``); the sorted unique labels of ``y_true`` when None.
    availability : DataFrame of bool, shape (n_samples, n_modalities), default=None
        Which modalities are present per row (see
        :func:`~medmix_sklearn.model_selection.availability_patterns`). Adds
        metrics per availability pattern and the missing rate per modality.
    weights : DataFrame of shape (n_samples, n_weights), default=None
        The output of :meth:`MedMIXClassifier.explain` on the same rows:
        ``expert_weight__{modality}__{expert}`` and
        ``modality_weight__{modality}`` columns. Adds their distributions.
    robustness : DataFrame or dict, default=None
        Score (AUROC) per missing rate (index) and method (columns), or the
        output of :func:`~medmix_sklearn.model_selection.robustness_curve`
        (one frame with a ``method`` column, or ``{method: frame}``; the mean
        over folds is shown). Adds a plot of AUROC against the missing rate.
    model_card : dict, default=None
        What the model is: experts with their fingerprints, data shape,
        missingness rates, parameters... Nested dicts and lists of dicts are
        rendered as tables. :func:`medmix_sklearn.describe_model` builds one.
    tables : dict of str to DataFrame, default=None
        Further tables to include, by heading.
    title : str, default="MedMIX report"
        Title of the page.
    n_bins : int, default=10
        Bins of the calibration curves and the ECE.

    Returns
    -------
    path : str
        The path written.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> y = np.array([0, 1, 0, 1, 1, 0])
    >>> p = np.array([0.2, 0.8, 0.3, 0.6, 0.9, 0.4])
    >>> out = write_report(os.path.join(tempfile.mkdtemp(), "r.html"), y_true=y, proba=p)
    >>> open(out).read().startswith("<!DOCTYPE html>")
    True
    """
    text = render_report(
        y_true=y_true, proba=proba, classes=classes, availability=availability,
        weights=weights, robustness=robustness, model_card=model_card, tables=tables,
        title=title, n_bins=n_bins,
    )

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)

    return atomic_write(path, write, prefix=".report-", suffix=".html")
