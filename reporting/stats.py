"""The report's statistics: labels needed, AULC, paired tests with Holm, the tables, aggregation across seeds."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
from scipy import integrate, stats

from config import STABLE_KAPPA  # the report's stopping point: the first round whose kappa reaches it
from results import TIMING_COLUMNS

DEFAULT_TARGETS = (0.80, 0.90, 0.95)
DEFAULT_AT = (100, 300)  # report.py --at: labelled-set sizes of the --map panels and the --versus comparisons
ALPHA = 0.05  # significance level of the Holm-corrected p-values
MIN_PAIRS = 3  # fewer pairs of seeds: no test at all ("too few seeds")
WILCOXON_MIN_PAIRS = 6  # this many pairs or more: Wilcoxon signed-rank; fewer: paired t-test
METRICS = {"final test acc": "final_test_acc", "AULC": "aulc"}
# report.py --versus: the same and the final accuracy on clean and on noisy test images (NaN without noise)
VERSUS_METRICS = {**METRICS, "final clean test acc": "final_test_acc_clean",
                  "final noisy test acc": "final_test_acc_noisy"}
VERSUS_COLUMNS = ["setting", "strategy", "variant", "baseline_variant", "metric", "n_pairs", "seeds", "mean_diff",
                  "sem_diff", "test", "p", "p_holm", "significant"]
PAIRED_COLUMNS = ["group", "strategy", "baseline", "metric", "n_pairs", "seeds", "mean_diff", "sem_diff",
                  "test", "p", "p_holm", "significant"]
TOO_FEW = "none (too few seeds)"
LABEL_NOISE_COLUMNS = ["group", "strategy", "label_noise", "label_noise_rate", "n_seeds", "final_n_labeled",
                       "n_corrupted_mean", "corrupted_fraction_mean", "final_test_acc_mean", "final_test_acc_sem"]
NOISY_COLUMNS = ["group", "strategy", "n_seeds", "noisy_query_fraction_mean", "noisy_query_fraction_sem",
                 "pool_noisy_fraction", "final_test_acc_clean_mean", "final_test_acc_clean_sem",
                 "final_test_acc_noisy_mean", "final_test_acc_noisy_sem"]
# report.py --map FIELD: each strategy minus the baseline at a labelled-set size, per value of FIELD
MAP_COLUMNS = ["setting", "field", "value", "strategy", "baseline", "n_labeled", "n_pairs", "seeds", "mean_diff",
               "sem_diff", "test", "p", "p_holm", "significant"]
STOPPING_COLUMNS = ["group", "strategy", "threshold", "n_seeds", "n_reached", "n_stopped", "labels_mean",
                    "labels_min", "labels_max", "labels_text", "test_acc_mean", "test_acc_sem"]


def mean_sem(values) -> tuple:
    """Mean and standard error of the mean (NaN error for a single value)."""
    values = [float(v) for v in values]
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, float("nan")
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def aggregate_runs(frames: list) -> tuple:
    """(per-round mean and standard error across runs, one row per run with its final round), from each
    run's rounds with its ``run`` and ``seed`` columns (reporting.load.seeded_rounds).

    Only rounds that every run finished are aggregated, so a crashed seed cannot shift the curve.
    """
    runs = pd.concat(frames, ignore_index=True)
    common = runs.groupby("round")["run"].nunique()
    runs_complete = runs[runs["round"].isin(common[common == len(frames)].index)]
    metrics = ["n_labeled", "val_acc", "test_acc", "test_error", *TIMING_COLUMNS]
    grouped = runs_complete.groupby("round")[metrics]
    per_round = grouped.mean().add_suffix("_mean").join(grouped.sem(ddof=1).add_suffix("_sem"))
    per_round.insert(0, "n_runs", len(frames))
    finals = runs.sort_values("round").groupby("run").tail(1).reset_index(drop=True)
    return per_round.reset_index(), finals


def has_input_noise(config) -> bool:
    """Whether a run's images (a config dict or a runs row) carry input noise."""
    return config.get("noise", "none") != "none" and (config.get("noise_rate") or 0) > 0


def noisy_query_fraction(rounds: pd.DataFrame, n_query: int) -> float:
    """The fraction of a run's queried images whose input carries noise: its rounds' n_noisy over the
    --n_query images of each round that queried; NaN for a run from before n_noisy, or without queries."""
    queried = rounds[rounds["n_scored"] > 0]
    if "n_noisy" not in rounds or queried.empty or queried["n_noisy"].isna().any():
        return math.nan
    return float(queried["n_noisy"].sum() / (n_query * len(queried)))


