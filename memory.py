"""What a run will hold, planned and checked before it starts: labelling budget, model fit, query memory, device."""
from __future__ import annotations

import os

import torch

from config import ORACLES, Config, ConfigError
from data import DATASETS
from models import MODELS, DropoutHead, model_options
from models.head import SAMPLE_TEMP_BYTES
from strategies import get_strategy
from strategies.batchbald import DEFAULT_NUM_SAMPLES
from strategies.epig import epig_row_bytes

# MC scoring memory. The pool goes in chunks of --eval_batch_size rows, fewer when K is so large that
# a chunk's K × rows temporaries would pass MC_CHUNK_BYTES (down to one row): train.py asks
# mc_chunk_rows. What stays whatever the chunk (the K masks) and batchbald's whole K × N × C table are
# checked before a run starts (check_query_memory, from check_budget) against memory_limit().
MC_CHUNK_BYTES = 256 * 2**20
# Per row of a chunk: the head's outputs (DropoutHead.sample_row_bytes), then log_softmax and the
# score function's K × C temporaries. bald, the largest, measured 2 float32 copies of its K × N × C
# input above the input itself; 8 copies leave room.
SCORE_TEMP_COPIES = 8
# batchbald_select holds its K × N × C input plus 3.7–4.8 copies of it (measured peak resident memory,
# K = 20–1000, N = 2,000–100,000, C = 10), and sampled configurations × K tables (about 3 of them).
JOINT_COPIES = 6
JOINT_TABLES = 3
MEMORY_FRACTION = 0.5  # of physical memory (and of the GPU's when scoring runs on one)


def resolve_device(name: str) -> torch.device:
    """auto: cuda, then mps, then cpu. An explicitly requested device must exist."""
    has = {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available(), "cpu": True}
    if name == "auto":
        return torch.device(next(d for d in ("cuda", "mps", "cpu") if has[d]))
    if not has[name]:
        raise ConfigError(f"--device {name} is not available on this machine")
    return torch.device(name)


def check_budget(cfg: Config, n_train: int, num_classes: int, n_unlabeled: int = 0, *,
                 channels: int | None = None, device: torch.device | None = None) -> None:
    """The labelling budget, the image size and the query memory must fit the training split and the machine.

    ``n_unlabeled``: images without labels that join the pool (``folder``'s unlabeled/ with --oracle
    human). ``channels``: the loaded images' (see model_input). ``device``: where the run will query,
    as resolve_device gave it; None when it is not known on this machine (a sweep checking cells that
    Slurm runs elsewhere): the limit is then this machine's memory alone.
    """
    pool = check_labelling_budget(cfg, n_train, num_classes, n_unlabeled)
    model = planned_model(cfg, num_classes, channels)
    strategy = get_strategy(cfg.strategy)
    if cfg.source.several_networks:
        check_ensemble_memory(model, cfg.source.networks(cfg), memory_limit(device))
    if cfg.n_round > 0 and strategy.needs_predictions:
        # Round 0 meets the most candidates: the pool − the initial set, or --pool_subset
        k = cfg.predictions if strategy.mc and cfg.predictions > 1 else 1
        candidates = pool - cfg.n_init_labeled
        if cfg.pool_subset:
            candidates = min(candidates, cfg.pool_subset)
        # EPIG's targets: at most the unlabelled pool at round 0 (an estimate for --epig_target_set test)
        targets = min(cfg.epig_targets, pool - cfg.n_init_labeled) if strategy.kind == "targets" else 0
        check_query_memory(model.head, k, candidates, joint=strategy.kind == "batch", limit=memory_limit(device),
                           targets=targets, flag=f"--{cfg.source.k_flag}",
                           masks=not cfg.source.several_networks)


def starts_from_known_labels(cfg: Config) -> bool:
    """Whether round 0 trains on every labelled pool image (--known_labels_first: a person labels a dataset
    that knows labels of its own; queries then come only from its unlabelled images)."""
    return cfg.known_labels_first and DATASETS[cfg.dataset].own_labels and ORACLES[cfg.oracle].labels_new_images


