"""Command-line entry: parse, run one study (or one per seed with --experiment), map errors to exit codes.

    python main.py --dataset mnist_5k --strategy bald --noise gaussian --noise_rate 0.1 --no-wandb

Exit codes: 0 done, 2 bad input (one line on stderr, no run folder), 130 interrupted (finished rounds
are kept), 1 an unexpected error (a bug: traceback, and an ipdb post-mortem with --debug).
"""
from __future__ import annotations

import logging
import os
import platform
import sys
import traceback
from pathlib import Path

import pandas as pd
import torch
from tqdm.contrib.logging import logging_redirect_tqdm

from config import Config, ConfigError, get_logger, parse_config
from data import DATASETS, DataUnavailable, Dataset, load_dataset
from loop import check_budget, check_strategy, prepare_data, run_study
from models import MODELS
from results import OutputError, RunDir, aggregate_runs, check_writable, mean_sem
from strategies import STRATEGIES
from tracking import start_tracker

CHOICES = {"dataset": sorted(DATASETS), "model": sorted(MODELS), "strategy": sorted(STRATEGIES)}
TABLE_COLUMNS = ["round", "n_labeled", "val_acc", "test_acc", "train_s", "query_s", "eval_s"]


def main(argv: list | None = None) -> int:
    """Run the command line ``argv``; returns the process exit code."""
    try:
        cfg = parse_config(argv, CHOICES)
    except ConfigError as err:
        return _bad_input(err)
    log = get_logger("ProjectLogger", debug=cfg.debug)
    try:
        with logging_redirect_tqdm(loggers=[log]):
            return run(cfg, log)
    except (ConfigError, DataUnavailable, OutputError) as err:
        return _bad_input(err)
    except KeyboardInterrupt:
        log.warning("interrupted: every finished round is saved in its run folder")
        return 130
    except Exception:
        if not cfg.debug:
            raise
        _post_mortem(log)
        return 1


def run(cfg: Config, log: logging.Logger) -> int:
    """Check everything that can fail on input, then run the study or the experiment."""
    check_strategy(cfg)
    device = resolve_device(cfg.device)
    torch.set_num_threads(cfg.threads or len(os.sched_getaffinity(0)))
    log.debug("config: %s", cfg.to_dict())
    dataset = load_dataset(cfg.dataset, cfg.data_dir)
    check_budget(cfg, dataset.train_y.numel(), dataset.num_classes)
    check_writable(cfg.output_dir)
    if cfg.experiment:
        run_experiment(cfg, dataset, device, log)
    else:
        run_dir = run_single(cfg, dataset, device, cfg.output_dir, log)
        print(round_table(run_dir.rounds))
        print(f"run folder: {run_dir.path}")
    return 0


def run_single(cfg: Config, dataset: Dataset, device: torch.device, parent: str, log: logging.Logger) -> RunDir:
    """One study with one seed, recorded in a new run folder under ``parent``."""
    data = prepare_data(cfg, dataset, device)
    run_dir = RunDir.create(parent, cfg.run_name or default_run_name(cfg))
    run_dir.write_config(cfg.to_dict())
    log.info("run folder %s | %s on %s | pool %d, validation %d, test %d | noisy images: %d train, %d test",
             run_dir.path, cfg.model, device, data.pool_idx.numel(), data.val_idx.numel(), len(data.test),
             data.noisy_train, data.noisy_test)
    tracker = start_tracker(cfg.wandb, cfg.wandb_project, run_dir.name, cfg.to_dict(), run_dir.path, log)
    status = "failed"
    try:
        run_dir.write_summary(summarise(run_dir, "running", device))
        run_study(cfg, data, run_dir, tracker, log)
        status = "complete"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        summary = summarise(run_dir, status, device)
        run_dir.write_summary(summary)
        tracker.finish(summary)
    return run_dir


def run_experiment(cfg: Config, dataset: Dataset, device: torch.device, log: logging.Logger) -> Path:
    """The same configuration once per seed, in one experiment folder, plus the aggregate."""
    exp = RunDir.create(cfg.output_dir, "experiment_" + (cfg.run_name or default_run_name(cfg, seed=False)))
    exp.write_config(cfg.to_dict())
    runs = []
    for seed in cfg.seeds:
        log.info("experiment: seed %d (%d of %d)", seed, len(runs) + 1, len(cfg.seeds))
        seed_cfg = cfg.replace(seed=seed, experiment=False, run_name="")
        runs.append(run_single(seed_cfg, dataset, device, str(exp.path), log).path)
    per_round, finals = aggregate_runs(runs)
    per_round.to_csv(exp.path / "aggregate.csv", index=False)
    finals.to_csv(exp.path / "final_rounds.csv", index=False)
    mean, sem = mean_sem(finals["test_acc"])
    shown = ["round", "n_labeled_mean", "val_acc_mean", "test_acc_mean", "test_acc_sem", "round_s_mean"]
    print(per_round[shown].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"final test_acc over {len(runs)} seeds: {mean:.4f} ± {sem:.4f} (mean ± standard error)")
    print(f"experiment folder: {exp.path}")
    return exp.path


def summarise(run_dir: RunDir, status: str, device: torch.device) -> dict:
    """summary.json: status, final metrics, timing medians and the software environment."""
    rows = run_dir.rounds
    last = rows[-1] if rows else {}
    queried = [r for r in rows if r["n_scored"] > 0]  # the last round trains and evaluates only

    def median(key, subset=rows):
        return float(pd.Series([r[key] for r in subset]).median()) if subset else None

    return {"status": status, "rounds_completed": len(rows), "final_round": last.get("round"),
            "final_n_labeled": last.get("n_labeled"), "final_val_acc": last.get("val_acc"),
            "final_test_acc": last.get("test_acc"), "median_round_s": median("round_s"),
            "median_train_s": median("train_s"), "median_query_s": median("query_s", queried),
            "median_eval_s": median("eval_s"),
            "environment": {"device": str(device), "torch": torch.__version__, "python": platform.python_version(),
                            "threads": torch.get_num_threads(), "host": platform.node()}}


def default_run_name(cfg: Config, seed: bool = True) -> str:
    noise = cfg.noise if cfg.noise == "none" else f"{cfg.noise}{cfg.noise_rate:g}"
    name = f"{cfg.dataset}_{cfg.model}_{cfg.strategy}_{noise}"
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
