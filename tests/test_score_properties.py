"""Property-based tests for the acquisition scores (issue 27, item 6), in the style of baal's tests.

Random log-probabilities from seeded torch.Generators (never the global RNG), many cases, and properties
rather than fixed values (test_strategies.py, test_epig.py and test_batchbald.py hold the exact values).
Each case mixes, item by item: soft and sharp predictions (logit scales from 0.01 to 100), near-one-hot
items (scales up to 10^4, probabilities that underflow to 0), classes of probability exactly 0 (-inf
log-probabilities, in one sample or in all of them), items whose K samples agree exactly, and items
whose samples disagree a lot. Every combination of K ∈ {1, 2, 5, 20}, C ∈ {2, 3, 10, 100} and float32 /
float64 appears at least once over the 48 seeds.

Orientation in this project: higher score = more worth labelling, for every score. So margin is
-(p_(1) - p_(2)) ∈ [-1, 0] (0 at a tie), least confidence 1 - max_c p_c ∈ [0, 1 - 1/C] and the variation
ratio 1 - (modal argmax count)/K ∈ [0, 1 - ⌈K/C⌉/K], all of the MC-averaged prediction except the
variation ratio, which counts one argmax vote per sample.

The log-probabilities are made in float64 and then cast, so the properties test the score functions and
not log_softmax's own float32 round-off (except the shift tests, which need that round-off). The score
functions do not check their input; the loop's guard against a diverged model is select_top_k, which
raises on a NaN score, so NaN must reach the score (EPIG and BatchBALD raise themselves).
"""
import functools
import itertools
import math

import pytest
import torch

from strategies import (STRATEGIES, bald, batchbald_select, entropy_of, epig, least_confidence, margin,
                        max_entropy, mean_log_probs, mean_std, select_top_k, var_ratios)
from strategies.epig import _epig_chunk, _scaled

SCORES = {"entropy": max_entropy, "bald": bald, "var_ratios": var_ratios, "mean_std": mean_std,
          "margin": margin, "least_confidence": least_confidence}
# Scores of the MC-averaged prediction (one sample is enough) and of the samples' disagreement (0 with one).
MEAN_PREDICTION = ("entropy", "margin", "least_confidence")
DISAGREEMENT = ("bald", "var_ratios", "mean_std")

KS, CS, DTYPES = (1, 2, 5, 20), (2, 3, 10, 100), (torch.float32, torch.float64)
COMBOS = list(itertools.product(KS, CS, DTYPES))
SEEDS = range(48)  # every combination once, the first 16 twice
N, T = 40, 6  # pool items, EPIG targets
EPIG_N = 16  # pool items for EPIG's tests: its cost grows as N × T × C²
# Round-off allowed in a score (nats or probabilities), in equalities and as the slack of inequalities.
# The largest seen over all cases: 1.8e-6 in float32, 2e-15 in float64.
TOL = {torch.float32: 1e-5, torch.float64: 1e-12}


def _id(seed, k, c, dtype):
    return f"s{seed}-K{k}-C{c}-{str(dtype)[-7:]}"


def cases(where=lambda k, c, dtype: True):
    out = []
    for seed in SEEDS:
        k, c, dtype = COMBOS[seed % len(COMBOS)]
        if where(k, c, dtype):
            out.append(pytest.param(seed, k, c, dtype, id=_id(seed, k, c, dtype)))
    return out


ALL = cases()
MULTI_K = cases(lambda k, c, dtype: k >= 2)
ONE_K = cases(lambda k, c, dtype: k == 1)


