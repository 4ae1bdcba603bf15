"""The report's figures (matplotlib, Agg, no display), returned as PNG bytes for an atomic write."""
from __future__ import annotations

import io

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from reporting.stats import ordered_strategies


def plot_curves(curves: pd.DataFrame, title: str, colors: dict, baseline: str) -> bytes:
    """One learning-curve PNG: a line per strategy with a mean ± standard-error band."""
    fig, ax = _figure()
    for strategy in ordered_strategies(curves["strategy"], baseline):
        c = curves[curves["strategy"] == strategy].sort_values("n_labeled")
        mean, sem = c["test_acc_mean"], c["test_acc_sem"]
        ax.plot(c["n_labeled"], mean, marker="o", markersize=3, color=colors[strategy],
                label=f"{strategy} ({c['n_seeds'].max()} seeds)")
        ax.fill_between(c["n_labeled"], mean - sem, mean + sem, color=colors[strategy], alpha=0.2, linewidth=0)
    ax.set_xlabel("labelled images")
    ax.set_ylabel("test accuracy (mean ± s.e. over seeds)")
    return _png(fig, ax, title)


def plot_label_noise(table: pd.DataFrame, colors: dict, baseline: str) -> bytes:
    """Final test accuracy (mean ± s.e. over seeds) against the fraction of corrupted labels in the final
    labelled set: one line per strategy through its groups, in order of that fraction."""
    fig, ax = _figure()
    for strategy in ordered_strategies(table["strategy"], baseline):
        t = table[table["strategy"] == strategy].sort_values("corrupted_fraction_mean")
        ax.errorbar(t["corrupted_fraction_mean"], t["final_test_acc_mean"], yerr=t["final_test_acc_sem"].fillna(0),
                    marker="o", markersize=4, capsize=3, color=colors[strategy], label=strategy)
    ax.set_xlabel("corrupted labels in the final labelled set (fraction)")
    ax.set_ylabel("final test accuracy (mean ± s.e. over seeds)")
    return _png(fig, ax, "label noise")


def _figure() -> tuple:
    fig = Figure(figsize=(6.4, 4.4))
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _png(fig: Figure, ax, title: str) -> bytes:
    """Title, grid and legend, then the figure's PNG bytes."""
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    return buf.getvalue()
