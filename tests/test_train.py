"""train.py: fitting learns and is reproducible, BatchNorm recalibration, chunk-independent scoring."""
import pytest
import torch

from data import Images, load_dataset
from models import build_model
from rng import torch_generator
from strategies import bald
from train import Schedule, epoch_order, evaluate, fit, make_optimizer, recalibrate_batchnorm, score_pool


@pytest.fixture(scope="module")
def digits():
    ds = load_dataset("mnist_5k", "data")
    return Images(ds.train_x, ds.mean, ds.std), ds.train_y


def train_lenet(images, y, idx, seed=0, epochs=30, name="lenet"):
    model = build_model(name, 1, 28, 10, 0.5, torch_generator(seed, "w"))
    opt = make_optimizer(model, "adam", 1e-3, 0.0, 0.9)
    trained = fit(model, images, idx, y[idx], opt, Schedule(epochs, 32), torch_generator(seed, "s"),
                  torch_generator(seed, "d"))
    return model, trained["loss"]


def test_fit_learns_and_is_reproducible(digits):
    images, y = digits
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))  # mnist_5k is sorted by class
    idx, held_out = order[:128], order[3000:]
    a, loss_a = train_lenet(images, y, idx)
    b, loss_b = train_lenet(images, y, idx)
    assert loss_a == loss_b
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert evaluate(a, images, idx, y[idx], 1000)["acc"] >= 0.95  # fits its training set
    assert evaluate(a, images, held_out, y[held_out], 1000)["acc"] >= 0.6  # and generalises


@pytest.mark.parametrize("name", ["cnn", "batchbald_cnn"])
def test_the_papers_cnns_learn_a_few_digits(digits, name):
    images, y = digits
    torch.set_num_threads(1)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    idx, held_out = order[:128], order[3000:4000]
    model, loss = train_lenet(images, y, idx, epochs=15, name=name)
    assert loss < 0.5
    assert evaluate(model, images, idx, y[idx], 1000)["acc"] >= 0.95
    assert evaluate(model, images, held_out, y[held_out], 1000)["acc"] >= 0.7


def test_evaluate_matches_a_direct_computation(digits):
    images, y = digits
    model = build_model("lenet", 1, 28, 10, 0.5, torch_generator(1, "w")).eval()
    idx = torch.arange(50, 350)
    with torch.no_grad():
        logits = model(images.batch(idx))
    expected_acc = (logits.argmax(1) == y[idx]).float().mean().item()
    expected_loss = torch.nn.functional.cross_entropy(logits, y[idx]).item()
    got = evaluate(model, images, idx, y[idx], chunk=64)
    assert got["acc"] == pytest.approx(expected_acc) and got["loss"] == pytest.approx(expected_loss, rel=1e-5)


def test_evaluate_splits_accuracy_into_clean_and_noisy_images_from_the_same_predictions(digits):
    """acc_clean / acc_noisy: the accuracy over the entries marked clean / noisy, counted by hand; chunking
    (64 here, across the marks) does not change them, and an empty part is NaN."""
    images, y = digits
    model = build_model("lenet", 1, 28, 10, 0.5, torch_generator(1, "w")).eval()
    idx = torch.arange(0, 3000, 10)  # every class (mnist_5k's train split is ordered by class)
    with torch.no_grad():
        hits = (model(images.batch(idx)).argmax(1) == y[idx]).tolist()
    noisy = torch.zeros(idx.numel(), dtype=torch.bool)
    noisy[::3] = True  # 100 of the 300
    got = evaluate(model, images, idx, y[idx], chunk=64, noisy=noisy)
    clean_hits = [h for h, n in zip(hits, noisy.tolist()) if not n]
    noisy_hits = [h for h, n in zip(hits, noisy.tolist()) if n]
    assert 0 < sum(hits) < len(hits)  # an untrained model: neither part is trivially 0 or 1
    assert got["acc_clean"] == sum(clean_hits) / 200 and got["acc_noisy"] == sum(noisy_hits) / 100
    assert got["acc"] == pytest.approx((sum(clean_hits) + sum(noisy_hits)) / 300)
    none = evaluate(model, images, idx, y[idx], chunk=64, noisy=torch.zeros(idx.numel(), dtype=torch.bool))
    assert none["acc_clean"] == none["acc"] and none["acc_noisy"] != none["acc_noisy"]  # NaN
    assert "acc_clean" not in evaluate(model, images, idx, y[idx], chunk=64)


def test_sgd_uses_momentum_and_weight_decay():
    model = torch.nn.Linear(2, 2)
    opt = make_optimizer(model, "sgd", 0.1, 5e-4, 0.9)
    assert isinstance(opt, torch.optim.SGD)
    assert opt.param_groups[0]["momentum"] == 0.9 and opt.param_groups[0]["weight_decay"] == 5e-4


def test_batchnorm_recalibration_uses_final_weights(digits):
    images, _ = digits
    torch.set_num_threads(1)
    model = build_model("resnet18", 1, 28, 10, 0.5, torch_generator(0, "w"))
    bn1 = model.trunk.bn1
    bn1.running_mean.fill_(5.0)  # stale statistics
    idx = torch.arange(24)
    recalibrate_batchnorm(model, images, idx, batch_size=8)
    with torch.no_grad():
        conv_out = model.trunk.conv1(images.batch(idx))
    assert torch.allclose(bn1.running_mean, conv_out.mean(dim=(0, 2, 3)), atol=1e-5)
    assert bn1.momentum == 0.1 and not model.training