def random_logits(gen, k, n, c):
    """float64 logits K × n × C, item by item of varied sharpness and disagreement, some -inf entries."""
    def u(*shape):
        return torch.rand(*shape, generator=gen, dtype=torch.float64)

    scale_n = 10 ** (4 * u(n) - 2)  # 0.01 .. 100
    near_one_hot = u(n) < 0.15
    scale_n[near_one_hot] = 10 ** (2.5 + 1.5 * u(int(near_one_hot.sum())))  # ~300 .. 10^4
    spread_n = 1.5 * u(n)  # how far the samples move from the item's shared logits
    spread_n[u(n) < 0.1] = 0.0  # samples that agree exactly
    base_n_c = torch.randn(n, c, generator=gen, dtype=torch.float64)
    noise = torch.randn(k, n, c, generator=gen, dtype=torch.float64)
    logits = scale_n[:, None] * (base_n_c + spread_n[:, None] * noise)
    # Probability exactly 0: a class impossible in every sample (shared) or in some samples only.
    kind_n = u(n)
    shared = (kind_n < 0.2)[None, :, None] & (u(1, n, c) < 0.4)
    per_sample = ((kind_n >= 0.2) & (kind_n < 0.4))[None, :, None] & (u(k, n, c) < 0.4)
    impossible = (shared | per_sample).expand(k, n, c).clone()
    keep = torch.randint(c, (1, n, 1), generator=gen).expand(k, n, 1)  # one possible class per row
    impossible.scatter_(-1, keep, False)
    return logits.masked_fill(impossible, -math.inf)


