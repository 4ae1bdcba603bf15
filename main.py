"""Command-line entry: parse, run one study (or one per seed with --experiment), map errors to exit codes.

    python main.py --dataset mnist_5k --strategy bald --noise gaussian --noise_rate 0.1 --no-wandb

Exit codes: 0 done, 2 bad input (one line on stderr, no run folder), 130 interrupted (finished rounds
are kept), 1 an unexpected error (a bug: traceback, and an ipdb post-mortem with --debug).
"""
from __future__ import annotations

import contextlib
import logging
import os
import platform
import signal
import subprocess
import sys
import threading
import traceback
from pathlib import Path

import pandas as pd
import torch
from tqdm.contrib.logging import logging_redirect_tqdm

from config import OPERATIONAL_FIELDS, Config, ConfigError, get_logger, given_flags, parse_config
from data import DataUnavailable, Dataset, load_dataset
from export import export_labelled, label_rows
from loop import check_resumable, prepare_data, recorded_state, review_finished, run_study, unlabeled_in_pool
from memory import check_budget, resolve_device
from oracles import ORACLES
from preflight import preflight
from registries import CHOICES
from reporting.load import seeded_rounds
from reporting.stats import aggregate_runs, mean_sem
from results import (DamagedRun, OutputError, RunDir, atomic_write_text, check_writable, locked,
                     prepare_run_folder, read_config, read_fingerprint, read_summary, run_status)
from tracking import NullTracker, start_tracker
from train import Diverged
from workers import Job, WorkerPool, exit_text, follow_parent

TABLE_COLUMNS = ["round", "n_labeled", "val_acc", "test_acc", "train_s", "query_s", "eval_s"]
ERROR_TAIL_LINES = 60  # lines of a failed seed process's output kept in its error.txt


def main(argv: list | None = None) -> int:
    """Run the command line ``argv``; returns the process exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    follow_parent()  # a seed worker of an --experiment dies with it
    try:
        cfg = resolve_resume(parse_config(argv, CHOICES), argv)
    except (ConfigError, OutputError) as err:
        return _bad_input(err)
    log = get_logger("ProjectLogger", debug=cfg.debug)
    try:
        with sigterm_as_interrupt(), logging_redirect_tqdm(loggers=[log]):
            return run(cfg, log)
    except (ConfigError, DataUnavailable, OutputError, Diverged) as err:
        return _bad_input(err)
    except KeyboardInterrupt:
        log.warning("interrupted: every finished round is saved in its run folder (continue with --resume)")
        return 130
    except Exception:
        if not cfg.debug:
            raise
        _post_mortem(log)
        return 1


@contextlib.contextmanager
def sigterm_as_interrupt():
    """SIGTERM (what Slurm and `timeout` send) stops a run as Ctrl-C does: status written, exit 130."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the clean-up short
        raise KeyboardInterrupt("SIGTERM")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def resolve_resume(cfg: Config, argv: list) -> Config:
    """With --resume FOLDER: the configuration saved in FOLDER.

    Flags that change what a run computes may be repeated, but each one given must then equal the saved
    value; operational flags (threads, wandb, …) may differ and take the new value.
    """
    if not cfg.resume:
        return cfg
    folder = Path(cfg.resume)
    try:
        saved = read_config(folder)
    except FileNotFoundError:
        raise ConfigError(f"--resume {folder}: no run folder there (config.json not found)") from None
    given = given_flags(argv, CHOICES)
    requested = cfg.to_dict()
    diff = [k for k in sorted(given - OPERATIONAL_FIELDS) if saved[k] != requested[k]]
    if diff:
        shown = ", ".join(f"--{k} {saved[k]!r} (saved) vs {getattr(cfg, k)!r}" for k in diff[:4])
        raise ConfigError(f"--resume {folder}: the folder holds a run with another configuration: {shown}"
                          f"{' …' if len(diff) > 4 else ''}; resume with the same flags, or start a new run")
    merged = {**saved, **{k: getattr(cfg, k) for k in given & OPERATIONAL_FIELDS}, "resume": str(folder)}
    return Config.from_dict(merged).validate(CHOICES)


