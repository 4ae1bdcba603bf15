"""The active-learning loop: prepare the data once, then train → evaluate → query → reveal, per round.

Random streams (see rng.py) are named by (seed, purpose, round), so for one seed the validation split,
the noise, the initial set and each round's initial weights are the same whatever the strategy.
"""
from __future__ import annotations

import functools
import io
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from augment import AUGMENTS, make_augmenter
from config import DEFAULT_CONFIG, Config, ConfigError
from data import DATASETS, Dataset, Images, PoolState, initial_positions, split_train
from export import LabelsFile
from memory import starts_from_known_labels
from models import MODEL_OPTIONS, Ensemble, build_model, model_options
from noise import apply_noise
from oracles import ORACLES, make_oracle, replayable_oracle
from results import RunDir
from rng import torch_generator
from stopping import StopSignal, reached, stop_set_positions
from selfsup import SSLSpec, default_cache_dir, self_supervised_features
from strategies import STRATEGIES, Embeddings, Strategy, get_strategy, random_scores, select_stochastic, select_top_k
from train import (Schedule, check_finite, evaluate, fit, make_optimizer, pool_embeddings, pool_log_probs, score_pool,
                   warm_start)
from workers import Background


@dataclass
class StudyData:
    """One seed's view of a dataset: noisy images on the device, and the split indices."""

    train: Images
    train_y: torch.Tensor
    test: Images
    test_y: torch.Tensor
    val_idx: torch.Tensor   # dataset indices (device)
    pool_idx: torch.Tensor  # dataset indices (device); pool position p is dataset item pool_idx[p]
    num_classes: int
    noisy_train: int = 0
    noisy_test: int = 0
    classes: tuple | None = None  # class names by label, when the dataset has them
    # ``folder``: the image files by dataset index (train, then unlabeled/), relative to ``root``
    root: str | None = None
    files: tuple | None = None
    noisy_P: torch.Tensor | None = None  # CPU bool per pool position: its input carries noise (None: none does)
    noisy_T: torch.Tensor | None = None  # bool per test image (device): its input carries noise
    ssl_features: torch.Tensor | None = None  # --embedding self_supervised: CPU features by dataset index

    @property
    def device(self) -> torch.device:
        return self.train_y.device

    @property
    def pool_y(self) -> torch.Tensor:
        return self.train_y[self.pool_idx]

    def noisy_of(self, positions: torch.Tensor) -> torch.Tensor:
        """Whether each of these pool positions' inputs carries noise (CPU bool)."""
        positions = positions.cpu()
        return self.noisy_P[positions] if self.noisy_P is not None else torch.zeros(positions.numel(), dtype=torch.bool)


def check_declared(cfg: Config) -> None:
    """What the strategy declares it needs must be configured, and what the dataset declares must allow
    the configuration."""
    for name in {f for fields in MODEL_OPTIONS.values() for f in fields} - set(MODEL_OPTIONS.get(cfg.model, ())):
        if getattr(cfg, name) != DEFAULT_CONFIG[name]:
            raise ConfigError(f"--{name} is an option of --model "
                              f"{' or '.join(m for m, fields in MODEL_OPTIONS.items() if name in fields)}; "
                              f"--model {cfg.model} does not take it")
    if "flip" in AUGMENTS[cfg.augment] and not DATASETS[cfg.dataset].flips_keep_class:
        raise ConfigError(f"--augment {cfg.augment} flips images left to right, which can change a class of "
                          f"--dataset {cfg.dataset}: use --augment shift_rotate")
    strategy = get_strategy(cfg.strategy)
    if cfg.embedding == "self_supervised" and not strategy.features_only:
        takers = ", ".join(sorted(n for n, s in STRATEGIES.items() if s.features_only))
        raise ConfigError(f"--embedding self_supervised gives features to {takers}; --strategy {cfg.strategy} "
                          "does not choose from features alone: use --embedding model")
    if cfg.acquisition != "top_k" and not strategy.scores_items:
        raise ConfigError(f"--acquisition {cfg.acquisition} draws from per-image scores; --strategy {cfg.strategy} "
                          "has none (it chooses its batch itself): use --acquisition top_k")
    if cfg.acquisition == "power" and strategy.negative_scores:
        raise ConfigError(f"--acquisition power needs scores ≥ 0; --strategy {cfg.strategy}'s are negative: use "
                          "--acquisition softmax or softrank")
    if cfg.source.several_networks and strategy.kind == "embeddings":
        raise ConfigError(f"--strategy {cfg.strategy} chooses from one network's features; it does not take "
                          f"--uncertainty {cfg.uncertainty}")
    if cfg.predictions < strategy.min_mc_samples:
        raise ConfigError(f"--strategy {cfg.strategy} needs --{cfg.source.k_flag} ≥ {strategy.min_mc_samples}, "
                          f"got {cfg.predictions}")


