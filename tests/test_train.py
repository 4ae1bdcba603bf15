"""train.py: fitting learns and is reproducible, BatchNorm recalibration, chunk-independent scoring."""
import pytest
import torch

from data import Images, load_dataset
from models import build_model
from rng import torch_generator
from strategies import bald
from train import evaluate, fit, make_optimizer, recalibrate_batchnorm, score_pool


@pytest.fixture(scope="module")
def digits():
    ds = load_dataset("mnist_5k", "data")
    return Images(ds.train_x, ds.mean, ds.std), ds.train_y


def train_lenet(images, y, idx, seed=0, epochs=30, name="lenet"):
    model = build_model(name, 1, 28, 10, 0.5, torch_generator(seed, "w"))
    opt = make_optimizer(model, "adam", 1e-3, 0.0, 0.9)
    loss = fit(model, images, idx, y[idx], opt, epochs, 32, torch_generator(seed, "s"), torch_generator(seed, "d"))
    return model, loss


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
