"""Diversity strategies (coreset, badge, typiclust): exact small cases, chunking, memory, the loop branch, e2e."""
import time

import pytest
import torch

import strategies.diversity as dv
from config import Config
from conftest import SMALL, probe_study_data
from data import Images, PoolState
from loop import candidate_positions, query
from models import MODELS, build_model
from rng import torch_generator
from strategies import STRATEGIES, Embeddings, badge_select, coreset_select, get_strategy, typiclust_select
from strategies.diversity import (badge_sq_dists_to, gradient_embedding_parts, min_sq_dist_to, typicality)
from train import pool_embeddings


def line(*xs):
    return torch.tensor(xs, dtype=torch.float32).view(-1, 1)


def emb(h, labeled, p=None):
    p = torch.full((h.shape[0], 3), 1 / 3) if p is None else p
    return Embeddings(h, p, labeled)


# --- coreset -----------------------------------------------------------------------------------------

def test_coreset_picks_the_farthest_point_then_the_next_farthest():
    positions, scores = coreset_select(emb(line(1, 5, 10), line(0)), 2)
    assert positions.tolist() == [2, 1]  # 10 is 10 from 0; then 5 is 5 from both 0 and 10, 1 only 1
    assert scores.tolist() == [10.0, 5.0]
    positions, scores = coreset_select(emb(line(1, 5, 10), line(0)), 3)
    assert positions.tolist() == [2, 1, 0] and scores.tolist() == [10.0, 5.0, 1.0]


def test_coreset_ties_go_to_the_lowest_position():
    positions, _ = coreset_select(emb(line(3, -3, 1), line(0)), 2)
    assert positions.tolist() == [0, 1]  # 3 and -3 tie at 3; then -3 is 6 from 3 but 3 from 0
    positions, _ = coreset_select(emb(line(-3, 3, 1), line(0)), 1)
    assert positions.tolist() == [0]
    # duplicates: the copy of a pick is at distance 0 and the other copy still wins over it
    positions, scores = coreset_select(emb(line(4, 4, 2), line(0)), 3)
    assert positions.tolist() == [0, 2, 1] and scores.tolist() == [4.0, 2.0, 0.0]


def test_coreset_without_labelled_images_starts_at_position_zero():
    positions, scores = coreset_select(emb(line(1, 5, 10), torch.empty(0, 1)), 2)
    assert positions.tolist() == [0, 2] and scores[0] == float("inf") and scores[1] == 9.0


def brute_force_k_center(h, labeled, b):
    """Reference: the full distance matrix, for small cases only."""
    d = torch.cdist(h.double(), labeled.double()).amin(1)
    picks = []
    for _ in range(b):
        d_masked = d.clone()
        d_masked[picks] = -1
        j = int(torch.argmax(d_masked))
        picks.append(j)
        d = torch.minimum(d, torch.cdist(h.double(), h[j:j + 1].double()).squeeze(1))
    return picks


@pytest.mark.parametrize("chunk_elems", [1, 7, 64, 2**24])
def test_coreset_chunked_equals_unchunked_and_brute_force(chunk_elems):
    g = torch.Generator().manual_seed(0)
    h, lab = torch.randn(300, 8, generator=g), torch.randn(40, 8, generator=g)
    positions, scores = coreset_select(emb(h, lab), 25, chunk_elems=chunk_elems)
    ref_pos, ref_scores = coreset_select(emb(h, lab), 25)
    assert positions.tolist() == ref_pos.tolist() == brute_force_k_center(h, lab, 25)
    assert torch.allclose(scores, ref_scores, atol=1e-5)
    assert (scores[1:] <= scores[:-1] + 1e-5).all()  # the covering radius never grows
    assert torch.allclose(min_sq_dist_to(h, lab, chunk_elems), torch.cdist(h, lab).amin(1) ** 2, atol=1e-4)


