"""Report on any set of run folders: learning curves, labels to a target accuracy, AULC, paired tests, cost.

    python report.py runs/ sweeps/my_sweep --out reports/today [--targets 0.8 0.9 0.95] [--baseline random]

Every folder under the given paths that holds both config.json and rounds.csv is a run (loose runs,
``--experiment`` folders and sweep folders alike; an experiment folder itself has no rounds.csv and is
skipped). Runs are grouped by every config field except strategy, seed and the operational fields, so
runs with different noise, budgets or training settings are never averaged together. Only complete runs
whose group's complete runs end at the same labelled-set size enter the statistics; the others are
listed with their status. Written into --out:

- ``curve_<group>.png``: test accuracy against labelled images, mean ± standard error over seeds;
- ``labels_needed.csv``: labels needed to reach each target accuracy (mean, min–max, k of n seeds);
- ``aulc.csv``: area under the learning curve, normalised by the labelled-set span (1 = perfect);
- ``paired.csv``: each strategy minus the baseline on the same seeds (final accuracy and AULC), with a
  Wilcoxon signed-rank test (6 pairs or more) or a paired t-test (3 to 5), Holm-corrected per group;
- ``cost.csv``: median seconds per round of training and of querying;
- with label noise in any run: ``label_noise.csv`` and ``label_noise.png``, final test accuracy against
  the corrupted labels of the final labelled set (count and fraction), per group and strategy;
- ``curves.csv``, ``runs.csv``, and ``report.md``, which links and shows all of them.

Exit codes: 0 written (the path of report.md is printed), 2 bad input (one ``error:`` line on stderr).
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
import warnings
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy import integrate, stats

from config import DEFAULT_CONFIG, OPERATIONAL_FIELDS
from results import mean_sem, read_rounds, run_status

DEFAULT_TARGETS = (0.80, 0.90, 0.95)
ALPHA = 0.05  # significance level of the Holm-corrected p-values
MIN_PAIRS = 3  # fewer pairs of seeds: no test at all ("too few seeds")
WILCOXON_MIN_PAIRS = 6  # this many pairs or more: Wilcoxon signed-rank; fewer: paired t-test
NOT_GROUPING = OPERATIONAL_FIELDS | {"strategy", "seed"}
NAME_FIELDS = ("dataset", "model", "noise", "noise_rate")  # always in a group's name
SETTING_FIELDS = ("n_init_labeled", "n_query", "n_round", "epochs")  # shown under each group's heading
METRICS = {"final test acc": "final_test_acc", "AULC": "aulc"}
PAIRED_COLUMNS = ["group", "strategy", "baseline", "metric", "n_pairs", "seeds", "mean_diff", "sem_diff",
                  "test", "p", "p_holm", "significant"]
TOO_FEW = "none (too few seeds)"


class ReportError(ValueError):
    """A user-facing problem with the input (reported as one line, exit code 2)."""


# ---------------------------------------------------------------------------------------------- reading

def find_runs(paths) -> list:
    """Run folders (config.json and rounds.csv side by side) anywhere under ``paths``, sorted, no repeats."""
    found = {}
    for root in map(Path, paths):
        if not root.exists():
            raise ReportError(f"{root} does not exist")
        for rounds in sorted(root.rglob("rounds.csv")):
            if (rounds.parent / "config.json").is_file():
                found.setdefault(rounds.parent.resolve(), rounds.parent)
    if not found:
        raise ReportError(f"no run folders (config.json with rounds.csv) under {' '.join(map(str, paths))}")
    return sorted(found.values())


def load_runs(folders) -> pd.DataFrame:
    """One row per run: its config fields, status, group, rounds finished, final metrics, AULC and
    whether it enters the statistics (``included``, with the reason in ``note`` when it does not)."""
    rows = []
    for folder in folders:
        try:
            config = {**DEFAULT_CONFIG, **json.loads((Path(folder) / "config.json").read_text())}
            rounds = read_rounds(folder).sort_values("n_labeled")
        except (OSError, ValueError) as err:
            raise ReportError(f"cannot read run folder {folder}: {err}") from None
        last = rounds.iloc[-1] if len(rounds) else {}
        rows.append({**config, "run": str(folder), "status": run_status(folder), "group_key": group_key(config),
                     "n_rounds": len(rounds), "final_n_labeled": last.get("n_labeled", math.nan),
                     "final_test_acc": last.get("test_acc", math.nan),
                     "final_n_corrupted": last.get("n_corrupted", math.nan),  # older runs: no column
                     "aulc": aulc(rounds["n_labeled"], rounds["test_acc"])})
    runs = pd.DataFrame(rows)
    runs["group"] = runs["group_key"].map(group_names(runs["group_key"]))
    return mark_included(runs.sort_values(["group", "strategy", "seed", "run"], ignore_index=True))


def load_rounds(runs: pd.DataFrame) -> pd.DataFrame:
    """rounds.csv of the given runs, one row per finished round, with run, group, strategy and seed."""
    frames = [read_rounds(r.run).assign(run=r.run, group=r.group, strategy=r.strategy, seed=r.seed)
              for r in runs.itertuples()]
    if not frames:
        return pd.DataFrame(columns=["run", "group", "strategy", "seed", "n_labeled", "test_acc"])
    return pd.concat(frames, ignore_index=True)


NOISE_PARAMETERS = ("noise_rate", "noise_std", "sp_fraction")
LABEL_NOISE_FIELDS = ("label_noise", "label_noise_rate", "label_noise_initial")


def has_label_noise(config) -> bool:
    """Whether the oracle of a run (a config dict or a runs row) gave wrong labels."""
    return config.get("label_noise", "none") != "none" and (config.get("label_noise_rate") or 0) > 0


def group_key(config: dict) -> str:
    """What must be equal for runs to be compared: every field but strategy, seed and operational ones.

    Without noise, the noise parameters change nothing, so they do not split groups; the same for label
    noise (clean labels: no label_noise fields in the key)."""
    noiseless = config.get("noise", "none") == "none"
    clean = not has_label_noise(config)
    return json.dumps({k: v for k, v in config.items()
                       if k not in NOT_GROUPING and not (noiseless and k in NOISE_PARAMETERS)
                       and not (clean and k in LABEL_NOISE_FIELDS)}, sort_keys=True)


def group_names(keys) -> dict:
    """A readable, unique name per group key: dataset, model, noise, label noise (when any group has
    some, e.g. "labels symmetric 0.2" or "clean labels"), then the other fields that vary."""
    configs = {key: json.loads(key) for key in pd.unique(pd.Series(keys))}
    fields = sorted({f for c in configs.values() for f in c} - set(NAME_FIELDS) - set(LABEL_NOISE_FIELDS))
    varying = [f for f in fields if len({json.dumps(c[f]) for c in configs.values() if f in c}) > 1]
    label_noises = {json.dumps([c.get(f) for f in LABEL_NOISE_FIELDS]) for c in configs.values()}
    any_label_noise = any(has_label_noise(c) for c in configs.values())
    names = {}
    for key, c in configs.items():
        noise = c.get("noise", "none")
        rate = c.get("noise_rate") or 0
        parts = [str(c.get("dataset")), str(c.get("model")),
                 f"{noise} {rate:g}" if rate and noise != "none" else "no noise"]
        if any_label_noise and len(label_noises) > 1:
            parts.append(_label_noise_name(c))
        names[key] = ", ".join(parts + [f"{f}={c[f]}" for f in varying if f in c])
    return names


def _label_noise_name(config: dict) -> str:
    if not has_label_noise(config):
        return "clean labels"
    initial = " incl. initial set" if config.get("label_noise_initial") else ""
    return f"labels {config['label_noise']} {config['label_noise_rate']:g}{initial}"


def mark_included(runs: pd.DataFrame) -> pd.DataFrame:
    """``included``: complete, ending where most complete runs of its group end, first of its strategy and
    seed. ``note`` says why a run is left out of the statistics."""
    runs = runs.copy()
    runs["included"] = runs["status"] == "complete"
    runs["note"] = np.where(runs["included"], "", "status " + runs["status"] + ": not in the statistics")
    for _, g in runs[runs["included"]].groupby("group"):
        ends = g.groupby(["n_rounds", "final_n_labeled"], dropna=False).size()
        n_rounds, final = ends[ends == ends.max()].index.max()  # most common end; ties: the longest
        short = g.index[(g["n_rounds"] != n_rounds) | (g["final_n_labeled"] != final)]
        runs.loc[short, "included"] = False
        runs.loc[short, "note"] = f"ends elsewhere than the group's {n_rounds} rounds / {final:g} labels"
    kept = runs[runs["included"]]
    repeated = kept.index[kept.duplicated(["group", "strategy", "seed"])]
    runs.loc[repeated, "included"] = False
    runs.loc[repeated, "note"] = "repeats the strategy and seed of an earlier run folder"
    return runs


# ------------------------------------------------------------------------------------------- statistics

def aulc(n_labeled, test_acc) -> float:
    """Area under test accuracy against labelled images (trapezoid) over the labelled-set span:
    1 for a perfect classifier, NaN for a curve with a single size."""
    curve = pd.DataFrame({"n": n_labeled, "acc": test_acc}).sort_values("n")
    span = curve["n"].max() - curve["n"].min() if len(curve) else 0
    if not span > 0:
        return math.nan
    return float(integrate.trapezoid(curve["acc"], curve["n"]) / span)


def labels_needed(rounds: pd.DataFrame, target: float, by=("strategy", "seed")) -> pd.Series:
    """Per ``by`` (a run): the smallest labelled-set size whose test accuracy is ≥ target (NaN if never)."""
    by = list(by)
    first = rounds[rounds["test_acc"] >= target].groupby(by)["n_labeled"].min()
    every = rounds.groupby(by)["n_labeled"].max() * math.nan
    return first.combine_first(every)


def reach_text(per_seed: pd.Series) -> str:
    """"mean (min–max)" over the seeds that reach a target, ", k of n seeds" if not all, or "not reached"."""
    got = per_seed.dropna()
    if got.empty:
        return "not reached"
    text = f"{got.mean():.0f} ({got.min():.0f}–{got.max():.0f})"
    if len(got) < len(per_seed):
        text += f", {len(got)} of {len(per_seed)} seeds"
    return text


def labels_table(rounds: pd.DataFrame, targets) -> pd.DataFrame:
    """Per group, strategy and target: seeds, seeds that reach it, mean/min/max labels and the text."""
    rows = []
    for target in targets:
        needed = labels_needed(rounds, target, by=["group", "strategy", "seed"])
        for (group, strategy), per_seed in needed.groupby(level=["group", "strategy"], sort=False):
            got = per_seed.dropna()
            rows.append({"group": group, "strategy": strategy, "target": target, "n_seeds": len(per_seed),
                         "n_reached": len(got), "mean": got.mean(), "min": got.min(), "max": got.max(),
                         "text": reach_text(per_seed)})
    return pd.DataFrame(rows, columns=["group", "strategy", "target", "n_seeds", "n_reached", "mean", "min",
                                       "max", "text"])


def curves_table(rounds: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard error of test accuracy over seeds at each labelled-set size."""
    acc = rounds.groupby(["group", "strategy", "n_labeled"])["test_acc"]
    table = acc.agg(n_seeds="count", test_acc_mean="mean", test_acc_sem="sem")
    return table.reset_index()


