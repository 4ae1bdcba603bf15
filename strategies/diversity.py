"""Diversity strategies: choose a batch from the deterministic model's embeddings, not from MC samples.

Every selector here takes an ``Embeddings`` (the candidates' penultimate features h and predicted
probabilities p, and the labelled images' features) and returns (positions_B, scores_B), positions
into the candidates in pick order, like ``select_batch``. None of them ever holds an N × N matrix:
distances to the chosen centres are kept as one running minimum per candidate, and the one
all-pairs step (labelled × candidates in k-center) goes in chunks of at most ``chunk_elems`` entries.

- ``coreset_select``: greedy k-center (Sener & Savarese 2018, arXiv 1708.00489).
- ``badge_select``: k-means++ seeding on last-layer gradient embeddings (Ash et al. 2020,
  arXiv 1906.03671), with the gradient embeddings never formed.
- ``typiclust_select``: the most typical point of each of the largest uncovered k-means clusters
  (Hacohen et al. 2022, arXiv 2202.02794).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

DEFAULT_CHUNK_ELEMS = 2**24  # 64 MiB of float32 per distance chunk


@dataclass(frozen=True)
class Embeddings:
    """What an embedding strategy sees: candidates' h_N_D and p_N_C, and the labelled images' h_L_D."""

    h_N_D: torch.Tensor        # penultimate features (input of the last Linear layer, dropout off)
    p_N_C: torch.Tensor        # predicted class probabilities of the same deterministic pass
    labeled_h_L_D: torch.Tensor  # features of the labelled images (L may be 0)


def _check(n: int, batch_size: int) -> None:
    if not 0 < batch_size <= n:
        raise ValueError(f"cannot select a batch of {batch_size} from {n} items")


def _sq_dists(a_A_D: torch.Tensor, a_sq_A: torch.Tensor, b_B_D: torch.Tensor, b_sq_B: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances A × B as ‖a‖² + ‖b‖² − 2ab, clamped at 0 (round-off)."""
    return (a_sq_A.unsqueeze(1) + b_sq_B.unsqueeze(0) - 2.0 * (a_A_D @ b_B_D.T)).clamp_min_(0.0)