def run(cfg: Config, log: logging.Logger) -> int:
    """Check everything that can fail on input, then run (or continue) the study or the experiment."""
    preflight(cfg)
    if cfg.noise != "none" and cfg.noise_rate == 0:
        log.warning("--noise %s adds noise to no image: --noise_rate is 0 (the original project's default); give "
                    "the fraction of images to make noisy, e.g. --noise_rate 0.3", cfg.noise)
    if cfg.jobs > 1 and not cfg.experiment:
        log.warning("--jobs %d is ignored: it runs the seeds of an --experiment in parallel", cfg.jobs)
    device = resolve_device(cfg.device)
    torch.set_num_threads(cfg.threads or len(os.sched_getaffinity(0)))
    log.debug("config: %s", cfg.to_dict())
    dataset = load_dataset(cfg.dataset, cfg.data_dir, image_size=cfg.image_size, test_fraction=cfg.test_fraction)
    check_budget(cfg, dataset.train_y.numel(), dataset.num_classes, n_unlabeled=unlabeled_in_pool(cfg, dataset),
                 channels=dataset.shape[0], device=device)
    if dataset.unlabeled_x is not None and not ORACLES[cfg.oracle].labels_new_images:
        log.warning("%d images in unlabeled/ are not used: only a person can label them (--oracle human)",
                    dataset.unlabeled_x.shape[0])
    resume = Path(cfg.resume) if cfg.resume else None
    check_writable(str(resume) if resume else cfg.output_dir)
    with locked(resume) if resume else contextlib.nullcontext():
        if resume:
            check_not_running(resume)
        if cfg.experiment:
            return run_experiment(cfg, dataset, device, log, resume)
        run_dir = run_single(cfg, dataset, device, log, path=resume)
    print(round_table(run_dir.rounds))
    print(f"run folder: {run_dir.path}")
    return 0


def check_not_running(folder: Path) -> None:
    """Refuse to resume a folder that a live process on this machine is still writing."""
    try:
        summary = read_summary(folder)
    except DamagedRun:
        return  # resuming rewrites it; the folder's lock is what keeps two processes apart
    if summary.get("pid") != os.getpid() and run_status(folder) == "running" \
            and summary.get("host") == platform.node():
        raise OutputError(f"--resume {folder}: process {summary.get('pid')} on this machine is still running it")


def run_single(cfg: Config, dataset: Dataset, device: torch.device, log: logging.Logger,
               parent: str | None = None, path: Path | None = None) -> RunDir:
    """One study with one seed: in a new run folder under ``parent``, or continued in ``path``."""
    data = prepare_data(cfg, dataset, device)
    if path is None:
        run_dir = RunDir.create(parent or cfg.output_dir, cfg.run_name or default_run_name(cfg))
        run_dir.write_config(cfg.to_dict(), dataset.fingerprint)
    else:
        check_same_data(path, dataset)
        run_dir = RunDir.open(path)
    with locked(run_dir.path):
        return _run_in_folder(cfg, data, run_dir, device, log, resumed=path is not None)


def check_same_data(path: Path, dataset: Dataset) -> None:
    """ConfigError when the data differ from those the run at ``path`` started on, naming what changed
    (folders from before the fingerprint are not checked)."""
    saved = read_fingerprint(path)
    if saved is None:
        return
    now = dataset.fingerprint
    changed = [name for name in sorted(set(saved) | set(now)) if saved.get(name) != now.get(name)]
    if changed:
        raise ConfigError(f"--resume {path}: the dataset changed since the run started ({', '.join(changed)} "
                          "differ): resume it on the data it ran on, or start a new run")