def prepare_data(cfg: Config, dataset: Dataset, device: torch.device) -> StudyData:
    """Split, add the run's fixed input noise, and move everything to the device once."""
    # Split train into validation and pool
    splits = split_train(dataset.train_y, cfg.num_valid, cfg.seed)
    train_x, train_y, pool_idx, files = dataset.train_x, dataset.train_y, splits.pool_idx, dataset.files
    extra = unlabeled_in_pool(cfg, dataset)
    if extra:  # images without labels (label -1) join the pool after the labelled ones
        n = train_y.numel()
        train_x = torch.cat([train_x, dataset.unlabeled_x])
        train_y = torch.cat([train_y, torch.full((extra,), -1, dtype=train_y.dtype)])
        pool_idx = torch.cat([pool_idx, torch.arange(n, n + extra, dtype=pool_idx.dtype)])
        files = files + dataset.unlabeled_files if files is not None else None
    # Add input noise once per image, seeded by the run
    train, train_affected = _noisy(train_x, dataset, cfg, "train")
    test, test_affected = _noisy(dataset.test_x, dataset, cfg, "test")
    noisy = torch.zeros(train_x.shape[0], dtype=torch.bool)
    noisy[train_affected] = True
    noisy_T = torch.zeros(dataset.test_y.numel(), dtype=torch.bool)
    noisy_T[test_affected] = True
    return StudyData(train=train.to(device), train_y=train_y.to(device),
                     test=test.to(device), test_y=dataset.test_y.to(device),
                     val_idx=splits.val_idx.to(device), pool_idx=pool_idx.to(device),
                     num_classes=dataset.num_classes, noisy_train=train_affected.numel(),
                     noisy_test=test_affected.numel(), classes=tuple(dataset.classes) if dataset.classes else None,
                     noisy_P=noisy[pool_idx], noisy_T=noisy_T.to(device), root=dataset.root, files=files)


def first_positions(cfg: Config, pool_y: torch.Tensor) -> torch.Tensor:
    """Pool positions of the initial labelled set: every labelled one (starts_from_known_labels), else
    --n_init_labeled of them, class-balanced and seeded."""
    if starts_from_known_labels(cfg):
        return torch.nonzero(pool_y >= 0).flatten()
    return initial_positions(pool_y, cfg.n_init_labeled, cfg.seed)


def unlabeled_in_pool(cfg: Config, dataset: Dataset) -> int:
    """How many images without labels join the pool: the dataset's unlabelled ones when a person labels."""
    if dataset.unlabeled_x is None or not ORACLES[cfg.oracle].labels_new_images:
        return 0
    return int(dataset.unlabeled_x.shape[0])


def _noisy(x_uint8: torch.Tensor, dataset: Dataset, cfg: Config, split: str) -> tuple:
    """(the images with the run's input noise, the indices of the images that carry it)."""
    images = Images(x_uint8, dataset.mean, dataset.std)
    if cfg.noise == "none" or cfg.noise_rate == 0:
        return images, torch.zeros(0, dtype=torch.int64)
    noisy, affected = apply_noise(images.normalised(), cfg.noise, cfg.noise_rate,
                                  torch_generator(cfg.seed, "noise", split),
                                  std=cfg.noise_std, sp_fraction=cfg.sp_fraction)
    return images.replaced(noisy), affected


def run_study(cfg: Config, data: StudyData, run_dir: RunDir, tracker, log: logging.Logger) -> list:
    """Rounds 0..n_round, from the first one the run folder has not finished (resume).

    Each finished round is in the run folder before the next starts. Every random stream is named by
    (seed, purpose, round), so a resumed run continues exactly as an uninterrupted one would have.
    """
    strategy = get_strategy(cfg.strategy)
    state = PoolState(data.pool_idx.numel())
    if cfg.embedding == "self_supervised":  # once per (dataset, noise, seed): cached, so usually read
        t = time.perf_counter()
        data.ssl_features = self_supervised_features(data.train, cfg.seed, SSLSpec(epochs=cfg.ssl_epochs),
                                                     Path(cfg.embedding_cache or default_cache_dir()), log)
        log.info("self-supervised features of %d images ready in %.1f s", len(data.ssl_features),
                 time.perf_counter() - t)
    # Label the initial, class-balanced set (no model yet: the oracle gets no predictions)
    first = first_positions(cfg, data.pool_y.cpu())
    context = OracleContext(data, state, run_dir, log)
    oracle = make_oracle(cfg, data.pool_y, data.num_classes, initial=first, study=context)
    weights = TrainedWeights(run_dir, keep=cfg.warm_start != "off")
    labels = LabelsFile(data, run_dir)
    stop = StopSignal(stop_set_positions(len(state), first, cfg.stop_set_size, cfg.seed))
    run_dir.pool_noisy_fraction = float(data.noisy_of(torch.arange(len(state))).float().mean())
    try:
        start = len(run_dir.rounds)
        if start == 0:
            first_labels = oracle(first)
            state.label(first, first_labels, round_=0)
            run_dir.reset_acquired(acquired_rows(data, -1, first, first_labels,
                                                 torch.full((first.numel(),), math.nan)))
        else:
            run_dir.upgrade_records(true_label=lambda p: int(data.pool_y[p]),
                                    noisy=lambda p: int(data.noisy_of(torch.tensor([p]))[0]))
            restore_labeled(state, data, run_dir.acquired, first, oracle, set_aside=cfg.dont_know == "out")
            replay_corrections(state, data, run_dir.corrections, DATASETS[cfg.dataset].own_labels,
                               skipped_positions(run_dir.acquired))
            run_dir.reset_acquired(run_dir.acquired)  # without the queries of a round that did not finish
            run_dir.reset_corrections(run_dir.corrections)  # and without its corrections
            weights.restore(start)
            log.info("resuming %s at round %d (%d labelled images)", run_dir.path, start, state.n_labeled)
        labels.update(state, oracle.answered_at, oracle.labelled_by)
        rows = list(run_dir.rounds)
        # A run that --stop_when_stable ended has no round left (it is resumed as complete)
        first_round = cfg.n_round + 1 if rows and stops(cfg, rows[-1]) else start
        chooser = None  # --query_lag 1: the previous round's model, which chooses the next batch
        if 0 < first_round <= cfg.n_round and (cfg.query_lag or not stop.off):
            previous = retrained_model(cfg, data, state, first_round - 1, weights)
            if not stop.off:
                stop.previous = predict_probs(cfg, data, previous, stop.positions).argmax(1)
            chooser = previous if cfg.query_lag else None
        for r in tqdm(range(first_round, cfg.n_round + 1), desc="rounds", disable=not sys.stderr.isatty()):
            row, acquired, model = run_round(cfg, data, state, strategy, oracle, r, live=context.live,
                                             weights=weights, stop=stop, chooser=chooser)
            chooser = model if cfg.query_lag else None
            corrections = take_corrections(data, state, oracle, r)
            run_dir.append_round(row, acquired, corrections)
            labels.update(state, oracle.answered_at, oracle.labelled_by)
            tracker.log(row)
            log.info(format_row(row))
            rows.append(row)
            if stops(cfg, row):
                break
        if rows and stops(cfg, rows[-1]):
            run_dir.stopped_because = stopped_because(cfg, rows[-1])
            log.info("stopping: %s", run_dir.stopped_because)
        oracle.close(finished=True)
    finally:
        oracle.close()
    return rows