def aulc_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per group and strategy: seeds, AULC and final test accuracy, mean and standard error."""
    rows = []
    for (group, strategy), g in runs.groupby(["group", "strategy"], sort=False):
        aulc_mean, aulc_sem = mean_sem(g["aulc"])
        acc_mean, acc_sem = mean_sem(g["final_test_acc"])
        rows.append({"group": group, "strategy": strategy, "n_seeds": len(g), "aulc_mean": aulc_mean,
                     "aulc_sem": aulc_sem, "final_test_acc_mean": acc_mean, "final_test_acc_sem": acc_sem})
    return pd.DataFrame(rows, columns=["group", "strategy", "n_seeds", "aulc_mean", "aulc_sem",
                                       "final_test_acc_mean", "final_test_acc_sem"])


def cost_table(rounds: pd.DataFrame) -> pd.DataFrame:
    """Median seconds per round of training (all rounds) and of querying (rounds that scored the pool)."""
    rows = []
    for (group, strategy), g in rounds.groupby(["group", "strategy"], sort=False):
        queried = g[g["n_scored"] > 0]
        rows.append({"group": group, "strategy": strategy, "n_runs": g["run"].nunique(),
                     "median_train_s": g["train_s"].median(), "median_query_s": queried["query_s"].median(),
                     "train_rounds": len(g), "query_rounds": len(queried)})
    return pd.DataFrame(rows, columns=["group", "strategy", "n_runs", "median_train_s", "median_query_s",
                                       "train_rounds", "query_rounds"])


def label_noise_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per group and strategy: final test accuracy against the corrupted labels of the final labelled set
    (count and fraction of it), mean and standard error over seeds."""
    rows = []
    for (group, strategy), g in runs.groupby(["group", "strategy"], sort=False):
        first = g.iloc[0]
        fraction = g["final_n_corrupted"] / g["final_n_labeled"]
        acc_mean, acc_sem = mean_sem(g["final_test_acc"])
        rows.append({"group": group, "strategy": strategy,
                     "label_noise": first["label_noise"] if has_label_noise(first) else "none",
                     "label_noise_rate": first["label_noise_rate"] if has_label_noise(first) else 0.0,
                     "n_seeds": len(g), "final_n_labeled": g["final_n_labeled"].mean(),
                     "n_corrupted_mean": g["final_n_corrupted"].mean(), "corrupted_fraction_mean": fraction.mean(),
                     "final_test_acc_mean": acc_mean, "final_test_acc_sem": acc_sem})
    return pd.DataFrame(rows, columns=LABEL_NOISE_COLUMNS)