def first_stable(rounds: pd.DataFrame, threshold: float = STABLE_KAPPA) -> tuple:
    """(labels, test accuracy) of a run's first round whose stop_kappa is ≥ threshold; NaNs if none is."""
    if "stop_kappa" not in rounds:
        return math.nan, math.nan
    stable = rounds[rounds["stop_kappa"] >= threshold].sort_values("round")
    if stable.empty:
        return math.nan, math.nan
    return float(stable["n_labeled"].iloc[0]), float(stable["test_acc"].iloc[0])


def has_label_noise(config) -> bool:
    """Whether the oracle of a run (a config dict or a runs row) gave wrong labels."""
    return config.get("label_noise", "none") != "none" and (config.get("label_noise_rate") or 0) > 0


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


def noisy_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per group with input noise and strategy: the fraction of queried images that were noisy (mean and
    standard error over the seeds that recorded it) against the pool's fraction (mean over those seeds), and
    the final test accuracy on the clean and on the noisy test images (mean and standard error over the
    seeds that recorded them)."""
    rows = []
    for (group, strategy), g in runs.groupby(["group", "strategy"], sort=False):
        if not has_input_noise(g.iloc[0]):
            continue
        known = g["noisy_query_fraction"].dropna()
        mean, sem = mean_sem(known) if len(known) else (math.nan, math.nan)
        row = {"group": group, "strategy": strategy, "n_seeds": len(known), "noisy_query_fraction_mean": mean,
               "noisy_query_fraction_sem": sem, "pool_noisy_fraction": g["pool_noisy_fraction"].mean()}
        for part in ("clean", "noisy"):
            values = g[f"final_test_acc_{part}"].dropna()
            row[f"final_test_acc_{part}_mean"], row[f"final_test_acc_{part}_sem"] = (
                mean_sem(values) if len(values) else (math.nan, math.nan))
        rows.append(row)
    return pd.DataFrame(rows, columns=NOISY_COLUMNS)


def stopping_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per group and strategy, over the seeds that recorded stop_kappa: the labels at which it first reached
    the threshold (mean, min, max and the text "mean (min–max), k of n seeds") and the test accuracy there.

    The threshold is the group's --stop_when_stable when it has one (where those runs stopped; ``n_stopped``
    counts the runs it ended before their last planned round), else STABLE_KAPPA.
    """
    rows = []
    for (group, strategy), g in runs[runs["kappa_recorded"]].groupby(["group", "strategy"], sort=False):
        reached = g.dropna(subset=["stable_n_labeled"])
        acc_mean, acc_sem = mean_sem(reached["stable_test_acc"]) if len(reached) else (math.nan, math.nan)
        rows.append({"group": group, "strategy": strategy, "threshold": g["stop_when_stable"].iloc[0] or STABLE_KAPPA,
                     "n_seeds": len(g), "n_reached": len(reached), "n_stopped": int(g["stopped_early"].sum()),
                     "labels_mean": reached["stable_n_labeled"].mean(), "labels_min": reached["stable_n_labeled"].min(),
                     "labels_max": reached["stable_n_labeled"].max(), "labels_text": reach_text(g["stable_n_labeled"]),
                     "test_acc_mean": acc_mean, "test_acc_sem": acc_sem})
    return pd.DataFrame(rows, columns=STOPPING_COLUMNS)


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
            rows += _pairs(other, base, METRICS, group=group, strategy=strategy, baseline=baseline)
    return _corrected(pd.DataFrame(rows, columns=PAIRED_COLUMNS), ["group", "metric"])


def versus_tests(runs: pd.DataFrame, at=()) -> pd.DataFrame:
    """report.py --versus: within each setting (reporting.load.mark_versus) and strategy, each variant minus the
    first in sorted order on the seeds both have, per metric (VERSUS_METRICS, and the test accuracy at each
    labelled-set size of ``at``, from ``test_acc_at_N`` columns: add_accuracy_at; a metric no run recorded is
    left out), Holm-corrected across the strategies and variants of a setting, per metric."""
    all_metrics = {**VERSUS_METRICS, **{f"test acc at {n} labels": f"test_acc_at_{n}" for n in at}}
    rows = []
    for (setting, strategy), g in runs.groupby(["setting", "strategy"], sort=True):
        variants = sorted(g["variant"].unique())
        base = g[g["variant"] == variants[0]].set_index("seed")
        for variant in variants[1:]:
            other = g[g["variant"] == variant].set_index("seed")
            metrics = {m: c for m, c in all_metrics.items() if other[c].notna().any() or base[c].notna().any()}
            rows += _pairs(other, base, metrics, setting=setting, strategy=strategy, variant=variant,
                           baseline_variant=variants[0])
    return _corrected(pd.DataFrame(rows, columns=VERSUS_COLUMNS), ["setting", "metric"])


