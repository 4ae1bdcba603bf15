"""memory.py: the labelling budget, the model's fit to the images, MC chunk sizes and query memory, the device."""
import os

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

import memory
from config import Config, ConfigError
from data import Images, load_dataset
from memory import (check_budget, check_query_memory, joint_bytes, mc_chunk_rows, mc_row_bytes, mc_scoring_bytes,
                    memory_limit, model_input, resolve_device, targets_bytes)
from models import MODELS, build_model
from rng import torch_generator
from strategies import STRATEGIES, bald
from train import pool_log_probs, score_pool


@pytest.fixture(scope="module")
def digits():
    ds = load_dataset("mnist_5k", "data")
    return Images(ds.train_x, ds.mean, ds.std), ds.train_y


# --- MC scoring memory: chunks shrink with K, huge K and huge joint tables are refused ----------------

SCORED = sorted(name for name, s in STRATEGIES.items() if s.score is not None)


def previous_score_pool(model, images, idx, score, k, generator, chunk):
    """score_pool as it was before chunks could shrink with K: fixed chunks of ``chunk`` rows."""
    model.eval()
    masks = model.head.draw_masks(k, generator, idx.device)
    with torch.inference_mode():
        return torch.cat([score(torch.log_softmax(model.mc_logits(images.batch(idx[s:s + chunk]), k, masks=masks), -1))
                          for s in range(0, idx.numel(), chunk)])


@pytest.mark.parametrize("strategy", SCORED)
def test_scores_at_moderate_k_are_bit_identical_to_the_previous_implementation(digits, strategy):
    images, _ = digits
    torch.set_num_threads(1)
    model = build_model("lenet", 1, 28, 10, 0.5, torch_generator(0, "w"))
    idx = torch.arange(100, 400)
    score = STRATEGIES[strategy].score
    got = score_pool(model, images, idx, score, 20, True, torch_generator(3, "mc"), chunk=128)
    expected = previous_score_pool(model, images, idx, score, 20, torch_generator(3, "mc"), chunk=128)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("strategy", SCORED)
@pytest.mark.parametrize("model_name", ["lenet", "cnn"])
def test_shrunken_chunks_give_the_same_scores(digits, monkeypatch, strategy, model_name):
    images, _ = digits
    torch.set_num_threads(1)
    model = build_model(model_name, 1, 28, 10, 0.5, torch_generator(0, "w"))
    idx = torch.arange(40)
    k = 64
    score = STRATEGIES[strategy].score
    expected = previous_score_pool(model, images, idx, score, k, torch_generator(3, "mc"), chunk=512)
    # a chunk budget of 3 rows: the pool goes in 14 chunks however large --eval_batch_size is
    monkeypatch.setattr(memory, "MC_CHUNK_BYTES", 3 * mc_row_bytes(model.head, k))
    assert mc_chunk_rows(model.head, k, 512) == 3
    seen = []

    def spy(lp):
        seen.append(lp.shape[1])
        return score(lp)

    got = score_pool(model, images, idx, spy, k, True, torch_generator(3, "mc"), chunk=512)
    assert seen == [3] * 13 + [1]
    assert torch.allclose(got, expected, atol=1e-6, rtol=0)
    if strategy == "var_ratios":  # vote counts: exactly equal unless an argmax flips on round-off
        assert (got != expected).sum() <= 1


@pytest.mark.parametrize("k, chunk, rows", [(20, 512, 512), (100, 512, 512), (20, 1, 1), (10**5, 512, 1),
                                            (10**4, 512, 18)])
def test_chunk_rows_follow_k(k, chunk, rows):
    head = build_model("lenet", 1, 28, 10, 0.5, torch_generator(0, "w")).head
    assert mc_chunk_rows(head, k, chunk) == rows
    assert rows == 1 or rows * mc_row_bytes(head, k) <= memory.MC_CHUNK_BYTES


def test_scoring_allocations_stay_bounded_whatever_k(digits, monkeypatch):
    """Measured with torch's profiler: no allocation in score_pool exceeds the chunk budget at large K."""
    images, _ = digits
    torch.set_num_threads(1)
    model = build_model("lenet", 1, 28, 10, 0.5, torch_generator(0, "w"))
    idx = torch.arange(64)
    k = 2000
    monkeypatch.setattr(memory, "MC_CHUNK_BYTES", 4 * 2**20)

    def largest_allocation():
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            score_pool(model, images, idx, bald, k, True, torch_generator(3, "mc"), chunk=512)
        current = peak = 0
        for event in sorted(prof.events(), key=lambda e: e.time_range.start):
            current += event.self_cpu_memory_usage
            peak = max(peak, current)
        largest.append(peak)
        return max(e.cpu_memory_usage for e in prof.events())

    largest = []
    bounded = largest_allocation()
    assert bounded <= 4 * 2**20
    rows = mc_chunk_rows(model.head, k, 512)
    assert rows == 1 and largest[0] <= mc_scoring_bytes(model.head, k, rows)  # the estimate holds
    monkeypatch.setattr(memory, "MC_CHUNK_BYTES", 2**40)  # as before: the whole chunk of 64 rows at once
    assert largest_allocation() > 10 * 4 * 2**20  # K × 64 × 120 floats, 61 MB


GIB = 2**30


@pytest.mark.parametrize("model_name", ["lenet", "resnet18", "cnn", "batchbald_cnn"])
@pytest.mark.parametrize("k", [10**7, 10**8, 10**9])
def test_k_too_large_for_even_one_row_is_refused(model_name, k):
    head = build_model(model_name, 1, 28, 10, 0.5, torch_generator(0, "w")).head if k == 10**7 else \
        _meta_head(model_name)
    assert mc_scoring_bytes(head, k) > 8 * GIB
    for joint in (False, True):
        with pytest.raises(ConfigError, match=f"--mc_samples {k} needs .* GiB to score even one pool image"):
            check_query_memory(head, k, 100, joint=joint, limit=8 * GIB)


