"""Matplotlib figures of the report, returned as PNG bytes (Agg backend, no display)."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

# Colour-blind-safe palette (Okabe-Ito), in a fixed order so a method keeps its colour.
_COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")
_DPI = 96


def _figure(width: float = 6.0, height: float = 4.2, ncols: int = 1):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols if ncols > 1 else width, height), dpi=_DPI)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, axes


def _png(fig) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.text import Text

    FigureCanvasAgg(fig)
    # Labels, titles and legends hold text from the data (class labels, method
    # names): it is drawn as written, never parsed as mathtext ("cost $\\x$").
    for text in fig.findobj(Text):
        text.set_parse_math(False)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI)
    return buffer.getvalue()


def color(i: int) -> str:
    return _COLORS[i % len(_COLORS)]


def roc_figure(curves: dict[str, tuple[np.ndarray, np.ndarray, float]], title: str) -> bytes:
    """One ROC curve per method: ``{method: (fpr, tpr, auc)}``."""
    fig, (ax,) = _figure(5.6, 4.6)
    ax.plot([0, 1], [0, 1], linestyle=":", color="#888888", linewidth=1, label="chance")
    for i, (method, (fpr, tpr, auc)) in enumerate(curves.items()):
        ax.plot(fpr, tpr, color=color(i), linewidth=1.8, label=f"{method} (AUROC {auc:.3f})")
    ax.set_xlabel("False positive rate")
    ax.set_ylabel("True positive rate")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)


def calibration_figure(
    curves: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], xlabel: str, ylabel: str
) -> bytes:
    """Reliability diagram: ``{method: (mean predicted, observed, counts)}`` per bin."""
    fig, (ax,) = _figure(5.6, 4.6)
    ax.plot([0, 1], [0, 1], linestyle=":", color="#888888", linewidth=1, label="perfect")
    for i, (method, (predicted, observed, _counts)) in enumerate(curves.items()):
        ax.plot(predicted, observed, marker="o", markersize=4, color=color(i), label=method)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title("Calibration")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)


def robustness_figure(table: pd.DataFrame, ylabel: str) -> bytes:
    """One line per method (column) of score against the missing rate (index)."""
    fig, (ax,) = _figure(5.6, 4.2)
    x = np.asarray(table.index, dtype=float)
    for i, method in enumerate(table.columns):
        ax.plot(x, table[method].to_numpy(dtype=float), marker="o", color=color(i), label=str(method))
    ax.set_xlabel("Missing rate (share of modalities removed at test time)")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{ylabel} against the missing rate")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)


def pattern_figure(table: pd.DataFrame, methods: list[str]) -> bytes:
    """Grouped bars: AUROC per availability pattern (rows) and method."""
    fig, (ax,) = _figure(max(5.6, 0.9 * len(table) + 2.5), 4.4)
    n = max(len(methods), 1)
    width = 0.8 / n
    x = np.arange(len(table))
    for i, method in enumerate(methods):
        values = table[method].to_numpy(dtype=float)
        ax.bar(x + (i - (n - 1) / 2) * width, np.nan_to_num(values, nan=0.0), width,
               color=color(i), label=method)
    ax.set_xticks(x)
    ax.set_xticklabels([f"{p}\n(n={n_})" for p, n_ in zip(table.index, table["n"])],
                       fontsize=7, rotation=30, ha="right")
    ax.set_ylabel("AUROC")
    ax.set_ylim(0, 1)
    ax.axhline(0.5, linestyle=":", color="#888888", linewidth=1)
    ax.set_title("AUROC per availability pattern")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def weights_figure(groups: dict[str, dict[str, np.ndarray]]) -> bytes:
    """Box plots of per-sample weights, one panel per group (``{panel: {label: values}}``)."""
    panels = [(name, series) for name, series in groups.items() if series]
    fig, axes = _figure(4.2, 4.0, ncols=max(len(panels), 1))
    for ax, (name, series) in zip(axes, panels):
        labels = list(series)
        data = [np.asarray(series[k], dtype=float) for k in labels]
        data = [d[np.isfinite(d)] for d in data]
        ax.boxplot([d if d.size else np.array([np.nan]) for d in data], showfliers=False)
        ax.set_xticks(np.arange(1, len(labels) + 1))
        ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_ylabel("weight")
        ax.set_title(name, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    return _png(fig)
