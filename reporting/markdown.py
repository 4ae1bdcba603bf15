"""The report's Markdown: report.md's text, from the tables of reporting.stats."""
from __future__ import annotations

import math

import pandas as pd

from config import STABLE_KAPPA
from reporting.stats import ALPHA, MIN_PAIRS, WILCOXON_MIN_PAIRS, ordered_strategies

LABEL_NOISE_PNG = "label_noise.png"
SETTING_FIELDS = ("n_init_labeled", "n_query", "n_round", "epochs")  # shown under each group's heading


def markdown(tables: dict, groups: list, pngs: dict, targets, baseline: str, sources, map_pngs=None) -> str:
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
    if "versus" in tables:
        lines += versus_section(tables["versus"], strategies)
    noise_png = "label_noise" in tables and len(tables["label_noise"]) > 0
    if "label_noise" in tables:
        lines += label_noise_section(tables["label_noise"], noise_png)
    if "map" in tables:
        lines += map_section(tables["map"], map_pngs or {}, baseline)
    lines += ["## Runs", "", _md(_runs_display(runs)), "", "## Files", "",
              *[f"- [{name}.csv]({name}.csv)" for name in tables],
              *[f"- [{png}]({png})" for png in [*pngs.values(), *([LABEL_NOISE_PNG] if noise_png else []),
                                                *(map_pngs or {}).values()]], ""]
    return "\n".join(lines)


def versus_section(versus: pd.DataFrame, strategies: list) -> list:
    """report.py --versus: each variant minus the first, per setting and strategy, paired by seed."""
    lines = ["## Variants compared (--versus)", ""]
    if versus.empty:
        return lines + ["No setting holds runs of more than one variant with the same strategy: nothing to pair.", ""]
    order = {s: i for i, s in enumerate(strategies)}
    lines += ["Runs that differ only in the --versus fields, paired by strategy and seed: each variant minus the "
              "first (in sorted order), with p-values Holm-corrected across the strategies and variants of a "
              "setting, per metric.", ""]
    for setting, g in versus.groupby("setting", sort=True):
        g = g.sort_values("strategy", key=lambda c: c.map(order), kind="stable")
        lines += [f"### {setting}", "", _md(pd.DataFrame({
            "strategy": g["strategy"], "variant − baseline": g["variant"] + " − " + g["baseline_variant"],
            **_paired_display(g).drop(columns="strategy")})), ""]
    return lines


def map_section(table: pd.DataFrame, pngs: dict, baseline: str) -> list:
    """report.py --map FIELD: the strategy × FIELD picture of each setting and its numbers."""
    field = table["field"].iloc[0] if len(table) else "the field"
    lines = [f"## Strategy × {field} (--map)", ""]
    if table["n_pairs"].sum() == 0:
        return lines + [f"No strategy has seeds paired with `{baseline}` at these sizes: nothing to draw.", ""]
    lines += [f"Each strategy's test accuracy minus `{baseline}`'s at the same labelled-set size and value of "
              f"`{field}`, paired by seed (points; * where the Holm-corrected p, across the strategies and values "
              "of a setting at that size, is below 0.05).", ""]
    for setting, g in table.groupby("setting", sort=True):
        wide = g.assign(cell=[mean_pm(100 * m, 100 * e, ".1f") + ("*" if sig else "") if n else "–"
                              for m, e, sig, n in zip(g["mean_diff"], g["sem_diff"], g["significant"], g["n_pairs"])])
        wide = wide.pivot_table(index=["strategy", "n_labeled"], columns="value", values="cell", aggfunc="first")
        lines += [f"### {setting}", "", f"![strategy × {field}: {setting}]({pngs[setting]})", "",
                  _md(wide.reset_index().rename(columns={"n_labeled": "labels"})), ""]
    return lines


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
                            "final test acc": mean_pm_column(table, "final_test_acc")})
    return lines + [_md(display) if len(display) else "No complete runs.", ""]


