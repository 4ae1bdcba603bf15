"""One markdown table per setting of a report.py --map folder: what docs/RESULTS_noise.md shows per σ.

Reads the CSVs report.py wrote (curves.csv, noisy_queries.csv, labels_needed.csv, map.csv); computes
nothing new. A row per strategy: test accuracy at each ``--at`` size (mean ± s.e. over seeds), clean and
noisy test accuracy at the last size, labels to ``--target``, the noisy fraction of the queries, and the
paired difference against the baseline at each ``--at`` size (points; Holm-corrected p from map.csv).

    .venv/bin/python bench/noise_map_tables.py reports/rq1_full --at 40 100 200 300 --target 0.65
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reporting.markdown import mean_pm  # noqa: E402
from reporting.stats import ordered_strategies  # noqa: E402


def tables(folder: Path, at: list, target: float) -> str:
    curves = pd.read_csv(folder / "curves.csv")
    noisy = pd.read_csv(folder / "noisy_queries.csv")
    needed = pd.read_csv(folder / "labels_needed.csv")
    diffs = pd.read_csv(folder / "map.csv")
    out = []
    for setting, rows in diffs.groupby("setting", sort=False):
        field, baseline = rows.field.iloc[0], rows.baseline.iloc[0]
        for value, per_value in rows.groupby("value", sort=True):
            groups = {g for g in curves.group.unique() if g.startswith(setting)}
            if len(groups) > 1:  # the map's field varies, so it names each group
                groups = {g for g in groups if f"{field}={value}" in g}
            if len(groups) != 1:
                continue
            group = groups.pop()
            out.append(f"### {setting}, {field} {value:g}\n")
            head = ["strategy", "seeds", *(f"acc @ {n}" for n in at), "clean / noisy test acc (last)",
                    f"labels to {target:.0%}", "noisy share of queries",
                    *(f"Δ {baseline} @ {n} (p Holm)" for n in at)]
            out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            c = curves[curves.group == group]
            for s in ordered_strategies(c.strategy, baseline):
                cs = c[c.strategy == s].set_index("n_labeled")
                nq = noisy[(noisy.group == group) & (noisy.strategy == s)]
                ln = needed[(needed.group == group) & (needed.strategy == s)
                            & (needed.target.round(4) == round(target, 4))]
                seeds = int(cs.n_seeds.max()) if len(cs) else 0
                accs = [mean_pm(cs.test_acc_mean.get(n, float("nan")), cs.test_acc_sem.get(n, float("nan")))
                        for n in at]
                if len(nq):
                    q = nq.iloc[0]
                    clean_noisy = f"{q.final_test_acc_clean_mean:.3f} / {q.final_test_acc_noisy_mean:.3f}"
                    share = f"{q.noisy_query_fraction_mean:.2f}"
                else:
                    clean_noisy = share = "–"
                reach = ln.iloc[0].text if len(ln) else "–"
                pd_cells = []
                for n in at:
                    d = per_value[(per_value.strategy == s) & (per_value.n_labeled == n)]
                    if s == baseline or not len(d) or d.iloc[0].n_pairs < 1:
                        pd_cells.append("–")
                        continue
                    r = d.iloc[0]
                    p = f" (p {r.p_holm:.3g})" if r.p_holm == r.p_holm else ""
                    pd_cells.append(f"{r.mean_diff * 100:+.1f} ± {r.sem_diff * 100:.1f}{p}" if r.sem_diff == r.sem_diff
                                    else f"{r.mean_diff * 100:+.1f}{p}")
                out.append("| " + " | ".join([s, str(seeds), *accs, clean_noisy, reach, share, *pd_cells]) + " |")
            out.append("")
    return "\n".join(out)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("report", type=Path, help="a report.py --out folder made with --map")
    p.add_argument("--at", nargs="+", type=int, default=[40, 100, 200, 300])
    p.add_argument("--target", type=float, default=0.65)
    args = p.parse_args(argv)
    print(tables(args.report, args.at, args.target))


if __name__ == "__main__":
    main()
