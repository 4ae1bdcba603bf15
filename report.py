"""Report on any set of run folders: learning curves, labels to a target accuracy, AULC, paired tests, cost.

    python report.py runs/ sweeps/my_sweep --out reports/today [--targets 0.8 0.9 0.95] [--baseline random]
        [--versus model min_steps] [--map noise_std] [--at 100 300]

Runs (every folder with config.json and rounds.csv under the paths) are grouped by every config field but
strategy, seed and the operational ones; each file it writes into --out, and what the tests are:
docs/reports.md. Exit codes: 0 written (the path of report.md is printed), 2 bad input or a file that
cannot be written (one ``error:`` line on stderr). The work is done by the ``reporting`` package.
"""
from __future__ import annotations

import argparse
import sys

from config import OneLineParser
from reporting.load import ReportError, find_runs, load_runs
from reporting.stats import DEFAULT_AT, DEFAULT_TARGETS
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
    p.add_argument("--map", default="", metavar="FIELD", dest="map_field",
                   help="also draw strategy × FIELD (e.g. noise_std): each strategy's paired difference from the "
                        "baseline in test accuracy at the --at sizes, per value of FIELD (map.csv, map_*.png)")
    p.add_argument("--at", nargs="+", type=int, default=list(DEFAULT_AT), metavar="N",
                   help="labelled-set sizes of the --map panels and of the --versus comparisons")
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
        path = write_report(runs, args.out, args.targets, args.baseline, args.paths, args.versus, args.map_field,
                            args.at)
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