def to_log_probs(logits, dtype):
    return logits.log_softmax(-1).to(dtype)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These tensors are tiny: one thread, so that a busy machine's other processes do not make every
    small op wait on a second thread (8 ms instead of 25 µs a log_softmax, measured on 2 busy cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@functools.lru_cache(maxsize=None)
def _case(seed, k, c, dtype):
    gen = torch.Generator().manual_seed(1000 + seed)
    pool_logits, target_logits = random_logits(gen, k, N, c), random_logits(gen, k, T, c)
    return pool_logits, to_log_probs(pool_logits, dtype), to_log_probs(target_logits, dtype)


def make_case(seed, k, c, dtype):
    """(generator for the test's own draws, pool logits K × N × C in float64, pool and target log-probs in
    dtype). The tensors are shared between the tests of one case: a test changes copies only."""
    return (torch.Generator().manual_seed(seed),) + tuple(t.clone() for t in _case(seed, k, c, dtype))


def non_identity_perm(n, gen):
    perm = torch.randperm(n, generator=gen)
    return perm.roll(1) if n > 1 and torch.equal(perm, torch.arange(n)) else perm


def clear_argmax_n(lp_K_N_C, gap=1e-5):
    """Items whose every sample has one top class ahead of the next by more than ``gap``: var_ratios gives a
    tie to the lowest class index (its docstring), so it may change with the order of tied classes."""
    top2 = lp_K_N_C.double().topk(2, dim=-1).values
    clear = ((top2[..., 0] - top2[..., 1]) > gap).all(0)
    assert clear.float().mean() > 0.75  # the check is not left with a few items
    return clear


def assert_close(got, want, dtype, what):
    tol = TOL[dtype]
    assert got.shape == want.shape, what
    assert torch.isfinite(got).all() and torch.isfinite(want).all(), what
    err = (got.double() - want.double()).abs().max().item()
    assert err <= tol, f"{what}: max |difference| {err:.3g} > {tol:.3g}"


# --- which functions the properties cover -----------------------------------------------------------

def test_every_score_strategy_is_covered_here():
    """A new "score" strategy added to the registry must be added here, with its properties."""
    registered = {name: s.score for name, s in STRATEGIES.items() if s.kind == "score"}
    assert registered == SCORES
    assert {n for n in SCORES if STRATEGIES[n].min_mc_samples == 1} == set(MEAN_PREDICTION)
    assert {n for n in SCORES if STRATEGIES[n].min_mc_samples == 2} == set(DISAGREEMENT)
    assert STRATEGIES["epig"].score_targets is epig and STRATEGIES["batchbald"].select_batch is batchbald_select


# --- ranges and bounds ------------------------------------------------------------------------------

@pytest.mark.parametrize("seed, k, c, dtype", ALL)
def test_entropies_are_finite_between_zero_and_log_c(seed, k, c, dtype):
    _, _, lp, _ = make_case(seed, k, c, dtype)
    tol = TOL[dtype]
    per_sample_K_N = entropy_of(lp)  # H[p_k], not clamped anywhere in the code
    h_N = max_entropy(lp)
    mean_h_N = per_sample_K_N.mean(0)
    for name, h in (("entropy_of", per_sample_K_N), ("max_entropy", h_N), ("mean entropy", mean_h_N)):
        assert h.dtype == dtype and torch.isfinite(h).all(), name
        assert h.min() >= 0, name
        assert h.max() <= math.log(c) + tol, name
    assert h_N.shape == (N,)
    # Shannon entropy ≥ min-entropy -log max_c p_c of the same (MC-averaged) prediction
    assert (h_N >= -mean_log_probs(lp).amax(-1) - tol).all()


@pytest.mark.parametrize("seed, k, c, dtype", ALL)
def test_bald_is_between_zero_and_the_predictive_entropy_and_log_k(seed, k, c, dtype):
    _, _, lp, _ = make_case(seed, k, c, dtype)
    tol = TOL[dtype]
    b_N, h_N = bald(lp), max_entropy(lp)
    assert b_N.shape == (N,) and b_N.dtype == dtype and torch.isfinite(b_N).all()
    # bald clamps at 0, so b ≥ 0 holds by construction: the clamp must only ever remove round-off,
    # i.e. H[mean p] - mean H[p] (Jensen: H is concave) is ≥ 0 before it.
    unclamped_N = h_N - entropy_of(lp).mean(0)
    assert unclamped_N.min() >= -tol
    assert (b_N <= h_N + tol).all()  # BALD ≤ H[y] ≤ log C
    assert (b_N <= math.log(k) + tol).all()  # I[y; w] ≤ H[w] = log K for K equally likely samples
    # The other form of the same mutual information, from probabilities in float64: mean_k KL(p_k || mean p)
    lp64 = lp.double()
    p_K_N_C = lp64.exp()
    log_mean = p_K_N_C.mean(0).log()
    kl_K_N = torch.where(p_K_N_C > 0, p_K_N_C * (lp64 - log_mean), 0.0).sum(-1)
    assert_close(b_N, kl_K_N.mean(0), dtype, "BALD = mean KL(p_k || mean p)")


@pytest.mark.parametrize("seed, k, c, dtype", ALL)
def test_var_ratios_counts_votes_in_its_range(seed, k, c, dtype):
    _, _, lp, _ = make_case(seed, k, c, dtype)
    v_N = var_ratios(lp)
    assert v_N.shape == (N,) and v_N.dtype == dtype and torch.isfinite(v_N).all()
    assert v_N.min() >= 0
    assert v_N.max() <= 1 - math.ceil(k / c) / k + TOL[dtype]  # the mode has at least ⌈K/C⌉ votes
    votes_N = (1 - v_N.double()) * k  # the modal count: a whole number of votes
    assert torch.allclose(votes_N, votes_N.round(), atol=1e-4, rtol=0)


@pytest.mark.parametrize("seed, k, c, dtype", ALL)
def test_mean_std_is_within_the_bound_of_its_mean_prediction(seed, k, c, dtype):
    _, _, lp, _ = make_case(seed, k, c, dtype)
    tol = TOL[dtype]
    s_N = mean_std(lp)
    assert s_N.shape == (N,) and s_N.dtype == dtype and torch.isfinite(s_N).all()
    assert s_N.min() >= 0
    # Bhatia-Davis: a variable in [0, 1] with mean m has std ≤ sqrt(m (1 - m)); averaged over the classes
    # (Cauchy-Schwarz, Σ m_c = 1) that is ≤ sqrt(C - 1) / C.
    m_N_C = lp.double().exp().mean(0)
    bound_N = (m_N_C * (1 - m_N_C)).clamp_min(0).sqrt().mean(-1)
    assert (s_N <= bound_N + tol).all()
    assert s_N.max() <= math.sqrt(c - 1) / c + tol


@pytest.mark.parametrize("seed, k, c, dtype", ALL)
def test_margin_and_least_confidence_ranges_and_how_they_relate(seed, k, c, dtype):
    _, _, lp, _ = make_case(seed, k, c, dtype)
    tol = TOL[dtype]
    m_N, lc_N = margin(lp), least_confidence(lp)
    for name, s in (("margin", m_N), ("least_confidence", lc_N)):
        assert s.shape == (N,) and s.dtype == dtype and torch.isfinite(s).all(), name
    assert m_N.min() >= -1 - tol and m_N.max() <= 0
    assert lc_N.min() >= 0 and lc_N.max() <= 1 - 1 / c + tol
    # with p_(1) = 1 - lc: 0 ≤ p_(2) ≤ 1 - p_(1), so lc - 1 ≤ margin ≤ 2 lc - 1 (equality for C = 2)
    assert (m_N >= lc_N - 1 - tol).all()
    assert (m_N <= 2 * lc_N - 1 + tol).all()
    if c == 2:
        assert_close(m_N, 2 * lc_N - 1, dtype, "margin = 2 lc - 1 with two classes")


@pytest.mark.parametrize("seed, k, c, dtype", ALL)
def test_heating_one_sample_raises_the_mean_prediction_scores(seed, k, c, dtype):
    """The orientation check: a softer prediction (logits / T, larger T) never scores lower on entropy, least
    confidence or margin. (Exact for one sample: entropy grows with T, p_(1) and p_(2)/p_(1) fall with it;
    not so for the disagreement scores, nor for the mean of several samples.)"""
    _, logits, _, _ = make_case(seed, k, c, dtype)
    temps = (0.25, 0.5, 1.0, 2.0, 4.0)
    for name in MEAN_PREDICTION:
        f = SCORES[name]
        scores = [f(to_log_probs(logits[:1] / t, dtype)) for t in temps]
        for colder, hotter in zip(scores, scores[1:]):
            assert (hotter >= colder - TOL[dtype]).all(), name
        assert (scores[-1] > scores[0]).any(), name  # and it does move


# --- invariances --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", SCORES)
@pytest.mark.parametrize("seed, k, c, dtype", ALL)
def test_permuting_the_classes_changes_no_score(seed, k, c, dtype, name):
    gen, _, lp, _ = make_case(seed, k, c, dtype)
    f = SCORES[name]
    permuted = lp[..., non_identity_perm(c, gen)]  # the same permutation for every sample and item
    if name == "var_ratios":
        clear = clear_argmax_n(lp)
        assert torch.equal(f(permuted)[clear], f(lp)[clear])
    else:
        assert_close(f(permuted), f(lp), dtype, name)


@pytest.mark.parametrize("name", SCORES)
@pytest.mark.parametrize("seed, k, c, dtype", ALL)
def test_permuting_the_pool_permutes_the_scores(seed, k, c, dtype, name):
    gen, _, lp, _ = make_case(seed, k, c, dtype)
    f = SCORES[name]
    perm = non_identity_perm(N, gen)
    if name == "var_ratios":
        assert torch.equal(f(lp[:, perm]), f(lp)[perm])
    else:
        assert_close(f(lp[:, perm]), f(lp)[perm], dtype, name)


@pytest.mark.parametrize("name", SCORES)
@pytest.mark.parametrize("seed, k, c, dtype", MULTI_K)
def test_permuting_the_samples_changes_no_score(seed, k, c, dtype, name):
    """Each score is a function of the K samples as a set (the same permutation for every item; for EPIG,
    whose samples are paired with the targets', see its own test)."""
    gen, _, lp, _ = make_case(seed, k, c, dtype)
    f = SCORES[name]
    permuted = lp[non_identity_perm(k, gen)]
    if name == "var_ratios":
        assert torch.equal(f(permuted), f(lp))
    else:
        assert_close(f(permuted), f(lp), dtype, name)


def log_softmax_in(logits, dtype):
    """log_softmax computed in dtype itself, so that a shift of the logits reaches the log-probabilities as
    round-off (made in float64 and cast, 100% of the float32 log-probabilities came out bitwise the same)."""
    return logits.to(dtype).log_softmax(-1)


@pytest.mark.parametrize("name", SCORES)
@pytest.mark.parametrize("seed, k, c, dtype", ALL)
def test_adding_a_constant_to_the_logits_changes_no_score(seed, k, c, dtype, name):
    """The log-probabilities are the same in exact arithmetic, not in floating point (about 40% of them
    differ): the scores must be functions of the distribution that do not amplify that round-off."""
    gen, logits, lp, _ = make_case(seed, k, c, dtype)
    f = SCORES[name]
    # A different constant for every row (sample, item): each row is one softmax.
    shift = 60 * torch.rand(k, N, 1, generator=gen, dtype=torch.float64) - 30
    base, shifted = log_softmax_in(logits, dtype), log_softmax_in(logits + shift, dtype)
    assert not torch.equal(base, shifted)
    if name == "var_ratios":
        clear = clear_argmax_n(lp)
        assert torch.equal(f(shifted)[clear], f(base)[clear])
    else:
        assert_close(f(shifted), f(base), dtype, name)


# --- samples that agree -------------------------------------------------------------------------------

@pytest.mark.parametrize("seed, k, c, dtype", MULTI_K)
def test_identical_samples_give_zero_disagreement_and_the_one_sample_scores(seed, k, c, dtype):
    _, _, lp, targets = make_case(seed, k, c, dtype)
    tol = TOL[dtype]
    same = lp[:1].expand(k, N, c).clone()
    zero = torch.zeros(N, dtype=dtype)
    assert_close(max_entropy(same) - entropy_of(same).mean(0), zero, dtype, "BALD before its clamp")
    assert_close(bald(same), zero, dtype, "bald")
    assert torch.equal(var_ratios(same), zero)
    assert_close(mean_std(same), zero, dtype, "mean_std")
    zero_e = torch.zeros(EPIG_N, dtype=dtype)
    assert_close(epig(same[:, :EPIG_N], targets), zero_e, dtype, "epig: pool samples agree")
    assert_close(epig(lp[:, :EPIG_N], targets[:1].expand(k, T, c).clone()), zero_e, dtype, "epig: target samples agree")
    for name in MEAN_PREDICTION:
        assert_close(SCORES[name](same), SCORES[name](lp[:1]), dtype, name)
    # and the same inputs are not all zero when the samples differ (items with spread > 0)
    assert bald(lp).max() > 100 * tol and mean_std(lp).max() > 100 * tol


@pytest.mark.parametrize("seed, k, c, dtype", ONE_K)
def test_one_sample_gives_zero_disagreement_on_random_inputs(seed, k, c, dtype):
    _, _, lp, targets = make_case(seed, k, c, dtype)
    zero = torch.zeros(N, dtype=dtype)
    assert_close(bald(lp), zero, dtype, "bald")
    assert torch.equal(var_ratios(lp), zero)
    assert_close(mean_std(lp), zero, dtype, "mean_std")
    assert_close(epig(lp[:, :EPIG_N], targets), zero[:EPIG_N], dtype, "epig")
    # the MC average of one sample is that sample
    assert_close(max_entropy(lp), entropy_of(lp[0]), dtype, "entropy")
    assert max_entropy(lp).max() > 0.1  # not trivially zero


# --- EPIG ---------------------------------------------------------------------------------------------

def epig_per_target(lp, targets):
    return torch.stack([epig(lp, targets[:, t:t + 1]) for t in range(targets.shape[1])], 1)  # N × T


@pytest.mark.parametrize("seed, k, c, dtype", ALL)
def test_epig_is_between_zero_and_each_entropy_and_bald(seed, k, c, dtype):
    """EPIG(x) = mean over x* of I[y; y*], with y and y* independent given the sample k (the joint is
    1/K Σ_k p_k(y) p_k(y*), strategies/epig.py). So for every target: I[y; y*] ≤ min(H[y], H[y*]), and by
    data processing along y - k - y*, I[y; y*] ≤ min(I[y; k], I[y*; k]) = min(BALD(x), BALD(x*)) ≤ log K."""
    _, _, lp, targets = make_case(seed, k, c, dtype)
    lp = lp[:, :EPIG_N]
    tol = TOL[dtype]
    e_N = epig(lp, targets)
    assert e_N.shape == (EPIG_N,) and e_N.dtype == dtype and torch.isfinite(e_N).all()
    # epig clamps at 0 too: before the clamp, only round-off may be negative
    q, shift = _scaled(targets.reshape(k, T * c))
    assert _epig_chunk(lp, q, shift, T).min() >= -tol
    per_t = epig_per_target(lp, targets)
    assert_close(per_t.mean(1), e_N, dtype, "EPIG is the mean over the targets")
    assert (per_t <= max_entropy(lp)[:, None] + tol).all()
    assert (per_t <= max_entropy(targets)[None, :] + tol).all()
    assert (per_t <= bald(lp)[:, None] + tol).all()
    assert (per_t <= bald(targets)[None, :] + tol).all()
    assert e_N.max() <= math.log(k) + tol


@pytest.mark.parametrize("seed, k, c, dtype", ALL)
def test_epig_ignores_class_names_target_order_and_repeated_targets(seed, k, c, dtype):
    gen, _, lp, targets = make_case(seed, k, c, dtype)
    lp = lp[:, :EPIG_N]
    e_N = epig(lp, targets)
    # y and y* are different variables: each may be relabelled on its own
    assert_close(epig(lp[..., non_identity_perm(c, gen)], targets[..., non_identity_perm(c, gen)]), e_N, dtype,
                 "classes permuted")
    assert_close(epig(lp, targets[:, non_identity_perm(T, gen)]), e_N, dtype, "targets permuted")
    assert_close(epig(lp, torch.cat([targets, targets], 1)), e_N, dtype, "targets repeated")
    perm = non_identity_perm(EPIG_N, gen)
    assert_close(epig(lp[:, perm], targets), e_N[perm], dtype, "pool permuted")


@pytest.mark.parametrize("seed, k, c, dtype", MULTI_K)
def test_epig_is_unchanged_by_permuting_paired_samples_and_changed_by_unpairing_them(seed, k, c, dtype):
    gen, _, lp, targets = make_case(seed, k, c, dtype)
    lp = lp[:, :EPIG_N]
    e_N = epig(lp, targets)
    perm = non_identity_perm(k, gen)
    assert_close(epig(lp[perm], targets[perm]), e_N, dtype, "samples permuted in both")
    if k >= 5:  # (with K = 2 and C = 2, swapping the two samples of the pool alone changes little)
        # The same permutation of the pool's samples alone breaks the pairing: EPIG sees it.
        assert (epig(lp[perm], targets) - e_N).abs().max() > 0.01 * e_N.max()


@pytest.mark.parametrize("seed, k, c, dtype", ALL)
def test_epig_is_unchanged_by_adding_constants_to_the_logits(seed, k, c, dtype):
    gen = torch.Generator().manual_seed(2000 + seed)
    pool_logits, target_logits = random_logits(gen, k, EPIG_N, c), random_logits(gen, k, T, c)
    e_N = epig(log_softmax_in(pool_logits, dtype), log_softmax_in(target_logits, dtype))
    shift_pool = 60 * torch.rand(k, EPIG_N, 1, generator=gen, dtype=torch.float64) - 30
    shift_targets = 60 * torch.rand(k, T, 1, generator=gen, dtype=torch.float64) - 30
    shifted = epig(log_softmax_in(pool_logits + shift_pool, dtype), log_softmax_in(target_logits + shift_targets, dtype))
    assert_close(shifted, e_N, dtype, "epig")


# --- BatchBALD: its gains are scores too --------------------------------------------------------------

BATCH = 3


def assert_same_greedy_path(positions, gains, other_positions, other_gains, dtype, what):
    """Two greedy batches over the same items: the same picks with the same gains, up to a tie. Where the paths
    part, both picks must be maximisers of the same gain (ties go to the lowest position, so a tie in exact
    arithmetic may be broken either way by round-off or by the order of the items)."""
    for i, (p, q) in enumerate(zip(positions.tolist(), other_positions.tolist())):
        assert abs(float(gains[i]) - float(other_gains[i])) <= TOL[dtype], f"{what}: gain {i}"
        if p != q:
            break


@pytest.mark.parametrize("seed, k, c, dtype", cases(lambda k, c, dtype: k >= 2 and c <= 10))
def test_batchbald_gains_are_bounded_and_ignore_class_and_pool_order(seed, k, c, dtype):
    """Exact mode (C^(b-1) configurations ≤ num_samples). A gain is H[y_c | Y] - E_w H[y_c | w]: ≥ 0 (y_c
    and Y are independent given w) and ≤ BALD(c) (conditioning does not raise entropy); the batch's joint MI,
    their sum, is ≤ log K."""
    gen, _, lp, _ = make_case(seed, k, c, dtype)
    lp = lp[:, :12]
    tol = TOL[dtype]

    def select(lp_K_N_C):
        positions, gains = batchbald_select(lp_K_N_C, BATCH, torch.Generator().manual_seed(seed), dtype=dtype)
        assert positions.unique().numel() == BATCH
        assert gains.min() >= -tol
        assert (gains <= bald(lp_K_N_C)[positions] + tol).all()
        assert gains.sum() <= math.log(k) + tol
        return positions, gains

    positions, gains = select(lp)
    assert gains[0] > 100 * tol  # the case has disagreement to pick
    assert_same_greedy_path(positions, gains, *select(lp[..., non_identity_perm(c, gen)]), dtype, "classes permuted")
    perm = non_identity_perm(12, gen)
    p_pool, g_pool = select(lp[:, perm])
    assert_same_greedy_path(positions, gains, perm[p_pool], g_pool, dtype, "pool permuted")


# --- NaN ------------------------------------------------------------------------------------------------

def nan_somewhere(lp, gen):
    k, n, c = lp.shape
    where = [int(torch.randint(d, (1,), generator=gen)) for d in (k, n, c)]
    bad = lp.clone()
    bad[tuple(where)] = float("nan")
    return bad, where[1]


@pytest.mark.parametrize("name", list(SCORES))
@pytest.mark.parametrize("seed, k, c, dtype", ALL[::3])
def test_nan_in_an_item_makes_its_score_nan_so_the_selection_raises(seed, k, c, dtype, name):
    """The score functions do not check their input: the loop's guard is select_top_k, which raises on a
    NaN score. So a NaN log-probability must reach the item's score, and leave the other items' alone
    (var_ratios's argmax took a NaN for the largest value and gave a finite score: found by this test)."""
    gen, _, lp, _ = make_case(seed, k, c, dtype)
    f = SCORES[name]
    bad, item = nan_somewhere(lp, gen)
    scores = f(bad)
    assert torch.isnan(scores[item])
    others = torch.arange(N) != item
    assert torch.equal(scores[others], f(lp)[others])
    with pytest.raises(ValueError, match="NaN"):
        select_top_k(scores, 1)


@pytest.mark.parametrize("seed, k, c, dtype", ALL[::3])
def test_nan_anywhere_makes_epig_and_batchbald_raise(seed, k, c, dtype):
    gen, _, lp, targets = make_case(seed, k, c, dtype)
    bad_pool, _ = nan_somewhere(lp, gen)
    bad_targets, _ = nan_somewhere(targets, gen)
    with pytest.raises(ValueError, match="pool log-probabilities are NaN"):
        epig(bad_pool, targets)
    with pytest.raises(ValueError, match="target log-probabilities are NaN"):
        epig(lp, bad_targets)
    with pytest.raises(ValueError, match="NaN"):
        batchbald_select(bad_pool, 2, torch.Generator().manual_seed(seed), dtype=dtype)