def _run_in_folder(cfg: Config, data, run_dir: RunDir, device: torch.device, log: logging.Logger,
                   resumed: bool) -> RunDir:
    """run_single's rounds, with the run folder locked by this process."""
    if resumed and run_dir.rounds:
        check_resumable(cfg, data, run_dir)
    run_dir.environment = environment(device)
    run_dir.planned_rounds = cfg.n_round + 1
    if len(run_dir.rounds) >= run_dir.planned_rounds:
        log.info("run folder %s: all %d rounds are finished already", run_dir.path, len(run_dir.rounds))
        if ORACLES[cfg.oracle].interactive:  # a person may still correct their answers
            review_finished(cfg, data, run_dir, log)
        run_dir.finish("complete")
        export_labels(cfg, data, run_dir, log)
        return run_dir
    log.info("run folder %s | %s on %s | pool %d, validation %d, test %d | noisy images: %d train, %d test",
             run_dir.path, cfg.model, device, data.pool_idx.numel(), data.val_idx.numel(), len(data.test),
             data.noisy_train, data.noisy_test)
    status, tracker = "failed", NullTracker()
    try:
        run_dir.write_summary(run_dir.summary("running"))
        tracker = start_tracker(cfg.wandb, cfg.wandb_project, run_dir.name, cfg.to_dict(), run_dir.path, log,
                                group=cfg.wandb_group, job_type=cfg.strategy)
        run_study(cfg, data, run_dir, tracker, log)
        status = "complete"
    except (KeyboardInterrupt, SystemExit):
        status = "interrupted"
        raise
    finally:
        tracker.finish(run_dir.finish(status))
    export_labels(cfg, data, run_dir, log)
    return run_dir


def export_labels(cfg: Config, data, run_dir: RunDir, log: logging.Logger) -> None:
    """--export_to: the finished run's labelled images into DIR/<class>/."""
    if not cfg.export_to:
        return
    # From the run's checked records, not from labels.csv: a row edited there must not name what is exported
    rows = label_rows(data, recorded_state(cfg, data, run_dir), {})
    linked, copied = export_labelled(rows, data, cfg.export_to, run_dir.path)
    log.info("exported the %d labelled images to %s/<class>/ (%d new hard links, %d new copies)",
             len(rows), cfg.export_to, linked, copied)


def run_experiment(cfg: Config, dataset: Dataset, device: torch.device, log: logging.Logger,
                   path: Path | None = None) -> int:
    """The same configuration once per seed, in one experiment folder, plus the aggregate.

    Seed folders have fixed names inside the experiment folder, so --resume EXPERIMENT_FOLDER continues
    every seed. A seed that fails is reported (its error in its folder's error.txt) and the others run.
    With --jobs N the seeds run N at a time, each a `main.py --resume SEED_FOLDER --threads 1` process.
    """
    # Prepare the experiment folder and one folder per seed
    if path is None:
        exp = RunDir.create(cfg.output_dir, "experiment_" + (cfg.run_name or default_run_name(cfg, seed=False)))
        exp.write_config(cfg.to_dict())
    else:
        exp = RunDir(path)
    with locked(exp.path):
        return _run_experiment_in(cfg, exp, dataset, device, log)


def _run_experiment_in(cfg: Config, exp: RunDir, dataset: Dataset, device: torch.device,
                       log: logging.Logger) -> int:
    """run_experiment's seeds and aggregate, with the experiment folder locked by this process."""
    jobs = experiment_jobs(cfg, log)
    seed_cfgs = prepare_seed_folders(cfg, exp.path, threads=1 if jobs > 1 else cfg.threads)
    for seed_cfg in seed_cfgs:  # a worker of a killed experiment still saving: said, not reported as failed
        check_not_running(Path(seed_cfg.resume))
    # Run the seeds: one after another in this process, or in worker processes
    if jobs > 1:
        runs, failed = run_seeds_in_processes(cfg, seed_cfgs, jobs, log)
    else:
        runs, failed = run_seeds_in_turn(seed_cfgs, dataset, device, log)
    # Aggregate the finished seeds and report the failed ones
    if runs:
        aggregate_experiment(exp.path, runs)
    print(f"experiment folder: {exp.path}")
    if failed:
        print(f"error: {len(failed)} of {len(cfg.seeds)} seeds failed: {', '.join(map(str, failed))} "
              f"(see error.txt in their folders)", file=sys.stderr)
        return 1
    return 0


def experiment_jobs(cfg: Config, log: logging.Logger) -> int:
    """How many seeds run at a time: --jobs, at most one per seed, one when a person labels."""
    jobs = min(cfg.jobs, len(cfg.seeds))
    if jobs > 1 and ORACLES[cfg.oracle].interactive:
        log.warning("--jobs %d is ignored with --oracle %s: the seeds run one after another", cfg.jobs, cfg.oracle)
        return 1
    return jobs


