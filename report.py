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
- with input noise in any run: ``noisy_queries.csv``, the fraction of each strategy's queries that were noisy
  against the pool's fraction;
- with ``--versus FIELD …`` (e.g. ``--versus model resnet_stem min_steps``): ``versus.csv``, runs that differ only
  in those fields paired by strategy and seed, each variant minus the first, per setting (Holm-corrected);
- ``stopping.csv``: the labels at which stop_kappa first reached 0.99, and the test accuracy there;
- ``curves.csv``, ``runs.csv``, and ``report.md``, which links and shows all of them.

Every file is replaced in one step: a write that fails (a full disk) leaves the earlier file whole.

Exit codes: 0 written (the path of report.md is printed), 2 bad input or a file that cannot be written (one
``error:`` line on stderr). The work is done by the ``reporting`` package; this is its command line.
"""
from __future__ import annotations

import argparse
import sys

from config import OneLineParser
from reporting.load import ReportError, find_runs, load_runs
from reporting.stats import DEFAULT_TARGETS
from reporting.write import write_report


class _Parser(OneLineParser):
    """config's one-line parser, raising ReportError (one line, exit code 2, from main())."""

    error_class = ReportError


def parse_args(argv=None) -> argparse.Namespace:
    p = _Parser(prog="report.py", description=__doc__.splitlines()[0])
    p.add_argument("paths", nargs="+", metavar="RUNS_OR_SWEEP_FOLDER", help="folders searched for run folders")
    p.add_argument("--out", required=True, help="folder the report is written to")
    p.add_argument("--targets", nargs="+", type=float, default=list(DEFAULT_TARGETS),
                   help="test accuracies for the labels-needed table")
    p.add_argument("--baseline", default="random", help="strategy the others are compared with")
    p.add_argument("--versus", nargs="+", default=[], metavar="FIELD",
                   help="also pair runs that differ only in these config fields (e.g. model), by strategy and seed")
    args = p.parse_args(argv)
    bad = [t for t in args.targets if not 0 < t <= 1]
    if bad:
        raise ReportError(f"--targets must be in (0, 1], got {' '.join(map(str, bad))}")
    return args


def main(argv=None) -> int:
    try:
        args = parse_args(argv)
        skipped = []
        runs = load_runs(find_runs(args.paths), skipped)
        for reason in skipped:  # one damaged folder must not cost the report of all the others
            print(f"warning: skipped damaged run folder {reason}", file=sys.stderr)
        path = write_report(runs, args.out, args.targets, args.baseline, args.paths, args.versus)
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
