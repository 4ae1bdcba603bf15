"""Weights & Biases logging that never blocks or kills a run.

With an API key (WANDB_API_KEY or a wandb login) it logs online; without one it logs offline into the
run folder and says how to upload later. Any wandb failure is logged once and tracking stops; the
run itself goes on, and the run folder stays the record of truth. A failure to start is remembered for
the rest of the process: the next runs of an experiment (one per seed) skip wandb at once instead of
waiting INIT_TIMEOUT_S each. Ctrl-C while wandb starts stops wandb's service process at once, so that
the program does not wait for that timeout again while it exits.
"""
from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path

INIT_TIMEOUT_S = 20  # online without network: give up after this, run on

# Why wandb could not start in this process (None: it has not failed). Set by start_tracker.
_start_failure: str | None = None


class NullTracker:
    """Tracks nothing (``--no-wandb``, or after wandb failed)."""

    def log(self, row: dict) -> None:
        pass

    def finish(self, summary: dict) -> None:
        pass


class WandbTracker:
    """Config, per-round metrics (keyed by round and labelled-set size) and the summary."""

    def __init__(self, run, log: logging.Logger):
        self.run = run
        self.log_ = log

    def log(self, row: dict) -> None:
        if self.run is None:
            return
        try:
            self.run.log(dict(row), step=int(row["round"]))
        except Exception as err:  # never let tracking end a run
            self._disable(err)

    def finish(self, summary: dict) -> None:
        if self.run is None:
            return
        try:
            self.run.summary.update({k: v for k, v in summary.items() if not isinstance(v, (dict, list))})
            self.run.finish(exit_code=0 if summary.get("status") == "complete" else 1)
        except Exception as err:
            self._disable(err)

    def _disable(self, err: Exception) -> None:
        self.log_.warning("wandb stopped tracking this run (%s); the run folder has everything", err)
        self.run = None


def has_api_key() -> bool:
    """Whether wandb could authenticate: an API key in the environment or in ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        hosts = netrc.netrc().hosts
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    return any("wandb" in host for host in hosts)


def start_tracker(enabled: bool, project: str, name: str, config: dict, run_dir: Path,
                  log: logging.Logger, *, group: str | None = None, job_type: str | None = None):
    """A tracker for one run: WandbTracker when enabled and wandb starts, else NullTracker.

    ``group`` (a sweep's name) and ``job_type`` (the strategy) go to wandb.init, where runs can be
    grouped and filtered by them; empty means none. If wandb failed to start earlier in this process,
    it is not tried again.
    """
    global _start_failure
    if not enabled:
        return NullTracker()
    if _start_failure is not None:
        log.warning("wandb is off for this run: it could not start earlier in this process (%s)", _start_failure)
        return NullTracker()
    mode = os.environ.get("WANDB_MODE") or ("online" if has_api_key() else "offline")
    try:
        import wandb

        run = wandb.init(project=project, name=name, config=config, dir=str(run_dir), mode=mode,
                         group=group or None, job_type=job_type or None, reinit="finish_previous",
                         settings=wandb.Settings(init_timeout=INIT_TIMEOUT_S, console="off", silent=True))
        run.define_metric("n_labeled")
        run.define_metric("*", step_metric="round")
    except KeyboardInterrupt:
        _stop_wandb_service()
        raise
    except Exception as err:  # no network, bad key, broken install: the run goes on without wandb
        _start_failure = str(err).splitlines()[0] if str(err) else type(err).__name__
        log.warning("wandb could not start (%s); continuing without it, and without wandb for the rest of "
                    "this process", _start_failure)
        return NullTracker()
    if mode == "offline":
        offline_dir = Path(run.dir).parent
        log.info("wandb offline run in %s; upload later with: wandb sync %s", offline_dir, offline_dir)
    return WandbTracker(run, log)


def _stop_wandb_service() -> None:
    """After Ctrl-C in wandb.init: end wandb's service process now, then wandb's own teardown.

    Otherwise wandb's exit hook sends the service a teardown and waits for it, and the service first
    waits out its pending init (up to INIT_TIMEOUT_S without network): Ctrl-C took 17 s to exit.
    The service process is reached through wandb's private setup object; if that changes in a later
    wandb, nothing is stopped here and the exit is only slow, as before.
    """
    try:
        from wandb.sdk import wandb_setup

        process = wandb_setup._singleton._connection._proc._process  # a subprocess.Popen
        process.terminate()
        process.wait(timeout=5)
    except Exception:
        pass
    try:
        import wandb

        wandb.teardown()  # unregisters wandb's exit hook; the service is gone, so this returns at once
    except Exception:
        pass
