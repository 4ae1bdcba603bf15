"""The training recipe (issue 28): augmentation of the labelled batch and the learning-rate schedule."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import augment
import config
from augment import AUGMENTS, Augmenter, flip_images, make_augmenter, shift_images
from config import Config
from rng import torch_generator
from train import Step, lr_scheduler, make_optimizer, train_epoch

MEAN, STD = (0.1307,), (0.3081,)


def raw_batch(n: int = 6, size: int = 10, channels: int = 1, seed: int = 0) -> torch.Tensor:
    """n random uint8 images, with a black border of 3 pixels (as digits have)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, channels, size, size), generator=g, dtype=torch.uint8)
    x[:, :, :3], x[:, :, -3:], x[:, :, :, :3], x[:, :, :, -3:] = 0, 0, 0, 0
    return x


def normalise(x_uint8: torch.Tensor, mean=MEAN, std=STD) -> torch.Tensor:
    m, s = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
    return (x_uint8.float() / 255 - m) / s


def test_the_names_are_the_configs_choices():
    assert tuple(AUGMENTS) == config.AUGMENTS
    assert make_augmenter("none", 2, MEAN, STD) is None


def test_a_shifted_image_equals_the_crop_of_the_zero_padded_raw_image():
    raw = raw_batch(n=8, channels=3)
    mean, std = (0.2, 0.4, 0.6), (0.3, 0.2, 0.1)
    aug = make_augmenter("shift", 2, mean, std)
    out = aug(normalise(raw, mean, std), torch_generator(7, "augment"))
    # The same draws, replayed: each image is the crop at (2 + dy, 2 + dx) of the raw image padded with black
    offsets = augment.draw_offsets(8, 2, torch_generator(7, "augment"))
    padded = F.pad(raw, (2, 2, 2, 2))
    for b, (dy, dx) in enumerate(offsets.tolist()):
        expected = normalise(padded[b:b + 1, :, 2 + dy:2 + dy + 10, 2 + dx:2 + dx + 10], mean, std)
        torch.testing.assert_close(out[b:b + 1], expected, rtol=0, atol=1e-6)
    assert offsets.abs().max() <= 2 and len(set(map(tuple, offsets.tolist()))) > 1  # images move differently
    # An image whose offset is (0, 0) comes back exactly
    still = shift_images(normalise(raw), torch.zeros(8, 2, dtype=torch.int64), 2)
    torch.testing.assert_close(still, normalise(raw), rtol=0, atol=0)


def test_a_flip_is_exact_and_only_where_drawn():
    x = normalise(raw_batch())
    which = torch.tensor([True, False, True, False, False, True])
    out = flip_images(x, which)
    assert torch.equal(out[which], x[which].flip(-1)) and torch.equal(out[~which], x[~which])


def test_a_small_rotation_keeps_the_image_and_its_black_background():
    x = normalise(raw_batch(n=4, size=20))
    aug = make_augmenter("shift_rotate", 0, MEAN, STD)  # rotation only
    out = aug(x, torch_generator(1, "augment"))
    assert out.shape == x.shape and not torch.equal(out, x)
    black = -MEAN[0] / STD[0]
    corners = out[:, :, :2, :2]  # outside the image after a rotation of ≤ 10°, or its black border
    torch.testing.assert_close(corners, torch.full_like(corners, black), rtol=0, atol=1e-5)
    # the content stays: a rotation by ≤ 10° keeps most of each image's bright mass
    assert ((out - black).clamp(min=0).sum() / (x - black).sum()).item() > 0.9
    angles = augment.draw_angles(1000, augment.ROTATE_DEGREES, torch_generator(1, "angles"))
    assert angles.abs().max() <= math.radians(10) and angles.std() > math.radians(4)


def test_the_same_seed_gives_the_same_augmented_batches_and_another_seed_other_ones():
    x = normalise(raw_batch(n=16, size=20))
    aug = make_augmenter("shift_rotate", 2, MEAN, STD)
    same = [aug(x, torch_generator(3, "augment", 0)) for _ in range(2)]
    assert torch.equal(same[0], same[1])
    assert not torch.equal(same[0], aug(x, torch_generator(4, "augment", 0)))
    assert torch.equal(x, normalise(raw_batch(n=16, size=20)))  # the input is never changed in place