def review_finished(cfg: Config, data: StudyData, run_dir: RunDir, log: logging.Logger) -> None:
    """``--resume`` of a finished run a person labelled: the page opens again for corrections only
    (HumanOracle.review_after_end) until the person presses Done; they are recorded in corrections.csv as
    made in the last round, and labels.csv is rewritten (the export follows, in main)."""
    state = recorded_state(cfg, data, run_dir)
    oracle = make_oracle(cfg, data.pool_y, data.num_classes, initial=first_positions(cfg, data.pool_y.cpu()),
                         study=OracleContext(data, state, run_dir, log))
    try:
        last = run_dir.rounds[-1]["round"]
        oracle.review_after_end(last)
        corrections = take_corrections(data, state, oracle, last)
        run_dir.record_corrections(corrections)
        LabelsFile(data, run_dir).update(state, oracle.answered_at, oracle.labelled_by)
        log.info("%d corrections recorded after the study", len(corrections))
        oracle.close(finished=True)
    finally:
        oracle.close()


def stops(cfg: Config, row: dict) -> bool:
    """Whether a round ends the run before its planned last round (--stop_when_stable: its kappa reached)."""
    return row["round"] < cfg.n_round and reached(row.get("stop_kappa", math.nan), cfg.stop_when_stable)


def stopped_because(cfg: Config, row: dict) -> str:
    """The reason summary.json gives for a run that --stop_when_stable ended."""
    return (f"predictions stable: stop_kappa {row['stop_kappa']:.4f} >= --stop_when_stable {cfg.stop_when_stable:g} "
            f"at round {row['round']} ({row['n_labeled']} labels), before the {cfg.n_round} planned rounds")


@dataclass
class OracleContext:
    """What an oracle may look at besides the labels: the images, the labelled set and the records
    (the human oracle shows the queried images and the learning curve; simulated ones ignore it)."""

    data: StudyData
    state: PoolState
    run_dir: RunDir
    log: logging.Logger
    # What the round in progress is doing ("phase": training, evaluating, querying) and, once evaluated,
    # its metrics: the row rounds.csv gets only after the oracle has answered.
    live: dict = field(default_factory=dict)


class TrainedWeights:
    """The last two rounds' trained weights, for --warm_start: in memory, and in the run folder's
    weights.pt (rewritten atomically before each round's rounds.csv row), so a resumed run starts its
    first round from exactly the weights an uninterrupted run would have."""

    def __init__(self, run_dir: RunDir, keep: bool):
        self.run_dir, self.keep_weights = run_dir, keep
        self.by_round: dict = {}

    def restore(self, start: int) -> None:
        """Load weights.pt when resuming at round ``start``; it must hold round start − 1's weights."""
        if not self.keep_weights:
            return
        data = self.run_dir.read_weights()
        try:
            self.by_round = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True) if data else {}
        except Exception as err:  # a truncated or foreign file: torch raises several kinds
            raise ConfigError(f"--resume {self.run_dir.path}: weights.pt cannot be read ({type(err).__name__})") from None
        if not isinstance(self.by_round, dict) or start - 1 not in self.by_round:
            raise ConfigError(f"--resume {self.run_dir.path}: weights.pt does not hold round {start - 1}'s trained "
                              "weights, which --warm_start needs to continue exactly; start a new run")

    def of(self, r: int) -> dict | None:
        """Round r's trained state dict (on the CPU), or None."""
        return self.by_round.get(r)

    def keep(self, r: int, model: torch.nn.Module) -> None:
        """Remember round r's trained weights (and round r − 1's), and write them to the run folder."""
        if not self.keep_weights:
            return
        self.by_round = {k: v for k, v in self.by_round.items() if k == r - 1}
        self.by_round[r] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        buffer = io.BytesIO()
        torch.save(self.by_round, buffer)
        self.run_dir.write_weights(buffer.getvalue())


def check_resumable(cfg: Config, data: StudyData, run_dir: RunDir) -> None:
    """Everything a resume reads from the run folder, checked before anything in it is written, so that
    a refused resume (ConfigError) leaves the folder exactly as it was."""
    recorded_state(cfg, data, run_dir)
    TrainedWeights(run_dir, keep=cfg.warm_start != "off").restore(len(run_dir.rounds))


