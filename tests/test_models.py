"""Models: shapes, MC dropout that really samples, frozen BatchNorm, the trunk-once trick, seeding."""
import pytest
import torch
from torch import nn

import models.head
from models import MODELS, DropoutHead, TrunkHeadModel, build_model, init_weights
from models.head import SAMPLE_TEMP_BYTES, sample_plan

SHAPES = [(1, 28), (3, 32)]  # (channels, image size)
# Per-layer head dropout rates at --dropout 0.5; every registered model must be listed.
HEAD_RATES = {"lenet": (0.5, 0.5), "resnet18": (0.5,), "cnn": (0.25, 0.5), "batchbald_cnn": (0.5, 0.5)}


def gen(seed):
    return torch.Generator().manual_seed(seed)


def batch(n, c, s, seed=0):
    return torch.randn(n, c, s, s, generator=gen(seed))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: on a 2-core machine shared with other jobs, OpenMP threads waiting on
    each other make a ResNet18 pass ~30× slower than a single thread does."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def built(one_thread):
    """One model per (name, shape), built once: ResNet18 is slow to build and run on CPU."""
    return {(name, c, s): build_model(name, c, s, 10, 0.5, gen(0)) for name in MODELS for c, s in SHAPES}


def bn_buffers(model):
    return {name: buf.clone() for name, buf in model.named_buffers()
            if name.endswith(("running_mean", "running_var", "num_batches_tracked"))}


def masks(k, d, p, g):
    """The implementation's inverted-dropout mask: keep with probability 1-p, scale by 1/(1-p);
    rate 0 draws no random numbers and keeps everything."""
    if p == 0:
        return torch.ones(k, d)
    return (torch.rand(k, d, generator=g) >= p).float() / (1 - p)


def head_by_hand(head, h_N_D, mask_list):
    """One MC sample of a DropoutHead with explicit masks, one per layer, shared by all items."""
    x = h_N_D
    for i, (lin, m) in enumerate(zip(head.linears, mask_list)):
        x = (x * m) @ lin.weight.T + lin.bias
        if i < len(head.linears) - 1:
            x = torch.relu(x)
    return x


# --- shapes ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("c, s", SHAPES)
def test_output_shapes(built, name, c, s):
    model = built[(name, c, s)]
    model.eval()
    x = batch(2, c, s)
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (2, 10)
    mc = model.mc_logits(x, 3, gen(1))
    assert mc.shape == (3, 2, 10)
    assert torch.isfinite(mc).all()


def test_lenet_rejects_other_image_sizes():
    with pytest.raises(ValueError):
        build_model("lenet", 1, 30, 10, 0.5, gen(0))


def test_every_model_has_expected_head_rates():
    assert set(HEAD_RATES) == set(MODELS)


# (model, channels, size, trunk features, (kernel, conv1 out, conv2 out)): the papers' architectures.
PAPER_CNNS = [("cnn", 1, 28, 3872, (4, 32, 32)), ("cnn", 3, 32, 5408, (4, 32, 32)),
              ("batchbald_cnn", 1, 28, 1024, (5, 32, 64)), ("batchbald_cnn", 3, 32, 1600, (5, 32, 64))]


@pytest.mark.parametrize("name, c, s, features, convs", PAPER_CNNS)
def test_paper_cnn_architectures(name, c, s, features, convs):
    kernel, out1, out2 = convs
    model = build_model(name, c, s, 10, 0.5, gen(0))
    got = [(m.in_channels, m.out_channels, m.kernel_size) for m in model.trunk.modules() if isinstance(m, nn.Conv2d)]
    assert got == [(c, out1, (kernel, kernel)), (out1, out2, (kernel, kernel))]
    with torch.no_grad():
        assert model.trunk(batch(2, c, s)).shape == (2, features)
    assert [(lin.in_features, lin.out_features) for lin in model.head.linears] == [(features, 128), (128, 10)]


@pytest.mark.parametrize("c, s", [(1, 28), (3, 32)])
def test_cnn_head_rates_are_half_then_full_dropout(c, s):
    assert build_model("cnn", c, s, 10, 0.5, gen(0)).head.rates == (0.25, 0.5)  # the paper's at the default
    assert build_model("cnn", c, s, 10, 0.2, gen(0)).head.rates == (0.1, 0.2)


