"""Run a grid of main.py configurations (a sweep), locally or on Slurm, resumably.

    python sweep.py --out runs/sweeps/noise --grid strategy=random,bald --grid noise=none,gaussian \\
        --grid seed=1,2 --workers 2 -- --dataset mnist_5k --n_round 10 --no-wandb
    python sweep.py --out runs/sweeps/noise --grid_file grid.yaml -- --dataset mnist_5k   # the same grid from YAML
    python sweep.py --out runs/sweeps/noise --status                                      # table, runs nothing

Every cell of the grid (the product of its values) is one run of ``main.py`` in its own folder
``OUT/cells/<cell name>``, the name made of the grid's keys and the cell's values
(``strategy-bald_noise-gaussian_seed-1``). Flags after ``--`` go to every cell unchanged. Every cell's
configuration is parsed and checked before anything is created. ``OUT/sweep.json`` records the grid and
the pass-through flags; running the command again skips complete cells and continues the others
(``main.py --resume``) from their last finished round. A command whose cells differ from those recorded
in OUT (other flags, another grid) is refused; adding values to a grid key adds cells and keeps the
existing ones.

Executors: ``local`` runs ``--workers`` cells at a time as ``main.py`` processes (each with
``--threads cores // workers``, at least 1; output in ``CELL/log.txt``); ``slurm`` submits the
unfinished cells as one job array through submitit, requeued (and resumed) on pre-emption and timeout.

Exit codes: 0 every cell complete (or, for slurm without --wait, submitted), 1 a cell is not complete,
2 bad input (a line starting ``error:`` on stderr; nothing created), 130 interrupted.
"""
from __future__ import annotations

import shlex
import sys
from pathlib import Path

from config import ConfigError, OneLineParser
from results import OutputError
from sweeps.executors import EXECUTORS, held_cells, job_columns
from sweeps.grid import MAX_CELLS, Sweep, SweepError, print_table, read_sweep_file, shorten

# main.py's help is not a cell's flag: after -- it would reach every cell's parser (and print main.py's
# help under sweep.py's name), so it is refused and the user is told where each help is.
HELP_FLAGS = ("-h", "--help")


def parse_args(argv: list) -> tuple:
    """(sweep options, pass-through main.py flags): everything after the first ``--`` passes through."""
    if "--" in argv:
        cut = argv.index("--")
        own, passthrough = argv[:cut], argv[cut + 1:]
    else:
        own, passthrough = argv, []
    if any(token in HELP_FLAGS for token in passthrough):
        raise SweepError("--help after -- would go to every cell: for the cells' flags see python main.py --help, "
                         "for the sweep's sweep.py --help")
    p = _Parser(prog="sweep.py", description=__doc__.splitlines()[0],
                epilog="main.py flags for every cell go after --.")
    p.add_argument("--out", required=True, help="the sweep's folder; its basename is the sweep's name")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                   help="a main.py flag and its values (repeat for more keys)")
    p.add_argument("--grid_file", default="", help="YAML mapping of main.py flags to lists of values")
    p.add_argument("--executor", choices=sorted(EXECUTORS), default="local")
    p.add_argument("--dry_run", action="store_true", help="print the cells and create nothing")
    p.add_argument("--status", action="store_true", help="print the status table of OUT and run nothing")
    p.add_argument("--max_cells", type=int, default=MAX_CELLS,
                   help="refuse a grid of more cells than this (each is parsed and checked before anything runs)")
    for executor in EXECUTORS.values():
        executor.add_arguments(p)
    args, unknown = p.parse_known_args(own)
    if unknown:
        raise SweepError(f"unrecognized arguments: {shorten(shlex.join(unknown))} (main.py flags go after --; "
                         "see sweep.py --help)")
    if args.max_cells < 1:
        raise SweepError(f"--max_cells must be at least 1, got {args.max_cells}")
    for executor in EXECUTORS.values():
        executor.check_arguments(args)
    return args, passthrough


class _Parser(OneLineParser):
    """config's one-line parser, raising SweepError (one line, exit code 2, from main())."""

    error_class = SweepError


def main(argv: list | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args, passthrough = parse_args(argv)
        out = Path(args.out).absolute()
        if args.status:  # the table of every recorded cell (and its job, where one is recorded); runs nothing
            record = read_sweep_file(out)
            return print_table(out, record["cells"], job_columns(record))
        executor = EXECUTORS[args.executor](args)
        sweep = Sweep.from_command(out, args.grid, args.grid_file, passthrough, args.max_cells)
        sweep.validate(executor)
        sweep.check_against_recorded()
        if args.dry_run:
            return sweep.dry_run()
        executor.validate(sweep)
        with sweep.lock():
            sweep.create()
            return executor.run(sweep, sweep.cells_to_run(held_cells(read_sweep_file(out))))
    except (SweepError, ConfigError, OutputError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