def check_labelling_budget(cfg: Config, n_train: int, num_classes: int, n_unlabeled: int = 0) -> int:
    """The pool's size, once the validation split, the initial set and every round's queries fit it.

    The pool (training images − validation, + ``n_unlabeled``) must hold the initial set plus every
    round's queries, and the initial set must leave at least one image unlabelled (its seeded draw
    splits the pool in two non-empty parts; with --n_round ≥ 1 every query round needs --n_query
    unlabelled images, which the budget already implies). Images without labels cannot be in the
    initial set.
    """
    if cfg.num_valid < num_classes or cfg.num_valid >= n_train:
        raise ConfigError(f"--num_valid {cfg.num_valid} must be between {num_classes} (one per class) "
                          f"and {n_train - 1} for {cfg.dataset} ({n_train} training images)")
    labelled_pool = n_train - cfg.num_valid
    pool = labelled_pool + n_unlabeled
    unlabeled = f" + {n_unlabeled} unlabelled" if n_unlabeled else ""
    if n_unlabeled and starts_from_known_labels(cfg):
        # Round 0 trains on every labelled image: the queries must fit the unlabelled ones
        if cfg.n_query * cfg.n_round > n_unlabeled:
            raise ConfigError(f"--n_query × --n_round = {cfg.n_query} × {cfg.n_round} exceeds the {n_unlabeled} "
                              "unlabelled images a person can be asked for (the labelled ones are all in the "
                              "labelled set from round 0: --known_labels_first)")
        return pool
    needed = cfg.n_init_labeled + cfg.n_query * cfg.n_round
    if needed > pool:
        raise ConfigError(f"--n_init_labeled + --n_query × --n_round = {cfg.n_init_labeled} + {cfg.n_query} × "
                          f"{cfg.n_round} = {needed} exceeds the pool of {pool} images ({cfg.dataset}: "
                          f"{n_train} training images − {cfg.num_valid} validation{unlabeled})")
    if n_unlabeled and cfg.n_init_labeled > labelled_pool:
        raise ConfigError(f"--n_init_labeled {cfg.n_init_labeled} needs labelled images, but train/ holds "
                          f"{labelled_pool} after --num_valid {cfg.num_valid}; unlabeled/ images cannot be in "
                          "the initial set: lower --n_init_labeled or --num_valid, or label more images in train/")
    if cfg.n_init_labeled >= pool:
        raise ConfigError(f"--n_init_labeled {cfg.n_init_labeled} must leave at least one of the pool's {pool} "
                          f"images unlabelled ({cfg.dataset}: {n_train} training images − {cfg.num_valid} "
                          f"validation); lower it or --num_valid")
    return pool


def model_input(cfg: Config, channels: int | None = None) -> tuple:
    """(channels, pixels a side) of the images the model will take, known before they are loaded."""
    shape = DATASETS[cfg.dataset].shape
    # A registered dataset has the shape of its DatasetSpec (its loader refuses files of another).
    if shape is not None:
        return shape[0], shape[1]
    # A dataset sized by its data (folder) is resized to --image_size pixels a side; it has 1 channel
    # when every image is grey, else 3, which only its files say: ``channels`` once they are read, else
    # 1. Every model takes either, and the head, all that the budget looks at, is the same for both.
    return channels or 1, cfg.image_size


def planned_model(cfg: Config, num_classes: int, channels: int | None = None) -> torch.nn.Module:
    """The model the run will train (one network), on the meta device (sizes only: no memory, no random
    draws). ConfigError when the model cannot take the dataset's images (e.g. lenet takes 28 or 32 pixels).
    """
    channels, size = model_input(cfg, channels)
    try:
        with torch.device("meta"):
            return MODELS[cfg.model](channels, size, num_classes, cfg.dropout, **model_options(cfg.model, cfg))
    except ValueError as err:
        hint = " (set --image_size)" if DATASETS[cfg.dataset].shape is None else ""
        raise ConfigError(f"--model {cfg.model} cannot take the {size}-pixel images of {cfg.dataset}: {err}"
                          f"{hint}") from None


def memory_limit(device: torch.device | str | None = None) -> int:
    """The most that one query step may plan to hold: MEMORY_FRACTION of physical memory.

    On a CUDA device, also at most that fraction of the GPU's memory. 16 GiB when the platform does
    not say (os.sysconf is POSIX).
    """
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        total = 16 * 2**30
    limit = int(total * MEMORY_FRACTION)
    device = torch.device(device) if device is not None else None
    if device is not None and device.type == "cuda" and torch.cuda.is_available():
        limit = min(limit, int(torch.cuda.get_device_properties(device).total_memory * MEMORY_FRACTION))
    return limit


