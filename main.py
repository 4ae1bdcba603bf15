"""Command-line entry: parse, run one study (or one per seed with --experiment), map errors to exit codes.

    python main.py --dataset mnist_5k --strategy bald --noise gaussian --noise_rate 0.1 --no-wandb

Exit codes: 0 done, 2 bad input (one line on stderr, no run folder), 130 interrupted (finished rounds
are kept), 1 an unexpected error (a bug: traceback, and an ipdb post-mortem with --debug).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import signal
import sys
import threading
import traceback
from pathlib import Path

import pandas as pd
import torch
from tqdm.contrib.logging import logging_redirect_tqdm

from config import DEFAULT_CONFIG, OPERATIONAL_FIELDS, Config, ConfigError, get_logger, parse_config
from data import DATASETS, DataUnavailable, Dataset, load_dataset
from loop import check_budget, check_strategy, prepare_data, run_study, unlabeled_in_pool
from models import MODELS
from results import (OutputError, RunDir, aggregate_runs, atomic_write_text, check_run_name, check_writable,
                     config_differences, mean_sem, prepare_run_folder, run_status)
from strategies import STRATEGIES
from tracking import NullTracker, start_tracker

CHOICES = {"dataset": sorted(DATASETS), "model": sorted(MODELS), "strategy": sorted(STRATEGIES)}
TABLE_COLUMNS = ["round", "n_labeled", "val_acc", "test_acc", "train_s", "query_s", "eval_s"]


def main(argv: list | None = None) -> int:
    """Run the command line ``argv``; returns the process exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        cfg = resolve_resume(parse_config(argv, CHOICES), argv)
    except (ConfigError, OutputError) as err:
        return _bad_input(err)
    log = get_logger("ProjectLogger", debug=cfg.debug)
    try:
        with sigterm_as_interrupt(), logging_redirect_tqdm(loggers=[log]):
            return run(cfg, log)
    except (ConfigError, DataUnavailable, OutputError) as err:
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

    Flags that change what a run computes may be repeated, but must then equal the saved ones (the
    whole requested configuration is compared); operational flags (threads, wandb, …) may differ.
    """
    if not cfg.resume:
        return cfg
    folder = Path(cfg.resume)
    try:
        saved = json.loads((folder / "config.json").read_text())
    except FileNotFoundError:
        raise ConfigError(f"--resume {folder}: no run folder there (config.json not found)") from None
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"--resume {folder}: config.json cannot be read ({err})") from None
    given = explicit_flags(argv)
    if given - OPERATIONAL_FIELDS:
        diff = config_differences(saved, cfg.to_dict())
        if diff:
            shown = ", ".join(f"--{k} {saved.get(k)!r} (saved) vs {getattr(cfg, k, None)!r}" for k in diff[:4])
            raise ConfigError(f"--resume {folder}: the folder holds a run with another configuration: {shown}"
                              f"{' …' if len(diff) > 4 else ''}; resume with the same flags, or start a new run")
    merged = {**saved, **{k: getattr(cfg, k) for k in given & OPERATIONAL_FIELDS}, "resume": str(folder)}
    return Config.from_dict(merged).validate(CHOICES)


def explicit_flags(argv: list) -> set:
    """Config field names given on the command line (--name, --no-name, --name=value)."""
    names = set()
    for token in argv:
        if token.startswith("--"):
            name = token[2:].split("=", 1)[0]
            names.add(name[3:] if name.startswith("no-") and name[3:] in DEFAULT_CONFIG else name)
    return names & set(DEFAULT_CONFIG)


def run(cfg: Config, log: logging.Logger) -> int:
    """Check everything that can fail on input, then run (or continue) the study or the experiment."""
    check_strategy(cfg)
    if cfg.run_name:
        check_run_name(cfg.run_name)
    device = resolve_device(cfg.device)
    torch.set_num_threads(cfg.threads or len(os.sched_getaffinity(0)))
    log.debug("config: %s", cfg.to_dict())
    dataset = load_dataset(cfg.dataset, cfg.data_dir, image_size=cfg.image_size, test_fraction=cfg.test_fraction)
    check_budget(cfg, dataset.train_y.numel(), dataset.num_classes, n_unlabeled=unlabeled_in_pool(cfg, dataset))
    if dataset.unlabeled_x is not None and cfg.oracle != "human":
        log.warning("%d images in unlabeled/ are not used: only a person can label them (--oracle human)",
                    dataset.unlabeled_x.shape[0])
    if cfg.oracle == "human":
        from labelling.web import check_address  # before any run folder: a busy port is bad input
        check_address(cfg.human_host, cfg.human_port)
    resume = Path(cfg.resume) if cfg.resume else None
    check_writable(str(resume) if resume else cfg.output_dir)
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
        summary = json.loads((folder / "summary.json").read_text())
    except (OSError, json.JSONDecodeError):
        return
    if summary.get("pid") != os.getpid() and run_status(folder) == "running" \
            and summary.get("host") == platform.node():
        raise OutputError(f"--resume {folder}: process {summary.get('pid')} on this machine is still running it")


def run_single(cfg: Config, dataset: Dataset, device: torch.device, log: logging.Logger,
               parent: str | None = None, path: Path | None = None) -> RunDir:
    """One study with one seed: in a new run folder under ``parent``, or continued in ``path``."""
    data = prepare_data(cfg, dataset, device)
    if path is None:
        run_dir = RunDir.create(parent or cfg.output_dir, cfg.run_name or default_run_name(cfg))
        run_dir.write_config(cfg.to_dict())
    else:
        run_dir = RunDir.open(path)
    run_dir.environment = environment(device)
    run_dir.planned_rounds = cfg.n_round + 1
    if len(run_dir.rounds) >= run_dir.planned_rounds:
        log.info("run folder %s: all %d rounds are finished already", run_dir.path, len(run_dir.rounds))
        run_dir.finish("complete")
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
    return run_dir


def run_experiment(cfg: Config, dataset: Dataset, device: torch.device, log: logging.Logger,
                   path: Path | None = None) -> int:
    """The same configuration once per seed, in one experiment folder, plus the aggregate.

    Seed folders have fixed names inside the experiment folder, so --resume EXPERIMENT_FOLDER continues
    every seed. A seed that fails is reported (its traceback in its folder's error.txt) and the others run.
    """
    if path is None:
        exp = RunDir.create(cfg.output_dir, "experiment_" + (cfg.run_name or default_run_name(cfg, seed=False)))
        exp.write_config(cfg.to_dict())
    else:
        exp = RunDir(path)
    runs, failed = [], []
    for i, seed in enumerate(cfg.seeds):
        log.info("experiment: seed %d (%d of %d)", seed, i + 1, len(cfg.seeds))
        seed_cfg = cfg.replace(seed=seed, experiment=False, resume="", output_dir=str(exp.path),
                               run_name=default_run_name(cfg.replace(seed=seed)))
        seed_path = exp.path / seed_cfg.run_name
        try:
            prepare_run_folder(seed_path, seed_cfg.to_dict())
            runs.append(run_single(seed_cfg.replace(resume=str(seed_path)), dataset, device, log,
                                   path=seed_path).path)
        except (OutputError, KeyboardInterrupt):
            raise
        except Exception as err:
            if cfg.debug:
                raise
            failed.append(seed)
            atomic_write_text(seed_path / "error.txt", traceback.format_exc())
            log.error("seed %d failed (%s: %s); traceback in %s; the other seeds go on", seed,
                      type(err).__name__, err, seed_path / "error.txt")
    if runs:
        per_round, finals = aggregate_runs(runs)
        atomic_write_text(exp.path / "aggregate.csv", per_round.to_csv(index=False))
        atomic_write_text(exp.path / "final_rounds.csv", finals.to_csv(index=False))
        mean, sem = mean_sem(finals["test_acc"])
        shown = ["round", "n_labeled_mean", "val_acc_mean", "test_acc_mean", "test_acc_sem", "round_s_mean"]
        print(per_round[shown].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
        print(f"final test_acc over {len(runs)} seeds: {mean:.4f} ± {sem:.4f} (mean ± standard error)")
    print(f"experiment folder: {exp.path}")
    if failed:
        print(f"error: {len(failed)} of {len(cfg.seeds)} seeds failed: {', '.join(map(str, failed))} "
              f"(see error.txt in their folders)", file=sys.stderr)
        return 1
    return 0


def environment(device: torch.device) -> dict:
    """Where a run ran, for summary.json."""
    return {"device": str(device), "torch": torch.__version__, "python": platform.python_version(),
            "threads": torch.get_num_threads(), "host": platform.node()}


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


def resolve_device(name: str) -> torch.device:
    """auto: cuda, then mps, then cpu. An explicitly requested device must exist."""
    has = {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available(), "cpu": True}
    if name == "auto":
        return torch.device(next(d for d in ("cuda", "mps", "cpu") if has[d]))
    if not has[name]:
        raise ConfigError(f"--device {name} is not available on this machine")
    return torch.device(name)


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