def test_unknown_model_lists_valid_names():
    with pytest.raises(ValueError) as err:
        build_model("vgg", 1, 28, 10, 0.5, gen(0))
    for name in MODELS:
        assert name in str(err.value)


# --- MC dropout really samples ---------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_has_dropout_in_its_head_and_a_deterministic_trunk(built, name):
    model = built[(name, 1, 28)]
    assert isinstance(model, TrunkHeadModel)
    assert isinstance(model.head, DropoutHead)
    assert model.head.rates == HEAD_RATES[name]
    assert max(model.head.rates) == 0.5  # the --dropout value
    assert not any(isinstance(m, nn.Dropout) for m in model.trunk.modules())


@pytest.mark.parametrize("name", sorted(MODELS))
def test_mc_samples_differ_while_eval_forward_is_deterministic(built, name):
    model = built[(name, 1, 28)]
    model.eval()
    x = batch(4, 1, 28, seed=2)
    with torch.no_grad():
        a, b = model(x), model(x)
    assert torch.equal(a, b)
    mc = model.mc_logits(x, 5, gen(3))
    for i in range(5):
        for j in range(i + 1, 5):
            assert (mc[i] - mc[j]).abs().max() > 1e-4, (i, j)
    # consistent: the same generator seed gives the same samples
    assert torch.equal(mc, model.mc_logits(x, 5, gen(3)))
    assert not torch.equal(mc, model.mc_logits(x, 5, gen(4)))


# --- BatchNorm is frozen during MC passes ----------------------------------------------------------

@pytest.mark.parametrize("was_training", [True, False])
def test_mc_logits_leaves_batchnorm_statistics_and_mode_alone(was_training):
    model = build_model("resnet18", 1, 28, 10, 0.5, gen(5))
    x = batch(4, 1, 28, seed=6)
    # give the running statistics non-default values first
    model.train()
    with torch.no_grad():
        model(x * 2 + 1, gen(7))
    model.train(was_training)
    before = bn_buffers(model)
    assert len(before) == 3 * sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert len(before) == 3 * 20  # ResNet18: 20 BatchNorm layers

    mc = model.mc_logits(x, 3, gen(8))

    after = bn_buffers(model)
    for key in before:
        assert torch.equal(before[key], after[key]), key
    assert all(m.training == was_training for m in model.modules())
    # the trunk ran with the running statistics: same result as an explicit eval-mode pass
    model.eval()
    with torch.no_grad():
        h = model.trunk(x)
    assert torch.allclose(mc, model.head.sample(h, 3, gen(8)), atol=1e-5)
    # and the check above is meaningful: a train-mode pass does change the statistics
    model.train()
    with torch.no_grad():
        model(x, gen(9))
    changed = bn_buffers(model)
    assert not torch.equal(changed["trunk.bn1.running_mean"], before["trunk.bn1.running_mean"])


# --- the trunk-once trick is exact -----------------------------------------------------------------

@pytest.mark.parametrize("dims", [[6, 3], [6, 5, 3], [7, 5, 4, 3]])
def test_head_sample_equals_explicit_masks(dims):
    p, k, seed = 0.3, 5, 10
    head = DropoutHead(dims, p)
    init_weights(head, gen(11))
    h = torch.randn(4, dims[0], generator=gen(12))
    got = head.sample(h, k, gen(seed))
    assert got.shape == (k, 4, dims[-1])
    g = gen(seed)
    # masks are drawn layer by layer, K × D_in of each layer, in order
    layer_masks = [masks(k, d, p, g) for d in dims[:-1]]
    with torch.no_grad():
        for i in range(k):
            expected = head_by_hand(head, h, [m[i] for m in layer_masks])
            assert torch.allclose(got[i], expected, atol=1e-5, rtol=0), i
    # the masks really drop units (and differ between samples), so the comparison is not vacuous
    assert (layer_masks[0] == 0).any()
    assert not torch.equal(got[0], got[1])


