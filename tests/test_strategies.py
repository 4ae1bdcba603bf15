"""Acquisition scores, the top-k selector and the strategy registry.

Axis order: log_probs_K_N_C (K MC samples, N pool items, C classes). Expected values are computed
here by hand from the definitions H[p] = -sum_c p_c ln p_c, BALD = H[mean_k p_k] - mean_k H[p_k],
variation ratio = 1 - (modal argmax count)/K, mean std = mean_c of the population std_k of p_kc,
margin = -(p_(1) - p_(2)) and least confidence = 1 - max_c p_c of the mean prediction.
"""
import math
import statistics

import pytest
import torch

from strategies import (KINDS, STRATEGIES, Strategy, bald, entropy_of, epig, get_strategy, least_confidence, margin,
                        max_entropy, mean_log_probs, mean_std, random_scores, select_top_k, var_ratios)

NEW_SCORES = [var_ratios, mean_std, margin, least_confidence]


def H(*p):
    """Shannon entropy in nats of a probability vector, with 0 log 0 = 0 (plain Python floats)."""
    return -sum(q * math.log(q) for q in p if q > 0)


def logp(rows, dtype=torch.float64):
    """Log-probabilities of a nested list of probabilities; exact zeros become -inf."""
    return torch.tensor(rows, dtype=dtype).log()


# --- entropy -------------------------------------------------------------------------------------

@pytest.mark.parametrize("c", [2, 3, 7, 10, 100])
def test_entropy_of_uniform_is_ln_c(c):
    lp_N_C = torch.full((5, c), -math.log(c), dtype=torch.float64)
    assert torch.allclose(entropy_of(lp_N_C), torch.full((5,), math.log(c), dtype=torch.float64),
                          atol=1e-12, rtol=0)
    lp32 = torch.full((5, c), -math.log(c), dtype=torch.float32)
    assert torch.allclose(entropy_of(lp32), torch.full((5,), math.log(c)), atol=1e-5, rtol=0)


@pytest.mark.parametrize("c", [2, 3, 10, 100])
@pytest.mark.parametrize("k", [1, 4])
def test_max_entropy_of_identical_uniform_samples_is_ln_c(c, k):
    lp_K_N_C = torch.full((k, 3, c), -math.log(c), dtype=torch.float64)
    assert torch.allclose(max_entropy(lp_K_N_C), torch.full((3,), math.log(c), dtype=torch.float64),
                          atol=1e-12, rtol=0)


