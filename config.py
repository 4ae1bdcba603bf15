"""Run configuration: defaults, the command-line parser, validation and the project logger.

Standard library only, so every other module (and a sweep launcher) can import it cheaply.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from dataclasses import dataclass
from typing import Mapping, Sequence

from presets import PRESETS

LOG_LEVEL = logging.INFO
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

NOISES = ("none", "gaussian", "salt_and_pepper")
OPTIMIZERS = ("adam", "sgd")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRESET_NAMES = ("", *PRESETS)  # "" = no preset


class ConfigError(ValueError):
    """A user-facing configuration problem: reported as one line, exit code 2."""


@dataclass(frozen=True)
class Config:
    """Everything that defines a run. Field names are the command-line flag names."""

    # The original project's flags and defaults.
    dataset: str = "mnist"
    data_dir: str = "data"
    num_valid: int = 1000
    batch_size: int = 64
    epochs: int = 10
    num_workers: int = 0
    seed: int = 42
    model: str = "lenet"
    lr: float = 0.001
    strategy: str = "random"
    n_init_labeled: int = 10000
    n_query: int = 1000
    n_round: int = 10
    noise: str = "none"
    noise_rate: float = 0.0
    wandb: bool = True
    experiment: bool = False
    debug: bool = False
    # Added by this project.
    device: str = "auto"
    mc_samples: int = 20
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = -1.0  # negative: the optimizer's default (adam 0, sgd 5e-4)
    weight_decay_scaled: float = 0.0  # > 0: weight decay c / (labelled images), per round
    min_steps: int = 1000
    epoch_samples: int = 0
    early_stopping: int = 0
    dropout: float = 0.5
    noise_std: float = 1.0
    sp_fraction: float = 0.1
    pool_subset: int = 0
    eval_batch_size: int = 512  # small chunks keep conv activations in cache: faster than 2048
    threads: int = 0
    output_dir: str = "runs"
    seeds: tuple = (42, 43, 44)
    wandb_project: str = "active-learning"
    run_name: str = ""
    preset: str = ""
    resume: str = ""
    wandb_group: str = ""

    def replace(self, **changes) -> "Config":
        """A copy with some fields changed (the config itself is frozen)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """A JSON-ready dict of every field."""
        d = dataclasses.asdict(self)
        d["seeds"] = list(self.seeds)
        return d

    @classmethod
    def from_dict(cls, values: Mapping) -> "Config":
        """Build from a mapping; unknown keys are an error, not silently dropped."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown config key(s): {', '.join(unknown)}")
        values = dict(values)
        if "seeds" in values:
            values["seeds"] = tuple(values["seeds"])
        return cls(**values)

    @property
    def resolved_weight_decay(self) -> float:
        """Weight decay actually used: the flag, or the optimizer's default when negative."""
        if self.weight_decay >= 0:
            return self.weight_decay
        return 5e-4 if self.optimizer == "sgd" else 0.0

    def weight_decay_for(self, n_labeled: int) -> float:
        """Weight decay for a round with ``n_labeled`` labels: c / n with --weight_decay_scaled c."""
        if self.weight_decay_scaled > 0:
            return self.weight_decay_scaled / n_labeled
        return self.resolved_weight_decay

    def validate(self, choices: Mapping[str, Sequence[str]] | None = None) -> "Config":
        """Check every invariant that does not need the data; raise ConfigError on the first."""
        fixed = {"noise": NOISES, "optimizer": OPTIMIZERS, "device": DEVICES, "preset": PRESET_NAMES}
        for name, allowed in {**fixed, **(choices or {})}.items():
            _check_choice(name, getattr(self, name), allowed)
        for name in ("noise_rate", "dropout", "sp_fraction"):
            _check_range(name, getattr(self, name), 0.0, 1.0)
        if self.dropout >= 1.0:
            raise ConfigError("--dropout must be below 1 (1 would drop every unit)")
        for name, low in (("epochs", 1), ("batch_size", 1), ("n_init_labeled", 1), ("n_query", 1),
                          ("n_round", 0), ("num_valid", 1), ("mc_samples", 1),
                          ("eval_batch_size", 1), ("pool_subset", 0), ("threads", 0),
                          ("num_workers", 0), ("seed", 0), ("min_steps", 0), ("epoch_samples", 0),
                          ("early_stopping", 0)):
            if getattr(self, name) < low:
                raise ConfigError(f"--{name} must be at least {low}, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ConfigError(f"--lr must be positive, got {self.lr}")
        if self.weight_decay_scaled < 0:
            raise ConfigError(f"--weight_decay_scaled must be non-negative, got {self.weight_decay_scaled}")
        if self.noise_std < 0:
            raise ConfigError(f"--noise_std must be non-negative, got {self.noise_std}")
        if not self.seeds or any(s < 0 for s in self.seeds):
            raise ConfigError("--seeds needs one or more non-negative integers")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"--seeds has repeated values: {list(self.seeds)}")
        if self.pool_subset and self.pool_subset < self.n_query:
            raise ConfigError(f"--pool_subset {self.pool_subset} is smaller than --n_query {self.n_query}")
        return self


DEFAULT_CONFIG: dict = Config().to_dict()