def recorded_state(cfg: Config, data: StudyData, run_dir: RunDir) -> PoolState:
    """The labelled set as the run folder's acquired.csv and corrections.csv record it, each row checked
    against this dataset, split and seed (ConfigError when one does not belong)."""
    first = first_positions(cfg, data.pool_y.cpu())
    oracle = replayable_oracle(cfg, data.pool_y, data.num_classes, initial=first)
    state = PoolState(data.pool_idx.numel())
    restore_labeled(state, data, run_dir.acquired, first, oracle, set_aside=cfg.dont_know == "out")
    replay_corrections(state, data, run_dir.corrections, DATASETS[cfg.dataset].own_labels,
                       skipped_positions(run_dir.acquired))
    return state


def restore_labeled(state: PoolState, data: StudyData, acquired: list, first: torch.Tensor, oracle=None,
                    set_aside: bool = True) -> None:
    """Rebuild the labelled set from acquired.csv rows, checking they belong to this data and seed.

    The given ``label`` is what training used; the oracle (when given) remembers those answers, so an
    oracle that decides when asked (adversarial) answers as it did before the interruption. A row with
    label -1 is a query the oracle did not answer ("I don't know"): the item is set aside when
    ``set_aside`` (--dont_know out), else it stayed in the pool; one flagged ("none of these") is set aside.
    """
    positions = torch.tensor([row["pool_position"] for row in acquired], dtype=torch.int64)
    dataset_idx = torch.tensor([row["dataset_index"] for row in acquired], dtype=torch.int64)
    rounds = torch.tensor([row["round"] for row in acquired], dtype=torch.int64)
    initial = positions[rounds == -1].sort().values
    given = positions[torch.tensor([row["label"] >= 0 for row in acquired], dtype=torch.bool)]
    if given.unique().numel() != given.numel():  # "I don't know" (-1) may be asked again with --dont_know pool
        raise ConfigError("the run folder's acquired.csv labels a pool position twice (an image is labelled "
                          "once): it cannot be resumed")
    if (positions.numel() == 0 or (positions < 0).any() or (positions >= len(state)).any()
            or not torch.equal(data.pool_idx.cpu()[positions.clamp(max=len(state) - 1)], dataset_idx)
            or not torch.equal(initial, first.sort().values)):
        raise ConfigError("the run folder's acquired.csv does not match this dataset, split and seed: "
                          "it cannot be resumed")
    true = [row["true_label"] for row in acquired if "true_label" in row]  # folders before label noise: none
    if true and not torch.equal(torch.tensor(true, dtype=torch.int64), data.pool_y.cpu()[positions]):
        raise ConfigError("the run folder's acquired.csv does not match this dataset's labels: it cannot be resumed")
    labels = torch.tensor([row["label"] for row in acquired], dtype=torch.int64)
    if ((labels < -1) | (labels >= data.num_classes)).any():
        raise ConfigError(f"the run folder's acquired.csv holds a label outside -1..{data.num_classes - 1} "
                          "(-1: not answered): it cannot be resumed")
    answered = labels >= 0
    if oracle is not None:
        try:
            oracle.remember(positions[answered], labels[answered])
        except ValueError as err:
            raise ConfigError(f"the run folder's acquired.csv holds labels its oracle did not give ({err}; "
                              "changed by hand?): it cannot be resumed") from None
    for r in rounds.unique().tolist():
        chosen = (rounds == r) & answered
        state.label(positions[chosen], labels[chosen], round_=r + 1)
    flagged = torch.tensor([bool(row.get("flagged", 0)) for row in acquired], dtype=torch.bool)
    skipped = positions[~answered if set_aside else flagged]  # flagged ("none of these"): always
    state.set_aside(skipped[state.round_P[skipped] < 0])


def take_corrections(data: StudyData, state: PoolState, oracle, r: int) -> list:
    """Apply the answers the oracle changed during round r (while its batch was open) to the labelled set,
    so that round r + 1 trains on them: corrections.csv's rows (acquired.csv keeps the first answers). An
    image answered "I don't know" earlier and labelled now (old_label -1) joins the labelled set."""
    rows = []
    for fix in oracle.corrections():
        p = torch.tensor([int(fix["pool_position"])])
        old = int(state.labels_of(p)[0])
        label_or_relabel(state, p, torch.tensor([fix["label"]]), r)
        rows.append({"round": r, "pool_position": int(p), "dataset_index": int(data.pool_idx[p]), "old_label": old,
                     "label": int(fix["label"]), "at": fix["at"]})
    return rows


def label_or_relabel(state: PoolState, p: torch.Tensor, label: torch.Tensor, r: int) -> None:
    """A correction made while round r's batch was open: a new label for a labelled image, or the first for
    one answered "I don't know" (back from aside, labelled as if in round r's batch)."""
    if int(state.round_P[p]) >= 0:
        state.relabel(p, label)
    else:
        state.bring_back(p)
        state.label(p, label, round_=r + 1)