def sq_dist_chunks(points_N_D: torch.Tensor, centres_M_D: torch.Tensor, chunk_elems: int = DEFAULT_CHUNK_ELEMS):
    """The squared distances points × centres as (row start, column start, chunk), both sides chunked so that a
    chunk holds at most chunk_elems entries (at least 1 × 1); nothing when either side is empty."""
    n, m = points_N_D.shape[0], centres_M_D.shape[0]
    if n == 0 or m == 0:
        return
    p_sq = points_N_D.pow(2).sum(1)
    c_sq = centres_M_D.pow(2).sum(1)
    rows = max(1, min(n, chunk_elems))
    cols = max(1, min(m, chunk_elems // rows))
    for i in range(0, n, rows):
        for j in range(0, m, cols):
            yield i, j, _sq_dists(points_N_D[i:i + rows], p_sq[i:i + rows], centres_M_D[j:j + cols], c_sq[j:j + cols])


def min_sq_dist_to(points_N_D: torch.Tensor, centres_L_D: torch.Tensor,
                   chunk_elems: int = DEFAULT_CHUNK_ELEMS) -> torch.Tensor:
    """min over centres of the squared distance, per point (N), in chunks of ≤ chunk_elems distances
    (sq_dist_chunks). +inf where L = 0."""
    out_N = torch.full((points_N_D.shape[0],), float("inf"), dtype=points_N_D.dtype, device=points_N_D.device)
    for i, _, d in sq_dist_chunks(points_N_D, centres_L_D, chunk_elems):
        rows = slice(i, i + d.shape[0])
        torch.minimum(out_N[rows], d.amin(1), out=out_N[rows])
    return out_N


def coreset_select(emb: Embeddings, batch_size: int, generator: torch.Generator | None = None,
                   chunk_elems: int = DEFAULT_CHUNK_ELEMS) -> tuple:
    """Greedy k-center (Sener & Savarese 2018, arXiv 1708.00489): repeatedly take the candidate
    farthest from every labelled image and every earlier pick.

    Scores: each pick's Euclidean distance to its nearest centre at the time it was picked (the
    covering radius, non-increasing along the batch; +inf for the first pick when nothing is
    labelled). Deterministic: ``generator`` is unused; ties go to the lowest position. Memory: the N
    running minimum distances, the N × D features, and chunks of ≤ ``chunk_elems`` distances.
    """
    h = emb.h_N_D.float()
    n = h.shape[0]
    _check(n, batch_size)
    min_d2_N = min_sq_dist_to(h, emb.labeled_h_L_D.to(h), chunk_elems)
    h_sq = h.pow(2).sum(1)
    picked_N = torch.zeros(n, dtype=torch.bool, device=h.device)
    positions, scores = [], []
    for _ in range(batch_size):
        d2 = min_d2_N.masked_fill(picked_N, -1.0)  # a pick never again: all others are ≥ 0
        best = int(torch.argmax(d2))  # first maximal index on ties
        positions.append(best)
        scores.append(float(d2[best]))
        picked_N[best] = True
        c = h[best:best + 1]
        torch.minimum(min_d2_N, _sq_dists(h, h_sq, c, h_sq[best:best + 1]).squeeze(1), out=min_d2_N)
    return torch.tensor(positions, dtype=torch.long), torch.tensor(scores).sqrt()


def gradient_embedding_parts(p_N_C: torch.Tensor) -> torch.Tensor:
    """q = p − onehot(argmax p): the class factor of the last layer's loss gradient at ŷ.

    The gradient of the cross-entropy at the predicted label ŷ with respect to the last Linear
    layer's weights is g = q ⊗ h (C × D) (Ash et al. 2020, arXiv 1906.03671).
    """
    q = p_N_C.float().clone()
    q[torch.arange(q.shape[0], device=q.device), q.argmax(1)] -= 1.0
    return q


def _draw_proportional(w_N: torch.Tensor, generator: torch.Generator) -> int:
    """One index drawn with probability ∝ w_N (≥ 0, positive sum), by inverse CDF in float64.

    One uniform number from ``generator`` (on the CPU), so the draw is the same whatever device w is on.
    """
    cdf = w_N.double().cumsum(0)
    u = float(torch.rand((), generator=generator, dtype=torch.float64))
    i = int(torch.searchsorted(cdf, torch.tensor([u * float(cdf[-1])], dtype=torch.float64,
                                                device=cdf.device), right=True))
    if i >= w_N.numel():  # u * total rounded up to the total: take the last item with weight
        i = int(torch.nonzero(w_N > 0).max())
    return i


def badge_select(emb: Embeddings, batch_size: int, generator: torch.Generator) -> tuple:
    """BADGE (Ash et al. 2020, arXiv 1906.03671): k-means++ seeding on gradient embeddings g = q ⊗ h.

    The N × (C·D) embeddings are never formed: ‖g_i‖² = ‖q_i‖²‖h_i‖² and ⟨g_i, g_j⟩ = ⟨q_i, q_j⟩⟨h_i, h_j⟩,
    so the squared distance of every candidate to a new centre costs one N × C and one N × D
    matrix-vector product. First centre: the largest ‖g‖ (deterministic, lowest position on ties);
    each next centre is drawn with probability ∝ D², the squared distance to the nearest chosen
    centre, from ``generator``. Chosen items get weight 0. If every remaining weight is 0 (fewer
    distinct gradient embeddings than the batch), the lowest unchosen position is taken.

    Scores: each pick's distance to its nearest earlier centre (‖g‖ for the first, its distance from
    the zero gradient).
    """
    q = gradient_embedding_parts(emb.p_N_C)
    h = emb.h_N_D.float().to(q.device)
    n = h.shape[0]
    _check(n, batch_size)
    g_sq_N = q.pow(2).sum(1) * h.pow(2).sum(1)
    picked_N = torch.zeros(n, dtype=torch.bool, device=h.device)
    first = int(torch.argmax(g_sq_N))
    positions, scores = [first], [float(g_sq_N[first])]
    picked_N[first] = True
    min_d2_N = badge_sq_dists_to(q, h, g_sq_N, first)
    for _ in range(1, batch_size):
        w = min_d2_N.masked_fill(picked_N, 0.0)
        if float(w.max()) > 0:
            best = _draw_proportional(w, generator)
        else:
            best = int(torch.nonzero(~picked_N)[0])
        positions.append(best)
        scores.append(float(w[best]))
        picked_N[best] = True
        torch.minimum(min_d2_N, badge_sq_dists_to(q, h, g_sq_N, best), out=min_d2_N)
    return torch.tensor(positions, dtype=torch.long), torch.tensor(scores).sqrt()


def badge_sq_dists_to(q_N_C: torch.Tensor, h_N_D: torch.Tensor, g_sq_N: torch.Tensor, j: int) -> torch.Tensor:
    """‖g_i − g_j‖² for every i, with g = q ⊗ h, from the factors: ‖g_i‖² + ‖g_j‖² − 2⟨q_i,q_j⟩⟨h_i,h_j⟩."""
    inner = (q_N_C @ q_N_C[j]) * (h_N_D @ h_N_D[j])
    return (g_sq_N + g_sq_N[j] - 2.0 * inner).clamp_min_(0.0)


# --- TypiClust ---------------------------------------------------------------------------------------

TYPICALITY_NEIGHBOURS = 20
MINIBATCH_ABOVE = 10_000  # points; MiniBatchKMeans beyond this, KMeans up to it
RANDOM_INIT_ABOVE = 200  # clusters; MiniBatchKMeans seeds at random beyond this, else k-means++


def typicality(x_M_D: torch.Tensor, k: int = TYPICALITY_NEIGHBOURS, chunk_elems: int = DEFAULT_CHUNK_ELEMS) -> torch.Tensor:
    """1 / mean Euclidean distance to the k nearest other points of the set (k capped at M − 1).

    Hacohen et al. 2022 (arXiv 2202.02794). Rows go in chunks so that at most ``chunk_elems``
    distances exist at once. A lone point has typicality 0 (no neighbours, no evidence of density;
    it is then its cluster's only choice anyway); +inf when the k neighbours coincide with the point.
    """
    m = x_M_D.shape[0]
    k = min(k, m - 1)
    if k <= 0:
        return torch.zeros(m)
    x = x_M_D.float()
    x_sq = x.pow(2).sum(1)
    rows = max(1, chunk_elems // m)
    out = torch.empty(m, dtype=torch.float32, device=x.device)
    for i in range(0, m, rows):
        d2 = _sq_dists(x[i:i + rows], x_sq[i:i + rows], x, x_sq)
        r = torch.arange(i, min(i + rows, m), device=x.device)
        d2[r - i, r] = float("inf")  # not its own neighbour
        near = d2.topk(k, dim=1, largest=False).values.sqrt()
        out[i:i + rows] = 1.0 / near.mean(1)
    return out


def kmeans_labels(x_N_D: np.ndarray, n_clusters: int, seed: int) -> np.ndarray:
    """Cluster index per point: KMeans (k-means++ init, n_init=1) up to MINIBATCH_ABOVE points, else
    MiniBatchKMeans, with random init beyond RANDOM_INIT_ABOVE clusters: k-means++ seeding of ~1,000
    centres dominated the time (41,000 × 128 points, 1,100 clusters, 2 busy CPU cores: 31 s with
    k-means++ on a 3,000-point sample, 76 s for the default, 9 s with random init). With few clusters
    k-means++ is cheap, and random init can put two centres in one blob."""
    from sklearn.cluster import KMeans, MiniBatchKMeans
    if x_N_D.shape[0] > MINIBATCH_ABOVE:
        init = "random" if n_clusters > RANDOM_INIT_ABOVE else "k-means++"
        km = MiniBatchKMeans(n_clusters=n_clusters, random_state=seed, n_init=1, batch_size=4096, init=init)
    else:
        km = KMeans(n_clusters=n_clusters, random_state=seed, n_init=1)
    return km.fit_predict(x_N_D)


def typiclust_select(emb: Embeddings, batch_size: int, generator: torch.Generator,
                     chunk_elems: int = DEFAULT_CHUNK_ELEMS) -> tuple:
    """TypiClust (Hacohen et al. 2022, arXiv 2202.02794): cluster labelled + candidates into L + b
    clusters with k-means (seeded from ``generator``), then from each of the b largest clusters that
    hold no labelled image take its most typical candidate (typicality among the cluster's points,
    labelled ones included, with k = 20 neighbours).

    Clusters are ranked by (labelled members ascending, size descending, cluster index): if fewer
    than b clusters are free of labelled images (possible with k-means' empty clusters), the next
    ones have the fewest labelled members; a cluster with no candidates is skipped, and if clusters
    run out the lowest unpicked positions fill the batch (score 0). Scores: the pick's typicality.
    """
    h = emb.h_N_D.float().cpu()
    n = h.shape[0]
    _check(n, batch_size)
    lab = emb.labeled_h_L_D.float().cpu()
    l = lab.shape[0]
    x = torch.cat([lab, h]).numpy()
    seed = int(torch.randint(2**31 - 1, (), generator=generator))
    labels = torch.from_numpy(kmeans_labels(x, min(l + batch_size, l + n), seed)).long()
    n_clusters = int(labels.max()) + 1
    size = torch.bincount(labels, minlength=n_clusters)
    n_lab = torch.bincount(labels[:l], minlength=n_clusters)
    cand_labels = labels[l:]
    order = sorted(range(n_clusters), key=lambda c: (int(n_lab[c]), -int(size[c]), c))
    positions, scores = [], []
    for c in order:
        if len(positions) == batch_size:
            break
        members = torch.nonzero(labels == c).flatten()
        cand = torch.nonzero(cand_labels == c).flatten()
        if cand.numel() == 0:
            continue
        typ = typicality(torch.from_numpy(x[members.numpy()]), chunk_elems=chunk_elems)
        typ_cand = typ[members >= l]  # members are sorted: candidates follow the labelled, in order
        best = int(torch.argmax(typ_cand))
        positions.append(int(cand[best]))
        scores.append(float(typ_cand[best]))
    if len(positions) < batch_size:  # fewer non-empty clusters than picks: fill by lowest position
        taken = set(positions)
        for i in range(n):
            if len(positions) == batch_size:
                break
            if i not in taken:
                positions.append(i)
                scores.append(0.0)
    return torch.tensor(positions, dtype=torch.long), torch.tensor(scores, dtype=torch.float32)