def group_section(i: int, group: str, tables: dict, png: str | None, targets, baseline: str) -> list:
    """Heading, settings, conclusion, curve and tables of one group."""
    runs = tables["runs"][tables["runs"]["group"] == group]
    used = runs[runs["included"]]
    strategies = ordered_strategies(used["strategy"], baseline)
    order = {s: i for i, s in enumerate(strategies)}
    pick = {name: t[t["group"] == group].sort_values("strategy", key=lambda c: c.map(order), kind="stable")
            for name, t in tables.items() if name not in ("runs", "versus", "map")}
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
    stopped = used[used["stopped_early"]]
    if len(stopped):
        lines += [f"{_plural(len(stopped), 'run')} of {len(used)} ended early by --stop_when_stable: their final "
                  "test accuracy is at their stopping point with fewer labels, their AULC covers their shorter "
                  "curve, and the curve's later sizes hold fewer seeds. Read the stopping table below for "
                  "labels and accuracy where they stopped.", ""]
    lines += _paired_lines(pick["paired"], baseline)
    lines += ["Cost: median seconds per round (querying: rounds that scored the pool):", "",
              _md(_cost_display(pick["cost"])), ""]
    if len(pick.get("noisy_queries", ())):
        lines += ["Noisy images: the fraction of queried images whose input carries noise (mean ± s.e. over "
                  "seeds) against the pool's fraction, and the final test accuracy on the clean and on the noisy "
                  "test images:", "", _md(_noisy_display(pick["noisy_queries"])), ""]
    if len(pick.get("stopping", ())):
        stopping = pick["stopping"]
        threshold = stopping["threshold"].iloc[0]
        rule = (f" (the runs' --stop_when_stable: {int(stopping['n_stopped'].sum())} of "
                f"{int(stopping['n_seeds'].sum())} runs stopped there before their last planned round)"
                if threshold != STABLE_KAPPA or stopping["n_stopped"].any() else "")
        lines += [f"Stopping signal: labels at which `stop_kappa` (the agreement of consecutive rounds' predictions "
                  f"on a fixed set of pool images) first reached {threshold:g}{rule}, mean over the seeds that reach "
                  "it (min–max), and the test accuracy there (mean ± s.e.):", "",
                  _md(_stopping_display(stopping)), ""]
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
                         "AULC": mean_pm_column(aulc, "aulc"),
                         "final test acc": mean_pm_column(aulc, "final_test_acc")})


def _paired_display(paired: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"strategy": paired["strategy"], "metric": paired["metric"], "pairs": paired["n_pairs"],
                         "mean difference": [mean_pm(m, s, "+.3f") for m, s in zip(paired["mean_diff"],
                                                                               paired["sem_diff"])],
                         "test": paired["test"], "p": paired["p"].map(lambda v: _num(v, ".3g")),
                         "p (Holm)": paired["p_holm"].map(lambda v: _num(v, ".3g")),
                         "significant": [("yes" if sig else "no") if not math.isnan(p) else "–"
                                         for sig, p in zip(paired["significant"], paired["p_holm"])]})


def _cost_display(cost: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"strategy": cost["strategy"], "runs": cost["n_runs"],
                         "train s / round": cost["median_train_s"].map(lambda v: _num(v, ".3g")),
                         "query s / round": cost["median_query_s"].map(lambda v: _num(v, ".3g"))})


def _noisy_display(noisy: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"strategy": noisy["strategy"], "seeds": noisy["n_seeds"],
                         "noisy fraction of queries": mean_pm_column(noisy, "noisy_query_fraction"),
                         "pool's noisy fraction": noisy["pool_noisy_fraction"].map(lambda v: _num(v, ".3f")),
                         **{f"final acc, {part} test images": mean_pm_column(noisy, f"final_test_acc_{part}")
                            for part in ("clean", "noisy")}})


def _stopping_display(stopping: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"strategy": stopping["strategy"], "seeds": stopping["n_seeds"],
                         f"labels at kappa ≥ {stopping['threshold'].iloc[0]:g}": stopping["labels_text"],
                         "test acc there": mean_pm_column(stopping, "test_acc")})


def _md(df: pd.DataFrame) -> str:
    """A Markdown table of a small DataFrame whose cells are already formatted."""
    def cell(v):
        return str(v).replace("|", "\\|")
    lines = ["| " + " | ".join(map(cell, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def _num(value, fmt: str = ".0f") -> str:
    return "–" if value is None or pd.isna(value) else format(value, fmt)


def mean_pm_column(table: pd.DataFrame, stem: str) -> list:
    """``mean_pm`` of each row's ``<stem>_mean`` and ``<stem>_sem`` columns."""
    return [mean_pm(m, s) for m, s in zip(table[f"{stem}_mean"], table[f"{stem}_sem"])]


def mean_pm(mean, sem, fmt: str = ".3f") -> str:
    if pd.isna(mean):
        return "–"
    return format(mean, fmt) + ("" if pd.isna(sem) else f" ± {sem:.3f}")


def _plural(n: int, noun: str, plural: str = "") -> str:
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def _pct(target: float) -> str:
    return f"{target * 100:g}%"