def replay_corrections(state: PoolState, data: StudyData, corrections: list, own_labels: bool,
                       skipped: dict | None = None) -> None:
    """Apply corrections.csv's rows (read back on --resume) in their order, checking that each changes a
    label a person gave in a query round before it (not the initial set's, nor, with ``own_labels``, one the
    dataset knows), as it was, to a class of this dataset: only what the labelling page lets a person correct.
    A row with old_label -1 labels an image still unlabelled that the person answered "I don't know" in an
    earlier round (``skipped``: pool position -> the round of that answer, from acquired.csv)."""
    skipped = skipped or {}
    for row in corrections:
        p = row["pool_position"]
        inside = 0 <= p < len(state) and row["dataset_index"] == int(data.pool_idx[p])
        if inside and row["old_label"] == -1:
            ok = skipped.get(p, row["round"]) < row["round"] and state.round_P[p] < 0
        else:
            ok = (inside and 1 <= state.round_P[p] <= row["round"] and state.label_P[p] == row["old_label"])
        ok = (ok and not (own_labels and int(data.pool_y[p]) >= 0)
              and 0 <= row["label"] < data.num_classes)
        if not ok:
            raise ConfigError("the run folder's corrections.csv does not match its acquired.csv (a correction "
                              f"of pool position {p} in round {row['round']}): it cannot be resumed")
        label_or_relabel(state, torch.tensor([p]), torch.tensor([row["label"]]), row["round"])


def skipped_positions(acquired: list) -> dict:
    """{pool position: round} of acquired.csv's "I don't know" answers (the latest per image)."""
    return {row["pool_position"]: row["round"] for row in acquired if row["label"] == -1}


def run_round(cfg: Config, data: StudyData, state: PoolState, strategy: Strategy, oracle, r: int,
              live: dict | None = None, weights: TrainedWeights | None = None,
              stop: StopSignal | None = None, chooser: torch.nn.Module | None = None) -> tuple:
    """One round: train a model, evaluate it, and (before the last round) query and reveal: (row, acquired
    rows, the trained model).

    ``live`` (the oracle context's) is updated as the round goes, for an oracle that shows progress;
    ``weights`` holds the previous round's trained weights for --warm_start, and gets this round's;
    ``stop`` the stop set and the previous round's predictions on it, and gets this round's. A round
    whose kappa ends the run (--stop_when_stable) queries nothing, like the last round.

    ``chooser`` (--query_lag 1, from round 1): the previous round's trained model. It chooses this round's
    batch and the oracle answers it while this round's model trains on the labels it had before (a copy of
    the labelled set, in a Background thread); the answers reach the next round. Every draw is named by
    (seed, purpose, round), so the numbers are those of doing the two one after the other. The batch is
    asked before this round's kappa is known: a round whose kappa ends the run keeps its answered batch.
    """
    live = {} if live is None else live
    live.clear()
    live.update(round=r, phase="training", n_labeled=state.n_labeled, steps_done=0,
                train_started=time.monotonic())
    t_round = time.perf_counter()
    lagged = chooser is not None and r < cfg.n_round
    trained_on = state.copy() if lagged else state
    # Train a model (fresh, or warm-started from the previous round's) on the labelled set; the live record
    # follows its steps (the labelling page's estimate of the time left)
    live["steps_planned"] = schedule_of(cfg).max_steps(state.n_labeled) * cfg.source.networks(cfg)

    def train() -> tuple:
        t = time.perf_counter()
        model, trained = train_model(cfg, data, trained_on, r, weights.of(r - 1) if weights else None,
                                     after_epoch=StepsDone(live))
        return model, trained, _elapsed(t, data.device)

    asked = None
    if lagged:  # the previous round's model chooses, and the oracle answers, while this one trains
        training = Background(train, name=f"round {r} training")
        live["chosen_by"] = r - 1
        asked = ask(cfg, data, state, strategy, oracle, chooser, r, chosen_by=r - 1)
        model, trained, train_s = training.result()
    else:
        model, trained, train_s = train()
    n_labeled, n_corrupted = trained_on.n_labeled, count_corrupted(data, trained_on)  # what the model learnt from
    # Keep the trained weights for the next round's warm start (file I/O: not part of train_s)
    if weights:
        weights.keep(r, model)
    # Evaluate on validation and test
    live["phase"] = "evaluating"
    t = time.perf_counter()
    val = validation_metrics(cfg, data, model)
    test = evaluate(model, data.test, torch.arange(len(data.test), device=data.device), data.test_y,
                    cfg.eval_batch_size, noisy=data.noisy_T)
    # Predict the stop set and compare with the previous round's predictions (stop_kappa)
    kappa = (stop.record(predict_probs(cfg, data, model, stop.positions).argmax(1)) if stop and not stop.off
             else math.nan)
    eval_s = _elapsed(t, data.device)
    live.update(phase="querying", val_acc=val["acc"], test_acc=test["acc"], stop_kappa=kappa)
    # Query the pool and reveal the chosen labels (no query after the last round)
    if asked is None:
        live["chosen_by"] = r
        asked = (ask(cfg, data, state, strategy, oracle, model, r, chosen_by=r)
                 if r < cfg.n_round and not reached(kappa, cfg.stop_when_stable) else Asked())
    row = {"round": r, "n_labeled": n_labeled, "n_corrupted": n_corrupted, "n_skipped": asked.n_skipped,
           "train_loss": trained["loss"],
           "train_epochs": trained["epochs"], "train_steps": trained["steps"],
           "val_acc": val["acc"], "val_loss": val["loss"], "test_acc": test["acc"], "test_loss": test["loss"],
           "test_error": 1.0 - test["acc"], "member_test_acc": test["member_acc"],
           "test_acc_clean": test.get("acc_clean", test["acc"]), "test_acc_noisy": test.get("acc_noisy", math.nan),
           "n_scored": asked.n_scored,
           "train_s": train_s, "eval_s": eval_s, "query_s": asked.query_s, "label_s": asked.label_s,
           "round_s": time.perf_counter() - t_round, "n_noisy": sum(a["noisy"] for a in asked.rows),
           "stop_kappa": kappa}
    return row, asked.rows, model


