"""ProbCover (strategies/probcover.py) against brute force on small data: the purity rule's δ, and the greedy
max coverage (picks, gains, the labelled images' coverage, the random fill once all is covered), chunked or not."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from strategies.diversity import Embeddings
from strategies.probcover import PURITY, max_coverage, normalised, probcover_select, purity_delta


def blobs(n_per: int = 30, centres: int = 4, seed: int = 0) -> tuple:
    """Points in ``centres`` Gaussian blobs in 5-D (float64 for exact brute force), and each one's blob."""
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(centres, 5, generator=g, dtype=torch.float64) * 3
    x = torch.cat([c[i] + 0.8 * torch.randn(n_per, 5, generator=g, dtype=torch.float64) for i in range(centres)])
    return x, torch.arange(centres).repeat_interleave(n_per)


def brute_purity(x: torch.Tensor, clusters: torch.Tensor, delta: float) -> float:
    d = torch.cdist(x, x)
    inside = d < delta
    return float((~(inside & (clusters[:, None] != clusters[None, :]))).all(1).double().mean())


@pytest.mark.parametrize("chunk_elems", [7, 2**24])
def test_purity_delta_is_the_largest_delta_keeping_alpha_of_the_balls_pure(chunk_elems):
    x, clusters = blobs()
    delta = purity_delta(x, clusters, chunk_elems=chunk_elems)
    assert 0 < delta < float("inf")
    # (cdist and the chunked distances round differently: the boundary is checked to a relative 1e-9)
    assert brute_purity(x, clusters, delta * (1 - 1e-9)) >= PURITY
    assert brute_purity(x, clusters, delta * (1 + 1e-9)) < PURITY  # any larger δ breaks the rule
    assert purity_delta(x, torch.zeros(len(x), dtype=torch.long)) == float("inf")  # one cluster: all pure


def brute_greedy(x, labeled, delta, b):
    """Max coverage with the explicit adjacency matrix: the lowest of the candidates covering the most."""
    adj = (torch.cdist(x, x) < delta).numpy()
    covered = (torch.cdist(x, labeled) < delta).numpy().any(1) if len(labeled) else np.zeros(len(x), bool)
    picks, gains = [], []
    for _ in range(b):
        gain = (adj & ~covered[None, :]).sum(1)
        if gain.max() == 0:
            break
        c = int(np.argmax(gain))
        picks.append(c)
        gains.append(float(gain[c]))
        covered |= adj[c]
    return picks, gains


@pytest.mark.parametrize("chunk_elems", [5, 2**24])
@pytest.mark.parametrize("n_labeled", [0, 6])
def test_max_coverage_equals_the_brute_force_greedy_cover(chunk_elems, n_labeled):
    x, _ = blobs(seed=1)
    labeled, pool = x[:n_labeled], x[n_labeled:]
    delta = 1.5
    picks, gains = max_coverage(pool, labeled, delta, 8, torch.Generator().manual_seed(0), chunk_elems)
    expected_picks, expected_gains = brute_greedy(pool, labeled, delta, 8)
    assert len(expected_picks) == 8 and picks.tolist() == expected_picks and gains.tolist() == expected_gains
    assert gains.tolist() == sorted(gains.tolist(), reverse=True) and gains[0] > 1


def test_once_everything_is_covered_the_rest_is_a_seeded_draw():
    x, _ = blobs(n_per=10, centres=2, seed=2)
    picks, gains = max_coverage(x, x[:0], 100.0, 5, torch.Generator().manual_seed(3))
    assert gains.tolist() == [20.0, 0, 0, 0, 0] and picks[0] == 0 and picks.unique().numel() == 5
    again, _ = max_coverage(x, x[:0], 100.0, 5, torch.Generator().manual_seed(3))
    other, _ = max_coverage(x, x[:0], 100.0, 5, torch.Generator().manual_seed(4))
    assert torch.equal(picks, again) and not torch.equal(picks, other)


def test_probcover_select_covers_the_blobs_on_normalised_features():
    """Four well-separated directions, no labels: the first four picks cover one blob each."""
    g = torch.Generator().manual_seed(5)
    dirs = torch.eye(8)[:4] * 10
    h = torch.cat([d + 0.3 * torch.randn(25, 8, generator=g) for d in dirs])
    p = torch.full((100, 4), 0.25)
    picks, gains = probcover_select(Embeddings(h, p, h[:0]), 4, torch.Generator().manual_seed(0))
    assert sorted(int(i) // 25 for i in picks) == [0, 1, 2, 3]
    assert torch.equal(normalised(h).norm(dim=1).round(decimals=5), torch.ones(100))