def test_training_sees_each_batch_augmented_from_its_stream_and_its_labels_as_they_are():
    """train_epoch with an augmenter: the model's input is the augmentation of the batch, drawn from the
    augment stream in batch order; the labels are the batch's own."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(100, 3))
    seen = []

    class Recorder(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x, generator=None):
            seen.append(x.clone())
            return self.net(x)

    x, y = normalise(raw_batch(n=10)), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    aug = make_augmenter("shift", 2, MEAN, STD)
    gen = torch_generator(5, "augment")
    step = Step(make_optimizer(model, "adam", 1e-3, 0.0, 0.9), augment=lambda x_B: aug(x_B, gen))
    y_before = y.clone()
    train_epoch(Recorder(model), x, y, step, 4, torch.Generator(), torch.empty(3))
    replay = torch_generator(5, "augment")
    assert [s.shape[0] for s in seen] == [4, 4, 2]
    for start, s in zip((0, 4, 8), seen):
        assert torch.equal(s, aug(x[start:start + 4], replay))
    assert torch.equal(y, y_before)


def test_evaluation_scoring_and_the_stop_set_never_see_an_augmented_image(tmp_path, monkeypatch):
    """A real bald run with --augment shift_rotate, whose augmenter also marks each image it made (a
    sentinel in one corner pixel): images reach the network in training, never in eval mode (evaluation,
    validation, pool scoring, the stop set)."""
    import main
    sentinel, real_call = 123.0, Augmenter.__call__
    fed = {True: [], False: []}  # module.training → whether each image batch it got was marked

    def marking_call(self, x_B, generator):
        out = real_call(self, x_B, generator).clone()
        out[:, :, 0, 0] = sentinel
        return out

    def pre_hook(module, args):
        if args and isinstance(args[0], torch.Tensor) and tuple(args[0].shape[1:]) == (1, 28, 28):
            fed[module.training].append(bool((args[0][:, :, 0, 0] == sentinel).any()))

    monkeypatch.setattr(Augmenter, "__call__", marking_call)
    handle = torch.nn.modules.module.register_module_forward_pre_hook(pre_hook)
    try:
        rc = main.main(["--dataset", "mnist_5k", "--no-wandb", "--num_valid", "100", "--n_init_labeled", "20",
                        "--n_query", "10", "--n_round", "1", "--epochs", "1", "--min_steps", "20", "--threads", "1",
                        "--strategy", "bald", "--mc_samples", "3", "--stop_set_size", "50", "--augment",
                        "shift_rotate", "--output_dir", str(tmp_path)])
    finally:
        handle.remove()
    assert rc == 0
    assert fed[True] and all(fed[True])  # every training batch was augmented
    assert fed[False] and not any(fed[False])  # and nothing in eval mode was


@pytest.mark.parametrize("dataset, allowed", [("mnist_5k", False), ("mnist", False), ("fashion_mnist", True),
                                              ("cifar10", True), ("folder", False)])
def test_a_flip_is_refused_for_a_dataset_whose_class_it_can_change(dataset, allowed):
    from loop import check_declared
    cfg = Config(dataset=dataset, augment="standard")
    if allowed:
        check_declared(cfg)
    else:
        with pytest.raises(config.ConfigError, match=f"--augment standard flips images .* --dataset {dataset}"):
            check_declared(cfg)
    check_declared(Config(dataset=dataset, augment="shift_rotate"))


def test_a_refused_flip_is_one_line_and_exit_2(cli):
    rc, _, err, runs = cli("--dataset", "mnist_5k", "--augment", "standard", "--no-wandb")
    assert rc == 2 and runs == [] and err.count("\n") == 1 and "use --augment shift_rotate" in err


@pytest.mark.parametrize("name", config.LR_SCHEDULES)
def test_the_learning_rate_follows_its_schedule_over_the_rounds_steps(name):
    model = torch.nn.Linear(2, 2)
    opt = make_optimizer(model, "adam", 3e-3, 0.0, 0.9)
    sched = lr_scheduler(opt, name, 100)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        if sched:
            sched.step()
    if name == "constant":
        assert sched is None and set(lrs) == {3e-3}
    elif name == "cosine":
        assert lrs[0] == pytest.approx(3e-3) and lrs[-1] < 3e-5 and all(a >= b for a, b in zip(lrs, lrs[1:]))
    else:  # one-cycle: up from lr/25 to lr at 30% of the steps, then down far below the start
        peak = max(range(100), key=lrs.__getitem__)
        assert lrs[0] == pytest.approx(3e-3 / 25) and lrs[peak] == pytest.approx(3e-3, rel=1e-3)
        assert 25 <= peak <= 35 and lrs[-1] < lrs[0] / 100


def test_config_json_records_the_recipe(cli):
    rc, _, err, [run] = cli("--dataset", "mnist_5k", "--no-wandb", "--num_valid", "100", "--n_init_labeled", "20",
                            "--n_query", "10", "--n_round", "0", "--epochs", "1", "--min_steps", "10", "--augment",
                            "shift", "--augment_shift", "3", "--lr_schedule", "cosine", "--threads", "1")
    assert rc == 0, err
    assert (run.config["augment"], run.config["augment_shift"], run.config["lr_schedule"]) == ("shift", 3, "cosine")
    assert run.rounds["train_steps"].tolist() == [10]
