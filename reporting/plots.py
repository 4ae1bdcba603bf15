"""The report's figures (matplotlib, Agg, no display), returned as PNG bytes for an atomic write."""
from __future__ import annotations

import io

import numpy as np
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


def plot_map(table: pd.DataFrame, title: str, baseline: str) -> bytes:
    """report.py --map: one panel per labelled-set size, strategies down and the field's values across, each
    cell coloured by the strategy's mean paired difference from the baseline in test accuracy (points; blue
    better, red worse, on one scale for all panels), with the difference written in it and * where the
    Holm-corrected p is below 0.05; a blank cell has no pairs."""
    sizes = sorted(table["n_labeled"].unique())
    strategies = [s for s in ordered_strategies(table["strategy"], baseline) if s != baseline]
    values = sorted(table["value"].unique(), key=_natural)
    limit = max(1.0, float(np.nanmax(np.abs(table["mean_diff"].to_numpy(float) * 100))) if len(table) else 1.0)
    fig = Figure(figsize=(1.6 + 0.9 * len(values) * len(sizes), 1.2 + 0.42 * len(strategies)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(sizes), squeeze=False)[0]
    for ax, n in zip(axes, sizes):
        t = table[table["n_labeled"] == n].set_index(["strategy", "value"])
        grid = np.full((len(strategies), len(values)), np.nan)
        for i, strategy in enumerate(strategies):
            for j, value in enumerate(values):
                if (strategy, value) in t.index and t.loc[(strategy, value), "n_pairs"] > 0:
                    cell = t.loc[(strategy, value)]
                    grid[i, j] = 100 * cell["mean_diff"]
                    star = "*" if cell["significant"] else ""
                    ax.text(j, i, f"{grid[i, j]:+.1f}{star}", ha="center", va="center", fontsize=7,
                            color="white" if abs(grid[i, j]) > 0.6 * limit else "black")
        image = ax.imshow(grid, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
        ax.set_xticks(range(len(values)), [str(v) for v in values], fontsize=7)
        ax.set_yticks(range(len(strategies)), strategies if ax is axes[0] else [], fontsize=7)
        ax.set_title(f"{n} labels", fontsize=8)
        ax.set_xlabel(table["field"].iloc[0], fontsize=8)
    fig.colorbar(image, ax=list(axes), label=f"test accuracy − {baseline}'s (points)", shrink=0.9)
    fig.suptitle(title, fontsize=9)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    return buf.getvalue()


def _natural(value: str):
    """Numbers in numeric order before text (σ 0, 2, 4, 10)."""
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value)


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