def test_distance_chunks_never_exceed_the_bound(monkeypatch):
    sizes = []
    real = dv._sq_dists

    def recording(*args):
        out = real(*args)
        sizes.append(out.numel())
        return out
    monkeypatch.setattr(dv, "_sq_dists", recording)
    g = torch.Generator().manual_seed(1)
    h, lab = torch.randn(2000, 16, generator=g), torch.randn(500, 16, generator=g)
    coreset_select(emb(h, lab), 10, chunk_elems=10_000)
    assert max(sizes) <= 10_000  # never N × L (1,000,000), let alone N × N
    sizes.clear()
    typicality(h, chunk_elems=10_000)
    assert max(sizes) <= 10_000


def test_coreset_and_badge_at_40000_pool_images_take_seconds():
    g = torch.Generator().manual_seed(2)
    h, lab = torch.randn(40_000, 128, generator=g), torch.randn(1_000, 128, generator=g)
    p = torch.softmax(3 * torch.randn(40_000, 10, generator=g), 1)
    for select in (coreset_select, badge_select):
        start = time.perf_counter()
        positions, _ = select(Embeddings(h, p, lab), 20, torch.Generator().manual_seed(3))
        # ~1-2 s alone on 2 CPU cores; the bound leaves room for a busy machine
        assert time.perf_counter() - start < 30, select.__name__
        assert positions.unique().numel() == 20


# --- badge -------------------------------------------------------------------------------------------

def explicit_gradient_embeddings(p, h):
    q = p.clone()
    q[torch.arange(p.shape[0]), p.argmax(1)] -= 1
    return (q.unsqueeze(2) * h.unsqueeze(1)).reshape(p.shape[0], -1)  # N × (C·D)


def random_case(n=30, c=4, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(2 * torch.randn(n, c, generator=g), 1), torch.relu(torch.randn(n, d, generator=g))


def test_badge_factorised_distances_equal_the_explicit_gradient_embeddings():
    p, h = random_case()
    g = explicit_gradient_embeddings(p, h)
    q = gradient_embedding_parts(p)
    g_sq = q.pow(2).sum(1) * h.pow(2).sum(1)
    assert torch.allclose(g_sq, g.pow(2).sum(1), atol=1e-5)
    for j in range(p.shape[0]):
        explicit = (g - g[j]).pow(2).sum(1)
        assert torch.allclose(badge_sq_dists_to(q, h, g_sq, j), explicit, atol=1e-5), j


def test_badge_first_pick_is_the_largest_gradient_and_picks_are_distinct():
    p, h = random_case()
    g = explicit_gradient_embeddings(p, h)
    positions, scores = badge_select(Embeddings(h, p, torch.empty(0, 6)), 10, torch.Generator().manual_seed(0))
    assert int(positions[0]) == int(g.norm(dim=1).argmax())
    assert scores[0] == pytest.approx(float(g.norm(dim=1).max()), rel=1e-5)
    assert positions.unique().numel() == 10
    # each score is the pick's distance to its nearest earlier pick, in the explicit embedding
    for i in range(1, 10):
        d = (g[positions[:i]] - g[positions[i]]).norm(dim=1).min()
        assert float(scores[i]) == pytest.approx(float(d), abs=1e-4)
    # the whole pool: every item exactly once
    everything, _ = badge_select(Embeddings(h, p, torch.empty(0, 6)), 30, torch.Generator().manual_seed(0))
    assert sorted(everything.tolist()) == list(range(30))


def test_badge_is_reproducible_from_its_generator():
    p, h = random_case(n=200, seed=1)
    e = Embeddings(h, p, torch.empty(0, 6))
    a, sa = badge_select(e, 15, torch.Generator().manual_seed(5))
    b, sb = badge_select(e, 15, torch.Generator().manual_seed(5))
    c, _ = badge_select(e, 15, torch.Generator().manual_seed(6))
    assert a.tolist() == b.tolist() and torch.equal(sa, sb)
    assert a.tolist() != c.tolist()
    assert a[0] == c[0]  # the first centre is deterministic


def test_badge_second_pick_is_drawn_in_proportion_to_squared_distance():
    # gradients along one axis: q = (p − e) with p fixed, so g ∝ h; h = 3, 1, 2 (first pick: 3)
    p = torch.tensor([[0.6, 0.4]] * 3)
    h = torch.tensor([[3.0], [1.0], [2.0]])
    g = explicit_gradient_embeddings(p, h)
    d2 = (g - g[0]).pow(2).sum(1)  # 0, 4k, 1k
    counts = torch.zeros(3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(2000):
        positions, _ = badge_select(Embeddings(h, p, torch.empty(0, 1)), 2, gen)
        assert positions[0] == 0
        counts[positions[1]] += 1
    expected = 2000 * d2 / d2.sum()  # 1600, 400
    assert counts[0] == 0 and (counts - expected).abs().max() < 100, counts


def test_badge_with_zero_gradients_takes_the_lowest_positions():
    p = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])  # confident: p − e = 0
    positions, scores = badge_select(Embeddings(torch.ones(3, 2), p, torch.empty(0, 2)), 3,
                                     torch.Generator().manual_seed(0))
    assert positions.tolist() == [0, 1, 2] and scores.tolist() == [0.0, 0.0, 0.0]