LABEL_NOISE_COLUMNS = ["group", "strategy", "label_noise", "label_noise_rate", "n_seeds", "final_n_labeled",
                       "n_corrupted_mean", "corrupted_fraction_mean", "final_test_acc_mean", "final_test_acc_sem"]


def paired_test(x, y) -> tuple:
    """(test name, two-sided p) for paired samples: none below MIN_PAIRS pairs, Wilcoxon signed-rank from
    WILCOXON_MIN_PAIRS, a paired t-test in between. NaN p when the test gives none (e.g. no variation)."""
    n = len(x)
    if n < MIN_PAIRS:
        return TOO_FEW, math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # identical pairs: scipy warns and returns NaN
        if n >= WILCOXON_MIN_PAIRS:
            return "Wilcoxon signed-rank", float(stats.wilcoxon(x, y).pvalue)
        return "paired t-test", float(stats.ttest_rel(x, y).pvalue)


def holm(pvalues) -> np.ndarray:
    """Holm step-down adjusted p-values, in the input order; NaN entries are not tests and stay NaN."""
    p = np.asarray(pvalues, dtype=float)
    adjusted = np.full(p.shape, math.nan)
    tested = np.flatnonzero(~np.isnan(p))
    order = tested[np.argsort(p[tested], kind="stable")]
    m = len(order)
    steps = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted[order] = np.maximum.accumulate(steps) if m else steps
    return adjusted


