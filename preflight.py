"""The checks of a run's configuration before any data is loaded or anything written: one function for
main.py and for each sweep cell (sweeps/grid.py), so that what main.py would refuse, a sweep refuses first."""
from __future__ import annotations

from pathlib import Path

from config import Config, ConfigError
from export import check_export_dir
from loop import check_declared
from oracles import ORACLES, check_address
from results import check_run_name


def preflight(cfg: Config, unattended: bool = False) -> None:
    """ConfigError (or OutputError) at the first problem: what the strategy, model and dataset declare, the
    run name, --export_to, and an interactive oracle's page address; ``unattended`` (a sweep cell, which
    nobody watches): an interactive oracle is refused instead."""
    interactive = ORACLES[cfg.oracle].interactive
    if unattended and interactive:
        raise ConfigError(f"--oracle {cfg.oracle} waits for a person at a web page; sweep cells run unattended: "
                          f"run main.py --oracle {cfg.oracle} yourself")
    check_declared(cfg)
    if cfg.run_name:
        check_run_name(cfg.run_name)
    if cfg.export_to:  # before anything is loaded: a person should not label for an hour into a refusal
        check_export_dir(cfg, Path(cfg.resume) if cfg.resume else None)
    if interactive and not unattended:
        check_address(cfg.human_host, cfg.human_port)  # before any run folder: a busy port is bad input