# --- typiclust ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("chunk_elems", [1, 2**24])
def test_typicality_on_a_line(chunk_elems):
    typ = typicality(line(0, 1, 2, 3, 10), k=2, chunk_elems=chunk_elems)
    assert torch.allclose(typ, torch.tensor([1 / 1.5, 1.0, 1.0, 1 / 1.5, 1 / 7.5]))
    assert typicality(line(4), k=20).tolist() == [0.0]  # a lone point: no neighbours


def blobs(seed=0, per=40):
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[0.0, 0.0], [20.0, 0.0], [0.0, 20.0], [20.0, 20.0]])
    pts = torch.cat([c + 0.7 * torch.randn(per, 2, generator=g) for c in centres])
    return centres, pts


def test_typiclust_picks_one_typical_point_per_unlabelled_blob():
    centres, pts = blobs()
    labeled = pts[:1]  # one labelled point in blob 0
    cand = pts[1:]
    positions, scores = typiclust_select(Embeddings(cand, torch.full((cand.shape[0], 2), 0.5), labeled), 3,
                                         torch.Generator().manual_seed(0))
    blob = (positions + 1) // 40
    assert sorted(blob.tolist()) == [1, 2, 3]  # one per unlabelled blob, none from the labelled one
    for pos, b in zip(positions.tolist(), blob.tolist()):
        members = pts[b * 40:(b + 1) * 40]
        to_centre = (members - members.mean(0)).norm(dim=1)
        assert (cand[pos] - members.mean(0)).norm() <= to_centre.quantile(0.25), (pos, b)
    assert (scores > 0).all() and torch.isfinite(scores).all()
    again, _ = typiclust_select(Embeddings(cand, torch.full((cand.shape[0], 2), 0.5), labeled), 3,
                                torch.Generator().manual_seed(0))
    assert again.tolist() == positions.tolist()


