"""loop.py: pool-subset scoring maps back to the right items; the query by strategy kind (EPIG's targets under
the candidates' masks); data preparation and its noise mask."""
import math

import pytest
import torch
from torch import nn

from config import Config
from conftest import probe_study_data
from data import Images, PoolState, load_dataset
from loop import candidate_positions, prepare_data, query
from models import DropoutHead, TrunkHeadModel
from rng import torch_generator
from strategies import Strategy, batchbald_select, epig, get_strategy
from train import pool_log_probs


def probe_study(n_train=60, n_pool=40):
    """Images whose every pixel is dataset_index/10, and a pool in shuffled dataset order."""
    x = (torch.arange(n_train, dtype=torch.float32) / 10).view(-1, 1, 1, 1).expand(-1, 1, 28, 28).contiguous()
    return probe_study_data(x, n_pool, num_classes=2)


def probe_model():
    """logits = [v, 0] where v is the image's pixel value, i.e. dataset_index/10."""
    first_pixel = nn.Linear(28 * 28, 1, bias=False)
    with torch.no_grad():
        first_pixel.weight.zero_()
        first_pixel.weight[0, 0] = 1.0
    head = DropoutHead([1, 2], p=0.0)
    with torch.no_grad():
        head.linears[0].weight.copy_(torch.tensor([[1.0], [0.0]]))
        head.linears[0].bias.zero_()
    return TrunkHeadModel(nn.Sequential(nn.Flatten(), first_pixel), head)


# Higher score for a higher dataset index: log p(class 0) = log sigmoid(v) grows with v.
PROBE = Strategy("probe", "score", mc=True, score=lambda lp: lp[..., 0].mean(0))


@pytest.mark.parametrize("subset", [0, 10, 25])
def test_query_maps_subset_positions_back_to_pool_and_dataset_indices(subset):
    data = probe_study()
    state = PoolState(40)
    state.label(torch.tensor([0, 5, 7]), torch.tensor([0, 1, 2]), round_=0)
    cfg = Config(pool_subset=subset, n_query=3, seed=11, eval_batch_size=4, mc_samples=3)
    picked, scores, _, n_scored = query(cfg, data, state, PROBE, probe_model(), r=2)

    unlabeled = set(state.unlabeled_positions().tolist())
    assert n_scored == (subset or 37)
    assert set(picked.tolist()) <= unlabeled
    # Re-derive the scored candidates: the seeded subset of unlabelled positions for this round.
    candidates = candidate_positions(state, subset, torch_generator(11, "subset", 2))
    assert candidates.numel() == n_scored and set(candidates.tolist()) <= unlabeled
    # The picked items are the candidates with the largest *dataset* indices, best first ...
    expected = sorted(candidates.tolist(), key=lambda p: -int(data.pool_idx[p]))[:3]
    assert picked.tolist() == expected
    # ... and their scores are those of their own images: log sigmoid(dataset_index / 10).
    for p, s in zip(picked.tolist(), scores.tolist()):
        v = int(data.pool_idx[p]) / 10
        assert s == pytest.approx(-math.log1p(math.exp(-v)), abs=1e-5)


def test_query_without_subset_takes_best_of_whole_unlabelled_pool():
    data = probe_study()
    state = PoolState(40)
    best_position = int(torch.argmax(data.pool_idx))
    state.label(torch.tensor([best_position]), torch.tensor([0]), round_=0)
    cfg = Config(n_query=2, eval_batch_size=7, mc_samples=2)
    picked, _, _, _ = query(cfg, data, state, PROBE, probe_model(), r=0)
    ranked = sorted((p for p in range(40) if p != best_position), key=lambda p: -int(data.pool_idx[p]))
    assert picked.tolist() == ranked[:2]


def dropout_probe_model():
    """The probe trunk (pixel value v = dataset_index/10) under a small random head with dropout: the K
    MC samples disagree, and differently for different images."""
    head = DropoutHead([1, 8, 3], p=0.5)
    with torch.no_grad():
        for lin in head.linears:
            lin.weight.copy_(torch.randn(lin.weight.shape, generator=torch.Generator().manual_seed(2)))
    return TrunkHeadModel(probe_model().trunk, head)


