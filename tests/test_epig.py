"""strategies/epig.py: EPIG's exact values against a brute-force double sum and the entropy form, its zeros,
a case where BALD and EPIG disagree on purpose, saturated inputs, chunking, and the registry entry.

Expected values are computed here from the definition (arXiv 2304.08151), for pool input x and target x*:
p(y, y*) = 1/K Σ_k p_k(y|x) p_k(y*|x*), p(y) = 1/K Σ_k p_k(y|x), and
EPIG(x) = mean over targets of Σ_{y,y*} p(y, y*) log( p(y, y*) / (p(y) p(y*)) ).
"""
import math

import pytest
import torch

from config import Config, ConfigError
from loop import check_declared
from strategies import STRATEGIES, bald, epig


def random_log_probs(k, n, c, seed, dtype=torch.float64, sharpness=2.0):
    gen = torch.Generator().manual_seed(seed)
    return torch.log_softmax(sharpness * torch.randn(k, n, c, generator=gen, dtype=dtype), dim=-1)


def brute_force_epig(lp_K_N_C, lp_K_T_C):
    """The double sum over y and y*, one pool input and one target at a time, in plain Python floats."""
    p, q = lp_K_N_C.exp().tolist(), lp_K_T_C.exp().tolist()
    k, n, c = lp_K_N_C.shape
    t = lp_K_T_C.shape[1]
    out = []
    for i in range(n):
        total = 0.0
        for j in range(t):
            for y in range(c):
                p_y = sum(p[s][i][y] for s in range(k)) / k
                for y_star in range(c):
                    p_t = sum(q[s][j][y_star] for s in range(k)) / k
                    joint = sum(p[s][i][y] * q[s][j][y_star] for s in range(k)) / k
                    if joint > 0:
                        total += joint * math.log(joint / (p_y * p_t))
        out.append(total / t)
    return torch.tensor(out, dtype=torch.float64)


def entropy_form_epig(lp_K_N_C, lp_K_T_C):
    """The same quantity written as entropies of probabilities: H[y] + H[y*] − H[y, y*], with the joint
    built from probabilities (probs → joint → mutual information), averaged over the targets."""
    p, q = lp_K_N_C.exp(), lp_K_T_C.exp()
    joint_N_T_C_C = torch.einsum("knc,ktd->ntcd", p, q) / p.shape[0]

    def h(probs, dims):
        return -(probs * probs.log().nan_to_num(neginf=0.0)).sum(dims)

    h_y = h(p.mean(0), -1)[:, None]          # N × 1
    h_t = h(q.mean(0), -1)[None, :]          # 1 × T
    h_joint = h(joint_N_T_C_C, (-2, -1))     # N × T
    return (h_y + h_t - h_joint).mean(1)


@pytest.mark.parametrize("k, n, t, c, seed", [(2, 3, 2, 2, 0), (4, 5, 3, 3, 1), (7, 4, 6, 5, 2)])
def test_epig_equals_the_brute_force_double_sum(k, n, t, c, seed):
    pool = random_log_probs(k, n, c, seed)
    targets = random_log_probs(k, t, c, seed + 100)
    expected = brute_force_epig(pool, targets)
    assert (expected > 1e-4).all()  # not a trivial case
    assert torch.allclose(epig(pool, targets), expected, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("seed", range(4))
def test_epig_matches_the_entropy_form_on_random_inputs(seed):
    pool = random_log_probs(20, 50, 10, seed)
    targets = random_log_probs(20, 30, 10, seed + 7)
    assert torch.allclose(epig(pool, targets), entropy_form_epig(pool, targets), atol=1e-10, rtol=1e-8)


def test_epig_is_zero_when_the_pool_input_does_not_change_with_the_sample():
    targets = random_log_probs(6, 4, 3, seed=5)
    fixed = torch.log_softmax(torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64), -1)
    pool = torch.stack([fixed.expand(6, 3), random_log_probs(6, 1, 3, seed=6)[:, 0]], dim=1)  # K × 2 × C
    scores = epig(pool, targets)
    assert scores[0] == pytest.approx(0.0, abs=1e-14)
    assert scores[1] > 1e-3  # the other input's prediction does move with the samples


def test_epig_is_zero_when_the_targets_do_not_change_with_the_sample():
    pool = random_log_probs(5, 6, 4, seed=3)
    target = torch.log_softmax(torch.tensor([1.0, 0.0, -2.0, 0.5], dtype=torch.float64), -1)
    scores = epig(pool, target.expand(5, 2, 4))
    assert torch.allclose(scores, torch.zeros(6, dtype=torch.float64), atol=1e-14)
    assert (bald(pool) > 1e-3).all()  # while BALD sees the pool's disagreement


def test_one_sample_gives_zero():
    assert torch.equal(epig(random_log_probs(1, 5, 3, 0), random_log_probs(1, 4, 3, 1)),
                       torch.zeros(5, dtype=torch.float64))


def onehot_row(classes_K, c=2, eps=0.0):
    """K predictions, sample k putting 1 − eps on classes_K[k] (the rest spread evenly)."""
    rows = [[1 - eps if y == cls else eps / (c - 1) for y in range(c)] for cls in classes_K]
    return torch.tensor(rows, dtype=torch.float64).log()