def test_shared_masks_score_a_pool_chunk_by_chunk_consistently():
    head = DropoutHead([6, 5, 3], 0.5)
    init_weights(head, gen(30))
    h = torch.randn(7, 6, generator=gen(31))
    ms = head.draw_masks(4, gen(32), "cpu")
    assert [tuple(m.shape) for m in ms] == [(4, 6), (4, 5)]
    whole = head.sample(h, 4, masks=ms)
    chunks = torch.cat([head.sample(h[:3], 4, masks=ms), head.sample(h[3:], 4, masks=ms)], dim=1)
    assert torch.allclose(whole, chunks, atol=1e-6, rtol=0)
    # drawing the masks inside sample from the same seed gives the same samples
    assert torch.allclose(whole, head.sample(h, 4, gen(32)), atol=1e-6, rtol=0)
    with torch.no_grad():
        for i in range(4):
            assert torch.allclose(whole[i], head_by_hand(head, h, [m[i] for m in ms]), atol=1e-5, rtol=0)


# --- per-layer rates, both forms of sample, bounded temporaries ----------------------------------

def test_one_rate_for_every_layer_stays_the_default():
    head = DropoutHead([6, 5, 4, 3], 0.3)
    assert head.rates == (0.3, 0.3, 0.3) and head.p == 0.3
    head = DropoutHead([6, 5, 3], [0.1, 0.2])
    assert head.rates == (0.1, 0.2) and head.p == (0.1, 0.2)
    with pytest.raises(ValueError):
        DropoutHead([6, 5, 3], (0.1, 0.2, 0.3))  # one rate per linear layer
    with pytest.raises(ValueError):
        DropoutHead([6, 3], 1.0)


def test_per_layer_rates_in_masks_and_samples():
    rates, k = (0.0, 0.3, 0.6), 6
    head = DropoutHead([8, 7, 6, 3], rates)
    init_weights(head, gen(40))
    ms = head.draw_masks(k, gen(41), "cpu")
    assert [tuple(m.shape) for m in ms] == [(k, 8), (k, 7), (k, 6)]
    assert torch.equal(ms[0], torch.ones(k, 8))  # rate 0: no mask (and no random numbers drawn)
    for m, p in zip(ms[1:], rates[1:]):
        assert m.unique().tolist() == [0.0, pytest.approx(1 / (1 - p))]  # scaled by 1/(1-p) of its layer
    g = gen(41)
    expected = [masks(k, d, p, g) for d, p in zip([8, 7, 6], rates)]
    assert all(torch.equal(a, b) for a, b in zip(ms, expected))
    h = torch.randn(5, 8, generator=gen(42))
    got = head.sample(h, k, gen(41))
    with torch.no_grad():
        for i in range(k):
            assert torch.allclose(got[i], head_by_hand(head, h, [m[i] for m in ms]), atol=1e-5, rtol=0), i


def test_per_layer_rates_in_training_mode():
    head = DropoutHead([8, 7, 3], (0.0, 0.5)).train()
    init_weights(head, gen(43))
    h = torch.randn(5, 8, generator=gen(44))
    with torch.no_grad():
        got = head(h, gen(45))
        g = gen(45)  # only the second layer draws: one mask per item, 5 × 7
        keep = (torch.rand(5, 7, generator=g) >= 0.5).float() / 0.5
        expected = (torch.relu(head.linears[0](h)) * keep) @ head.linears[1].weight.T + head.linears[1].bias
    assert torch.allclose(got, expected, atol=1e-6, rtol=0)
    assert (keep == 0).any()
    # all rates 0: no generator needed, same as eval mode
    plain = DropoutHead([8, 7, 3], (0.0, 0.0))
    plain.load_state_dict(head.state_dict())
    with torch.no_grad():
        assert torch.equal(plain.train()(h), plain.eval()(h))


@pytest.mark.parametrize("n", [3, 40])  # fewer rows than the hidden layers' outputs, and more
@pytest.mark.parametrize("bound", [None, 1, 2000])  # one group, one sample per group, uneven groups
def test_sample_forms_and_groups_equal_explicit_masks(monkeypatch, n, bound):
    dims, k = [30, 16, 12, 3], 7
    if bound is not None:
        monkeypatch.setattr(models.head, "SAMPLE_TEMP_BYTES", bound)
    plans = [sample_plan(k, n, o, d) for d, o in zip(dims[:-1], dims[1:])]
    assert [fold for fold, _ in plans] == ([False, False, True] if n == 3 else [True, True, True])
    groups = [group for _, group in plans]
    assert groups == {None: [k] * 3, 1: [1] * 3}.get(bound, groups)
    if bound == 2000:
        assert any(1 < group < k for group in groups)  # a smaller last group
    head = DropoutHead(dims, (0.2, 0.4, 0.5))
    init_weights(head, gen(50))
    h = torch.randn(n, dims[0], generator=gen(51))
    ms = head.draw_masks(k, gen(52), "cpu")
    got = head.sample(h, k, masks=ms)
    assert got.shape == (k, n, 3)
    with torch.no_grad():
        for i in range(k):
            assert torch.allclose(got[i], head_by_hand(head, h, [m[i] for m in ms]), atol=1e-5, rtol=0), i