@pytest.mark.parametrize("subset", [0, 12])
def test_batchbald_query_returns_distinct_unlabelled_candidates_in_pick_order(subset):
    data = probe_study()
    state = PoolState(40)
    state.label(torch.tensor([0, 5, 7]), torch.tensor([0, 1, 2]), round_=0)
    cfg = Config(pool_subset=subset, n_query=4, seed=11, eval_batch_size=5, mc_samples=6)
    strategy = get_strategy("batchbald")
    model = dropout_probe_model()
    picked, scores, _, n_scored = query(cfg, data, state, strategy, model, r=1)

    candidates = candidate_positions(state, subset, torch_generator(11, "subset", 1))
    assert n_scored == candidates.numel() == (subset or 37)
    assert picked.numel() == 4 and picked.unique().numel() == 4
    assert set(picked.tolist()) <= set(candidates.tolist())
    assert scores.shape == (4,) and torch.isfinite(scores).all()
    # Same as selecting directly from the candidates' predictions under the round's consistent masks.
    lp = pool_log_probs(model, data.train, data.pool_idx[candidates], 6, True,
                        torch_generator(11, "mc_dropout", 1), chunk=5)
    assert lp.shape == (6, candidates.numel(), 3)
    positions, gains = batchbald_select(lp, 4, torch_generator(11, "batchbald", 1))
    assert picked.tolist() == candidates[positions].tolist()
    assert torch.equal(scores, gains)
    assert gains[0] > 0  # the samples do disagree
    # The masks are drawn once for the whole pool, so the chunk size changes nothing.
    whole = pool_log_probs(model, data.train, data.pool_idx[candidates], 6, True,
                           torch_generator(11, "mc_dropout", 1), chunk=1000)
    # float32 log-probabilities down to -27: a chunk of another size may take another GEMM blocking
    # (seen with 16 threads on torch 2.11), so allow float32 rounding relative to the value.
    assert torch.allclose(whole, lp, atol=1e-6, rtol=1e-6)


def test_candidate_positions_is_seeded_and_never_labelled():
    state = PoolState(100)
    state.label(torch.arange(0, 100, 3), torch.zeros(34, dtype=torch.long), round_=0)
    a = candidate_positions(state, 20, torch_generator(1, "subset", 0))
    b = candidate_positions(state, 20, torch_generator(1, "subset", 0))
    c = candidate_positions(state, 20, torch_generator(1, "subset", 1))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.numel() == 20 and a.unique().numel() == 20
    assert not set(a.tolist()) & set(range(0, 100, 3))
    assert torch.equal(candidate_positions(state, 0, torch_generator(1, "x")), state.unlabeled_positions())
    assert torch.equal(candidate_positions(state, 500, torch_generator(1, "x")), state.unlabeled_positions())


def test_random_strategy_needs_no_model_and_follows_seed():
    data = probe_study()
    state = PoolState(40)
    cfg = Config(n_query=5, seed=3)
    a, _, _, _ = query(cfg, data, state, get_strategy("random"), model=None, r=0)
    b, _, _, _ = query(cfg, data, state, get_strategy("random"), model=None, r=0)
    c, _, _, _ = query(cfg.replace(seed=4), data, state, get_strategy("random"), model=None, r=0)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_prepare_data_noise_hits_every_split_and_is_fixed():
    ds = load_dataset("mnist_5k", "data")
    cfg = Config(dataset="mnist_5k", noise="gaussian", noise_rate=0.25, num_valid=500, seed=5)
    a = prepare_data(cfg, ds, torch.device("cpu"))
    b = prepare_data(cfg, ds, torch.device("cpu"))
    assert a.noisy_train == 1000 and a.noisy_test == 250
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.test.x, b.test.x)
    clean = Images(ds.train_x, ds.mean, ds.std).normalised()
    changed = (a.train.x != clean).flatten(1).any(1)
    assert int(changed.sum()) == 1000
    # Validation and pool both contain noisy images (noise is per dataset image, not per split).
    assert changed[a.val_idx].any() and changed[a.pool_idx].any()
    # The noise mask (acquired.csv's noisy) marks exactly the pool images whose input changed.
    assert a.noisy_P.dtype == torch.bool and torch.equal(a.noisy_P, changed[a.pool_idx])
    assert torch.equal(a.noisy_of(torch.tensor([3, 0, 17, 3000])), changed[a.pool_idx[[3, 0, 17, 3000]]])
    assert sorted(torch.cat([a.val_idx, a.pool_idx]).tolist()) == list(range(4000))
    other = prepare_data(cfg.replace(seed=6), ds, torch.device("cpu"))
    assert not torch.equal(a.train.x, other.train.x)