def paired_tests(runs: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Each strategy against the baseline on the seeds both have, per group and metric (strategy minus
    baseline), with the Holm correction across the strategies of a group, per metric."""
    rows = []
    for group, g in runs.groupby("group"):
        base = g[g["strategy"] == baseline].set_index("seed")
        if base.empty:
            continue
        for strategy in ordered_strategies(g["strategy"], baseline)[1:]:
            other = g[g["strategy"] == strategy].set_index("seed")
            seeds = sorted(set(base.index) & set(other.index))
            for metric, column in METRICS.items():
                x = other.loc[seeds, column].to_numpy(float)
                y = base.loc[seeds, column].to_numpy(float)
                mean, sem = mean_sem(x - y) if seeds else (math.nan, math.nan)
                test, p = paired_test(x, y)
                rows.append({"group": group, "strategy": strategy, "baseline": baseline, "metric": metric,
                             "n_pairs": len(seeds), "seeds": " ".join(map(str, seeds)), "mean_diff": mean,
                             "sem_diff": sem, "test": test, "p": p})
    table = pd.DataFrame(rows, columns=PAIRED_COLUMNS)
    table["p_holm"] = table.groupby(["group", "metric"])["p"].transform(holm) if rows else []
    table["significant"] = table["p_holm"] < ALPHA
    return table


def ordered_strategies(strategies, baseline: str) -> list:
    """The baseline first (when present), then the others alphabetically."""
    present = sorted(set(strategies))
    return ([baseline] if baseline in present else []) + [s for s in present if s != baseline]


# -------------------------------------------------------------------------------------------- writing

def plot_curves(curves: pd.DataFrame, title: str, path: Path, colors: dict, baseline: str) -> None:
    """One learning-curve PNG: a line per strategy with a mean ± standard-error band (Agg, no display)."""
    fig = Figure(figsize=(6.4, 4.4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for strategy in ordered_strategies(curves["strategy"], baseline):
        c = curves[curves["strategy"] == strategy].sort_values("n_labeled")
        mean, sem = c["test_acc_mean"], c["test_acc_sem"]
        ax.plot(c["n_labeled"], mean, marker="o", markersize=3, color=colors[strategy],
                label=f"{strategy} ({c['n_seeds'].max()} seeds)")
        ax.fill_between(c["n_labeled"], mean - sem, mean + sem, color=colors[strategy], alpha=0.2, linewidth=0)
    ax.set_xlabel("labelled images")
    ax.set_ylabel("test accuracy (mean ± s.e. over seeds)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=120, bbox_inches="tight")


def plot_label_noise(table: pd.DataFrame, path: Path, colors: dict, baseline: str) -> None:
    """Final test accuracy (mean ± s.e. over seeds) against the fraction of corrupted labels in the final
    labelled set: one line per strategy through its groups, in order of that fraction."""
    fig = Figure(figsize=(6.4, 4.4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for strategy in ordered_strategies(table["strategy"], baseline):
        t = table[table["strategy"] == strategy].sort_values("corrupted_fraction_mean")
        ax.errorbar(t["corrupted_fraction_mean"], t["final_test_acc_mean"], yerr=t["final_test_acc_sem"].fillna(0),
                    marker="o", markersize=4, capsize=3, color=colors[strategy], label=strategy)
    ax.set_xlabel("corrupted labels in the final labelled set (fraction)")
    ax.set_ylabel("final test accuracy (mean ± s.e. over seeds)")
    ax.set_title("label noise", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=120, bbox_inches="tight")


def build_tables(runs: pd.DataFrame, rounds: pd.DataFrame, targets, baseline: str) -> dict:
    """Every table of the report, from the runs (all) and the rounds of the included runs."""
    used = runs[runs["included"]]
    tables = {"runs": runs, "curves": curves_table(rounds), "labels_needed": labels_table(rounds, targets),
              "aulc": aulc_table(used), "paired": paired_tests(used, baseline), "cost": cost_table(rounds)}
    if any(has_label_noise(r) for r in runs.to_dict("records")):
        tables["label_noise"] = label_noise_table(used)
    return tables


RUN_CSV_COLUMNS = ["group", "strategy", "seed", "status", "included", "note", "n_rounds", "final_n_labeled",
                   "final_test_acc", "aulc", "run"]


def write_report(runs: pd.DataFrame, out, targets=DEFAULT_TARGETS, baseline: str = "random",
                 sources=()) -> Path:
    """Write the PNGs, the CSVs and report.md into ``out``; returns the path of report.md."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ReportError(f"cannot create --out {out}: {err.strerror or err}") from None
    rounds = load_rounds(runs[runs["included"]])
    tables = build_tables(runs, rounds, targets, baseline)
    for name, table in tables.items():
        (table[RUN_CSV_COLUMNS] if name == "runs" else table).to_csv(out / f"{name}.csv", index=False)
    palette = matplotlib.colormaps["tab10"]
    colors = {s: palette(i % 10) for i, s in enumerate(ordered_strategies(runs["strategy"], baseline))}
    groups = sorted(runs["group"].unique())
    pngs = {}
    for group in groups:
        curves = tables["curves"][tables["curves"]["group"] == group]
        if len(curves):
            pngs[group] = f"curve_{_slug(group, set(pngs.values()))}.png"
            plot_curves(curves, group, out / pngs[group], colors, baseline)
    if "label_noise" in tables and len(tables["label_noise"]):
        plot_label_noise(tables["label_noise"], out / LABEL_NOISE_PNG, colors, baseline)
    text = markdown(tables, groups, pngs, targets, baseline, sources)
    (out / "report.md").write_text(text, encoding="utf-8")
    return out / "report.md"


LABEL_NOISE_PNG = "label_noise.png"


def _slug(name: str, taken: set) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "group"
    candidate, i = slug, 1
    while f"curve_{candidate}.png" in taken:
        i += 1
        candidate = f"{slug}_{i}"
    return candidate


# ------------------------------------------------------------------------------------------- Markdown

def markdown(tables: dict, groups: list, pngs: dict, targets, baseline: str, sources) -> str:
    """The whole report.md."""
    runs = tables["runs"]
    used = runs[runs["included"]]
    seeds = sorted(runs["seed"].unique())
    strategies = ordered_strategies(runs["strategy"], baseline)
    lines = ["# Active-learning report", "",
             f"Read {_plural(len(runs), 'run folder')}"
             + (f" under {', '.join(f'`{s}`' for s in sources)}" if sources else "")
             + f": {_plural(len(groups), 'group')}, {_plural(len(strategies), 'strategy', 'strategies')} "
             f"({', '.join(strategies)}), {_plural(len(seeds), 'seed')} ({', '.join(map(str, seeds))}). "
             f"Complete runs in the statistics: {len(used)}; left out: {len(runs) - len(used)} "
             "(see [Runs](#runs)).", "",
             "A group is a set of runs whose configurations differ only in strategy and seed. Statistics are "
             f"over seeds: mean ± standard error. Paired comparisons take each strategy minus `{baseline}` on "
             f"the seeds both have: a Wilcoxon signed-rank test with {WILCOXON_MIN_PAIRS} pairs or more, a paired "
             f"t-test with {MIN_PAIRS} to {WILCOXON_MIN_PAIRS - 1}, no test below {MIN_PAIRS} (too few seeds to "
             "conclude anything); p-values are Holm-corrected across the strategies of a group, per metric, "
             f"and called significant below {ALPHA}. AULC is the area under test accuracy against labelled "
             "images divided by the labelled-set span (1 = a perfect classifier).", ""]
    for i, group in enumerate(groups, 1):
        lines += group_section(i, group, tables, pngs.get(group), targets, baseline)
    noise_png = "label_noise" in tables and len(tables["label_noise"]) > 0
    if "label_noise" in tables:
        lines += label_noise_section(tables["label_noise"], noise_png)
    lines += ["## Runs", "", _md(_runs_display(runs)), "", "## Files", "",
              *[f"- [{name}.csv]({name}.csv)" for name in tables],
              *[f"- [{png}]({png})" for png in [*pngs.values(), *([LABEL_NOISE_PNG] if noise_png else [])]], ""]
    return "\n".join(lines)


def label_noise_section(table: pd.DataFrame, png: bool) -> list:
    """Final test accuracy against the corrupted labels the final model trained on, across groups."""
    lines = ["## Label noise", "",
             "Final test accuracy (on the clean test labels) against the corrupted labels of the final labelled "
             "set: their mean count and fraction over seeds, per group and strategy.", ""]
    if png:
        lines += [f"![Final test accuracy against corrupted labels]({LABEL_NOISE_PNG})", ""]
    display = pd.DataFrame({"group": table["group"], "strategy": table["strategy"], "seeds": table["n_seeds"],
                            "corrupted labels": table["n_corrupted_mean"].map(lambda v: _num(v, ".1f")),
                            "of labelled": table["corrupted_fraction_mean"].map(lambda v: _num(v, ".3f")),
                            "final test acc": [_pm(m, s) for m, s in zip(table["final_test_acc_mean"],
                                                                          table["final_test_acc_sem"])]})
    return lines + [_md(display) if len(display) else "No complete runs.", ""]


def group_section(i: int, group: str, tables: dict, png: str | None, targets, baseline: str) -> list:
    """Heading, settings, conclusion, curve and tables of one group."""
    runs = tables["runs"][tables["runs"]["group"] == group]
    used = runs[runs["included"]]
    strategies = ordered_strategies(used["strategy"], baseline)
    order = {s: i for i, s in enumerate(strategies)}
    pick = {name: t[t["group"] == group].sort_values("strategy", key=lambda c: c.map(order), kind="stable")
            for name, t in tables.items() if name != "runs"}
    first = runs.iloc[0]
    settings = ", ".join(f"{f} {first[f]}" for f in SETTING_FIELDS if f in runs)
    lines = [f"## {i}. {group}", "", f"Settings: {settings}. Runs in the statistics: "
             + ("; ".join(f"{s}: seeds {', '.join(map(str, sorted(used[used.strategy == s].seed)))}"
                          for s in strategies) or "none")
             + (f". Left out: {len(runs) - len(used)} (see [Runs](#runs))." if len(used) < len(runs) else "."), ""]
    if used.empty:
        return lines + ["No complete runs in this group: nothing to report.", ""]
    lines += ["Conclusion:", "", *[f"- {c}" for c in conclusions(pick, strategies, targets, baseline)], ""]
    if png:
        lines += [f"![Learning curves: {group}]({png})", ""]
    lines += ["Labels needed to reach a test accuracy: mean over the seeds that reach it (min–max):", "",
              _md(_labels_display(pick["labels_needed"], strategies, targets)), "",
              "Area under the learning curve and final test accuracy (mean ± s.e. over seeds):", "",
              _md(_aulc_display(pick["aulc"])), ""]
    lines += _paired_lines(pick["paired"], baseline)
    lines += ["Cost: median seconds per round (querying: rounds that scored the pool):", "",
              _md(_cost_display(pick["cost"])), ""]
    return lines


def conclusions(pick: dict, strategies: list, targets, baseline: str) -> list:
    """One plain-language line per strategy compared with the baseline."""
    if baseline not in strategies:
        return [f"no complete `{baseline}` runs in this group: no comparison with the baseline."]
    if len(strategies) == 1:
        return [f"only `{baseline}` ran in this group: nothing to compare it with."]
    labels, paired = pick["labels_needed"], pick["paired"]
    return [f"{_labels_clause(labels, s, targets, baseline)}; {_final_clause(paired, s, baseline)}."
            for s in strategies[1:]]


def _labels_clause(labels: pd.DataFrame, strategy: str, targets, baseline: str) -> str:
    rows = {(r.strategy, r.target): r for r in labels.itertuples()}
    both = [t for t in sorted(targets, reverse=True)
            if all(rows[s, t].n_reached == rows[s, t].n_seeds for s in (strategy, baseline))]
    if not both:
        t = min(targets)
        a, b = rows[strategy, t], rows[baseline, t]
        return (f"neither {strategy} nor {baseline} reaches {_pct(t)} test accuracy in every seed "
                f"({strategy}: {a.n_reached} of {a.n_seeds} seeds, {baseline}: {b.n_reached} of {b.n_seeds})")
    t = both[0]
    a, b = rows[strategy, t].mean, rows[baseline, t].mean
    verb = "fewer labels than" if a < b else "more labels than" if a > b else "as many labels as"
    return f"{strategy} needs {verb} {baseline} to reach {_pct(t)} test accuracy (mean {a:.0f} vs {b:.0f})"


def _final_clause(paired: pd.DataFrame, strategy: str, baseline: str) -> str:
    row = paired[(paired["strategy"] == strategy) & (paired["metric"] == "final test acc")].iloc[0]
    diff = f"{row.mean_diff:+.3f}" if row.n_pairs else "no pairs"
    if row.n_pairs < MIN_PAIRS:
        return (f"too few seeds to test the difference in final accuracy ({_plural(row.n_pairs, 'pair')} "
                f"with {baseline}; {diff}): no conclusion")
    if math.isnan(row.p_holm):
        return f"the difference in final accuracy ({diff}) cannot be tested: the {row.test} gives no p-value"
    return (f"the difference in final accuracy ({diff}, {row.n_pairs} pairs, {row.test}) is "
            f"{'' if row.significant else 'not '}significant after Holm correction (p = {row.p_holm:.3g})")


def _paired_lines(paired: pd.DataFrame, baseline: str) -> list:
    head = f"Paired with `{baseline}` on the same seeds (difference = strategy − {baseline}):"
    if paired.empty:
        return [head + " no comparison (no other strategy, or no baseline runs).", ""]
    lines = [head, "", _md(_paired_display(paired)), ""]
    if (paired["n_pairs"] < MIN_PAIRS).all():
        lines += [f"Too few seeds to conclude anything: every comparison has fewer than {MIN_PAIRS} pairs, "
                  "so no test was run.", ""]
    return lines


def _runs_display(runs: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"group": runs["group"], "strategy": runs["strategy"], "seed": runs["seed"],
                         "status": runs["status"], "in statistics": runs["included"].map({True: "yes",
                                                                                         False: "no"}),
                         "note": runs["note"], "rounds": runs["n_rounds"],
                         "final labels": runs["final_n_labeled"].map(_num),
                         "final test acc": runs["final_test_acc"].map(lambda v: _num(v, ".3f")),
                         "folder": "`" + runs["run"] + "`"})