def test_sample_keeps_its_temporaries_under_the_bound_for_the_cnn_head():
    head = build_model("cnn", 1, 28, 10, 0.5, gen(0)).head
    k = 100
    for n in [1, 64, 128, 512, 4096]:
        for lin in head.linears:
            o, d = lin.out_features, lin.in_features
            fold, group = sample_plan(k, n, o, d)
            assert fold == (o <= n)
            assert 1 <= group <= k and group * min(o, n) * d * 4 <= SAMPLE_TEMP_BYTES, (n, o, group)
    fold, group = sample_plan(k, 512, 128, 3872)
    assert fold and group < k  # without groups: 100·128·3872 floats, 198 MB
    # and measured: no allocation during sample exceeds the bound (n = 64: 2 groups of masked inputs)
    from torch.profiler import ProfilerActivity, profile

    h = torch.randn(64, 3872, generator=gen(1))
    ms = head.draw_masks(k, gen(2), "cpu")
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        head.sample(h, k, masks=ms)
    sizes = [e.cpu_memory_usage for e in prof.events() if e.cpu_memory_usage > 0]
    assert sizes and max(sizes) <= SAMPLE_TEMP_BYTES
    assert max(sizes) > SAMPLE_TEMP_BYTES // 2  # the groups are not needlessly small


def test_lenet_mc_logits_equals_trunk_once_then_masked_head():
    model = build_model("lenet", 3, 32, 10, 0.5, gen(13))
    x = batch(3, 3, 32, seed=14)
    k = 4
    got = model.mc_logits(x, k, gen(15))
    g = gen(15)
    m1, m2 = masks(k, 120, 0.5, g), masks(k, 84, 0.5, g)
    with torch.no_grad():
        for i in range(k):
            h = model.trunk(x)  # a full pass per sample gives the same as the trunk once
            expected = head_by_hand(model.head, h, [m1[i], m2[i]])
            assert torch.allclose(got[i], expected, atol=1e-5, rtol=0), i


def test_zero_dropout_samples_are_identical_and_equal_the_eval_forward():
    model = build_model("lenet", 1, 28, 10, 0.0, gen(16))
    model.eval()
    x = batch(4, 1, 28, seed=17)
    with torch.no_grad():
        plain = model(x)
    mc = model.mc_logits(x, 4, gen(18))
    for i in range(4):
        assert torch.allclose(mc[i], plain, atol=1e-5, rtol=0)
    head = model.head
    h = torch.randn(5, 120, generator=gen(19))
    s = head.sample(h, 3, gen(20))
    head.eval()
    with torch.no_grad():
        ref = head(h)
    for i in range(3):
        assert torch.allclose(s[i], ref, atol=1e-5, rtol=0)


# --- seeding ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(MODELS))
def test_weights_come_from_the_generator_alone(name):
    torch.manual_seed(1)
    a = build_model(name, 3, 32, 10, 0.5, gen(21)).state_dict()
    torch.manual_seed(2)
    b = build_model(name, 3, 32, 10, 0.5, gen(21)).state_dict()
    c = build_model(name, 3, 32, 10, 0.5, gen(22)).state_dict()
    assert a.keys() == b.keys() == c.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    weights = [key for key in a if key.endswith("weight") and a[key].dim() > 1]
    assert weights
    for key in weights:
        assert not torch.equal(a[key], c[key]), key