def test_entropy_of_one_hot_is_zero_and_finite():
    lp_N_C = logp([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    assert torch.isinf(lp_N_C).any()  # the input really holds log(0) = -inf
    h = entropy_of(lp_N_C)
    assert not torch.isnan(h).any()
    assert torch.equal(h, torch.zeros(2, dtype=torch.float64))


def test_entropy_of_known_two_class_distribution():
    expected = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert entropy_of(logp([[0.25, 0.75]])).item() == pytest.approx(expected, abs=1e-12)
    assert entropy_of(logp([[0.25, 0.75]], torch.float32)).item() == pytest.approx(expected, abs=1e-6)


def test_mean_log_probs_is_log_of_averaged_probabilities():
    lp_K_N_C = logp([[[0.9, 0.1], [1.0, 0.0]], [[0.5, 0.5], [0.0, 1.0]]])
    expected = torch.tensor([[0.7, 0.3], [0.5, 0.5]], dtype=torch.float64).log()
    assert torch.allclose(mean_log_probs(lp_K_N_C), expected, atol=1e-12, rtol=0)


def test_max_entropy_is_entropy_of_the_mean_prediction():
    lp_K_N_C = logp([[[0.9, 0.1]], [[0.5, 0.5]]])
    assert max_entropy(lp_K_N_C).item() == pytest.approx(H(0.7, 0.3), abs=1e-12)


# --- BALD ------------------------------------------------------------------------------------------

def test_bald_is_zero_when_all_mc_samples_agree():
    gen = torch.Generator().manual_seed(0)
    lp_N_C = torch.log_softmax(torch.randn(50, 10, generator=gen), dim=-1)
    lp_K_N_C = lp_N_C.expand(8, 50, 10).clone()
    b = bald(lp_K_N_C)
    assert b.shape == (50,)
    assert (b.abs() < 1e-6).all()
    assert (max_entropy(lp_K_N_C) > 0.5).all()  # not trivially zero: the predictions are uncertain


def test_bald_is_positive_when_samples_disagree():
    gen = torch.Generator().manual_seed(1)
    lp_K_N_C = torch.log_softmax(3 * torch.randn(8, 50, 10, generator=gen), dim=-1)
    assert (bald(lp_K_N_C) > 1e-3).all()


def test_bald_of_opposite_one_hot_samples_is_ln2():
    lp_K_N_C = logp([[[1.0, 0.0]], [[0.0, 1.0]]])
    b = bald(lp_K_N_C)
    assert not torch.isnan(b).any()
    assert b.item() == pytest.approx(math.log(2), abs=1e-12)


def test_bald_known_value_by_formula():
    # p1 = (0.9, 0.1), p2 = (0.5, 0.5): mean (0.7, 0.3).
    expected = H(0.7, 0.3) - 0.5 * (H(0.9, 0.1) + H(0.5, 0.5))
    assert expected > 0
    assert bald(logp([[[0.9, 0.1]], [[0.5, 0.5]]])).item() == pytest.approx(expected, abs=1e-12)
    # three classes, three samples
    p = [(0.6, 0.3, 0.1), (0.1, 0.8, 0.1), (0.2, 0.2, 0.6)]
    mean = [sum(col) / 3 for col in zip(*p)]
    expected3 = H(*mean) - sum(H(*q) for q in p) / 3
    got = bald(logp([[list(q)] for q in p]))
    assert got.item() == pytest.approx(expected3, abs=1e-12)
    got32 = bald(logp([[list(q)] for q in p], torch.float32))
    assert got32.item() == pytest.approx(expected3, abs=1e-5)


def test_bald_nonnegative_and_at_most_predictive_entropy_on_random_inputs():
    gen = torch.Generator().manual_seed(2)
    for scale in (0.1, 1.0, 10.0, 100.0):
        lp_K_N_C = torch.log_softmax(scale * torch.randn(6, 300, 5, generator=gen), dim=-1)
        b, h = bald(lp_K_N_C), max_entropy(lp_K_N_C)
        assert not torch.isnan(b).any() and not torch.isnan(h).any()
        assert (b >= 0).all()
        assert (b <= h + 1e-6).all()
        assert (h <= math.log(5) + 1e-5).all()


def test_known_disagreement_ranking_comes_out_in_order():
    # Item with margin d has samples (0.5+d, 0.5-d) and (0.5-d, 0.5+d): the mean is uniform, so
    # BALD = ln 2 - H(0.5+d, 0.5-d), strictly increasing in d.
    d = [0.0, 0.1, 0.2, 0.3, 0.4, 0.45]
    order = [3, 0, 5, 1, 4, 2]  # item at pool position i has margin d[order[i]]
    s1 = [[0.5 + d[j], 0.5 - d[j]] for j in order]
    s2 = [[0.5 - d[j], 0.5 + d[j]] for j in order]
    lp_K_N_C = logp([s1, s2])
    scores = bald(lp_K_N_C)
    expected = torch.tensor([math.log(2) - H(0.5 + d[j], 0.5 - d[j]) for j in order], dtype=torch.float64)
    assert torch.allclose(scores, expected, atol=1e-12, rtol=0)
    top = select_top_k(scores, len(order))
    # best first: largest margin first
    assert [order[int(i)] for i in top] == [5, 4, 3, 2, 1, 0]
    assert top.tolist() == [2, 4, 0, 5, 3, 1]
    assert select_top_k(scores, 2).tolist() == [2, 4]


def test_saturated_probabilities_give_no_nan():
    # exact 0 and 1 probabilities (log-probs of -inf and 0) and extreme but finite logits
    lp_K_N_C = torch.tensor([
        [[0.0, -math.inf, -math.inf], [-math.inf, 0.0, -math.inf], [0.0, -1e4, -1e4]],
        [[0.0, -math.inf, -math.inf], [0.0, -math.inf, -math.inf], [-1e4, 0.0, -1e4]],
    ])
    from_logits = torch.log_softmax(torch.tensor([[[1e4, 0.0, -1e4]], [[-1e4, 1e4, 0.0]]]), dim=-1)
    for lp in (lp_K_N_C, from_logits, lp_K_N_C.double()):
        for f in (max_entropy, bald):
            s = f(lp)
            assert torch.isfinite(s).all(), f.__name__
        assert torch.isfinite(entropy_of(lp[0])).all()
        assert torch.isfinite(mean_log_probs(lp).exp()).all()
    h = max_entropy(lp_K_N_C)
    b = bald(lp_K_N_C)
    # item 0: both samples certain of class 0 -> 0, 0; item 1: certain and opposed -> ln 2, ln 2;
    # item 2: practically the same -> ln 2 for both (e^-1e4 underflows to 0).
    assert h.tolist() == pytest.approx([0.0, math.log(2), math.log(2)], abs=1e-6)
    assert b.tolist() == pytest.approx([0.0, math.log(2), math.log(2)], abs=1e-6)
    assert select_top_k(b, 3).tolist()[-1] == 0  # the saturated item ranks last but is rankable


# --- variation ratio -----------------------------------------------------------------------------

def test_var_ratios_counts_argmax_votes_not_the_mean_prediction():
    # argmaxes [0, 0, 1]: the mode has 2 of 3 votes -> 1/3; but the mean prediction is (0.3667, 0.6333),
    # so 1 - max of the mean would be 0.3667 and pick class 1.
    p = [(0.55, 0.45), (0.55, 0.45), (0.0, 1.0)]
    lp_K_N_C = logp([[list(q)] for q in p])
    mean1 = (0.45 + 0.45 + 1.0) / 3
    assert mean1 > 0.5
    assert var_ratios(lp_K_N_C).item() == pytest.approx(1 / 3, abs=1e-12)
    assert least_confidence(lp_K_N_C).item() == pytest.approx(1 - mean1, abs=1e-12)
    assert abs(var_ratios(lp_K_N_C).item() - (1 - mean1)) > 0.03
    assert var_ratios(logp([[list(q)] for q in p], torch.float32)).item() == pytest.approx(1 / 3, abs=1e-6)


def test_var_ratios_known_values():
    # one item per row of argmaxes over K = 4 samples, C = 4 classes
    argmaxes = [[0, 0, 0, 0], [2, 2, 2, 1], [3, 1, 3, 1], [0, 1, 2, 3], [1, 1, 3, 0]]
    expected = [0.0, 1 / 4, 1 / 2, 3 / 4, 1 / 2]
    lp_K_N_C = torch.log_softmax(5 * torch.nn.functional.one_hot(torch.tensor(argmaxes).T, 4).double(), -1)
    assert torch.allclose(var_ratios(lp_K_N_C), torch.tensor(expected, dtype=torch.float64),
                          atol=1e-12, rtol=0)
    got32 = var_ratios(lp_K_N_C.float())
    assert got32.dtype == torch.float32
    assert torch.allclose(got32, torch.tensor(expected), atol=1e-6, rtol=0)


@pytest.mark.parametrize("k", [1, 2, 5])
def test_var_ratios_is_zero_when_all_samples_agree_on_the_argmax(k):
    gen = torch.Generator().manual_seed(4)
    logits_K_N_C = torch.randn(k, 30, 6, generator=gen, dtype=torch.float64)
    logits_K_N_C[..., 2] = 10.0  # class 2 wins in every sample, but the probabilities differ
    assert torch.equal(var_ratios(torch.log_softmax(logits_K_N_C, -1)), torch.zeros(30, dtype=torch.float64))


@pytest.mark.parametrize("k", [2, 3, 5])
def test_var_ratios_is_max_when_every_sample_votes_differently(k):
    lp_K_N_C = torch.log_softmax(5 * torch.eye(k, dtype=torch.float64).unsqueeze(1), -1)  # C = K, one item
    assert var_ratios(lp_K_N_C).item() == pytest.approx((k - 1) / k, abs=1e-12)


def test_var_ratios_tie_within_a_sample_goes_to_the_lowest_class():
    # documented: torch.argmax takes the first maximal index, so (0.5, 0.5) votes for class 0
    lp_K_N_C = logp([[[0.5, 0.5]], [[0.0, 1.0]]])
    assert var_ratios(lp_K_N_C).item() == pytest.approx(0.5, abs=1e-12)
    lp_K_N_C = logp([[[0.5, 0.5]], [[1.0, 0.0]]])
    assert var_ratios(lp_K_N_C).item() == 0.0


# --- mean std --------------------------------------------------------------------------------------

def mean_pstd(samples):
    """Mean over classes of the population std over samples (plain Python floats)."""
    return sum(statistics.pstdev(col) for col in zip(*samples)) / len(samples[0])


def test_mean_std_known_values():
    # opposite one-hot samples: std 0.5 per class (the unbiased std would be 0.7071)
    assert mean_std(logp([[[1.0, 0.0]], [[0.0, 1.0]]])).item() == pytest.approx(0.5, abs=1e-12)
    # (0.9, 0.1) and (0.5, 0.5): std 0.2 per class
    assert mean_std(logp([[[0.9, 0.1]], [[0.5, 0.5]]])).item() == pytest.approx(0.2, abs=1e-12)
    p = [(0.6, 0.3, 0.1), (0.1, 0.8, 0.1), (0.2, 0.2, 0.6)]
    expected3 = mean_pstd(p)
    # class stds: sqrt(0.14/3), sqrt(0.62/9), sqrt(1/18) = sqrt(42)/30, sqrt(62)/30, sqrt(50)/30
    assert expected3 == pytest.approx((math.sqrt(42) + math.sqrt(62) + math.sqrt(50)) / 90, abs=1e-15)
    assert mean_std(logp([[list(q)] for q in p])).item() == pytest.approx(expected3, abs=1e-12)
    assert mean_std(logp([[list(q)] for q in p], torch.float32)).item() == pytest.approx(expected3, abs=1e-6)


@pytest.mark.parametrize("k", [1, 2, 6])
def test_mean_std_is_zero_for_identical_samples(k):
    gen = torch.Generator().manual_seed(5)
    lp_N_C = torch.log_softmax(torch.randn(20, 7, generator=gen, dtype=torch.float64), dim=-1)
    s = mean_std(lp_N_C.expand(k, 20, 7).clone())
    assert s.shape == (20,)
    assert (s.abs() < 1e-12).all()


# --- margin ---------------------------------------------------------------------------------------

def test_margin_known_values():
    assert margin(logp([[[0.7, 0.3]]])).item() == pytest.approx(-0.4, abs=1e-12)
    # mean of (0.9, 0.1) and (0.5, 0.5) is (0.7, 0.3)
    assert margin(logp([[[0.9, 0.1]], [[0.5, 0.5]]])).item() == pytest.approx(-0.4, abs=1e-12)
    # three classes: mean (0.3, 0.5, 0.2) -> -(0.5 - 0.3)
    lp_K_N_C = logp([[[0.4, 0.5, 0.1]], [[0.2, 0.5, 0.3]]])
    assert margin(lp_K_N_C).item() == pytest.approx(-0.2, abs=1e-12)
    assert margin(lp_K_N_C.float()).item() == pytest.approx(-0.2, abs=1e-6)


def test_margin_is_zero_for_a_tie_between_the_top_two():
    # mean of (0.6, 0.3, 0.1) and (0.2, 0.5, 0.3) is (0.4, 0.4, 0.2)
    lp_K_N_C = logp([[[0.6, 0.3, 0.1], [0.5, 0.5, 0.0]], [[0.2, 0.5, 0.3], [0.5, 0.5, 0.0]]])
    assert margin(lp_K_N_C).tolist() == pytest.approx([0.0, 0.0], abs=1e-12)


def test_margin_is_in_minus_one_to_zero_on_random_inputs():
    gen = torch.Generator().manual_seed(6)
    for scale in (0.1, 1.0, 10.0, 100.0):
        m = margin(torch.log_softmax(scale * torch.randn(4, 300, 5, generator=gen), dim=-1))
        assert torch.isfinite(m).all()
        assert (m <= 0).all() and (m >= -1 - 1e-6).all()


# --- least confidence -------------------------------------------------------------------------------

@pytest.mark.parametrize("c", [2, 3, 10, 100])
@pytest.mark.parametrize("k", [1, 4])
def test_least_confidence_of_uniform_is_one_minus_one_over_c(c, k):
    lp_K_N_C = torch.full((k, 3, c), -math.log(c), dtype=torch.float64)
    assert torch.allclose(least_confidence(lp_K_N_C), torch.full((3,), 1 - 1 / c, dtype=torch.float64),
                          atol=1e-12, rtol=0)
    lp32 = torch.full((k, 3, c), -math.log(c), dtype=torch.float32)
    assert torch.allclose(least_confidence(lp32), torch.full((3,), 1 - 1 / c), atol=1e-6, rtol=0)


def test_least_confidence_known_values():
    assert least_confidence(logp([[[0.7, 0.3]]])).item() == pytest.approx(0.3, abs=1e-12)
    # mean of (0.6, 0.3, 0.1) and (0.2, 0.5, 0.3) is (0.4, 0.4, 0.2)
    lp_K_N_C = logp([[[0.6, 0.3, 0.1]], [[0.2, 0.5, 0.3]]])
    assert least_confidence(lp_K_N_C).item() == pytest.approx(0.6, abs=1e-12)
    assert least_confidence(lp_K_N_C.float()).item() == pytest.approx(0.6, abs=1e-6)
    assert least_confidence(logp([[[0.0, 1.0, 0.0]]])).item() == 0.0


# --- all the new scores together ---------------------------------------------------------------------

def test_new_scores_on_saturated_probabilities_are_finite_and_exact():
    lp_K_N_C = torch.tensor([
        [[0.0, -math.inf, -math.inf], [-math.inf, 0.0, -math.inf], [0.0, -1e4, -1e4]],
        [[0.0, -math.inf, -math.inf], [0.0, -math.inf, -math.inf], [-1e4, 0.0, -1e4]],
    ])
    from_logits = torch.log_softmax(torch.tensor([[[1e4, 0.0, -1e4]], [[-1e4, 1e4, 0.0]]]), dim=-1)
    assert torch.isinf(lp_K_N_C).any()
    for lp in (lp_K_N_C, from_logits, lp_K_N_C.double()):
        for f in NEW_SCORES:
            assert torch.isfinite(f(lp)).all(), f.__name__
    # item 0: both samples certain of class 0; items 1 and 2: certain of class 0 and of class 1.
    expected = {var_ratios: [0.0, 0.5, 0.5], mean_std: [0.0, 1 / 3, 1 / 3],
                margin: [-1.0, 0.0, 0.0], least_confidence: [0.0, 0.5, 0.5]}
    for f, want in expected.items():
        assert f(lp_K_N_C).tolist() == pytest.approx(want, abs=1e-6), f.__name__
        assert f(lp_K_N_C.double()).tolist() == pytest.approx(want, abs=1e-12), f.__name__


def test_new_scores_rank_a_small_pool_in_order():
    d = [0.0, 0.1, 0.2, 0.3, 0.4, 0.45]
    order = [3, 0, 5, 1, 4, 2]  # item at pool position i has parameter d[order[i]]
    # margin, least confidence: two identical samples (0.5 + d, 0.5 - d) -> -2d and 0.5 - d
    same = logp([[[0.5 + d[j], 0.5 - d[j]] for j in order]] * 2)
    assert torch.allclose(margin(same), torch.tensor([-2 * d[j] for j in order], dtype=torch.float64),
                          atol=1e-12, rtol=0)
    assert torch.allclose(least_confidence(same),
                          torch.tensor([0.5 - d[j] for j in order], dtype=torch.float64), atol=1e-12, rtol=0)
    smallest_d_first = [2, 4, 0, 5, 3, 1][::-1]  # positions of d = 0, 0.1, ..., 0.45
    assert [order[i] for i in smallest_d_first] == [0, 1, 2, 3, 4, 5]
    assert select_top_k(margin(same), 6).tolist() == smallest_d_first
    assert select_top_k(least_confidence(same), 6).tolist() == smallest_d_first
    # mean std: opposed samples (0.5 + d, 0.5 - d), (0.5 - d, 0.5 + d) -> std d per class
    opposed = logp([[[0.5 + d[j], 0.5 - d[j]] for j in order], [[0.5 - d[j], 0.5 + d[j]] for j in order]])
    assert torch.allclose(mean_std(opposed), torch.tensor([d[j] for j in order], dtype=torch.float64),
                          atol=1e-12, rtol=0)
    assert select_top_k(mean_std(opposed), 6).tolist() == smallest_d_first[::-1]
    # variation ratio: 4 samples whose argmaxes spread over 1, 2, 3, 4 classes -> 0, 1/4, 1/2, 3/4
    argmaxes = [[0, 0, 0, 0], [3, 3, 3, 0], [1, 2, 1, 2], [0, 1, 2, 3]]
    pool = [2, 0, 3, 1]
    lp_K_N_C = torch.log_softmax(3 * torch.nn.functional.one_hot(torch.tensor([argmaxes[j] for j in pool]).T,
                                                                 4).double(), -1)
    assert select_top_k(var_ratios(lp_K_N_C), 4).tolist() == [2, 0, 3, 1]


@pytest.mark.parametrize("f", NEW_SCORES + [max_entropy, bald], ids=lambda f: f.__name__)
def test_scores_of_a_concatenation_are_the_concatenation_of_scores(f):
    gen = torch.Generator().manual_seed(8)
    lp_K_N_C = torch.log_softmax(3 * torch.randn(5, 41, 6, generator=gen, dtype=torch.float64), dim=-1)
    lp_K_N_C[:, 7] = logp([[0.0, 1.0, 0.0, 0.0, 0.0, 0.0]] * 5)  # a saturated item as well
    whole = f(lp_K_N_C)
    chunks = torch.cat([f(part) for part in lp_K_N_C.split([1, 16, 24], dim=1)])
    assert whole.shape == chunks.shape == (41,)
    assert torch.allclose(whole, chunks, atol=1e-12, rtol=0)


# --- select_top_k ----------------------------------------------------------------------------------

def test_select_top_k_returns_positions_best_first():
    scores = torch.tensor([0.1, 0.9, 0.5, 0.7, -math.inf, 0.3])
    assert select_top_k(scores, 3).tolist() == [1, 3, 2]
    assert select_top_k(scores, 1).tolist() == [1]
    assert select_top_k(scores, 6).tolist() == [1, 3, 2, 5, 0, 4]


def test_select_top_k_raises_on_nan():
    with pytest.raises(ValueError, match="NaN"):
        select_top_k(torch.tensor([0.1, float("nan"), 0.3]), 1)


def test_select_top_k_raises_when_k_exceeds_n():
    with pytest.raises(ValueError):
        select_top_k(torch.tensor([0.1, 0.2, 0.3]), 4)


# --- random scores -------------------------------------------------------------------------------

def test_random_scores_follow_the_generator_seed():
    a = random_scores(100, torch.Generator().manual_seed(5))
    torch.manual_seed(123)  # the global RNG must not matter
    b = random_scores(100, torch.Generator().manual_seed(5))
    c = random_scores(100, torch.Generator().manual_seed(6))
    assert a.shape == (100,)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert ((a >= 0) & (a < 1)).all()


def test_top_k_of_random_scores_is_a_uniform_subset():
    n, k, draws = 10, 3, 3000
    gen = torch.Generator().manual_seed(7)
    counts = torch.zeros(n)
    for _ in range(draws):
        chosen = select_top_k(random_scores(n, gen), k)
        assert chosen.unique().numel() == k
        counts[chosen] += 1
    expected = draws * k / n  # 900; binomial sd = sqrt(3000 * 0.3 * 0.7) ~ 25
    assert (counts - expected).abs().max() < 125, counts
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 40, chi2  # 9 degrees of freedom: 40 is far in the tail


# --- registry --------------------------------------------------------------------------------------

def test_registry_has_the_documented_strategies():
    new = {"var_ratios", "mean_std", "margin", "least_confidence", "batchbald"}
    assert {"random", "entropy", "bald"} | new <= set(STRATEGIES)
    assert STRATEGIES["bald"].score is bald
    assert STRATEGIES["entropy"].score is max_entropy
    assert STRATEGIES["random"].score is None and STRATEGIES["random"].select_batch is None
    assert not STRATEGIES["random"].needs_predictions
    assert STRATEGIES["var_ratios"].score is var_ratios
    assert STRATEGIES["mean_std"].score is mean_std
    assert STRATEGIES["margin"].score is margin
    assert STRATEGIES["least_confidence"].score is least_confidence
    # disagreement scores need at least two MC samples; scores of the MC-averaged prediction need one
    for name in ("bald", "batchbald", "var_ratios", "mean_std"):
        assert STRATEGIES[name].mc and STRATEGIES[name].min_mc_samples == 2, name
    for name in ("entropy", "margin", "least_confidence"):
        assert STRATEGIES[name].mc and STRATEGIES[name].min_mc_samples == 1, name


def _select(lp_K_N_C, batch_size, generator):
    return torch.arange(batch_size), torch.zeros(batch_size)


@pytest.mark.parametrize("kind, callables, refused", [
    ("score", {"score": bald, "select_batch": _select}, "got score, select_batch"),  # two ways to choose
    ("batch", {"select_batch": _select, "select_embeddings": _select}, "got select_batch, select_embeddings"),
    ("score", {}, "must set score, got none"),  # none: the loop would have nothing to call
    ("embeddings", {}, "must set select_embeddings, got none"),
    ("score", {"select_batch": _select}, "must set score, got select_batch"),  # not its kind's callable
    ("random", {"score": bald}, "must set no callable, got score"),
    ("targets", {"score": bald}, "must set score_targets, got score"),  # a score without targets
    ("score", {"score": bald, "score_targets": epig}, "got score, score_targets"),
    ("scores", {"score": bald}, "unknown kind 'scores'"),
])
def test_a_strategy_whose_callables_do_not_match_its_kind_is_refused_when_built(kind, callables, refused):
    with pytest.raises(ValueError, match=refused):
        Strategy("odd", kind, mc=True, **callables)


@pytest.mark.parametrize("kind, callables", [("random", {}), ("score", {"score": bald}),
                                             ("batch", {"select_batch": _select}),
                                             ("embeddings", {"select_embeddings": _select}),
                                             ("targets", {"score_targets": epig})])
def test_each_kind_is_built_with_its_one_callable(kind, callables):
    s = Strategy("fine", kind, mc=False, **callables)
    assert s.needs_predictions == (kind != "random") and s.needs_embeddings == (kind == "embeddings")
    assert set(KINDS) == {"random", "score", "batch", "embeddings", "targets"}


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_strategy_declaration_is_consistent(name):
    s = STRATEGIES[name]
    assert isinstance(s, Strategy)
    assert s.name == name
    assert get_strategy(name) is s
    assert isinstance(s.min_mc_samples, int) and s.min_mc_samples >= 1
    if not s.needs_predictions:
        assert not s.mc  # no predictions needed, so no MC samples either
        return
    # exactly one way to choose
    assert [s.score is not None, s.select_batch is not None, s.select_embeddings is not None,
            s.score_targets is not None].count(True) == 1
    if name in ("bald", "batchbald", "var_ratios", "mean_std", "epig"):
        assert s.mc and s.min_mc_samples >= 2  # 0 with one sample
    k = max(s.min_mc_samples, 2) if s.mc else 1
    gen = torch.Generator().manual_seed(3)
    lp_K_N_C = torch.log_softmax(torch.randn(k, 7, 4, generator=gen), dim=-1)
    if s.select_embeddings is not None:
        from strategies import Embeddings
        emb = Embeddings(torch.randn(7, 5, generator=gen), lp_K_N_C[0].exp(), torch.randn(2, 5, generator=gen))
        positions, scores = s.select_embeddings(emb, 3, torch.Generator().manual_seed(4))
        assert positions.shape == scores.shape == (3,)
        assert positions.unique().numel() == 3 and 0 <= int(positions.min()) and int(positions.max()) < 7
    elif s.score_targets is not None:
        scores = s.score_targets(lp_K_N_C, torch.log_softmax(torch.randn(k, 5, 4, generator=gen), dim=-1))
        assert scores.shape == (7,)
    elif s.select_batch is not None:
        positions, scores = s.select_batch(lp_K_N_C, 3, torch.Generator().manual_seed(4))
        assert positions.shape == scores.shape == (3,)
        assert positions.unique().numel() == 3 and 0 <= int(positions.min()) and int(positions.max()) < 7
    else:
        scores = s.score(lp_K_N_C)
        assert scores.shape == (7,)
    assert torch.isfinite(scores).all()


def test_get_strategy_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as err:
        get_strategy("no_such_strategy")
    message = str(err.value)
    assert "no_such_strategy" in message
    for name in STRATEGIES:
        assert name in message
