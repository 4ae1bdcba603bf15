"""Sweep executors, one module each behind ``base.Executor``, by their ``--executor`` name in EXECUTORS."""
from sweeps.executors.base import Executor
from sweeps.executors.local import LocalExecutor
from sweeps.executors.slurm import SlurmExecutor

EXECUTORS = {"local": LocalExecutor, "slurm": SlurmExecutor}

__all__ = ["EXECUTORS", "Executor", "held_cells", "job_columns"]


def held_cells(record: dict) -> dict:
    """{cell name: why} of the cells that any executor's scheduler holds now (none may start them)."""
    return {name: why for executor in EXECUTORS.values() for name, why in executor.held(record).items()}


def job_columns(record: dict) -> list:
    """The status table's job columns: one per executor that recorded jobs in ``record`` (OUT/sweep.json)."""
    return [column for executor in EXECUTORS.values() if (column := executor.job_column(record)) is not None]