def test_train_mode_dropout_follows_the_generator():
    model = build_model("lenet", 1, 28, 10, 0.5, gen(23))
    x = batch(4, 1, 28, seed=24)
    model.train()
    with torch.no_grad():
        torch.manual_seed(0)
        a = model(x, gen(25))
        torch.manual_seed(1)
        b = model(x, gen(25))
        c = model(x, gen(26))
        model.eval()
        d = model(x)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.allclose(a, d)  # dropout is active in train mode


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_lenet_fast_inference_path_matches_the_plain_one(shape):
    """Without gradients on the CPU, LeNet's trunk runs in oneDNN's layout: same numbers."""
    from models.lenet import _mkldnn_inference

    model = build_model("lenet", shape[0], shape[1], 10, 0.5, torch.Generator().manual_seed(0)).eval()
    x = torch.randn(37, *shape, generator=torch.Generator().manual_seed(1))
    plain = model.trunk(x).detach()  # gradients enabled: the plain path
    with torch.inference_mode():
        assert _mkldnn_inference(x) or not torch.backends.mkldnn.is_available()
        fast = model.trunk(x)
    assert torch.allclose(plain, fast, atol=1e-5)


def peak_cpu_bytes(prof) -> int:
    """Peak of the memory that profiled ops held at once (their own allocations minus frees, in order)."""
    current = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        current += event.self_cpu_memory_usage
        peak = max(peak, current)
    return peak


@pytest.mark.parametrize("k, n", [(16, 8), (16, 300), (300, 3)])  # fewer rows than hidden units, more
@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("c, s", SHAPES)
def test_head_memory_estimates_cover_what_sampling_holds(built, name, c, s, k, n):
    """mask_bytes is exactly the masks; n rows × sample_row_bytes bounds sample()'s peak, beside the
    masked weights or inputs of one group (which SAMPLE_TEMP_BYTES bounds)."""
    from torch.profiler import ProfilerActivity, profile

    head = built[(name, c, s)].head
    ms = head.draw_masks(k, gen(3), "cpu")
    assert head.mask_bytes(k) == sum(m.numel() * m.element_size() for m in ms)
    h = torch.randn(n, head.linears[0].in_features, generator=gen(4))
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = head.sample(h, k, masks=ms)
    group_temp = max(e.self_cpu_memory_usage for e in prof.events() if e.name == "aten::mul")
    assert group_temp <= SAMPLE_TEMP_BYTES
    peak = peak_cpu_bytes(prof)
    assert out.numel() * 4 <= peak <= n * head.sample_row_bytes(k) + group_temp
    assert head.sample_row_bytes(2 * k) == 2 * head.sample_row_bytes(k)


# ------------------------------------------------------------------ ResNet18's stem (issue 24)

