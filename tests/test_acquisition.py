"""Stochastic acquisition (--acquisition power|softmax|softrank, Kirsch et al. 2023): exact log-weights, exact
draw probabilities, the sampling distribution of a draw without replacement, seeding, and the refusals."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from config import ConfigError, parse_config
from loop import check_declared
from strategies.select import log_weights, select_stochastic, select_top_k

SCORES = torch.tensor([0.1, 0.7, 0.0, 0.2])


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_log_weights_are_exact_for_each_rule():
    tiny = torch.finfo(torch.float64).tiny
    assert torch.allclose(log_weights(SCORES, "power", 2.0),
                          2.0 * torch.tensor([0.1, 0.7, tiny, 0.2], dtype=torch.float64).log())
    assert torch.allclose(log_weights(SCORES, "softmax", 3.0), 3.0 * SCORES.double())
    # ranks: 0.7 → 1, 0.2 → 2, 0.1 → 3, 0.0 → 4
    assert torch.allclose(log_weights(SCORES, "softrank", 1.5),
                          -1.5 * torch.tensor([3.0, 1.0, 4.0, 2.0], dtype=torch.float64).log())
    # a rounding error below 0 (BALD's −1e-9) counts as 0, not as an error
    assert log_weights(torch.tensor([-1e-9, 0.5]), "power", 1.0)[0] == math.log(tiny)


@pytest.mark.parametrize("how,beta", [("power", 1.0), ("softmax", 4.0), ("softrank", 1.0)])
def test_draw_probabilities_are_each_picks_weight_over_the_weights_not_yet_drawn(how, beta):
    picked, probs = select_stochastic(SCORES, 3, how, beta, gen(5))
    w = np.exp(log_weights(SCORES, how, beta).numpy())
    left, expected = w.sum(), []
    for i in picked.tolist():
        expected.append(w[i] / left)
        left -= w[i]
    assert len(set(picked.tolist())) == 3
    assert np.allclose(probs.numpy(), expected, rtol=1e-5)


def test_a_draw_follows_the_weights_without_replacement():
    """First pick ∝ w; second pick given the first ∝ w over the rest (power, β 1: weights ∝ score)."""
    scores = torch.tensor([0.1, 0.2, 0.7])
    n = 20000
    first, pairs = np.zeros(3), {}
    for seed in range(n):
        a, b = select_stochastic(scores, 2, "power", 1.0, gen(seed))[0].tolist()
        first[a] += 1
        pairs[a, b] = pairs.get((a, b), 0) + 1
    w = scores.numpy() / scores.sum().item()
    assert np.allclose(first / n, w, atol=0.012)
    assert pairs.get((2, 1), 0) / n == pytest.approx(w[2] * w[1] / (1 - w[2]), abs=0.012)
    assert pairs.get((0, 2), 0) / n == pytest.approx(w[0] * w[2] / (1 - w[0]), abs=0.012)


def test_the_same_generator_draws_the_same_batch_and_a_large_beta_is_top_k():
    scores = torch.rand(500, generator=gen(0))
    a = select_stochastic(scores, 20, "softmax", 1.0, gen(3))
    b = select_stochastic(scores, 20, "softmax", 1.0, gen(3))
    c = select_stochastic(scores, 20, "softmax", 1.0, gen(4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a[0], c[0])
    # a very large β: the draw is the top 20 (nearly tied neighbours may swap places within it)
    drawn = select_stochastic(scores, 20, "power", 1e4, gen(3))[0]
    assert set(drawn.tolist()) == set(select_top_k(scores, 20).tolist())
    with pytest.raises(ValueError, match="NaN"):
        select_stochastic(torch.tensor([0.1, math.nan]), 1, "power", 1.0, gen(0))


def test_only_per_image_scores_can_be_drawn_from_and_margin_not_by_power():
    for strategy in ("coreset", "batchbald", "random"):
        with pytest.raises(ConfigError, match="--acquisition power draws from per-image scores"):
            check_declared(parse_config(["--strategy", strategy, "--acquisition", "power"]))
    with pytest.raises(ConfigError, match="needs scores ≥ 0; --strategy margin"):
        check_declared(parse_config(["--strategy", "margin", "--acquisition", "power"]))
    for strategy, how in (("margin", "softmax"), ("bald", "power"), ("epig", "softrank"), ("entropy", "top_k")):
        check_declared(parse_config(["--strategy", strategy, "--acquisition", how]))
    with pytest.raises(ConfigError, match="--acquisition_beta"):
        parse_config(["--acquisition_beta", "0"])


def test_a_run_records_the_draws_and_is_reproducible(cli, tmp_path):
    """A real bald run with --acquisition power: each queried row has its score and a draw probability in
    (0, 1], the initial set none; the same command gives the same acquired.csv; top_k records none."""
    argv = ["--dataset", "mnist_5k", "--no-wandb", "--num_valid", "100", "--n_init_labeled", "20", "--n_query", "10",
            "--n_round", "2", "--epochs", "1", "--min_steps", "20", "--threads", "1", "--strategy", "bald",
            "--mc_samples", "5", "--stop_set_size", "10"]
    runs = [cli(*argv, "--acquisition", "power", output_dir=tmp_path / name)[3][0] for name in ("a", "b")]
    acquired = runs[0].acquired
    queried = acquired[acquired["round"] >= 0]
    assert len(queried) == 20 and queried["draw_prob"].between(0, 1, inclusive="right").all()
    assert acquired[acquired["round"] == -1]["draw_prob"].isna().all()
    assert runs[0].config["acquisition"] == "power" and runs[0].config["acquisition_beta"] == 1.0
    assert (runs[0].path / "acquired.csv").read_text() == (runs[1].path / "acquired.csv").read_text()
    [top] = cli(*argv, output_dir=tmp_path / "top")[3]
    assert top.acquired["draw_prob"].isna().all()
    # the draw is not the top-k: some drawn image has a lower score than one left behind would
    first = queried[queried["round"] == 0]
    assert set(first["pool_position"]) != set(top.acquired.query("round == 0")["pool_position"])