def mc_row_bytes(head: DropoutHead, k: int) -> int:
    """Bytes per pool row of one MC scoring chunk: head outputs, log-probabilities, score temporaries."""
    num_classes = head.linears[-1].out_features
    return head.sample_row_bytes(k) + SCORE_TEMP_COPIES * k * num_classes * 4


def mc_chunk_rows(head: DropoutHead, k: int, chunk: int) -> int:
    """Rows per MC chunk: ``chunk``, or fewer (at least 1) so that they stay within MC_CHUNK_BYTES."""
    return max(1, min(chunk, MC_CHUNK_BYTES // max(mc_row_bytes(head, k), 1)))


def mc_scoring_bytes(head: DropoutHead, k: int, rows: int = 1) -> int:
    """What MC scoring holds at its peak with ``rows`` rows a chunk: masks, sampling groups, the rows."""
    return head.mask_bytes(k) + SAMPLE_TEMP_BYTES + rows * mc_row_bytes(head, k)


def joint_bytes(k: int, n: int, num_classes: int) -> int:
    """What a joint-batch query holds: pool_log_probs' K × N × C float32 and batchbald's working copies."""
    return JOINT_COPIES * k * n * num_classes * 4 + JOINT_TABLES * DEFAULT_NUM_SAMPLES * k * 4


def check_ensemble_memory(model: torch.nn.Module, m: int, limit: int) -> None:
    """ConfigError when the M networks of an ensemble (all held at once) cannot fit in ``limit`` bytes."""
    need = m * sum(p.numel() * p.element_size() for p in model.parameters())
    if need > limit:
        raise ConfigError(f"--ensemble_size {m} keeps {m} networks of {need // m / 2**20:.1f} MiB "
                          f"({need / 2**30:.1f} GiB), more than the {limit / 2**30:.1f} GiB a run may use for them "
                          f"(half of the machine's memory, or of the GPU's); use a smaller --ensemble_size")


def targets_bytes(k: int, t: int, num_classes: int) -> int:
    """What an EPIG query holds beside MC scoring: the K × T × C target log-probabilities and their scaled
    copy, and one pool input's C × T × C temporaries (strategies.epig chunks the pool by those)."""
    return 2 * k * t * num_classes * 4 + epig_row_bytes(t, num_classes)


def check_query_memory(head: DropoutHead, k: int, n_candidates: int, joint: bool, limit: int,
                       targets: int = 0, flag: str = "--mc_samples", masks: bool = True) -> None:
    """ConfigError when a query with K samples over ``n_candidates`` images cannot fit in ``limit`` bytes.

    MC scoring itself is bounded by chunking, down to one row at a time, so it is refused only when
    the K masks and a single row already exceed the limit (``masks``: MC dropout; an ensemble's K
    predictions need no masks); a joint query (batchbald) keeps all of K × N × C and is refused when
    that (with its working copies) would; an EPIG query (``targets`` > 0) adds its T targets'
    predictions and one image's joint tables to the single row. ``flag`` names where K comes from.
    """
    gib = 2**30
    allowed = f"the {limit / gib:.1f} GiB a query may use (half of the machine's memory, or of the GPU's)"
    need = mc_scoring_bytes(head, k, rows=1) if masks else 0
    if need > limit:
        raise ConfigError(f"--mc_samples {k} needs {need / gib:.1f} GiB to score even one pool image "
                          f"(K dropout masks and K samples of the head per image), more than {allowed}; "
                          f"use fewer --mc_samples")
    if targets:
        c = head.linears[-1].out_features
        need += targets_bytes(k, targets, c)
        if need > limit:
            raise ConfigError(f"EPIG with {targets} targets needs {need / gib:.1f} GiB to score even one pool image "
                              f"(K × T × C target log-probabilities and a C × T × C joint per image), more than "
                              f"{allowed}; use fewer --epig_targets or a smaller {flag}")
    if joint:
        c = head.linears[-1].out_features
        need = joint_bytes(k, n_candidates, c)
        if need > limit:
            raise ConfigError(f"a joint batch query keeps K × N × C = {k} × {n_candidates} × {c} log-probabilities "
                              f"({k * n_candidates * c * 4 / gib:.1f} GiB, {need / gib:.1f} GiB with its working "
                              f"copies), more than {allowed}; use a smaller {flag} or --pool_subset")