@dataclass
class Asked:
    """A round's query and its answers: acquired.csv's rows, how many candidates were scored and how many
    queried images were skipped, and the seconds choosing (query_s) and answering (label_s) took."""

    rows: list = field(default_factory=list)
    n_scored: int = 0
    n_skipped: int = 0
    query_s: float = 0.0
    label_s: float = 0.0


def ask(cfg: Config, data: StudyData, state: PoolState, strategy: Strategy, oracle, model, r: int,
        chosen_by: int) -> Asked:
    """Round r's query, chosen with ``model`` (round ``chosen_by``'s), and the oracle's answers, revealed into
    ``state``. The oracle may not answer an item (label -1, "I don't know"): it is recorded, and set aside
    or left in the pool; one flagged ("none of these": no class fits) is always set aside."""
    t = time.perf_counter()
    picked, picked_scores, draw_probs, n_scored = query(cfg, data, state, strategy, model, r)
    probs = predict_probs(cfg, data, model, picked) if oracle.needs_predictions else None
    t_label = time.perf_counter()
    labels = oracle(picked, probs)
    label_s = time.perf_counter() - t_label
    answered = labels >= 0
    state.label(picked[answered], labels[answered], round_=r + 1)
    notes = oracle.notes(picked)  # a person's "none of these" (flagged) answers, and the labeller's name
    flagged = torch.tensor([bool(n["flagged"]) for n in notes], dtype=torch.bool)
    state.set_aside(picked[~answered if cfg.dont_know == "out" else flagged])  # a flagged image is never asked again
    rows = [{**row, **note} for row, note in zip(acquired_rows(data, r, picked, labels, picked_scores, draw_probs,
                                                               chosen_by=chosen_by), notes)]
    return Asked(rows, n_scored, int((~answered).sum()), _elapsed(t, data.device) - label_s, label_s)


def acquired_rows(data: StudyData, r: int, positions: torch.Tensor, labels: torch.Tensor,
                  scores: torch.Tensor, draw_probs: torch.Tensor | None = None, chosen_by: int | None = None) -> list:
    """Rows of acquired.csv: queried after round r (-1: the initial set), pool and dataset indices, the
    label the oracle gave (``label``, what training uses) and the dataset's (``true_label``), the score,
    whether the image's input carries noise (``noisy``, 0/1), and the probability a stochastic
    --acquisition drew it with at its turn (``draw_prob``; NaN when nothing was drawn), and the round whose
    model chose it (``chosen_by``: r unless given; -1 for the initial set)."""
    dataset_idx = data.pool_idx[positions.to(data.device)].tolist()
    true = data.pool_y[positions.to(data.device)].tolist()
    noisy = data.noisy_of(positions).int().tolist()
    probs = [math.nan] * positions.numel() if draw_probs is None else draw_probs.tolist()
    return [{"round": r, "pool_position": p, "dataset_index": d, "label": lab, "true_label": t, "score": s,
             "noisy": z, "draw_prob": q, "chosen_by": r if chosen_by is None else chosen_by}
            for p, d, lab, t, s, z, q in zip(positions.tolist(), dataset_idx, labels.tolist(), true, scores.tolist(),
                                             noisy, probs)]


def count_corrupted(data: StudyData, state: PoolState) -> int:
    """Labelled items whose given label differs from the dataset's: the wrong labels a model trains on
    (items the dataset has no label for, -1, are not counted)."""
    labeled = state.labeled_positions()
    true = data.pool_y[labeled.to(data.device)].cpu()
    return int(((state.labels_of(labeled) != true) & (true >= 0)).sum())


def predict_probs(cfg: Config, data: StudyData, model, positions: torch.Tensor) -> torch.Tensor:
    """probs_N_C of the deterministic (dropout-off) model for pool positions, on the CPU."""
    idx = data.pool_idx[positions.to(data.device)]
    return pool_log_probs(model, data.train, idx, 1, False, None, cfg.eval_batch_size)[0].exp()


def retrained_model(cfg: Config, data: StudyData, state: PoolState, r: int, weights: TrainedWeights):
    """Round r's trained model: from its weights when --warm_start kept them, else trained again exactly as
    it was (the labels of rounds ≤ r, the same seeded streams). A resumed run's first kappa, and with
    --query_lag 1 its first batch, need it and it is not in the run folder: one round's training on resume
    buys exact numbers without another file to keep consistent (and folders written before stop_kappa
    existed get one too)."""
    if weights.of(r) is not None:
        model = fresh_model(cfg, data, r)
        model.load_state_dict(weights.of(r))
        return model
    used = (state.round_P >= 0) & (state.round_P <= r)
    earlier = PoolState(len(state))
    earlier.label(torch.nonzero(used).flatten(), state.label_P[used], round_=0)
    return train_model(cfg, data, earlier, r)[0]


def member_streams(cfg: Config, r: int) -> list:
    """The names of round r's networks' random streams: (r,) for one network; with several (--uncertainty
    ensemble), (r, m) for member m (its initial weights, batch order and dropout masks)."""
    return [(r, m) for m in range(cfg.source.networks(cfg))] if cfg.source.several_networks else [(r,)]