@pytest.mark.parametrize("model_name", ["lenet", "resnet18", "cnn", "batchbald_cnn"])
def test_mc_scores_do_not_depend_on_chunk_size(digits, model_name):
    images, _ = digits
    torch.set_num_threads(1)
    model = build_model(model_name, 1, 28, 10, 0.5, torch_generator(0, "w"))
    idx = torch.arange(30)
    whole = score_pool(model, images, idx, bald, 8, True, torch_generator(3, "mc"), chunk=1000)
    chunked = score_pool(model, images, idx, bald, 8, True, torch_generator(3, "mc"), chunk=7)
    assert whole.shape == (30,)
    assert torch.allclose(whole, chunked, atol=1e-5)
    assert (whole > 0).all()  # dropout samples disagree: BALD is not ~0


# --- the training schedule: min_steps, fixed-length epochs, early stopping ---------------------------

@pytest.mark.parametrize("n, epochs, min_steps, epoch_samples, expected_epochs, steps_per_epoch", [
    (20, 50, 0, 0, 50, 1),        # the original meaning: --epochs passes
    (20, 50, 1000, 0, 1000, 1),   # 20 labels, batch 64: one step a pass, stretched to 1000 steps
    (200, 50, 1000, 0, 250, 4),   # 4 steps a pass: 250 passes
    (5000, 50, 1000, 0, 50, 79),  # a large set already takes 50 × 79 steps: --epochs decides
    (20, 3, 0, 640, 3, 10),       # fixed-length epochs: 640 draws from 20 images = 10 steps
])
def test_schedule_epochs_and_steps(n, epochs, min_steps, epoch_samples, expected_epochs, steps_per_epoch):
    schedule = Schedule(epochs, 64, min_steps, epoch_samples)
    assert schedule.steps_per_epoch(n) == steps_per_epoch
    assert schedule.max_epochs(n) == expected_epochs
    assert schedule.max_epochs(n) * steps_per_epoch >= min_steps


def test_epoch_order_is_whole_permutations_cut_to_length():
    order = epoch_order(7, 17, torch.Generator().manual_seed(0))
    assert order.numel() == 17
    assert sorted(order[:7].tolist()) == list(range(7)) and sorted(order[7:14].tolist()) == list(range(7))
    assert set(order[14:].tolist()) <= set(range(7)) and len(set(order[14:].tolist())) == 3
    one_pass = epoch_order(7, 7, torch.Generator().manual_seed(0))  # the default: one randperm, as before
    assert torch.equal(one_pass, torch.randperm(7, generator=torch.Generator().manual_seed(0)))


def test_fit_reports_the_steps_it_ran(digits):
    images, y = digits
    idx = torch.arange(0, 4000, 200)  # 20 images
    model = build_model("lenet", 1, 28, 10, 0.5, torch_generator(0, "w"))
    opt = make_optimizer(model, "adam", 1e-3, 0.0, 0.9)
    got = fit(model, images, idx, y[idx], opt, Schedule(2, 8, min_steps=30), torch_generator(0, "s"),
              torch_generator(0, "d"))
    assert got["steps"] == 30 and got["epochs"] == 10 and got["kept_epoch"] == 10  # 3 steps a pass
    assert opt.state[next(model.parameters())]["step"].item() == 30


def test_early_stopping_stops_after_patience_and_restores_the_best_weights(digits):
    images, y = digits
    idx = torch.arange(0, 4000, 100)
    model = build_model("lenet", 1, 28, 10, 0.5, torch_generator(0, "w"))
    opt = make_optimizer(model, "adam", 1e-3, 0.0, 0.9)
    scripted = iter([0.5, 0.7, 0.6, 0.7, 0.65, 0.9])  # best at epoch 2; epochs 3-5 do not beat it
    snapshots = {}

    def validate(m):
        snapshots[len(snapshots) + 1] = {k: v.clone() for k, v in m.state_dict().items()}
        return next(scripted)

    got = fit(model, images, idx, y[idx], opt, Schedule(20, 16, patience=3), torch_generator(0, "s"),
              torch_generator(0, "d"), validate=validate)
    assert got["epochs"] == 5 and got["kept_epoch"] == 2 and got["steps"] == 5 * 3
    assert all(torch.equal(v, snapshots[2][k]) for k, v in model.state_dict().items())
    assert not torch.equal(snapshots[2]["head.linears.0.weight"], snapshots[5]["head.linears.0.weight"])


def test_without_patience_validation_is_never_called(digits):
    images, y = digits
    idx = torch.arange(0, 4000, 400)
    model = build_model("lenet", 1, 28, 10, 0.5, torch_generator(0, "w"))
    opt = make_optimizer(model, "adam", 1e-3, 0.0, 0.9)

    def validate(m):
        raise AssertionError("validation must not run without --early_stopping")

    got = fit(model, images, idx, y[idx], opt, Schedule(3, 16), torch_generator(0, "s"),
              torch_generator(0, "d"), validate=validate)
    assert got["epochs"] == got["kept_epoch"] == 3