def prepare_seed_folders(cfg: Config, exp_path: Path, threads: int) -> list:
    """Each seed's configuration, its folder (ready for --resume, in ``resume``) prepared."""
    seed_cfgs = []
    for seed in cfg.seeds:
        seed_cfg = cfg.replace(seed=seed, experiment=False, resume="", output_dir=str(exp_path), jobs=1,
                               threads=threads, run_name=default_run_name(cfg.replace(seed=seed)))
        seed_path = exp_path / seed_cfg.run_name
        prepare_run_folder(seed_path, seed_cfg.to_dict())
        seed_cfgs.append(seed_cfg.replace(resume=str(seed_path)))
    return seed_cfgs


def run_seeds_in_turn(seed_cfgs: list, dataset: Dataset, device: torch.device, log: logging.Logger) -> tuple:
    """Run the seeds one after another in this process: (finished run folders, failed seeds)."""
    runs, failed = [], []
    for i, seed_cfg in enumerate(seed_cfgs):
        log.info("experiment: seed %d (%d of %d)", seed_cfg.seed, i + 1, len(seed_cfgs))
        try:
            runs.append(run_single(seed_cfg, dataset, device, log, path=Path(seed_cfg.resume)).path)
        except (OutputError, KeyboardInterrupt):
            raise
        except Exception as err:
            if seed_cfg.debug:
                raise
            failed.append(seed_cfg.seed)
            record_seed_failure(seed_cfg, f"{type(err).__name__}: {err}", log, text=traceback.format_exc())
    return runs, failed


def record_seed_failure(seed_cfg: Config, reason: str, log: logging.Logger, text: str | None = None) -> None:
    """Log that a seed failed; ``text`` (when given) becomes its folder's error.txt."""
    error_file = Path(seed_cfg.resume) / "error.txt"
    if text is not None:
        atomic_write_text(error_file, text)
    log.error("seed %d failed (%s); details in %s; the other seeds go on", seed_cfg.seed, reason, error_file)


def run_seeds_in_processes(cfg: Config, seed_cfgs: list, jobs: int, log: logging.Logger) -> tuple:
    """Run the seeds ``jobs`` at a time as `main.py --resume SEED_FOLDER --threads 1` children
    (workers.WorkerPool; a Ctrl-C or SIGTERM stops them all, keeping their finished rounds): (finished run
    folders, failed seeds)."""
    log.info("experiment: %d seeds, %d at a time, each in a process with one torch thread", len(seed_cfgs), jobs)
    # A killed experiment leaves no seed running: resumed at once, it would find their folders locked
    pool = WorkerPool(jobs, die_with_parent=True, on_stop=lambda n: log.warning(
        "experiment: stopping %d seed process(es); they keep their finished rounds", n))
    outcomes: dict = {}
    if pool.run([seed_job(cfg, s, pool, log, len(seed_cfgs), outcomes) for s in seed_cfgs]) \
            or "interrupted" in outcomes.values():
        raise KeyboardInterrupt("a seed process was interrupted")
    runs = [Path(s.resume) for s in seed_cfgs if outcomes[s.seed] == "complete"]
    return runs, [s.seed for s in seed_cfgs if outcomes[s.seed] == "failed"]


def seed_job(cfg: Config, seed_cfg: Config, pool: WorkerPool, log: logging.Logger, total: int,
             outcomes: dict) -> Job:
    """One seed's worker; when it ends, outcomes[seed] says how: "complete", "failed" (recorded in its
    folder's error.txt) or "interrupted"."""
    path = Path(seed_cfg.resume)
    error_before = _mtime_ns(path / "error.txt")

    def started(proc, number: int) -> None:
        log.info("experiment: seed %d started (%d of %d, pid %d); log: %s", seed_cfg.seed, number, total, proc.pid,
                 path / "log.txt")

    def finished(proc, seconds: float, output: str) -> None:
        code = proc.returncode
        log.info("experiment: seed %d ended: %s (%s, %.0f s); log: %s", seed_cfg.seed, run_status(path),
                 exit_text(code), seconds, path / "log.txt")
        outcomes[seed_cfg.seed] = seed_outcome(seed_cfg, code, output, error_before, pool.stopping, log)

    return Job(seed_command(cfg, path), path / "log.txt", "main.py --experiment", started, finished)


