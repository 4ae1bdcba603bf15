"""The interface of a sweep executor: what sweep.py asks of every way of running a sweep's cells."""
from __future__ import annotations

import abc
import argparse

from sweeps.grid import Sweep


class Executor(abc.ABC):
    """Runs the unfinished cells of a sweep somewhere: worker processes here, a Slurm array, ….

    A new executor is one module with a subclass and one line in ``sweeps.executors.EXECUTORS`` (its
    ``--executor`` name). What differs between executors is declared by them, never tested by name:

    * ``cells_run_here``: the cells run on this machine, so its --device and its datasets must serve
      them; otherwise ``Sweep.validate`` leaves both to the machines that will run the cells.
    * ``held``: cells that the executor's scheduler holds now (queued or running), which no executor
      may start again; ``job_column``: their jobs, for ``sweep.py --status``.
    """

    cells_run_here: bool = True

    def __init__(self, args: argparse.Namespace):
        self.args = args  # sweep.py's options, this executor's among them

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        """Add this executor's options to sweep.py's parser (every executor's are always there)."""

    @staticmethod
    def check_arguments(args: argparse.Namespace) -> None:
        """Refuse values of this executor's options that no sweep could use (SweepError)."""

    def validate(self, sweep: Sweep) -> None:
        """Refuse, before anything is created, a sweep that this executor cannot run (SweepError)."""

    @abc.abstractmethod
    def run(self, sweep: Sweep, cells: list) -> int:
        """Run (or submit) ``cells``, the sweep's unfinished cells; sweep.py's exit code.

        0 every cell complete (or submitted, where the executor does not wait), 1 a cell is not complete,
        130 interrupted.
        """

    @classmethod
    def held(cls, record: dict) -> dict:
        """{cell name: why} of the cells this executor's scheduler holds now; ``record``: OUT/sweep.json."""
        return {}

    @classmethod
    def job_column(cls, record: dict) -> tuple | None:
        """(header, {cell name: job}) for the status table, or None when this executor recorded no job."""
        return None
