"""BatchBALD selection (Kirsch et al. 2019, arXiv 1906.08158) against brute-force joint mutual information.

The reference here enumerates every joint label configuration of a batch:
I[y_1..y_b; w] = H[mean_k Π_i p_k(y_i)] − Σ_i mean_k H[p_k(y_i)], with K consistent samples k.
"""
import itertools
import math

import pytest
import torch

from strategies import STRATEGIES, bald, batchbald_select, entropy_of, get_strategy, select_top_k
from strategies.batchbald import _conditional_entropy, _Configurations, _stratified_draws


def random_log_probs(k, n, c, seed, scale=2.0):
    """Consistent-sample log-probs K×N×C in float64, from random logits (larger scale: more disagreement)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.log_softmax(scale * torch.randn(k, n, c, generator=gen, dtype=torch.float64), dim=-1)


def joint_mi_by_enumeration(log_probs_K_N_C, positions):
    """I[y_positions; w] in nats, one configuration at a time (plain Python loop over C^b tuples)."""
    p = log_probs_K_N_C.double().exp()
    joint_entropy = 0.0
    for labels in itertools.product(range(p.shape[2]), repeat=len(positions)):
        p_k = torch.ones(p.shape[0], dtype=torch.float64)
        for i, y in zip(positions, labels):
            p_k = p_k * p[:, i, y]
        q = float(p_k.mean())
        if q > 0:
            joint_entropy -= q * math.log(q)
    expected = sum(float(-torch.special.xlogy(p[:, i], p[:, i]).sum(-1).mean()) for i in positions)
    return joint_entropy - expected


def joint_mi_vectorised(log_probs_K_N_C, positions):
    """The same quantity as joint_mi_by_enumeration, as a K × C^b table (for larger b and C)."""
    p = log_probs_K_N_C.double().exp()
    table_K_M = torch.ones(p.shape[0], 1, dtype=torch.float64)
    for i in positions:
        table_K_M = (table_K_M.unsqueeze(2) * p[:, i].unsqueeze(1)).flatten(1)
    joint_entropy = float(torch.special.entr(table_K_M.mean(0)).sum())
    expected = float(torch.special.entr(p[:, list(positions)]).sum(-1).mean(0).sum())
    return joint_entropy - expected


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# --- (a) the first pick is BALD's ------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("seed", range(5))
def test_first_pick_is_bald_argmax_with_bald_score(seed, dtype):
    lp = random_log_probs(8, 300, 10, seed).to(dtype)
    scores = bald(lp)
    positions, gains = batchbald_select(lp, 1, gen())
    assert positions.tolist() == [int(torch.argmax(scores))]
    assert positions.tolist() == select_top_k(scores, 1).tolist()
    assert gains.item() == pytest.approx(scores.max().item(), abs=1e-7)
    assert float(gains[0]) == float(scores.max().to(gains.dtype))  # the very same number
    # A longer batch starts the same way.
    longer, _ = batchbald_select(lp, 4, gen())
    assert longer[0] == positions[0]


# --- (b) exact mode: reported gains add up to the brute-force joint MI -----------------------------

@pytest.mark.parametrize("k, n, c, b", [(5, 8, 3, 4), (3, 6, 2, 5), (7, 10, 4, 3)])
def test_exact_gains_sum_to_enumerated_joint_mi_after_every_pick(k, n, c, b):
    lp = random_log_probs(k, n, c, seed=k + n)
    positions, gains = batchbald_select(lp, b, gen(), num_samples=c ** b, dtype=torch.float64)
    assert positions.unique().numel() == b
    for i in range(1, b + 1):
        assert float(gains[:i].sum()) == pytest.approx(joint_mi_by_enumeration(lp, positions[:i].tolist()),
                                                       abs=1e-10)
    # float32 working precision stays close to the exact value.
    positions32, gains32 = batchbald_select(lp, b, gen(), num_samples=c ** b)
    assert gains32.dtype == torch.float32
    assert positions32.tolist() == positions.tolist()
    assert torch.allclose(gains32.double(), gains, atol=1e-5, rtol=0)


def test_each_pick_is_the_greedy_maximiser_of_enumerated_joint_mi():
    lp = random_log_probs(6, 12, 3, seed=4)
    positions, _ = batchbald_select(lp, 4, gen(), num_samples=3 ** 4, dtype=torch.float64)
    chosen = []
    for pick in positions.tolist():
        values = {c: joint_mi_by_enumeration(lp, chosen + [c]) for c in range(12) if c not in chosen}
        assert values[pick] >= max(values.values()) - 1e-12
        chosen.append(pick)


def test_vectorised_reference_agrees_with_enumeration():
    lp = random_log_probs(4, 5, 3, seed=9)
    assert joint_mi_vectorised(lp, [0, 2, 4]) == pytest.approx(joint_mi_by_enumeration(lp, [0, 2, 4]), abs=1e-12)


# --- (c) duplicates: BatchBALD does not take the same information twice ----------------------------

def duplicate_pool():
    """K = 4 samples, 2 classes. Items 0 and 1 are identical and reveal k's parity (BALD ln 2); item 2
    reveals whether k < 2, slightly less surely (BALD ln 2 − H(0.95, 0.05)); item 3: all samples agree."""
    parity = [[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]]
    half = [[0.95, 0.05], [0.95, 0.05], [0.05, 0.95], [0.05, 0.95]]
    agree = [[0.5, 0.5]] * 4
    probs_K_N_C = torch.tensor([[parity[k], parity[k], half[k], agree[k]] for k in range(4)], dtype=torch.float64)
    return probs_K_N_C.log()


def test_duplicates_bald_takes_both_batchbald_takes_the_independent_item():
    lp = duplicate_pool()
    h = -(0.95 * math.log(0.95) + 0.05 * math.log(0.05))
    assert bald(lp).tolist() == pytest.approx([math.log(2), math.log(2), math.log(2) - h, 0.0], abs=1e-12)
    assert set(select_top_k(bald(lp), 2).tolist()) == {0, 1}
    for dtype in (torch.float32, torch.float64):
        positions, gains = batchbald_select(lp, 2, gen(), dtype=dtype)
        assert positions.tolist() == [0, 2]
        # item 2 is independent of item 0 given nothing, so its gain is its full BALD score
        assert gains.tolist() == pytest.approx([math.log(2), math.log(2) - h], abs=1e-6)
    # The copy adds nothing once its twin is in: it comes after the item that every sample agrees on,
    # tied at zero gain and broken by position.
    positions, gains = batchbald_select(lp, 4, gen(), dtype=torch.float64)
    assert positions.tolist() == [0, 2, 1, 3]
    assert gains[2:].tolist() == pytest.approx([0.0, 0.0], abs=1e-12)


# --- (d) sampled mode ------------------------------------------------------------------------------

def test_sampled_mode_is_close_to_enumerated_joint_mi_and_reproducible():
    lp = random_log_probs(8, 40, 10, seed=3, scale=1.5)
    # 10^3 ≤ 5000 < 10^4: picks 2-4 condition on the 10, 100, 1,000 enumerated configurations of the
    # picks before them, pick 5 on 5,000 sampled configurations of the first 4.
    positions, gains = batchbald_select(lp, 5, gen(1), num_samples=5000, dtype=torch.float64)
    exact_positions, exact_gains = batchbald_select(lp, 5, gen(1), num_samples=10 ** 5, dtype=torch.float64)
    assert positions[:4].tolist() == exact_positions[:4].tolist()
    assert torch.equal(gains[:4], exact_gains[:4])
    assert not torch.equal(gains, exact_gains)  # sampling really happened
    for i in (4, 5):
        exact = joint_mi_vectorised(lp, positions[:i].tolist())
        assert float(gains[:i].sum()) == pytest.approx(exact, abs=0.02), i
    # Same generator seed: the same batch and the same numbers; another seed: other samples.
    again_positions, again_gains = batchbald_select(lp, 5, gen(1), num_samples=5000, dtype=torch.float64)
    assert torch.equal(again_positions, positions) and torch.equal(again_gains, gains)
    _, other_gains = batchbald_select(lp, 5, gen(2), num_samples=5000, dtype=torch.float64)
    assert not torch.equal(other_gains[4:], gains[4:])


def test_sampled_conditional_entropy_is_unbiased_for_fixed_picks():
    # Without the greedy choice (whose max over noisy estimates is biased upwards), the sampled
    # estimate of H[y_c | y_0..y_3] averages to the exact value for every candidate c.
    lp = random_log_probs(6, 30, 4, seed=5)
    p = lp.exp()

    def conditional_entropy(exact, num_samples=0, seed=0):
        configs = _Configurations(6, torch.float64, torch.device("cpu"))
        g = gen(seed)
        for i in range(4):
            configs.add(p[:, i], exact=exact, num_samples=num_samples, generator=g)
        return _conditional_entropy(configs, p, chunk_bytes=2**20)

    exact = conditional_entropy(exact=True)
    t = torch.ones(6, 1, dtype=torch.float64)  # the K × 4^4 table of the picked items
    for i in range(4):
        t = (t.unsqueeze(2) * p[:, i].unsqueeze(1)).flatten(1)
    h_picked = float(torch.special.entr(t.mean(0)).sum())
    for c in (4, 17):
        h_with_c = float(torch.special.entr((t.unsqueeze(2) * p[:, c].unsqueeze(1)).flatten(1).mean(0)).sum())
        assert float(exact[c]) == pytest.approx(h_with_c - h_picked, abs=1e-12)
    draws = torch.stack([conditional_entropy(exact=False, num_samples=500, seed=s) for s in range(40)])
    standard_error = draws.std(0) / math.sqrt(40)
    assert ((draws.mean(0) - exact).abs() <= 4 * standard_error + 1e-3).all()
    assert (standard_error > 0).all()  # it really was sampled


@pytest.mark.parametrize("k, m", [(20, 1000), (6, 500), (7, 3), (5, 5)])
def test_each_sample_generates_its_share_of_the_draws_and_weighs_one_over_k(k, m):
    # Stratified, not drawn: every sample k generates m // k or m // k + 1 of the m configurations, and
    # its draws together weigh exactly 1/k (1/m each for the m of k samples that draw once when m < k).
    sample_k_M, w_M = _stratified_draws(k, m, gen(0), torch.float64, torch.device("cpu"))
    counts_K = torch.bincount(sample_k_M, minlength=k)
    assert counts_K.sum() == m and counts_K.max() - counts_K.min() <= 1
    share_K = torch.zeros(k, dtype=torch.float64).index_add_(0, sample_k_M, w_M)
    drawn = counts_K > 0
    assert torch.allclose(share_K[drawn], torch.full_like(share_K[drawn], 1 / min(k, m)), atol=1e-15, rtol=0)
    # The samples that get one draw more (or that draw at all, when m < k) depend on the generator.
    other_K = torch.bincount(_stratified_draws(k, m, gen(1), torch.float64, torch.device("cpu"))[0], minlength=k)
    assert torch.equal(other_K, counts_K) == (m % k == 0)
    # The same holds once the draws are configurations of picked items.
    p = random_log_probs(k, 3, 4, seed=k).exp()
    configs = _Configurations(k, torch.float64, torch.device("cpu"))
    for i in range(3):
        configs.add(p[:, i], exact=False, num_samples=m, generator=gen(2))
    assert torch.equal(torch.bincount(configs.sample_k_M, minlength=k).sort().values, counts_K.sort().values)
    assert float(configs.rows()[1].sum()) == pytest.approx(1.0, abs=1e-12)


def identifiable_pool(n, seed):
    """K = 20 samples, C = 10 classes, n items. Item 0 tells the sample's pair k // 2 and item 1 its
    parity k % 2, both with certainty; the rest are random soft predictions. Once items 0 and 1 are in
    a batch the samples are told apart, so its joint MI is log 20, the most there is, and no later
    item adds anything."""
    lp = random_log_probs(20, n, 10, seed=seed, scale=2.0).float()
    certain = torch.full((20, 2, 10), -math.inf)
    certain[torch.arange(20), 0, torch.arange(20) // 2] = 0.0
    certain[torch.arange(20), 1, torch.arange(20) % 2] = 0.0
    lp[:, :2] = certain
    return lp


@pytest.mark.parametrize("dtype, round_off", [(torch.float32, 1e-4), (torch.float64, 1e-8)])
def test_sampled_gains_never_add_up_to_more_than_log_k(dtype, round_off):
    # The joint MI of a batch is at most H[w] = log K. Picks 6-10 here are sampled (10^5 > 10,000
    # configurations) and worth nothing: with each sample's share of the draws exactly 1/K their gains
    # are 0 up to round-off (in float32, of sums over thousands of configurations); a random share per
    # sample made each of them ~0.014 nats instead, and the batch's joint MI log K + 0.07.
    lp = identifiable_pool(300, seed=0)
    positions, gains = batchbald_select(lp, 10, gen(0), dtype=dtype)
    assert set(positions[:2].tolist()) == {0, 1}
    assert float(gains[:2].sum()) == pytest.approx(math.log(20), abs=1e-6)
    assert float(gains.sum()) <= math.log(20) + round_off
    assert gains[2:].abs().max() <= round_off


def paired_pool():
    """K = 20 samples in 10 pairs (2j, 2j+1), C = 10 classes. Item 0 tells the pair (with probability
    0.99). Item 1 + j tells the two samples of pair j apart (their most likely classes differ, each with
    probability a_j) and is uniform for every other sample, so once item 0 is in, its gain is about
    (1/10) JS(pair j's two predictions): a ladder, well separated, that the greedy batch descends."""
    def peaked(cls, prob):
        p = torch.full((10,), (1 - prob) / 9, dtype=torch.float64)
        p[cls] = prob
        return p

    items = [torch.stack([peaked(k // 2, 0.99) for k in range(20)])]
    for j, a in enumerate([0.99, 0.95, 0.9, 0.8, 0.7, 0.6, 0.5]):
        p = torch.full((20, 10), 0.1, dtype=torch.float64)
        p[2 * j], p[2 * j + 1] = peaked(0, a), peaked(1, a)
        items.append(p)
    return torch.stack(items, 1).log()


def test_sampled_pick_matches_the_exact_pick_when_exact_gains_are_well_separated():
    lp = paired_pool()
    p = lp.exp()
    # Enumerated throughout (10^4 configurations at the last step): items 0, 1, 2, 3, then 4, each
    # leading the items left by more than 0.01 nats at picks 4 and 5.
    exact_positions, exact_gains = batchbald_select(lp, 5, gen(), num_samples=10 ** 4, dtype=torch.float64)
    assert exact_positions.tolist() == [0, 1, 2, 3, 4]
    expected_entropy_N = entropy_of(lp).mean(0)
    for step in (3, 4):
        configs = _Configurations(20, torch.float64, torch.device("cpu"))
        for i in range(step):
            configs.add(p[:, i], exact=True, num_samples=0, generator=None)
        exact_gain_N = _conditional_entropy(configs, p, chunk_bytes=2**20) - expected_entropy_N
        assert exact_gain_N[step] - exact_gain_N[step + 1:].max() > 0.01
    # With 500 samples, picks 4 and 5 condition on 500 sampled configurations (25 per sample) of the
    # picks before them. A random number of draws per sample (sd ~5) made one of them wrong for 9 of
    # these 10 generator seeds (5 of 10 with the switch to sampling one pick later, as here); with 25
    # each, the sampled batch is the exact one.
    for seed in range(10):
        positions, gains = batchbald_select(lp, 5, gen(seed), num_samples=500, dtype=torch.float64)
        assert positions.tolist() == exact_positions.tolist(), seed
        assert torch.allclose(gains, exact_gains, atol=0.01, rtol=0), seed


def test_configurations_are_enumerated_while_there_are_at_most_num_samples():
    # Step s conditions on the C^s configurations of the s items picked so far; each candidate's own
    # label is a column of the same M × (N·C) product in both regimes. So enumerating costs what
    # sampling num_samples configurations would, and is used up to C^s = num_samples.
    lp = random_log_probs(6, 30, 4, seed=7)
    exact = batchbald_select(lp, 5, gen(0), num_samples=10 ** 6, dtype=torch.float64)
    at_the_limit = batchbald_select(lp, 5, gen(0), num_samples=4 ** 4, dtype=torch.float64)
    assert torch.equal(at_the_limit[0], exact[0]) and torch.equal(at_the_limit[1], exact[1])
    below = batchbald_select(lp, 5, gen(0), num_samples=4 ** 4 - 1, dtype=torch.float64)
    assert torch.equal(below[1][:4], exact[1][:4])  # steps 1-3 still enumerate (4^3 ≤ 255)
    assert not torch.equal(below[1][4], exact[1][4])  # step 4 samples 255 configurations


# --- (e) valid output, errors, memory chunking, saturated inputs -----------------------------------

@pytest.mark.parametrize("num_samples", [4, 10_000])
def test_positions_distinct_and_in_range(num_samples):
    lp = random_log_probs(5, 25, 3, seed=1).float()
    positions, gains = batchbald_select(lp, 25, gen(), num_samples=num_samples)
    assert positions.dtype == torch.long
    assert sorted(positions.tolist()) == list(range(25))  # the whole pool, each item once
    assert torch.isfinite(gains).all()


def test_bad_batch_size_raises():
    lp = random_log_probs(3, 4, 2, seed=0)
    with pytest.raises(ValueError, match="batch of 5 from 4"):
        batchbald_select(lp, 5, gen())
    with pytest.raises(ValueError):
        batchbald_select(lp, 0, gen())
    with pytest.raises(ValueError):
        batchbald_select(lp[0], 1, gen())


@pytest.mark.parametrize("num_samples", [8, 10_000])
def test_chunking_does_not_change_the_result(num_samples):
    lp = random_log_probs(6, 50, 4, seed=2)
    whole = batchbald_select(lp, 6, gen(3), num_samples=num_samples, dtype=torch.float64)
    one_by_one = batchbald_select(lp, 6, gen(3), num_samples=num_samples, dtype=torch.float64, chunk_bytes=1)
    assert torch.equal(whole[0], one_by_one[0])
    assert torch.allclose(whole[1], one_by_one[1], atol=1e-12, rtol=0)


def test_saturated_predictions_give_finite_gains():
    # Exact zeros (log 0 = -inf) and near-certain samples; exact and sampled modes.
    gen_ = torch.Generator().manual_seed(0)
    logits = 200 * torch.randn(6, 30, 4, generator=gen_)
    lp = torch.log_softmax(logits, dim=-1)
    lp[:, :5] = torch.tensor([0.0, -math.inf, -math.inf, -math.inf])  # certain and agreeing
    assert torch.isinf(lp).any()
    for num_samples in (16, 10_000):
        positions, gains = batchbald_select(lp, 8, gen(), num_samples=num_samples)
        assert positions.unique().numel() == 8
        assert torch.isfinite(gains).all()
    # Exact mode (4^6 ≤ 10^4): every gain is a conditional MI ≥ 0 (up to round-off). Two near-certain
    # disagreeing items already tell the 6 samples apart, so the gains after them are tiny.
    positions, gains = batchbald_select(lp, 6, gen(), dtype=torch.float64)
    assert (gains >= -1e-12).all()
    assert gains[:2].sum() > 1.0 and gains[2:].sum() < 1e-6
    assert not set(positions[:2].tolist()) & set(range(5))


# --- registry --------------------------------------------------------------------------------------

def test_batchbald_is_registered_as_a_batch_selector():
    s = get_strategy("batchbald")
    assert s is STRATEGIES["batchbald"]
    assert s.select_batch is batchbald_select and s.score is None
    assert s.mc and s.min_mc_samples >= 2 and s.needs_predictions


def test_bench_script_prints_one_json_line(capsys):
    import json
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import bench_batchbald

    bench_batchbald.main(["--n", "60", "--k", "4", "--c", "3", "--batch", "4", "--num_samples", "20", "--repeats", "2"])
    line = json.loads(capsys.readouterr().out.strip())
    assert line["event"] == "batchbald" and len(line["seconds"]) == 2 and line["median_s"] >= 0
    assert len(set(line["positions"])) == 4