@pytest.mark.parametrize("c, s", [(1, 28), (3, 32)])
def test_resnet_stems_build_the_architecture_they_name(c, s):
    """small: 3×3 stride-1 convolution, no max-pool (full resolution into layer1); imagenet: torchvision's
    7×7 stride-2 convolution and 3×3 stride-2 max-pool (a quarter of the pixels, then another quarter)."""
    gen = torch.Generator().manual_seed(0)
    small, imagenet = (build_model("resnet18", c, s, 10, 0.5, gen, resnet_stem=stem).eval()
                       for stem in ("small", "imagenet"))
    assert (small.trunk.conv1.kernel_size, small.trunk.conv1.stride) == ((3, 3), (1, 1))
    assert isinstance(small.trunk.maxpool, nn.Identity)
    assert (imagenet.trunk.conv1.kernel_size, imagenet.trunk.conv1.stride) == ((7, 7), (2, 2))
    assert isinstance(imagenet.trunk.maxpool, nn.MaxPool2d) and imagenet.trunk.maxpool.stride == 2
    x = torch.zeros(2, c, s, s)
    for model, layer1 in ((small, s), (imagenet, -(-s // 4))):
        seen = {}
        model.trunk.layer1.register_forward_hook(lambda m, i, o: seen.update(shape=tuple(o.shape)))
        assert tuple(model(x).shape) == (2, 10) and tuple(model.trunk(x).shape) == (2, 512)
        assert seen["shape"] == (2, 64, layer1, layer1)
    # The same layers but the first convolution: 3×3×c×64 against 7×7×c×64 weights
    n_small, n_imagenet = (sum(p.numel() for p in m.parameters()) for m in (small, imagenet))
    assert n_imagenet - n_small == (49 - 9) * c * 64
    # torchvision's resnet18 (11,689,512) without its fc (513,000) and 7×7×3 conv1 (9,408), with a 3×3×c conv1
    # and the dropout head's fc (512×10 + 10)
    assert n_small == 11_689_512 - 513_000 - 9_408 + 9 * c * 64 + 5_130


def test_resnet_stem_is_refused_for_other_models_and_recorded_for_resnet(cli):
    from config import Config, ConfigError
    from loop import check_declared
    with pytest.raises(ConfigError, match="--resnet_stem is an option of --model resnet18; --model lenet does not"):
        check_declared(Config(model="lenet", resnet_stem="imagenet"))
    check_declared(Config(model="resnet18", resnet_stem="imagenet"))
    rc, _, err, runs = cli("--dataset", "mnist_5k", "--model", "cnn", "--resnet_stem", "imagenet", "--no-wandb")
    assert rc == 2 and runs == [] and err.count("\n") == 1 and err.startswith("error: --resnet_stem")


def test_min_steps_follows_the_model_when_not_given():
    """--min_steps not given: MODEL_DEFAULTS' value for the model (ResNet18 fits a few labels in fewer steps);
    given, or set by a preset, it wins; other models keep the field's default."""
    from config import MODEL_DEFAULTS, PRESETS, Config, parse_config
    fewer = MODEL_DEFAULTS["resnet18"]["min_steps"]
    assert fewer < Config().min_steps
    assert parse_config(["--model", "resnet18"]).min_steps == fewer
    assert parse_config(["--model", "lenet"]).min_steps == Config().min_steps == 1000
    assert parse_config(["--model", "resnet18", "--min_steps", "1000"]).min_steps == 1000
    assert parse_config(["--model", "resnet18", "--preset", "gal2017"]).min_steps == \
        PRESETS["gal2017"]["values"]["min_steps"]
    assert parse_config(["--model", "resnet18", "--uncertainty", "ensemble"]).min_steps == fewer


def test_resnet18s_default_steps_grow_with_the_labelled_set():
    """ResNet18's defaults, --min_steps 700 and --epochs 250 (docs/RESULTS_rq2.md): 700 steps up to 100 labels
    (where a round must fit a minute), then 250 passes over the set (1,000 steps at 200 labels, batch 64);
    LeNet keeps 1,000 steps and 10 epochs; an explicit --epochs wins."""
    from config import parse_config
    from train import Schedule

    def steps(argv, n):
        cfg = parse_config(argv)
        return Schedule(epochs=cfg.epochs, batch_size=cfg.batch_size, min_steps=cfg.min_steps).max_steps(n)
    resnet = ["--model", "resnet18"]
    assert [steps(resnet, n) for n in (20, 50, 100, 160, 200, 300)] == [700, 700, 700, 750, 1000, 1250]
    assert [steps(["--model", "lenet"], n) for n in (20, 100, 200, 300)] == [1000, 1000, 1000, 1000]
    assert steps([*resnet, "--epochs", "10"], 200) == 700
    assert parse_config([*resnet, "--epochs", "10"]).epochs == 10 and parse_config(resnet).epochs == 250


def test_the_model_default_is_recorded_in_config_json_and_kept_on_resume(cli, monkeypatch, tmp_path):
    """A run records the --min_steps its model's default gave it; a resume keeps that number even after the
    table of defaults changes (the run goes on as it began)."""
    import config
    import main
    from conftest import run_dirs
    monkeypatch.setitem(config.MODEL_DEFAULTS, "resnet18", {"min_steps": 3})
    argv = ["--dataset", "mnist_5k", "--model", "resnet18", "--resnet_stem", "imagenet", "--no-wandb",
            "--n_init_labeled", "20", "--n_query", "10", "--n_round", "1", "--epochs", "1", "--batch_size", "20",
            "--num_valid", "50", "--pool_subset", "50", "--stop_set_size", "10", "--threads", "1"]
    rc, _, err, [run] = cli(*argv, output_dir=tmp_path / "runs")
    assert rc == 0, err
    assert run.config["min_steps"] == 3
    assert list(run.rounds["train_steps"]) == [3, 4]  # 20 labels: 3 one-step epochs; 30: 2 two-step epochs
    monkeypatch.setitem(config.MODEL_DEFAULTS, "resnet18", {"min_steps": 9})
    resume = ["--resume", str(run.path)]
    assert main.resolve_resume(config.parse_config(resume, main.CHOICES), resume).min_steps == 3
    assert [p.name for p in run_dirs(tmp_path / "runs")] == [run.path.name]