def _meta_head(name, c=1, s=28):
    with torch.device("meta"):
        return MODELS[name](c, s, 10, 0.5).head


@pytest.mark.parametrize("k, n", [(10**5, 3880), (1000, 10**6), (20, 60 * 10**6), (2 * 10**4, 2000)])
def test_joint_table_too_large_is_refused(k, n):
    head = _meta_head("lenet")
    assert joint_bytes(k, n, 10) > 8 * GIB
    check_query_memory(head, k, n, joint=False, limit=8 * GIB)  # scored chunk by chunk: fine
    with pytest.raises(ConfigError, match=f"K × N × C = {k} × {n} × 10 .*--pool_subset"):
        check_query_memory(head, k, n, joint=True, limit=8 * GIB)


def test_epig_targets_too_many_for_even_one_pool_image_are_refused():
    head = _meta_head("lenet")
    # the K × T × C targets (twice) and one image's C × T × C joint: 10^7 targets at K = 20 pass 8 GiB
    assert targets_bytes(20, 10**7, 10) > 8 * GIB
    check_query_memory(head, 20, 10**6, joint=False, limit=8 * GIB, targets=10**4)  # the default 100 is far below
    with pytest.raises(ConfigError, match="EPIG with 10000000 targets needs .* GiB .*use fewer --epig_targets"):
        check_query_memory(head, 20, 10**6, joint=False, limit=8 * GIB, targets=10**7)


@pytest.mark.parametrize("model_name, c, s, k, n, joint", [
    ("lenet", 1, 28, 20, 59000, True), ("cnn", 1, 28, 100, 2000, True), ("batchbald_cnn", 1, 28, 100, 60000, True),
    ("resnet18", 3, 32, 20, 50000, True), ("cnn", 3, 32, 1000, 2000, True), ("lenet", 1, 28, 10**5, 10**6, False),
    ("cnn", 3, 32, 10**5, 50000, False),
])
def test_published_and_large_settings_fit(model_name, c, s, k, n, joint):
    check_query_memory(_meta_head(model_name, c, s), k, n, joint=joint, limit=8 * GIB)


def test_joint_bytes_cover_pool_log_probs(digits):
    images, _ = digits
    model = build_model("lenet", 1, 28, 10, 0.5, torch_generator(0, "w"))
    lp = pool_log_probs(model, images, torch.arange(50), 7, True, torch_generator(3, "mc"), 16)
    assert lp.shape == (7, 50, 10)
    assert joint_bytes(7, 50, 10) >= 5 * lp.numel() * lp.element_size()


def test_memory_limit_is_half_of_physical_memory():
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert memory.memory_limit() == int(total * memory.MEMORY_FRACTION)
    assert memory.memory_limit("cpu") == memory.memory_limit()


# --- the labelling budget, the model's input and the device, checked before a run starts ------------

def test_budget_boundary():
    cfg = Config(dataset="mnist_5k", num_valid=1000, n_init_labeled=1000, n_query=100, n_round=20)
    check_budget(cfg, n_train=4000, num_classes=10)  # exactly the pool of 3000
    with pytest.raises(ConfigError, match="3001 exceeds the pool of 3000"):
        check_budget(cfg.replace(n_init_labeled=1001), n_train=4000, num_classes=10)
    with pytest.raises(ConfigError, match="num_valid"):
        check_budget(cfg.replace(num_valid=4000), n_train=4000, num_classes=10)


@pytest.mark.parametrize("dataset, channels, expected", [
    ("mnist_5k", None, (1, 28)), ("mnist_5k", 3, (1, 28)), ("cifar10", None, (3, 32)),  # the registry's shape
    ("folder", 3, (3, 48)), ("folder", 1, (1, 48)),  # --image_size and the channels read from the files
    ("folder", None, (1, 48)),  # files not read (a sweep checking cells): 1 channel, the same head as 3
])
def test_model_input_comes_from_the_registry_or_from_image_size_and_the_folders_channels(dataset, channels,
                                                                                          expected):
    assert model_input(Config(dataset=dataset, image_size=48), channels) == expected


def test_a_folder_of_colour_images_is_checked_with_its_channels():
    cfg = Config(dataset="folder", num_valid=10, n_init_labeled=10, n_query=5, n_round=1, strategy="bald",
                 image_size=32)
    check_budget(cfg, n_train=100, num_classes=3, channels=3)
    with pytest.raises(ConfigError, match=r"lenet.*28 or 32.*--image_size"):
        check_budget(cfg.replace(image_size=48), n_train=100, num_classes=3, channels=3)


def test_the_budget_check_gets_the_device_main_resolved(cli, monkeypatch):
    """The device is resolved once (cuda, then mps, then cpu) and the query memory limit is that device's."""
    seen = []
    monkeypatch.setattr(memory, "memory_limit", lambda device=None: seen.append(device) or 0)
    rc, out, err, runs = cli("--dataset", "mnist_5k", "--no-wandb", "--strategy", "bald", "--device", "auto",
                             "--n_init_labeled", "20", "--n_query", "10", "--n_round", "1")
    assert rc == 2 and "to score even one pool image" in err and runs == []
    assert seen == [resolve_device("auto")] and isinstance(seen[0], torch.device)


def test_memory_limit_without_a_known_device_is_this_machines():
    assert memory_limit(None) == memory_limit("cpu") == memory_limit(torch.device("cpu"))