def fresh_model(cfg: Config, data: StudyData, r: int) -> torch.nn.Module:
    """Round r's freshly initialised model on the data's device: one network, or an Ensemble of
    --ensemble_size, each from its own stream (member_streams)."""
    c, h, _ = data.train.x.shape[1:]
    nets = [build_model(cfg.model, c, h, data.num_classes, cfg.dropout, torch_generator(cfg.seed, "weights", *s),
                        **model_options(cfg.model, cfg))
            for s in member_streams(cfg, r)]
    return (Ensemble(nets) if cfg.source.several_networks else nets[0]).to(data.device)


def train_model(cfg: Config, data: StudyData, state: PoolState, r: int, previous: dict | None = None,
                after_epoch=None) -> tuple:
    """A model initialised from (seed, round), or warm-started from ``previous`` (the last round's trained
    state dict, with --warm_start), and trained on the revealed labels as the schedule says.

    With --uncertainty ensemble the model is an Ensemble of --ensemble_size members, trained one after the
    other, each from its own streams (seed, purpose, round, member); the returned steps are all members'.
    """
    model = fresh_model(cfg, data, r)
    members = list(model.members) if isinstance(model, Ensemble) else [model]
    streams = member_streams(cfg, r)
    if previous is not None:  # TrainedWeights holds weights only with --warm_start
        warm_start(model, previous, cfg.warm_start, cfg.shrink, cfg.perturb)
    labeled = state.labeled_positions()
    idx = data.pool_idx[labeled.to(data.device)]
    y = state.labels_of(labeled).to(data.device)
    schedule = schedule_of(cfg)
    augmenter = make_augmenter(cfg.augment, cfg.augment_shift, data.train.mean.flatten().tolist(),
                               data.train.std.flatten().tolist())
    fits = []
    for member, s in zip(members, streams):
        optimizer = make_optimizer(member, cfg.optimizer, cfg.lr, cfg.weight_decay_for(labeled.numel()),
                                   cfg.momentum)
        fits.append(fit(member, data.train, idx, y, optimizer, schedule,
                        shuffle_gen=torch_generator(cfg.seed, "shuffle", *s),
                        dropout_gen=torch_generator(cfg.seed, "dropout", *s, device=data.device),
                        validate=lambda m: validation_metrics(cfg, data, m)["acc"], desc=f"round {r} epochs",
                        augment=augmenter, augment_gen=torch_generator(cfg.seed, "augment", *s, device=data.device),
                        after_epoch=after_epoch))
    fitted = fits[0] if len(fits) == 1 else {
        "loss": sum(f["loss"] for f in fits) / len(fits), "epochs": max(f["epochs"] for f in fits),
        "steps": sum(f["steps"] for f in fits), "kept_epoch": max(f["kept_epoch"] for f in fits)}
    check_finite(model, fitted["loss"], r)  # before its numbers or its queries are recorded
    return model, fitted


def schedule_of(cfg: Config) -> Schedule:
    """How a round trains, from the configuration."""
    return Schedule(cfg.epochs, cfg.batch_size, cfg.min_steps, cfg.epoch_samples, cfg.early_stopping,
                    cfg.stop_loss, cfg.stop_window, cfg.stop_min_steps, cfg.lr_schedule)


class StepsDone:
    """An after_epoch callback that keeps live["steps_done"], the round's optimizer steps so far (all the
    members' of an ensemble, trained one after the other)."""

    def __init__(self, live: dict):
        self.live, self.last = live, 0

    def __call__(self, model, steps: int) -> None:
        if steps <= self.last:  # the next member began (a member's steps only grow, epoch by epoch)
            self.last = 0
        self.live["steps_done"] = self.live.get("steps_done", 0) + steps - self.last
        self.last = steps


def validation_metrics(cfg: Config, data: StudyData, model) -> dict:
    """Accuracy and loss of the deterministic model on the validation split."""
    return evaluate(model, data.train, data.val_idx, data.train_y[data.val_idx], cfg.eval_batch_size)


def candidate_positions(state: PoolState, subset: int, generator: torch.Generator) -> torch.Tensor:
    """Unlabelled pool positions to score: all, or a seeded random subset of ``subset`` of them."""
    unlabeled = state.unlabeled_positions()
    if 0 < subset < unlabeled.numel():
        chosen = torch.randperm(unlabeled.numel(), generator=generator)[:subset]
        unlabeled = unlabeled[chosen.sort().values]
    return unlabeled


def query(cfg: Config, data: StudyData, state: PoolState, strategy: Strategy, model, r: int) -> tuple:
    """(pool positions to label, their scores, their draw probabilities (None unless --acquisition drew
    them), how many were scored), best first (or in pick or draw order)."""
    candidates = candidate_positions(state, cfg.pool_subset, torch_generator(cfg.seed, "subset", r))
    # Ask the strategy as its kind says; each way gives positions into the candidates, their scores and their
    # draw probabilities (None but for a stochastic --acquisition)
    picked, picked_scores, drawn = QUERY_BY_KIND[strategy.kind](Query(cfg, data, state, strategy, model, r,
                                                                      candidates))
    return candidates[picked], picked_scores, drawn, candidates.numel()