def _labels_display(labels: pd.DataFrame, strategies: list, targets) -> pd.DataFrame:
    wide = labels.pivot(index="strategy", columns="target", values="text").reindex(strategies)
    return wide.reset_index().rename(columns={t: f"labels to {_pct(t)}" for t in targets})


def _aulc_display(aulc: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"strategy": aulc["strategy"], "seeds": aulc["n_seeds"],
                         "AULC": [_pm(m, s) for m, s in zip(aulc["aulc_mean"], aulc["aulc_sem"])],
                         "final test acc": [_pm(m, s) for m, s in zip(aulc["final_test_acc_mean"],
                                                                       aulc["final_test_acc_sem"])]})


def _paired_display(paired: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"strategy": paired["strategy"], "metric": paired["metric"], "pairs": paired["n_pairs"],
                         "mean difference": [_pm(m, s, "+.3f") for m, s in zip(paired["mean_diff"],
                                                                               paired["sem_diff"])],
                         "test": paired["test"], "p": paired["p"].map(lambda v: _num(v, ".3g")),
                         "p (Holm)": paired["p_holm"].map(lambda v: _num(v, ".3g")),
                         "significant": [("yes" if sig else "no") if not math.isnan(p) else "–"
                                         for sig, p in zip(paired["significant"], paired["p_holm"])]})