def add_accuracy_at(runs: pd.DataFrame, rounds: pd.DataFrame, at) -> pd.DataFrame:
    """``runs`` with a ``test_acc_at_N`` column per size N of ``at``: the run's test accuracy at the round with
    exactly N labelled images (NaN when it has none)."""
    acc = rounds.drop_duplicates(["run", "n_labeled"], keep="last").set_index(["run", "n_labeled"])["test_acc"]
    return runs.assign(**{f"test_acc_at_{n}": [acc.get((run, n), math.nan) for run in runs["run"]] for n in at})


def map_tests(runs: pd.DataFrame, rounds: pd.DataFrame, field: str, at, baseline: str) -> pd.DataFrame:
    """report.py --map FIELD: within each setting (the runs' configuration but FIELD, strategy and seed:
    reporting.load.mark_versus's ``setting``; FIELD's value is ``variant``), each strategy's test accuracy at
    each labelled-set size of ``at`` minus the baseline's on the seeds both reached it with, per value of
    FIELD; Holm-corrected across the strategies and values of a setting, per size. A run that has no round at
    exactly that size is not paired there."""
    rows = []
    for (setting, value), g in add_accuracy_at(runs, rounds, at).groupby(["setting", "variant"], sort=True):
        base = g[g["strategy"] == baseline]
        for strategy in ordered_strategies(g["strategy"], baseline)[1:]:
            other = g[g["strategy"] == strategy]
            for n in at:
                x = dict(zip(other["seed"], other[f"test_acc_at_{n}"]))
                y = dict(zip(base["seed"], base[f"test_acc_at_{n}"]))
                seeds = sorted(k for k in set(x) & set(y) if not (math.isnan(x[k]) or math.isnan(y[k])))
                xs, ys = np.array([x[k] for k in seeds]), np.array([y[k] for k in seeds])
                mean, sem = mean_sem(xs - ys) if seeds else (math.nan, math.nan)
                test, p = paired_test(xs, ys)
                rows.append({"setting": setting, "field": field, "value": value, "strategy": strategy,
                             "baseline": baseline, "n_labeled": n, "n_pairs": len(seeds),
                             "seeds": " ".join(map(str, seeds)), "mean_diff": mean, "sem_diff": sem, "test": test,
                             "p": p})
    return _corrected(pd.DataFrame(rows, columns=MAP_COLUMNS[:-2]), ["setting", "n_labeled"])


def _pairs(other: pd.DataFrame, base: pd.DataFrame, metrics: dict, **ids) -> list:
    """Rows of ``other`` minus ``base`` (both indexed by seed) on the seeds both have, one per metric."""
    seeds = sorted(set(base.index) & set(other.index))
    rows = []
    for metric, column in metrics.items():
        x = other.loc[seeds, column].to_numpy(float)
        y = base.loc[seeds, column].to_numpy(float)
        mean, sem = mean_sem(x - y) if seeds else (math.nan, math.nan)
        test, p = paired_test(x, y)
        rows.append({**ids, "metric": metric, "n_pairs": len(seeds), "seeds": " ".join(map(str, seeds)),
                     "mean_diff": mean, "sem_diff": sem, "test": test, "p": p})
    return rows


def _corrected(table: pd.DataFrame, family: list) -> pd.DataFrame:
    """``p_holm`` (Holm across each ``family`` of tests) and ``significant`` added to a table of tests."""
    table["p_holm"] = table.groupby(family)["p"].transform(holm) if len(table) else []
    table["significant"] = table["p_holm"] < ALPHA
    return table


def ordered_strategies(strategies, baseline: str) -> list:
    """The baseline first (when present), then the others alphabetically."""
    present = sorted(set(strategies))
    return ([baseline] if baseline in present else []) + [s for s in present if s != baseline]


def build_tables(runs: pd.DataFrame, rounds: pd.DataFrame, targets, baseline: str, at=()) -> dict:
    """Every table of the report, from the runs (all) and the rounds of the included runs; with ``setting`` and
    ``variant`` columns (report.py --versus), the variants' paired tests too."""
    used = runs[runs["included"]]
    tables = {"runs": runs, "curves": curves_table(rounds), "labels_needed": labels_table(rounds, targets),
              "aulc": aulc_table(used), "paired": paired_tests(used, baseline), "cost": cost_table(rounds)}
    if any(has_label_noise(r) for r in runs.to_dict("records")):
        tables["label_noise"] = label_noise_table(used)
    if any(has_input_noise(r) for r in runs.to_dict("records")) and runs["noisy_query_fraction"].notna().any():
        tables["noisy_queries"] = noisy_table(used)
    if runs["kappa_recorded"].any():
        tables["stopping"] = stopping_table(used)
    if "variant" in runs:
        tables["versus"] = versus_tests(add_accuracy_at(used, rounds, at), at)
    return tables