@dataclass
class Query:
    """What one round's query works from: the trained model and the candidates (unlabelled pool positions)."""

    cfg: Config
    data: StudyData
    state: PoolState
    strategy: Strategy
    model: torch.nn.Module | None
    r: int
    candidates: torch.Tensor

    @property
    def idx(self) -> torch.Tensor:
        """The candidates' dataset indices, on the device."""
        return self.data.pool_idx[self.candidates.to(self.data.device)]

    @property
    def mc(self) -> bool:
        """Whether predictions are K samples (a strategy that asks for them, K > 1): MC dropout masks, or
        the members of an ensemble."""
        return self.strategy.mc and self.cfg.predictions > 1

    @property
    def k(self) -> int:
        return self.cfg.predictions if self.mc else 1

    def generator(self, purpose: str, device: torch.device | str = "cpu") -> torch.Generator:
        return torch_generator(self.cfg.seed, purpose, self.r, device=device)

    def choose(self, scores: torch.Tensor) -> tuple:
        """(positions, their scores, their draw probabilities or None) of --n_query candidates from per-item
        scores: the top ones, or a draw as --acquisition says, from the stream (seed, "acquisition", round)."""
        if self.cfg.acquisition == "top_k":
            best = select_top_k(scores, self.cfg.n_query)
            return best, scores[best], None
        drawn, probs = select_stochastic(scores, self.cfg.n_query, self.cfg.acquisition, self.cfg.acquisition_beta,
                                         self.generator("acquisition"))
        return drawn, scores[drawn], probs


def query_random(q: Query) -> tuple:
    """No predictions: uniformly random scores, the top --n_query of them."""
    scores = random_scores(q.candidates.numel(), q.generator("random_query"))
    best = select_top_k(scores, q.cfg.n_query)
    return best, scores[best], None


def query_scores(q: Query) -> tuple:
    """The strategy scores every candidate from its K predictions, chunk by chunk; --n_query of them chosen as
    --acquisition says (Query.choose)."""
    scores = score_pool(q.model, q.data.train, q.idx, q.strategy.score, q.k, q.mc,
                        q.generator("mc_dropout", q.data.device), q.cfg.eval_batch_size).cpu()
    return q.choose(scores)


def query_batch(q: Query) -> tuple:
    """The strategy chooses the batch jointly, from all K predictions of every candidate."""
    log_probs = pool_log_probs(q.model, q.data.train, q.idx, q.k, q.mc, q.generator("mc_dropout", q.data.device),
                               q.cfg.eval_batch_size)
    picked, picked_scores = q.strategy.select_batch(log_probs, q.cfg.n_query, q.generator(q.strategy.name))
    return picked, picked_scores, None


def query_targets(q: Query) -> tuple:
    """The strategy scores every candidate against T target inputs' predictions (EPIG), chunk by chunk; the
    top --n_query. Targets and candidates are predicted under the same K dropout masks (the same named
    generator draws them), so that sample k is one model for both: the joint predictive needs pairs. Chosen as
    --acquisition says (Query.choose)."""
    images, target_idx = draw_targets(q)
    targets = pool_log_probs(q.model, images, target_idx, q.k, q.mc, q.generator("mc_dropout", q.data.device),
                             q.cfg.eval_batch_size).to(q.data.device)
    score = functools.partial(q.strategy.score_targets, log_probs_K_T_C=targets)
    scores = score_pool(q.model, q.data.train, q.idx, score, q.k, q.mc,
                        q.generator("mc_dropout", q.data.device), q.cfg.eval_batch_size).cpu()
    return q.choose(scores)


def draw_targets(q: Query) -> tuple:
    """(images, their indices on the device): --epig_targets inputs drawn with the round's seeded stream from
    the unlabelled pool (all of it, not only --pool_subset's candidates), or from the test inputs with
    --epig_target_set test (their labels are never read); all of them when there are fewer."""
    generator = q.generator("epig_targets")
    if q.cfg.epig_target_set == "test":
        chosen = torch.randperm(len(q.data.test), generator=generator)[:q.cfg.epig_targets].sort().values
        return q.data.test, chosen.to(q.data.device)
    unlabeled = q.state.unlabeled_positions()
    chosen = unlabeled[torch.randperm(unlabeled.numel(), generator=generator)[:q.cfg.epig_targets].sort().values]
    return q.data.train, q.data.pool_idx[chosen.to(q.data.device)]


def query_embeddings(q: Query) -> tuple:
    """The strategy chooses the batch from one deterministic pass's penultimate features and
    probabilities of the candidates, plus the features of every labelled image."""
    labeled_idx = q.data.pool_idx[q.state.labeled_positions().to(q.data.device)]
    h, p = pool_embeddings(q.model, q.data.train, q.idx, q.cfg.eval_batch_size)
    labeled_h, _ = pool_embeddings(q.model, q.data.train, labeled_idx, q.cfg.eval_batch_size)
    if q.data.ssl_features is not None:  # --embedding self_supervised: the encoder's features instead
        h = q.data.ssl_features[q.idx.cpu()].to(h.device)
        labeled_h = q.data.ssl_features[labeled_idx.cpu()].to(h.device)
    picked, picked_scores = q.strategy.select_embeddings(Embeddings(h, p, labeled_h), q.cfg.n_query,
                                                         q.generator(q.strategy.name))
    return picked.cpu(), picked_scores.cpu(), None


# How the loop queries for each kind of strategy (strategies.KINDS): it never asks which strategy it runs.
QUERY_BY_KIND = {"random": query_random, "score": query_scores, "batch": query_batch, "embeddings": query_embeddings,
                 "targets": query_targets}


def format_row(row: dict) -> str:
    """The console line of one round."""
    return (f"round {row['round']:>3} | labeled {row['n_labeled']:>6} | val {row['val_acc']:.4f} | "
            f"test {row['test_acc']:.4f} | train {row['train_s']:.2f}s eval {row['eval_s']:.2f}s "
            f"query {row['query_s']:.2f}s")


def _elapsed(start: float, device: torch.device) -> float:
    """Seconds since ``start``, after the device has finished its queued work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start