def test_typiclust_minibatch_path_and_distinct_picks(monkeypatch):
    monkeypatch.setattr(dv, "MINIBATCH_ABOVE", 50)  # MiniBatchKMeans, k-means++ init (4 clusters)
    centres, pts = blobs(seed=1)
    positions, _ = typiclust_select(Embeddings(pts[1:], torch.full((159, 2), 0.5), pts[:1]), 3,
                                    torch.Generator().manual_seed(0))
    assert sorted(((positions + 1) // 40).tolist()) == [1, 2, 3]
    many, _ = typiclust_select(Embeddings(pts[1:], torch.full((159, 2), 0.5), pts[:1]), 30,
                               torch.Generator().manual_seed(0))
    assert many.unique().numel() == 30


# --- registry, embeddings, loop ----------------------------------------------------------------------

@pytest.mark.parametrize("name", ["coreset", "badge", "typiclust", "probcover"])
def test_registry_declares_embeddings(name):
    s = get_strategy(name)
    assert s is STRATEGIES[name] and s.needs_embeddings and s.needs_predictions
    assert not s.mc and s.min_mc_samples == 1 and s.score is None and s.select_batch is None
    assert not get_strategy("bald").needs_embeddings and not get_strategy("random").needs_embeddings


@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_pool_embeddings_are_the_last_linear_layers_input(model_name):
    channels = 1
    model = build_model(model_name, channels, 28, 10, 0.5, torch.Generator().manual_seed(0))
    x = torch.randn(7, channels, 28, 28, generator=torch.Generator().manual_seed(1))
    images = Images(x, (0.0,), (1.0,)).replaced(x)
    idx = torch.arange(7)
    h, p = pool_embeddings(model, images, idx, chunk=3)
    last = model.head.linears[-1]
    assert h.shape == (7, last.in_features) and p.shape == (7, 10)
    expected = {"lenet": 84, "cnn": 128, "batchbald_cnn": 128, "resnet18": 512}[model_name]
    assert last.in_features == expected
    model.eval()
    with torch.no_grad():
        logits = model(images.batch(idx))
        again = torch.softmax(last(h), 1)
    assert torch.allclose(p, torch.softmax(logits, 1), atol=1e-5)
    assert torch.allclose(again, p, atol=1e-6)
    h_all, p_all = pool_embeddings(model, images, idx, chunk=100)
    assert torch.allclose(h, h_all, atol=1e-5) and torch.allclose(p, p_all, atol=1e-6)
    h0, p0 = pool_embeddings(model, images, idx[:0], chunk=3)
    assert h0.shape == (0, expected) and p0.shape == (0, 10)


def probe_study(n_train=60, n_pool=40):
    x = torch.randn(n_train, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    return probe_study_data(x, n_pool, num_classes=10)


@pytest.mark.parametrize("name", ["coreset", "badge", "typiclust", "probcover"])
@pytest.mark.parametrize("subset", [0, 12])
def test_query_passes_candidates_and_labelled_embeddings(name, subset):
    data = probe_study()
    state = PoolState(40)
    state.label(torch.tensor([0, 5, 7]), torch.tensor([0, 1, 2]), round_=0)
    cfg = Config(pool_subset=subset, n_query=4, seed=11, eval_batch_size=5, mc_samples=6)
    model = build_model("lenet", 1, 28, 10, 0.5, torch.Generator().manual_seed(0))
    strategy = get_strategy(name)
    picked, scores, draw_probs, n_scored = query(cfg, data, state, strategy, model, r=1)
    assert draw_probs is None  # chosen by the strategy, not drawn
    candidates = candidate_positions(state, subset, torch_generator(11, "subset", 1))
    assert n_scored == candidates.numel() == (subset or 37)
    assert picked.numel() == 4 and picked.unique().numel() == 4
    assert set(picked.tolist()) <= set(candidates.tolist()) and not set(picked.tolist()) & {0, 5, 7}
    h, p = pool_embeddings(model, data.train, data.pool_idx[candidates], 1000)
    lab_h, _ = pool_embeddings(model, data.train, data.pool_idx[torch.tensor([0, 5, 7])], 1000)
    positions, expected_scores = strategy.select_embeddings(Embeddings(h, p, lab_h), 4,
                                                            torch_generator(11, name, 1))
    assert picked.tolist() == candidates[positions].tolist()
    assert torch.allclose(scores, expected_scores, atol=1e-5)


# --- end to end --------------------------------------------------------------------------------------

@pytest.mark.parametrize("strategy", ["coreset", "badge", "typiclust", "probcover"])
def test_diversity_strategies_run_end_to_end(cli, strategy):
    rc, out, err, runs = cli(*SMALL, "--strategy", strategy)
    assert rc == 0, err
    [run] = runs
    assert run.summary["status"] == "complete"
    acquired = run.acquired.query("round == 0")
    assert len(acquired) == 10 and acquired["pool_position"].is_unique
    initial = set(run.acquired.query("round == -1")["pool_position"])
    assert not initial & set(acquired["pool_position"])  # picks were unlabelled
    assert acquired["score"].notna().all()
    assert run.rounds["test_acc"].min() >= 0.3, run.rounds