def test_prepare_data_without_noise_keeps_uint8_storage():
    ds = load_dataset("mnist_5k", "data")
    data = prepare_data(Config(dataset="mnist_5k", num_valid=100), ds, torch.device("cpu"))
    assert data.train.x.dtype == torch.uint8 and data.noisy_train == 0
    assert data.noisy_P.numel() == data.pool_idx.numel() and not data.noisy_P.any()


# --- EPIG: targets drawn with the round's seed, predicted under the candidates' own dropout masks ---------

@pytest.mark.parametrize("subset, target_set", [(0, "pool"), (12, "pool"), (0, "test")])
def test_epig_query_scores_candidates_against_targets_under_the_same_masks(subset, target_set):
    data = probe_study()
    state = PoolState(40)
    state.label(torch.tensor([0, 5, 7]), torch.tensor([0, 1, 2]), round_=0)
    cfg = Config(pool_subset=subset, n_query=4, seed=11, eval_batch_size=5, mc_samples=6, epig_targets=9,
                 epig_target_set=target_set)
    model = dropout_probe_model()
    picked, scores, _, n_scored = query(cfg, data, state, get_strategy("epig"), model, r=1)

    # The targets: 9 drawn with the round's "epig_targets" stream, from all 37 unlabelled pool images (not only
    # the candidates) or from the test inputs.
    candidates = candidate_positions(state, subset, torch_generator(11, "subset", 1))
    order = torch.randperm(37 if target_set == "pool" else 60, generator=torch_generator(11, "epig_targets", 1))
    chosen = order[:9].sort().values
    target_idx = data.pool_idx[state.unlabeled_positions()[chosen]] if target_set == "pool" else chosen
    lp_targets = pool_log_probs(model, data.train if target_set == "pool" else data.test, target_idx, 6, True,
                                torch_generator(11, "mc_dropout", 1), chunk=5)
    lp_candidates = pool_log_probs(model, data.train, data.pool_idx[candidates], 6, True,
                                   torch_generator(11, "mc_dropout", 1), chunk=5)
    expected = epig(lp_candidates, lp_targets)
    assert n_scored == candidates.numel()
    assert picked.tolist() == candidates[torch.topk(expected, 4).indices].tolist()
    assert torch.allclose(scores, torch.topk(expected, 4).values, atol=1e-6)
    assert (scores > 1e-3).all()


def test_epig_targets_are_paired_with_the_candidates_samples():
    """Sample k of a target is sample k of the same image as a candidate: one model, one set of masks."""
    data = probe_study()
    state = PoolState(40)
    cfg = Config(n_query=3, seed=2, eval_batch_size=4, mc_samples=5, epig_targets=40)  # every image a target
    model = dropout_probe_model()
    lp_targets = pool_log_probs(model, data.train, data.pool_idx, 5, True, torch_generator(2, "mc_dropout", 0), 40)
    lp_pool = pool_log_probs(model, data.train, data.pool_idx, 5, True, torch_generator(2, "mc_dropout", 0), 4)
    assert torch.allclose(lp_targets, lp_pool, atol=1e-6)
    assert not torch.allclose(lp_pool[0], lp_pool[1], atol=1e-3)  # the samples differ: pairing matters
    picked, scores, _, _ = query(cfg, data, state, get_strategy("epig"), model, r=0)
    # Under independent masks for the targets, the joint predictive would lose the pairing and the scores
    # would change: the query's scores are those of the paired predictions.
    unpaired = pool_log_probs(model, data.train, data.pool_idx, 5, True, torch_generator(99, "other"), 40)
    paired_scores = epig(lp_pool, lp_targets)
    assert torch.allclose(scores, paired_scores[picked], atol=1e-6)
    assert not torch.allclose(epig(lp_pool, unpaired)[picked], scores, atol=1e-3)