def seed_outcome(seed_cfg: Config, code: int, output: str, error_before: int | None, stopping: bool,
                 log: logging.Logger) -> str:
    """How a seed's process ended; a failure is recorded in its folder's error.txt."""
    if code == 0:
        return "complete"
    if code == 130 or stopping:
        return "interrupted"
    lines = output.splitlines()
    last = next((line for line in reversed(lines) if line.strip()), "no output")
    reason = f"{exit_text(code)}: {last.strip()}"
    wrote = _mtime_ns(Path(seed_cfg.resume) / "error.txt") != error_before  # the child wrote its own
    record_seed_failure(seed_cfg, reason, log, text=None if wrote else "\n".join(lines[-ERROR_TAIL_LINES:]) + "\n")
    return "failed"


def seed_command(cfg: Config, seed_path: Path) -> list:
    """The command line that runs (or continues) one seed folder with the experiment's operational flags."""
    return [sys.executable, str(Path(__file__).resolve()), "--resume", str(seed_path), "--threads", "1",
            "--wandb" if cfg.wandb else "--no-wandb", "--wandb_project", cfg.wandb_project,
            "--wandb_group", cfg.wandb_group, *(["--debug"] if cfg.debug else [])]


def _mtime_ns(path: Path) -> int | None:
    """When ``path`` was last written (None if it does not exist)."""
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return None


def aggregate_experiment(exp_path: Path, runs: list) -> None:
    """Write aggregate.csv and final_rounds.csv over the finished seeds, and print the per-round table."""
    per_round, finals = aggregate_runs(seeded_rounds(runs))
    atomic_write_text(exp_path / "aggregate.csv", per_round.to_csv(index=False))
    atomic_write_text(exp_path / "final_rounds.csv", finals.to_csv(index=False))
    mean, sem = mean_sem(finals["test_acc"])
    shown = ["round", "n_labeled_mean", "val_acc_mean", "test_acc_mean", "test_acc_sem", "round_s_mean"]
    print(per_round[shown].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"final test_acc over {len(runs)} seeds: {mean:.4f} ± {sem:.4f} (mean ± standard error)")


def environment(device: torch.device) -> dict:
    """Where a run ran, and with which code, for summary.json."""
    return {"device": str(device), "torch": torch.__version__, "python": platform.python_version(),
            "threads": torch.get_num_threads(), "host": platform.node(), **code_version()}


def code_version() -> dict:
    """The git commit of this checkout and whether it had uncommitted changes to tracked files (``dirty``):
    which code made a run's numbers. Both None outside a git checkout or without git."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                                timeout=10, stdin=subprocess.DEVNULL)
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                                capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    if commit.returncode != 0 or status.returncode != 0:
        return {"commit": None, "dirty": None}
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}


def default_run_name(cfg: Config, seed: bool = True) -> str:
    noise = cfg.noise if cfg.noise == "none" else f"{cfg.noise}{cfg.noise_rate:g}"
    name = f"{cfg.dataset}_{cfg.model}_{cfg.strategy}_{noise}"
    if cfg.label_noise != "none":
        name += f"_labels-{cfg.label_noise}{cfg.label_noise_rate:g}"
    return f"{name}_seed{cfg.seed}" if seed else name


def round_table(rows: list) -> str:
    """The per-round table printed at the end of a run."""
    df = pd.DataFrame(rows)[TABLE_COLUMNS]
    return df.to_string(index=False, float_format=lambda v: f"{v:.4f}")


def _bad_input(err: Exception) -> int:
    print(f"error: {err}", file=sys.stderr)
    return 2


def _post_mortem(log: logging.Logger) -> None:
    traceback.print_exc()
    if sys.stdin.isatty():
        import ipdb

        ipdb.post_mortem(sys.exc_info()[2])
    else:
        log.error("stdin is not a terminal: no ipdb post-mortem")


if __name__ == "__main__":
    sys.exit(main())