HELP = {
    "dataset": "dataset name",
    "data_dir": "folder with dataset files; downloads go here when online",
    "num_valid": "validation images, drawn stratified from train with the seed",
    "batch_size": "training batch size",
    "epochs": "training epochs per round (each round trains a fresh model)",
    "num_workers": "kept for compatibility: data are in-memory tensors, no loader workers are used",
    "seed": "seed of the run (splits, initial set, noise, weights, dropout, random queries)",
    "model": "model name",
    "lr": "learning rate",
    "strategy": "acquisition strategy",
    "n_init_labeled": "initial labelled images, drawn class-balanced with the seed",
    "n_query": "images labelled per round",
    "n_round": "query rounds; rounds 0..n_round are trained and evaluated",
    "noise": "input noise on a fraction of the images",
    "noise_rate": "fraction of images (pool, validation and test alike) that get noise",
    "wandb": "log to Weights & Biases (offline mode without an API key)",
    "experiment": "run the configuration once per --seeds value and aggregate",
    "debug": "DEBUG logging and an ipdb post-mortem on an uncaught exception",
    "device": "auto picks cuda, then mps, then cpu",
    "mc_samples": "MC dropout samples K for bald and entropy (1 = deterministic)",
    "optimizer": "adam, or sgd with --momentum and --weight_decay",
    "momentum": "SGD momentum",
    "weight_decay": "L2 weight decay; negative means the optimizer default (adam 0, sgd 5e-4)",
    "weight_decay_scaled": "c > 0: weight decay c / (labelled images) each round, as Gal et al.'s code; "
                           "overrides --weight_decay",
    "min_steps": "train at least this many optimizer steps per round (more epochs than --epochs when needed)",
    "epoch_samples": "an epoch draws this many samples when the labelled set is smaller (0 = one pass)",
    "early_stopping": "patience in epochs on validation accuracy, restoring the best weights (0 = off)",
    "dropout": "dropout probability in the classifier head",
    "noise_std": "gaussian noise standard deviation, in normalised units",
    "sp_fraction": "salt_and_pepper: fraction of an affected image's pixels that are replaced",
    "pool_subset": "score a seeded random subset of this many unlabelled images per round (0 = all)",
    "eval_batch_size": "chunk size for evaluation and pool scoring (bounds memory)",
    "threads": "torch CPU threads (0 = all cores)",
    "output_dir": "parent folder of run folders",
    "seeds": "seeds that --experiment runs",
    "wandb_project": "Weights & Biases project",
    "run_name": "name prefix of the run folder (default: dataset_model_strategy_noise)",
    "preset": "a published protocol's settings as defaults; explicit flags override them",
    "resume": "continue the run in this folder from its last finished round (its config.json must match)",
    "wandb_group": "Weights & Biases group of the run (a sweep sets it to the sweep's name)",
}

# Fields that say how a run is executed or tracked, not what it computes: they may differ when a run
# folder is resumed (on another machine, with other threads or without wandb).
OPERATIONAL_FIELDS = frozenset({"debug", "wandb", "wandb_project", "wandb_group", "threads", "num_workers",
                                "output_dir", "run_name", "resume", "experiment", "seeds"})


class _OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors become ConfigError: one line, exit code 2, from the caller."""

    def error(self, message):  # noqa: D102 - argparse hook
        raise ConfigError(f"{message} (see --help)")


def build_parser(choices: Mapping[str, Sequence[str]] | None = None) -> argparse.ArgumentParser:
    """The command-line parser: one flag per Config field, named as the field."""
    parser = _OneLineParser(description="Active-learning experiment runner.",
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    choices = dict(choices or {})
    choices.update(noise=NOISES, optimizer=OPTIMIZERS, device=DEVICES, preset=PRESET_NAMES)
    for f in dataclasses.fields(Config):
        default = getattr(Config(), f.name)
        flag, help_ = f"--{f.name}", HELP[f.name]
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_)
        elif isinstance(default, tuple):
            parser.add_argument(flag, type=int, nargs="+", default=list(default), help=help_)
        else:
            parser.add_argument(flag, type=type(default), default=default, help=help_,
                                choices=sorted(choices[f.name]) if f.name in choices else None)
    return parser


def parse_config(argv: Sequence[str] | None = None,
                 choices: Mapping[str, Sequence[str]] | None = None) -> Config:
    """Parse argv into a validated Config (ConfigError on a bad combination).

    With --preset, a second parse takes the preset's values as defaults, so explicit flags win.
    """
    parser = build_parser(choices)
    args = parser.parse_args(argv)
    if args.preset:
        parser.set_defaults(**PRESETS[args.preset]["values"])
        args = parser.parse_args(argv)
    return Config.from_dict(vars(args)).validate(choices)


def _check_choice(name: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ConfigError(f"unknown --{name} {value!r}; choose one of: {', '.join(sorted(allowed))}")


def _check_range(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ConfigError(f"--{name} must be in [{low:g}, {high:g}], got {value}")


def get_logger(name: str = "ProjectLogger", debug: bool = False) -> logging.Logger:
    """A logger writing LOG_FORMAT lines to stderr; DEBUG level when debug is set."""
    log = logging.getLogger(name)
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT, datefmt="%H:%M:%S"))
        log.addHandler(handler)
        log.propagate = False
    log.setLevel(logging.DEBUG if debug else LOG_LEVEL)
    return log


logger = get_logger("ProjectLogger")
