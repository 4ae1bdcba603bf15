"""Run configuration: defaults, the command-line parser, validation and the project logger.

Standard library only, so every other module (and a sweep launcher) can import it cheaply.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import sys
from dataclasses import dataclass
from typing import Mapping, Sequence

from presets import PRESETS

LOG_LEVEL = logging.INFO
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

NOISES = ("none", "gaussian", "salt_and_pepper")
ORACLES = ("simulated", "human")
DONT_KNOW = ("out", "pool")
LABEL_NOISES = ("none", "symmetric", "pair", "adversarial")
OPTIMIZERS = ("adam", "sgd")
DEVICES = ("auto", "cpu", "cuda", "mps")
WARM_STARTS = ("off", "continue", "shrink_perturb")
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
    # The oracle and the user's own images (issue 8).
    label_noise: str = "none"
    label_noise_rate: float = 0.0
    label_noise_initial: bool = False
    image_size: int = 32
    test_fraction: float = 0.2
    # A person as the oracle (issue 9): the labelling page's address and what "I don't know" does.
    oracle: str = "simulated"
    dont_know: str = "out"
    human_host: str = "127.0.0.1"
    human_port: int = 0
    # Training at the machine's speed (issue 14): seeds in parallel, and where a round's weights start.
    jobs: int = 1
    stop_loss: float = 0.0  # > 0: a round stops training once its loss converged (between the bounds)
    stop_window: int = 100
    stop_min_steps: int = 200
    warm_start: str = "off"
    shrink: float = 0.4
    perturb: float = 0.1

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
        """Check every invariant that does not need the data; raise ConfigError on the first.

        Numbers go first, each by its rule in NUMERIC_RULES (type, finiteness, range), so that no
        later check or computation ever sees a NaN, an infinity or an absurd size.
        """
        for f in dataclasses.fields(self):
            if f.name in NUMERIC_RULES:
                NUMERIC_RULES[f.name].check(f.name, getattr(self, f.name))
            elif _is_numeric_field(f):
                raise TypeError(f"config field {f.name!r} is numeric but has no rule in NUMERIC_RULES")
        for seed in self.seeds:
            NUMERIC_RULES["seed"].check("seeds", seed)
        fixed = {"noise": NOISES, "optimizer": OPTIMIZERS, "device": DEVICES, "preset": PRESET_NAMES,
                 "label_noise": LABEL_NOISES, "oracle": ORACLES, "dont_know": DONT_KNOW,
                 "warm_start": WARM_STARTS}
        for name, allowed in {**fixed, **(choices or {})}.items():
            _check_choice(name, getattr(self, name), allowed)
        if not self.seeds:
            raise ConfigError("--seeds needs one or more non-negative integers")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"--seeds has repeated values: {list(self.seeds)}")
        if self.label_noise == "adversarial" and self.label_noise_initial and self.label_noise_rate > 0:
            raise ConfigError("--label_noise adversarial cannot corrupt the initial set (no model exists yet to "
                              "follow): use --no-label_noise_initial or another --label_noise")
        if self.oracle == "human" and self.label_noise != "none" and self.label_noise_rate > 0:
            raise ConfigError("--label_noise simulates a wrong annotator; with --oracle human the person's answers "
                              "are the labels: drop --label_noise")
        if self.pool_subset and self.pool_subset < self.n_query:
            raise ConfigError(f"--pool_subset {self.pool_subset} is smaller than --n_query {self.n_query}")
        return self


@dataclass(frozen=True)
class Rule:
    """The allowed values of one numeric field: its type, and low ≤ value ≤ high (or < when open).

    Floats must also be finite in float32 (what the tensors hold): NaN and ±inf are never allowed,
    whatever the bounds, so config.json never holds them.
    """

    kind: type  # int or float
    low: float
    high: float
    low_open: bool = False
    high_open: bool = False
    why: str = ""  # shown after the range in the error message

    def check(self, name: str, value) -> None:
        if self.kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise ConfigError(f"--{name} must be an integer, got {value!r}")
        if self.kind is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"--{name} must be a number, got {value!r}")
            if not math.isfinite(value) or abs(value) > FLOAT32_MAX:
                raise ConfigError(f"--{name} must be a finite number (within float32's ±3.4e38), got {value}")
        below = value <= self.low if self.low_open else value < self.low
        above = value >= self.high if self.high_open else value > self.high
        if below or above:
            raise ConfigError(f"--{name} must be in {self.describe()}, got {value}"
                              + (f" ({self.why})" if self.why else ""))

    def describe(self) -> str:
        """The range in interval notation, e.g. [0, 1) or (0, ∞)."""
        def show(v):
            if math.isinf(v):
                return "∞" if v > 0 else "-∞"
            return f"{v:g}" if self.kind is float else str(v)
        left = "(" if self.low_open or self.low == -math.inf else "["
        right = ")" if self.high_open or self.high == math.inf else "]"
        return f"{left}{show(self.low)}, {show(self.high)}{right}"


FLOAT32_MAX = 3.4028234663852886e38
# Counts (images, steps, samples): far above any dataset here, and safe in int32 tensor arithmetic.
COUNT_MAX = 2**31 - 1
# A seed names random streams through a hash (rng.derive_seed takes any integer), but it is also
# written in folder names, config.json and pandas columns: keep it a non-negative int64.
SEED_MAX = 2**63 - 1
# torch.set_num_threads(100000) segfaults at the first matmul (measured, torch 2.x); 1024 is far
# above this project's machines.
THREADS_MAX = 1024
# epoch_order holds an epoch's draw order as int64 (16 bytes a draw while it is built).
EPOCH_SAMPLES_MAX = 10**8

_COUNT = Rule(int, 1, COUNT_MAX)
_COUNT0 = Rule(int, 0, COUNT_MAX)
_FRACTION = Rule(float, 0.0, 1.0)
_BELOW_ONE = Rule(float, 0.0, 1.0, high_open=True)
_NON_NEGATIVE = Rule(float, 0.0, math.inf)

# Every int and float field of Config, with its allowed range. validate() refuses a numeric field
# that is missing here, so a new field cannot be forgotten.
NUMERIC_RULES: dict[str, Rule] = {
    "num_valid": _COUNT, "batch_size": _COUNT, "epochs": _COUNT, "num_workers": _COUNT0,
    "seed": Rule(int, 0, SEED_MAX, why="a non-negative 64-bit integer"),
    "lr": Rule(float, 0.0, math.inf, low_open=True),
    "n_init_labeled": _COUNT, "n_query": _COUNT, "n_round": _COUNT0,
    "noise_rate": _FRACTION,
    "mc_samples": _COUNT,  # the memory this needs is checked against the data by loop.check_budget
    "momentum": _BELOW_ONE,
    "weight_decay": Rule(float, -math.inf, math.inf, why="negative means the optimizer's default"),
    "weight_decay_scaled": _NON_NEGATIVE,
    "min_steps": _COUNT0, "epoch_samples": Rule(int, 0, EPOCH_SAMPLES_MAX), "early_stopping": _COUNT0,
    "dropout": Rule(float, 0.0, 1.0, high_open=True, why="1 would drop every unit"),
    "noise_std": _NON_NEGATIVE,
    "sp_fraction": _FRACTION,
    "pool_subset": _COUNT0, "eval_batch_size": _COUNT,
    "threads": Rule(int, 0, THREADS_MAX, why="0 = all cores"),
    "label_noise_rate": _FRACTION,
    "image_size": Rule(int, 8, 512, why="images are resized to this many pixels a side"),
    "test_fraction": Rule(float, 0.0, 1.0, low_open=True, high_open=True),
    "human_port": Rule(int, 0, 65535, why="a TCP port; 0 = any free port"),
    "jobs": Rule(int, 1, THREADS_MAX, why="worker processes for --experiment's seeds"),
    "stop_loss": _NON_NEGATIVE,
    "stop_window": _COUNT,
    "stop_min_steps": _COUNT0,
    "shrink": _FRACTION,
    "perturb": _NON_NEGATIVE,
}


def _is_numeric_field(f: dataclasses.Field) -> bool:
    default = f.default
    return isinstance(default, (int, float)) and not isinstance(default, bool)


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
    "label_noise": "how the oracle answers: none, symmetric, pair or adversarial wrong labels",
    "label_noise_rate": "fraction of the queried images whose label comes back wrong",
    "label_noise_initial": "the initial labelled set gets label noise too",
    "image_size": "--dataset folder: images are resized to this many pixels a side",
    "test_fraction": "--dataset folder without test/: fraction of train held out as a stratified test split",
    "oracle": "who labels the queried images: simulated (the dataset's labels, with --label_noise) or human "
              "(a person, in a local web page whose address the run prints)",
    "dont_know": "--oracle human: an image answered \"I don't know\" leaves the pool (out) or goes back to it (pool)",
    "human_host": "--oracle human: address the labelling page listens on (127.0.0.1: this machine only)",
    "human_port": "--oracle human: port of the labelling page (0 = any free port)",
    "jobs": "--experiment: run the seeds in this many worker processes (one torch thread each when > 1)",
    "stop_loss": "> 0: stop a round's training at the end of the first epoch, at or after --stop_min_steps steps, "
                 "where the training loss averaged over the last --stop_window steps is below this (0 = off: "
                 "--epochs stretched to --min_steps, which stays the most a round trains)",
    "stop_window": "--stop_loss: how many of the last steps' training losses are averaged",
    "stop_min_steps": "--stop_loss: the fewest steps a round trains before the rule may stop it",
    "warm_start": "where a round's weights start: off (fresh, seeded by round), continue (the previous round's "
                  "trained weights) or shrink_perturb (--shrink × previous + --perturb × fresh; Ash & Adams 2020)",
    "shrink": "--warm_start shrink_perturb: λ, the factor on the previous round's weights",
    "perturb": "--warm_start shrink_perturb: σ, the factor on freshly initialised weights",
}

# Fields that say how a run is executed or tracked, not what it computes: they may differ when a run
# folder is resumed (on another machine, with other threads or without wandb).
OPERATIONAL_FIELDS = frozenset({"debug", "wandb", "wandb_project", "wandb_group", "threads", "num_workers",
                                "output_dir", "run_name", "resume", "experiment", "seeds", "human_host",
                                "human_port", "jobs"})


class _OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors become ConfigError: one line, exit code 2, from the caller."""

    def error(self, message):  # noqa: D102 - argparse hook
        raise ConfigError(f"{message} (see --help)")


def build_parser(choices: Mapping[str, Sequence[str]] | None = None) -> argparse.ArgumentParser:
    """The command-line parser: one flag per Config field, named as the field."""
    parser = _OneLineParser(description="Active-learning experiment runner.",
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    choices = dict(choices or {})
    choices.update(noise=NOISES, optimizer=OPTIMIZERS, device=DEVICES, preset=PRESET_NAMES, label_noise=LABEL_NOISES,
                   oracle=ORACLES, dont_know=DONT_KNOW, warm_start=WARM_STARTS)
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
