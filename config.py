"""Run configuration: every field declared once (default, help, rule, choices), the parser and the
README's flags table generated from those declarations, validation, and the project logger.

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


@dataclass(frozen=True)
class OracleKind:
    """What an --oracle is, for the code that must treat kinds differently (nothing compares names)."""

    interactive: bool  # a person answers in a page: a run waits for them (no sweep cells, one seed at a time)
    replayable: bool  # answers fixed per image (label noise included): read-back answers can be checked
    labels_new_images: bool  # can label images the dataset has no label for (a folder's unlabeled/)


ORACLES = {"simulated": OracleKind(interactive=False, replayable=True, labels_new_images=False),
           "human": OracleKind(interactive=True, replayable=False, labels_new_images=True)}
DONT_KNOW = ("out", "pool")
LABEL_NOISES = ("none", "symmetric", "pair", "adversarial")
OPTIMIZERS = ("adam", "sgd")
DEVICES = ("auto", "cpu", "cuda", "mps")
WARM_STARTS = ("off", "continue", "shrink_perturb")
EMBEDDINGS = ("model", "self_supervised")  # selfsup.py
ACQUISITIONS = ("top_k", "power", "softmax", "softrank")  # strategies/select.py
AUGMENTS = ("none", "shift", "shift_rotate", "standard")  # what each applies: augment.AUGMENTS
LR_SCHEDULES = ("constant", "cosine", "onecycle")
RESNET_STEMS = ("small", "imagenet")  # models/resnet.py: STEMS
# Defaults that follow the model. ResNet18 (docs/RESULTS_rq2.md, accuracy against steps at 20-200 labels):
# 700 steps are within 0.4 points of 1,000 up to 100 labels, where a round must fit a minute on 2 cores; from
# about 150 labels it needs more passes over the set, so at least 250 epochs (1,000 steps at 200 labels).
# A flag given, or a preset's value, wins; config.json records the values a run used, so a resume keeps
# them even if this table changes.
MODEL_DEFAULTS = {"resnet18": {"min_steps": 700, "epochs": 250}}


def _model_default_text(field: str) -> str:
    """'; when not given: 700 for `--model resnet18`', from MODEL_DEFAULTS (empty when no model sets it)."""
    said = [f"{d[field]} for `--model {m}`" for m, d in MODEL_DEFAULTS.items() if field in d]
    return "; when not given: " + ", ".join(said) if said else ""


@dataclass(frozen=True)
class Uncertainty:
    """Where an --uncertainty takes the K predictions of the uncertainty strategies from (nothing compares its
    name): ``k_flag``, the field that sets K; ``members_flag``, the field that sets how many networks a round
    trains (None: one network, whose dropout masks give the K); ``member_dropout``, the members' dropout when
    --dropout is not given (None: the field's default). Members of several networks are compared in reports
    as "(ensemble of M)", and strategies that choose from one network's features refuse them."""

    k_flag: str
    members_flag: str | None = None
    member_dropout: float | None = None

    @property
    def several_networks(self) -> bool:
        return self.members_flag is not None

    def networks(self, cfg) -> int:
        """How many networks round r trains under ``cfg`` (a Config or a saved config's dict)."""
        return _field(cfg, self.members_flag) if self.several_networks else 1

    def predictions(self, cfg) -> int:
        """K under ``cfg``."""
        return _field(cfg, self.k_flag)


def _field(cfg, name: str):
    return cfg[name] if isinstance(cfg, Mapping) else getattr(cfg, name)


# Beluch et al. 2018 train the members without dropout.
UNCERTAINTIES = {"mc_dropout": Uncertainty(k_flag="mc_samples"),
                 "ensemble": Uncertainty(k_flag="ensemble_size", members_flag="ensemble_size", member_dropout=0.0)}
EPIG_TARGET_SETS = ("pool", "test")
PRESET_NAMES = ("", *PRESETS)  # "" = no preset
# Fields whose absence from an older run folder's config.json means the behaviour of before they existed (not
# their default for new runs): results.read_config fills them so, and such a run resumes as it began.
LEGACY_DEFAULTS = {"known_labels_first": False}
# The stop_kappa at which a model counts as having stopped changing where --stop_when_stable does not say:
# the report's stopping point and the labelling page's message (Bloodgood & Vijay-Shanker 2009 stop at such a
# level of agreement). Here, in the bottom room, so that both read it without importing torch.
STABLE_KAPPA = 0.99


class ConfigError(ValueError):
    """A user-facing configuration problem: reported as one line, exit code 2."""


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors raise ``error_class``: one line, exit code 2, from the caller.

    Abbreviations are off: ``--n_q 20`` is an error, never a silent ``--n_query 20``.
    """

    error_class: type = ConfigError

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message):  # noqa: D102 - argparse hook
        raise self.error_class(f"{message} (see {self.prog} --help)")


# ---------------------------------------------------------------------------------------- numeric rules

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
_SEED = Rule(int, 0, SEED_MAX, why="a non-negative 64-bit integer")


def option(default, help: str, *, rule: Rule | None = None, choices: Sequence[str] | None = None,
           operational: bool = False, metavar: str = "", shown: str = ""):
    """One Config field with everything about it: default, help, numeric rule, fixed choices.

    ``help`` is Markdown (the README's flags table shows it as written; --help drops the backticks);
    ``{choices}`` in it stands for the allowed names. ``operational``: the field says how a run is
    executed or tracked, not what it computes, so it may differ when a run folder is resumed.
    ``metavar`` names the value in the table (``--seeds S …``); ``shown`` replaces the default there.
    """
    meta = {"help": help, "rule": rule, "choices": tuple(choices) if choices else None,
            "operational": operational, "metavar": metavar, "shown": shown}
    return dataclasses.field(default=default, metadata=meta)


# ----------------------------------------------------------------------------------------------- Config

@dataclass(frozen=True)
class Config:
    """Everything that defines a run. Field names are the command-line flag names."""

    # The original project's flags and defaults.
    dataset: str = option("mnist", "{choices}; `folder` is your own images")
    data_dir: str = option("data", "folder with dataset files; downloads go here when online")
    num_valid: int = option(1000, "validation images, drawn stratified from train with the seed", rule=_COUNT)
    batch_size: int = option(64, "training batch size", rule=_COUNT)
    epochs: int = option(10, "training epochs per round (each round trains a fresh model); more when "
                             "`--min_steps` asks" + _model_default_text("epochs"), rule=_COUNT)
    num_workers: int = option(0, "kept for compatibility: data are in-memory tensors, no loader workers are used",
                              rule=_COUNT0, operational=True)
    seed: int = option(42, "seed of the run (splits, initial set, noise, weights, dropout, random queries)", rule=_SEED)
    model: str = option("lenet", "{choices}")
    lr: float = option(0.001, "learning rate", rule=Rule(float, 0.0, math.inf, low_open=True))
    strategy: str = option("random", "{choices}")
    acquisition: str = option("top_k", "how a score strategy (bald, entropy, margin, epig, …) turns scores into a "
                                       "batch: `top_k`, the highest; or a seeded draw without replacement with "
                                       "probability ∝ score^β `power`, exp(β·score) `softmax`, or rank^-β "
                                       "`softrank` (Kirsch et al. 2023, arXiv 2106.12059)", choices=ACQUISITIONS)
    embedding: str = option("model", "{choices}: the features typiclust, coreset and probcover choose from: `model`, "
                                     "the classifier's penultimate layer; `self_supervised`, a small encoder trained "
                                     "once per dataset, noise and seed on every training image without labels "
                                     "(SimCLR), cached in `--embedding_cache`", choices=EMBEDDINGS)
    ssl_epochs: int = option(30, "`--embedding self_supervised`: the encoder's training epochs", rule=_COUNT)
    embedding_cache: str = option("", "`--embedding self_supervised`: where the features are cached (empty: "
                                      "$XDG_CACHE_HOME/active-learning/embeddings)", operational=True)
    acquisition_beta: float = option(1.0, "β of a stochastic `--acquisition`",
                                     rule=Rule(float, 0.0, 1e6, low_open=True))
    n_init_labeled: int = option(10000, "initial labelled images, drawn class-balanced with the seed", rule=_COUNT)
    n_query: int = option(1000, "images labelled per round", rule=_COUNT)
    n_round: int = option(10, "query rounds; rounds 0..n_round are trained and evaluated", rule=_COUNT0)
    noise: str = option("none", "{choices}: input noise on a fraction of the images", choices=NOISES)
    noise_rate: float = option(0.0, "fraction of images (pool, validation and test alike) that get noise",
                               rule=_FRACTION)
    wandb: bool = option(True, "log to Weights & Biases (offline mode without an API key)", operational=True)
    experiment: bool = option(False, "run the configuration once per `--seeds` value and aggregate", operational=True)
    debug: bool = option(False, "DEBUG logging and an ipdb post-mortem on an uncaught exception", operational=True)
    # Added by this project.
    device: str = option("auto", "{choices}: `auto` picks cuda, then mps, then cpu", choices=DEVICES)
    mc_samples: int = option(20, "MC dropout samples K for the uncertainty strategies (1 = one deterministic pass)",
                             rule=_COUNT)  # the memory this needs is checked against the data before a run
    optimizer: str = option("adam", "`adam`, or `sgd` with `--momentum` and `--weight_decay` (the original "
                                    "report's choice)", choices=OPTIMIZERS)
    momentum: float = option(0.9, "SGD momentum", rule=_BELOW_ONE)
    # Negative: the optimizer's default (adam 0, sgd 5e-4).
    weight_decay: float = option(-1.0, "L2 weight decay; negative means the optimizer's default (adam 0, sgd 5e-4)",
                                 rule=Rule(float, -math.inf, math.inf, why="negative means the optimizer's default"))
    weight_decay_scaled: float = option(0.0, "c > 0: weight decay c / (labelled images), set each round (Gal et "
                                             "al.'s code); overrides `--weight_decay`", rule=_NON_NEGATIVE)
    min_steps: int = option(1000, "at least this many optimizer steps per round: more epochs than `--epochs` when "
                                  "the labelled set is small" + _model_default_text("min_steps"), rule=_COUNT0)
    epoch_samples: int = option(0, "an epoch draws this many samples (whole shuffled passes, the last cut short) "
                                   "when the labelled set is smaller; 0 = one pass",
                                rule=Rule(int, 0, EPOCH_SAMPLES_MAX))
    early_stopping: int = option(0, "patience: stop after this many epochs without a higher validation accuracy "
                                    "and keep the best weights; 0 = off", rule=_COUNT0)
    dropout: float = option(0.5, "dropout probability in the classifier head",
                            rule=Rule(float, 0.0, 1.0, high_open=True, why="1 would drop every unit"))
    noise_std: float = option(1.0, "`gaussian`: standard deviation σ, in normalised units", rule=_NON_NEGATIVE)
    sp_fraction: float = option(0.1, "`salt_and_pepper`: fraction of an affected image's pixels that are replaced",
                                rule=_FRACTION)
    pool_subset: int = option(0, "score a seeded random subset of this many unlabelled images per round (0 = all)",
                              rule=_COUNT0)
    # Small chunks keep conv activations in cache: faster than 2048.
    eval_batch_size: int = option(512, "chunk size for evaluation and pool scoring (bounds memory)", rule=_COUNT)
    threads: int = option(0, "torch CPU threads (0 = all cores available to the process)",
                          rule=Rule(int, 0, THREADS_MAX, why="0 = all cores"), operational=True)
    output_dir: str = option("runs", "parent folder of run folders", operational=True)
    seeds: tuple = option((42, 43, 44), "seeds that `--experiment` runs", operational=True, metavar="S …")
    wandb_project: str = option("active-learning", "Weights & Biases project", operational=True)
    run_name: str = option("", "run folder name prefix (default `dataset_model_strategy_noise_seedN`); one plain "
                               "name of at most 100 letters, digits and `. _ + = , @ -`, so a run folder is always "
                               "inside `--output_dir`", operational=True)
    preset: str = option("", "{choices}: a published protocol's values as defaults; explicit flags override them",
                         choices=PRESET_NAMES, shown="(none)")
    resume: str = option("", "continue the run (or `--experiment`) in FOLDER from its last finished round (its "
                             "config.json must match)", operational=True, metavar="FOLDER")
    wandb_group: str = option("", "Weights & Biases group of the run (sweeps set it to the sweep's name)",
                              operational=True)
    # The oracle and the user's own images.
    label_noise: str = option("none", "{choices}: how the oracle answers (see \"Label noise\")", choices=LABEL_NOISES)
    label_noise_rate: float = option(0.0, "fraction of pool images whose label comes back wrong", rule=_FRACTION)
    label_noise_initial: bool = option(False, "the initial labelled set gets label noise too")
    image_size: int = option(32, "`--dataset folder`: images are resized to this many pixels a side",
                             rule=Rule(int, 8, 512, why="images are resized to this many pixels a side"))
    test_fraction: float = option(0.2, "`--dataset folder` without `test/`: stratified share of `train/` held out "
                                       "(fixed seed)", rule=Rule(float, 0.0, 1.0, low_open=True, high_open=True))
    # A person as the oracle: the labelling page's address and what "I don't know" does.
    oracle: str = option("simulated", "who labels the queried images: `simulated` (the dataset's labels, with "
                                      "`--label_noise`) or `human` (a person in a local web page; see \"A person "
                                      "as the oracle\")", choices=tuple(ORACLES))
    dont_know: str = option("out", "`--oracle human`: an image answered \"I don't know\" leaves the pool (`out`) "
                                   "or goes back to it (`pool`)", choices=DONT_KNOW)
    human_host: str = option("127.0.0.1", "`--oracle human`: address the page listens on (this machine only by "
                                          "default)", operational=True)
    human_port: int = option(0, "`--oracle human`: port of the page (0 = any free port)",
                             rule=Rule(int, 0, 65535, why="a TCP port; 0 = any free port"), operational=True)
    # The labelling tool: the labelled files, and the model's guess on the page.
    export_to: str = option("", "`--dataset folder`: when the run finishes, each labelled image (as `labels.csv` "
                                "lists it) is hard-linked, or copied, into DIR/<class>/; DIR must be new, empty "
                                "or this run's earlier export", operational=True, metavar="DIR")
    known_labels_first: bool = option(True, "`--oracle human` on a dataset that knows labels of its own (`folder`): "
                                            "every labelled `train/` image not held for validation is in the "
                                            "labelled set from round 0 and queries come only from `unlabeled/` "
                                            "(`--no-known_labels_first`: draw `--n_init_labeled` of them, as "
                                            "before); no effect elsewhere")
    query_lag: int = option(0, "how many rounds old the model that chooses a batch is: 0, this round's (the "
                                "oracle waits for its training); 1, the previous round's, scoring the pool without "
                                "the images just answered, while this round's model trains (the next batch is on "
                                "screen at once; the default with `--oracle human`); round 0's batch is always "
                                "round 0's model's",
                            rule=Rule(int, 0, 1, why="0 (this round's model chooses) or 1 (the previous round's)"))
    show_guess: bool = option(False, "`--oracle human`: each card shows the model's top class and its probability "
                                     "(off by default: seeing the guess anchors people to it)", operational=True)
    # Training at the machine's speed: seeds in parallel, and where a round's weights start.
    jobs: int = option(1, "`--experiment`: run the seeds this many at a time, each in a worker process with one "
                          "torch thread (same numbers as `--threads 1`)",
                       rule=Rule(int, 1, THREADS_MAX, why="worker processes for --experiment's seeds"),
                       operational=True)
    stop_loss: float = option(0.0, "> 0: a round stops training at the end of the first epoch, at or after "
                                   "`--stop_min_steps` steps, where the training loss averaged over the last "
                                   "`--stop_window` steps is below this; the `--epochs`/`--min_steps` budget stays "
                                   "the most (0 = off; see \"Training that converges\")", rule=_NON_NEGATIVE)
    stop_window: int = option(100, "`--stop_loss`: how many of the last steps' losses are averaged", rule=_COUNT)
    stop_min_steps: int = option(200, "`--stop_loss`: the fewest steps before the rule may stop a round",
                                 rule=_COUNT0)
    warm_start: str = option("off", "`off` (each round starts from fresh weights, seeded by round), `continue` "
                                    "(from the previous round's trained weights) or `shrink_perturb` (`--shrink` × "
                                    "previous + `--perturb` × fresh; Ash & Adams 2020)", choices=WARM_STARTS)
    shrink: float = option(0.4, "`--warm_start shrink_perturb`: λ, the factor on the previous round's weights",
                           rule=_FRACTION)
    perturb: float = option(0.1, "`--warm_start shrink_perturb`: σ, the factor on the fresh initial weights (at most "
                                 "1: as large as they are)", rule=_FRACTION)
    # Beyond MC dropout: where the K predictions that the uncertainty scores read come from.
    uncertainty: str = option("mc_dropout", "where the K predictions of the uncertainty strategies come from: "
                                            "`mc_dropout` (K = `--mc_samples` dropout masks of one network) or "
                                            "`ensemble` (K = `--ensemble_size` networks trained each round from "
                                            "their own initial weights; their dropout is 0 unless `--dropout` is "
                                            "given; Beluch et al. 2018)", choices=tuple(UNCERTAINTIES))
    ensemble_size: int = option(5, "`--uncertainty ensemble`: M, the networks trained each round", rule=_COUNT)
    # Beyond MC dropout and BALD: EPIG's target inputs, and the stopping signal.
    epig_targets: int = option(100, "`--strategy epig`: target inputs T, drawn each round with the seed, about whose "
                                    "predictions EPIG measures information (at most the unlabelled pool's or the "
                                    "test set's size)", rule=_COUNT)
    epig_target_set: str = option("pool", "`--strategy epig`: draw the targets from the unlabelled `pool` or from "
                                          "the `test` inputs (never their labels)", choices=EPIG_TARGET_SETS)
    stop_set_size: int = option(1000, "pool images, chosen once with the seed at round 0 (at most the unlabelled "
                                      "pool), on which `stop_kappa` compares consecutive rounds' predictions "
                                      "(0 = no stop set: `stop_kappa` is not computed, saving its predictions each "
                                      "round and a round's retraining on resume)",
                                rule=_COUNT0)
    # The training recipe: augmentation of the labelled batch, the learning rate over a round.
    augment: str = option("none", "{choices}: random transforms of each training batch (never of scoring, "
                                  "evaluation or the stop set): `shift` moves images by up to `--augment_shift` "
                                  "pixels, `shift_rotate` adds rotations of up to 10°, `standard` adds horizontal "
                                  "flips where the dataset says a flip keeps the class (not digits); when each "
                                  "helps: docs/RESULTS_recipe.md", choices=AUGMENTS)
    augment_shift: int = option(2, "`--augment`: the largest shift, in pixels, in each direction",
                                rule=Rule(int, 0, 16, why="pixels"))
    resnet_stem: str = option("small", "{choices}: `--model resnet18`'s first layers: `small`, a 3×3 stride-1 "
                                       "convolution at full resolution; `imagenet`, torchvision's 7×7 stride-2 "
                                       "convolution and max-pool (the original project's; 14× fewer FLOPs on "
                                       "28 pixels)", choices=RESNET_STEMS)
    lr_schedule: str = option("constant", "{choices}: the learning rate over a round's steps: `constant` `--lr`, "
                                          "`cosine` from `--lr` down to 0, `onecycle` up from `--lr`/25 to `--lr` "
                                          "in the first 30% of the steps, then down (Smith & Topin 2017)",
                              choices=LR_SCHEDULES)
    stop_when_stable: float = option(0.0, "> 0: end the run after the first round whose `stop_kappa` reaches this "
                                          "(0 = off; see \"When to stop labelling\")", rule=_FRACTION)

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
            if not isinstance(values["seeds"], (list, tuple)):
                raise ConfigError(f"--seeds must be a list of integers, got {_brief(values['seeds'])}")
            values["seeds"] = tuple(values["seeds"])
        return cls(**values)

    @property
    def resolved_weight_decay(self) -> float:
        """Weight decay actually used: the flag, or the optimizer's default when negative."""
        if self.weight_decay >= 0:
            return self.weight_decay
        return 5e-4 if self.optimizer == "sgd" else 0.0

    @property
    def source(self) -> Uncertainty:
        """What --uncertainty is (UNCERTAINTIES)."""
        return UNCERTAINTIES[self.uncertainty]

    @property
    def predictions(self) -> int:
        """K, the predictions per image that the uncertainty strategies read: --ensemble_size members with
        --uncertainty ensemble, else --mc_samples dropout masks."""
        return self.source.predictions(self)

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
            elif f.type == "str" and not isinstance(getattr(self, f.name), str):
                raise ConfigError(f"--{f.name} must be text, got {_brief(getattr(self, f.name))}")
            elif f.type == "bool" and not isinstance(getattr(self, f.name), bool):
                raise ConfigError(f"--{f.name} must be true or false, got {_brief(getattr(self, f.name))}")
        for seed in self.seeds:
            NUMERIC_RULES["seed"].check("seeds", seed)
        for name, allowed in {**FIXED_CHOICES, **(choices or {})}.items():
            _check_choice(name, getattr(self, name), allowed)
        if not self.seeds:
            raise ConfigError("--seeds needs one or more non-negative integers")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"--seeds has repeated values: {list(self.seeds)}")
        if self.label_noise == "adversarial" and self.label_noise_initial and self.label_noise_rate > 0:
            raise ConfigError("--label_noise adversarial cannot corrupt the initial set (no model exists yet to "
                              "follow): use --no-label_noise_initial or another --label_noise")
        if ORACLES[self.oracle].interactive and self.label_noise != "none" and self.label_noise_rate > 0:
            raise ConfigError(f"--label_noise simulates a wrong annotator; with --oracle {self.oracle} the person's "
                              "answers are the labels: drop --label_noise")
        if self.pool_subset and self.pool_subset < self.n_query:
            raise ConfigError(f"--pool_subset {self.pool_subset} is smaller than --n_query {self.n_query}")
        if self.warm_start == "shrink_perturb" and self.shrink == 0 and self.perturb == 0:
            raise ConfigError("--warm_start shrink_perturb with --shrink 0 and --perturb 0 starts every round from "
                              "all-zero weights, which cannot learn: give --shrink or --perturb above 0")
        if self.stop_when_stable > 0 and self.stop_set_size == 0:
            raise ConfigError("--stop_when_stable needs a stop set to compute stop_kappa on: drop --stop_set_size 0")
        return self


# ------------------------------------------------------------- tables derived from the declarations above

FIELDS: tuple = dataclasses.fields(Config)
DEFAULT_CONFIG: dict = Config().to_dict()
HELP: dict = {f.name: f.metadata["help"] for f in FIELDS}
# Every int and float field of Config, with its allowed range. validate() refuses a numeric field
# that is missing here, so a new field cannot be forgotten.
NUMERIC_RULES: dict = {f.name: f.metadata["rule"] for f in FIELDS if f.metadata["rule"] is not None}
FIXED_CHOICES: dict = {f.name: f.metadata["choices"] for f in FIELDS if f.metadata["choices"]}
# Fields that say how a run is executed or tracked, not what it computes: they may differ when a run
# folder is resumed (on another machine, with other threads or without wandb).
OPERATIONAL_FIELDS = frozenset(f.name for f in FIELDS if f.metadata["operational"])


def _is_numeric_field(f: dataclasses.Field) -> bool:
    default = f.default
    return isinstance(default, (int, float)) and not isinstance(default, bool)


def _brief(value, limit: int = 60) -> str:
    """repr(value), cut to ``limit`` characters: error messages stay one short line."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def help_text(name: str, choices: Sequence[str], markdown: bool) -> str:
    """A field's help with its choices filled in: as Markdown for the README, plain for --help."""
    text = HELP[name]
    if "{choices}" in text:
        text = text.replace("{choices}", ", ".join(f"`{c}`" for c in choices if c))
    return text if markdown else text.replace("`", "")


# ----------------------------------------------------------------------------------------- command line

def build_parser(choices: Mapping[str, Sequence[str]] | None = None,
                 suppress_defaults: bool = False) -> argparse.ArgumentParser:
    """The command-line parser: one flag per Config field, named as the field.

    ``suppress_defaults``: flags not given are left out of the result (what given_flags needs).
    """
    parser = OneLineParser(prog="main.py", description="Active-learning experiment runner.",
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                           argument_default=argparse.SUPPRESS if suppress_defaults else None)
    allowed = {**FIXED_CHOICES, **(choices or {})}
    for f in FIELDS:
        flag, default = f"--{f.name}", f.default
        help_ = help_text(f.name, allowed.get(f.name, ()), markdown=False).replace("%", "%%")  # argparse formats it
        if suppress_defaults:
            default = argparse.SUPPRESS
        if isinstance(f.default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_)
        elif isinstance(f.default, tuple):
            parser.add_argument(flag, type=int, nargs="+", default=default if suppress_defaults else list(default),
                                help=help_)
        else:
            parser.add_argument(flag, type=type(f.default), default=default, help=help_,
                                choices=sorted(allowed[f.name]) if f.name in allowed else None)
    return parser


def parse_config(argv: Sequence[str] | None = None,
                 choices: Mapping[str, Sequence[str]] | None = None) -> Config:
    """Parse argv into a validated Config (ConfigError on a bad combination).

    With --preset, a second parse takes the preset's values as defaults, so explicit flags win; then
    the defaults that follow another flag's value (MODEL_DEFAULTS, an ensemble's dropout, a person's
    --query_lag), unless the preset sets them.
    """
    parser = build_parser(choices)
    args = parser.parse_args(argv)
    if args.preset:
        parser.set_defaults(**PRESETS[args.preset]["values"])
        args = parser.parse_args(argv)
    following = dict(MODEL_DEFAULTS.get(args.model, {}))
    if UNCERTAINTIES[args.uncertainty].member_dropout is not None:
        # Ensemble members are plain networks: --dropout's default does not apply to them, an explicit
        # --dropout does.
        following["dropout"] = UNCERTAINTIES[args.uncertainty].member_dropout
    if ORACLES[args.oracle].interactive:
        # A person gets the next batch at once, chosen by the previous round's model (docs/RESULTS_query_lag.md)
        following["query_lag"] = 1
    preset_values = PRESETS.get(args.preset, {}).get("values", {})
    following = {k: v for k, v in following.items() if k not in preset_values}
    if following:
        parser.set_defaults(**following)
        args = parser.parse_args(argv)
    return Config.from_dict(vars(args)).validate(choices)


def given_flags(argv: Sequence[str], choices: Mapping[str, Sequence[str]] | None = None) -> set:
    """Names of the Config fields that ``argv`` sets explicitly, as argparse itself reads it
    (``--name``, ``--no-name``, ``--name=value``; abbreviations are refused by the parser)."""
    return set(vars(build_parser(choices, suppress_defaults=True).parse_args(argv)))


def flags_table(choices: Mapping[str, Sequence[str]]) -> str:
    """The README's flags table, in Markdown, from the field declarations (and the registries' names)."""
    allowed = {**FIXED_CHOICES, **choices}
    lines = ["| flag | default | meaning |", "|---|---|---|"]
    for f in FIELDS:
        flag = f"`--{f.name}`" + (f" / `--no-{f.name}`" if f.default is True else "")
        if f.metadata["metavar"]:
            flag = f"`--{f.name} {f.metadata['metavar']}`"
        lines.append(f"| {flag} | {_shown_default(f)} | {help_text(f.name, allowed.get(f.name, ()), True)} |")
    return "\n".join(lines) + "\n"


def _shown_default(f: dataclasses.Field) -> str:
    if f.metadata["shown"]:
        return f.metadata["shown"]
    if isinstance(f.default, bool):
        return "on" if f.default else "off"
    if isinstance(f.default, tuple):
        return " ".join(map(str, f.default))
    return str(f.default) if f.default != "" else "(empty)"


def _check_choice(name: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ConfigError(f"unknown --{name} {_brief(value)}; choose one of: {', '.join(sorted(allowed))}")


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
