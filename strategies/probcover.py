"""ProbCover (Yehuda et al. 2022, arXiv 2205.11320): label the images whose δ-balls cover the most of the pool.

For very small budgets, coverage beats uncertainty: each chosen image "covers" the candidates within δ of it
in the (L2-normalised) embedding, and a greedy max-coverage pass picks, one at a time, the candidate whose
ball holds the most candidates not covered yet (the labelled images cover theirs from the start). δ is the
paper's purity rule: the largest δ at which at least α = 0.95 of the balls hold points of one k-means
cluster only (k = the classes). Memory: never an N × N matrix; one chunked pass counts every ball, and each
pick subtracts the balls of the images it newly covers (chunks of at most ``chunk_elems`` distances).
"""
from __future__ import annotations

import numpy as np
import torch

from strategies.diversity import DEFAULT_CHUNK_ELEMS, Embeddings, _check, _sq_dists, kmeans_labels, sq_dist_chunks

PURITY = 0.95  # α: the share of pure balls the δ must keep (the paper's value)


def normalised(x_N_D: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x_N_D.float().cpu(), dim=1)


def purity_delta(x_N_D: torch.Tensor, clusters_N: torch.Tensor, alpha: float = PURITY,
                 chunk_elems: int = DEFAULT_CHUNK_ELEMS) -> float:
    """The largest δ at which at least ``alpha`` of the open balls B(x, δ) = {y : ‖x − y‖ < δ} hold only
    points of x's cluster. A ball is pure exactly when δ ≤ d_other(x), the distance from x to the nearest
    point of another cluster, so δ is the (1 − α) quantile of d_other from below (inf with one cluster)."""
    n = x_N_D.shape[0]
    sq = x_N_D.pow(2).sum(1)
    d_other = torch.full((n,), float("inf"), dtype=x_N_D.dtype)
    rows = max(1, chunk_elems // max(n, 1))
    for i in range(0, n, rows):
        d2 = _sq_dists(x_N_D[i:i + rows], sq[i:i + rows], x_N_D, sq)
        d2[clusters_N[i:i + rows].unsqueeze(1) == clusters_N.unsqueeze(0)] = float("inf")
        d_other[i:i + rows] = d2.min(1).values.sqrt()
    ordered = d_other.sort().values
    m = int(np.floor((1 - alpha) * n + 1e-9))  # at most m balls may be impure
    return float(ordered[min(m, n - 1)])


def ball_counts(points_N_D: torch.Tensor, centres_M_D: torch.Tensor, delta: float,
                chunk_elems: int = DEFAULT_CHUNK_ELEMS) -> torch.Tensor:
    """Per point, how many centres lie within distance < δ of it, in chunks of ≤ chunk_elems distances."""
    out = torch.zeros(points_N_D.shape[0], dtype=torch.int64)
    for i, _, d2 in sq_dist_chunks(points_N_D, centres_M_D, chunk_elems):
        out[i:i + d2.shape[0]] += (d2 < delta * delta).sum(1)
    return out


def max_coverage(h_N_D: torch.Tensor, labeled_L_D: torch.Tensor, delta: float, batch_size: int,
                 generator: torch.Generator, chunk_elems: int = DEFAULT_CHUNK_ELEMS) -> tuple:
    """Greedy max coverage of the candidates by δ-balls: (positions_B, gains_B). Each pick is the
    candidate whose ball holds the most uncovered candidates (ties: the lowest position); its gain is that
    number. Once every candidate is covered, the rest of the batch is drawn uniformly from ``generator``
    among the candidates not picked (gain 0), as the paper's code does."""
    n = h_N_D.shape[0]
    h_sq = h_N_D.pow(2).sum(1)
    covered = ball_counts(h_N_D, labeled_L_D, delta, chunk_elems) > 0
    degree = ball_counts(h_N_D, h_N_D[~covered], delta, chunk_elems)
    picked = torch.zeros(n, dtype=torch.bool)
    positions, gains = [], []
    while len(positions) < batch_size and int(degree.max()) > 0:
        c = int(torch.argmax(degree))  # the first of the largest
        gain = int(degree[c])
        d2 = _sq_dists(h_N_D[c:c + 1], h_sq[c:c + 1], h_N_D, h_sq)[0]
        newly = ~covered & (d2 < delta * delta)
        newly[c] = not covered[c]  # its own ball holds it, whatever the rounding of a zero distance
        degree -= ball_counts(h_N_D, h_N_D[newly], delta, chunk_elems)
        covered |= newly
        picked[c] = True
        degree[picked] = -1  # never picked twice (distances near δ may round differently per chunk shape)
        positions.append(c)
        gains.append(float(gain))
    rest = torch.nonzero(~picked).flatten()
    fill = rest[torch.randperm(rest.numel(), generator=generator)[:batch_size - len(positions)]]
    positions += fill.tolist()
    gains += [0.0] * fill.numel()
    return torch.tensor(positions, dtype=torch.long), torch.tensor(gains, dtype=torch.float32)


def probcover_select(emb: Embeddings, batch_size: int, generator: torch.Generator,
                     chunk_elems: int = DEFAULT_CHUNK_ELEMS) -> tuple:
    """ProbCover on the candidates' L2-normalised features: δ by the purity rule over a k-means of the
    candidates (k = classes, seeded from ``generator``), then greedy max coverage. Scores: each pick's gain."""
    h = normalised(emb.h_N_D)
    _check(h.shape[0], batch_size)
    labeled = normalised(emb.labeled_h_L_D)
    seed = int(torch.randint(2**31 - 1, (), generator=generator))
    k = min(emb.p_N_C.shape[1], h.shape[0])
    clusters = torch.from_numpy(kmeans_labels(h.numpy(), k, seed)).long()
    delta = purity_delta(h, clusters, chunk_elems=chunk_elems)
    return max_coverage(h, labeled, delta, batch_size, generator, chunk_elems)