def test_bald_prefers_an_irrelevant_input_and_epig_does_not():
    # Four samples of the model = two independent binary "hypotheses" z1, z2 (k = 2·z1 + z2). The targets'
    # labels follow z1. Input A (a noisy image, say) is fully uncertain but follows z2 only: it tells
    # nothing about the targets. Input B follows z1, softly: less disagreement, but about what matters.
    z1, z2 = [0, 0, 1, 1], [0, 1, 0, 1]
    a = onehot_row(z2)                       # BALD log 2: the samples disagree completely
    b = onehot_row(z1, eps=0.2)              # BALD log 2 − H(0.2) < log 2
    pool = torch.stack([a, b], dim=1)        # K × 2 × 2
    targets = torch.stack([onehot_row(z1, eps=0.1), onehot_row(z1, eps=0.05)], dim=1)
    bald_scores, epig_scores = bald(pool), epig(pool, targets)
    assert bald_scores[0] == pytest.approx(math.log(2), abs=1e-12)
    assert bald_scores[0] > bald_scores[1] + 0.4
    assert epig_scores[0] == pytest.approx(0.0, abs=1e-14)  # independent of the targets' labels
    assert epig_scores[1] > 0.1
    assert int(bald_scores.argmax()) == 0 and int(epig_scores.argmax()) == 1
    assert torch.allclose(epig_scores, brute_force_epig(pool, targets), atol=1e-12)


def test_saturated_predictions_give_exact_finite_scores():
    # Exact zeros (log 0 = −inf) in the pool and the targets, and a class that no sample ever predicts.
    pool = torch.tensor([[[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]],
                         [[0.0, 1.0, 0.0], [0.5, 0.5, 0.0]]], dtype=torch.float64).log()
    targets = torch.tensor([[[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]]], dtype=torch.float64).log()
    scores = epig(pool, targets)
    assert torch.isfinite(scores).all()
    # Input 0 and the target have the same label in each sample: the joint is the diagonal, I = log 2.
    assert scores[0] == pytest.approx(math.log(2), abs=1e-12)
    assert scores[1] == pytest.approx(0.0, abs=1e-14)
    assert torch.allclose(scores, brute_force_epig(pool, targets), atol=1e-12)


def test_probabilities_below_float32s_range_give_finite_exact_scores():
    # Class 2 at about e^-200: 0 in float32 (its exp underflows), yet different across the samples.
    pool = random_log_probs(4, 3, 3, seed=8)
    pool[..., 2] -= 200.0
    pool = torch.log_softmax(pool, -1)
    targets = random_log_probs(4, 2, 3, seed=9)
    scores32 = epig(pool.float(), targets.float())
    assert torch.isfinite(scores32).all() and (scores32 >= 0).all()
    assert torch.allclose(scores32.double(), brute_force_epig(pool, targets), atol=1e-6)


def test_chunking_changes_nothing_and_float32_is_close_to_float64():
    pool = random_log_probs(10, 37, 6, seed=11)
    targets = random_log_probs(10, 9, 6, seed=12)
    whole = epig(pool, targets)
    assert torch.allclose(epig(pool, targets, chunk_bytes=1), whole, atol=1e-14, rtol=0)  # one input a chunk
    assert torch.allclose(epig(pool, targets, chunk_bytes=5000), whole, atol=1e-14, rtol=0)
    assert torch.allclose(epig(pool.float(), targets.float()).double(), whole, atol=2e-6)


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match="share K and C"):
        epig(random_log_probs(3, 4, 2, 0), random_log_probs(2, 4, 2, 0))
    with pytest.raises(ValueError, match="at least one target"):
        epig(random_log_probs(3, 4, 2, 0), random_log_probs(3, 0, 2, 0))


def test_registry_entry_needs_two_samples_and_is_refused_with_one():
    s = STRATEGIES["epig"]
    assert s.kind == "targets" and s.score_targets is epig and s.mc and s.min_mc_samples == 2
    with pytest.raises(ConfigError, match="--strategy epig needs --mc_samples ≥ 2"):
        check_declared(Config(strategy="epig", mc_samples=1))
    check_declared(Config(strategy="epig", mc_samples=2))


@pytest.mark.parametrize("where", ["pool", "target"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_invalid_log_probabilities_raise_instead_of_scoring_zero(where, bad):
    """A diverged model's NaN (or +inf) log-probabilities: an error naming them, as bald and batchbald give,
    never scores of 0 from which a round picks an arbitrary top-k, nor a target dropped from the mean."""
    g = torch.Generator().manual_seed(0)
    pool = torch.randn(4, 6, 3, generator=g).log_softmax(-1)
    targets = torch.randn(4, 5, 3, generator=g).log_softmax(-1)
    (pool if where == "pool" else targets)[1, 2, 0] = bad
    with pytest.raises(ValueError, match=f"EPIG: the {where} log-probabilities are NaN or \\+inf"):
        epig(pool, targets)
    # −inf (a class with probability 0) stays valid: exact finite scores
    pool[1, 2, 0] = targets[1, 2, 0] = float("-inf")
    assert torch.isfinite(epig(pool.log_softmax(-1), targets.log_softmax(-1))).all()