def _cost_display(cost: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"strategy": cost["strategy"], "runs": cost["n_runs"],
                         "train s / round": cost["median_train_s"].map(lambda v: _num(v, ".3g")),
                         "query s / round": cost["median_query_s"].map(lambda v: _num(v, ".3g"))})


def _md(df: pd.DataFrame) -> str:
    """A Markdown table of a small DataFrame whose cells are already formatted."""
    def cell(v):
        return str(v).replace("|", "\\|")
    lines = ["| " + " | ".join(map(cell, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def _num(value, fmt: str = ".0f") -> str:
    return "–" if value is None or pd.isna(value) else format(value, fmt)


def _pm(mean, sem, fmt: str = ".3f") -> str:
    if pd.isna(mean):
        return "–"
    return format(mean, fmt) + ("" if pd.isna(sem) else f" ± {sem:.3f}")


def _plural(n: int, noun: str, plural: str = "") -> str:
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def _pct(target: float) -> str:
    return f"{target * 100:g}%"


# ------------------------------------------------------------------------------------------ command line

class _OneLineParser(argparse.ArgumentParser):
    def error(self, message):  # noqa: D102 - argparse hook: a usage error is one line, exit code 2
        raise ReportError(f"{message} (see --help)")


def parse_args(argv=None) -> argparse.Namespace:
    p = _OneLineParser(description=__doc__.splitlines()[0])
    p.add_argument("paths", nargs="+", metavar="RUNS_OR_SWEEP_FOLDER", help="folders searched for run folders")
    p.add_argument("--out", required=True, help="folder the report is written to")
    p.add_argument("--targets", nargs="+", type=float, default=list(DEFAULT_TARGETS),
                   help="test accuracies for the labels-needed table")
    p.add_argument("--baseline", default="random", help="strategy the others are compared with")
    args = p.parse_args(argv)
    bad = [t for t in args.targets if not 0 < t <= 1]
    if bad:
        raise ReportError(f"--targets must be in (0, 1], got {' '.join(map(str, bad))}")
    return args


def main(argv=None) -> int:
    try:
        args = parse_args(argv)
        runs = load_runs(find_runs(args.paths))
        path = write_report(runs, args.out, args.targets, args.baseline, args.paths)
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
