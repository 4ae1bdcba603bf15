"""Input noise: the affected fraction, the seed, noise fixed per image, and the two noise models."""
import subprocess
import sys

import pytest
import torch

from conftest import ROOT
from data import Images
from noise import NOISE_KINDS, apply_noise, choose_affected, gaussian, salt_and_pepper


def gen(seed):
    return torch.Generator().manual_seed(seed)


def images(n, c=1, h=28, w=28, seed=0):
    """Continuous normalised-looking images: every value distinct with probability 1."""
    return torch.randn(n, c, h, w, generator=gen(seed))


def changed_images(clean, noisy):
    """Indices of images with at least one value that differs."""
    return torch.nonzero((clean != noisy).flatten(1).any(1)).flatten()


# --- the affected fraction -----------------------------------------------------------------------

@pytest.mark.parametrize("rate, expected", [(0.0, 0), (0.1, 4), (0.29, 12), (0.33, 13), (0.5, 20),
                                            (0.76, 30), (1.0, 40)])
def test_choose_affected_picks_exactly_round_rate_n(rate, expected):
    idx = choose_affected(40, rate, gen(1))
    assert idx.numel() == expected
    assert idx.unique().numel() == expected  # distinct
    assert idx.tolist() == sorted(idx.tolist())
    assert ((idx >= 0) & (idx < 40)).all()


@pytest.mark.parametrize("kind", ["gaussian", "salt_and_pepper"])
@pytest.mark.parametrize("rate, expected", [(0.0, 0), (0.1, 4), (0.29, 12), (1.0, 40)])
def test_exactly_the_requested_fraction_of_images_changes(kind, rate, expected):
    x = images(40, c=1, h=12, w=12, seed=2)
    x_before = x.clone()
    out, affected = apply_noise(x, kind, rate, gen(3), std=0.5, sp_fraction=0.1)
    assert torch.equal(x, x_before)  # the input is not modified in place
    assert out.shape == x.shape and out.dtype == x.dtype
    assert affected.numel() == expected
    assert torch.equal(changed_images(x, out), affected)
    unaffected = torch.ones(40, dtype=torch.bool)
    unaffected[affected] = False
    assert torch.equal(out[unaffected], x[unaffected])  # bit-identical


# --- seeding ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["gaussian", "salt_and_pepper"])
def test_noise_follows_the_seed_and_not_the_global_rng(kind):
    x = images(100, c=1, h=10, w=10, seed=4)
    torch.manual_seed(0)
    out_a, aff_a = apply_noise(x, kind, 0.3, gen(11))
    torch.manual_seed(999)  # a different global RNG state must not matter
    out_b, aff_b = apply_noise(x, kind, 0.3, gen(11))
    out_c, aff_c = apply_noise(x, kind, 0.3, gen(12))
    assert torch.equal(out_a, out_b) and torch.equal(aff_a, aff_b)
    assert not torch.equal(aff_a, aff_c)
    assert not torch.equal(out_a, out_c)


def test_same_affected_set_different_seed_gives_different_values():
    x = images(20, c=1, h=10, w=10, seed=5)
    a = gaussian(x, 1.0, gen(1))
    b = gaussian(x, 1.0, gen(2))
    assert not torch.equal(a, b)
    assert torch.equal(a, gaussian(x, 1.0, gen(1)))
    a = salt_and_pepper(x, 0.2, gen(1))
    assert torch.equal(a, salt_and_pepper(x, 0.2, gen(1)))
    assert not torch.equal(a, salt_and_pepper(x, 0.2, gen(2)))


def test_noise_is_fixed_per_image_once_stored():
    x = images(30, c=1, h=8, w=8, seed=6)
    noisy, affected = apply_noise(x, "gaussian", 0.5, gen(7), std=1.0)
    stored = Images(x, (0.0,), (1.0,)).replaced(noisy)
    idx = torch.arange(30)
    first, second = stored.batch(idx), stored.batch(idx)
    assert torch.equal(first, second)
    assert torch.equal(first, noisy)
    assert torch.equal(stored.batch(affected), noisy[affected])
    assert not torch.equal(stored.batch(affected), x[affected])


# --- gaussian --------------------------------------------------------------------------------------

def test_gaussian_difference_has_mean_zero_and_requested_std():
    x = images(2000, c=1, h=28, w=28, seed=8)
    d = gaussian(x, 0.5, gen(9)) - x
    # 1.57M values: sd of the mean is 0.5 / 1252 = 4e-4; sd of the sample std ~ 0.5 / 1772 = 3e-4
    assert abs(d.mean().item()) < 0.003
    assert d.std().item() == pytest.approx(0.5, rel=0.02)


def test_gaussian_via_apply_noise_on_affected_images():
    x = images(2000, c=1, h=28, w=28, seed=10)
    out, affected = apply_noise(x, "gaussian", 0.5, gen(11), std=0.5)
    assert affected.numel() == 1000
    d = (out - x)[affected]
    assert abs(d.mean().item()) < 0.004
    assert d.std().item() == pytest.approx(0.5, rel=0.02)


def test_gaussian_is_independent_per_channel():
    x = images(200, c=3, h=16, w=16, seed=12)
    d = gaussian(x, 1.0, gen(13)) - x
    r = torch.corrcoef(torch.stack([d[:, 0].flatten(), d[:, 1].flatten()]))[0, 1]
    assert abs(r.item()) < 0.02  # 51k pairs: sd of r ~ 0.0044
    assert d.std().item() == pytest.approx(1.0, rel=0.02)


# --- salt and pepper -------------------------------------------------------------------------------

def _check_salt_and_pepper(clean, noisy, k):
    """Per image: <= k positions changed, >= k at an extreme, same value in every channel."""
    n = clean.shape[0]
    low = clean.amin(dim=(1, 2, 3)).view(n, 1, 1, 1)
    high = clean.amax(dim=(1, 2, 3)).view(n, 1, 1, 1)
    changed_N_HW = (clean != noisy).any(1).flatten(1)  # a position changed in some channel
    all_low_N_HW = (noisy == low).all(1).flatten(1)  # every channel at the image's minimum
    all_high_N_HW = (noisy == high).all(1).flatten(1)
    assert (changed_N_HW.sum(1) <= k).all()
    assert ((all_low_N_HW | all_high_N_HW).sum(1) >= k).all()
    # every changed position was replaced by the image's min or max, in all channels alike
    assert (~changed_N_HW | all_low_N_HW | all_high_N_HW).all()
    return changed_N_HW, all_low_N_HW, all_high_N_HW


def test_salt_and_pepper_replaces_k_positions_with_image_min_or_max_in_all_channels():
    x = images(2000, c=3, h=10, w=10, seed=14)
    k = round(0.1 * 10 * 10)
    noisy = salt_and_pepper(x, 0.1, gen(15))
    changed, low, high = _check_salt_and_pepper(x, noisy, k)
    # continuous values: no clean position is at the extreme in all three channels, so exactly k
    # positions change and exactly k positions sit at an extreme
    assert (changed.sum(1) == k).all()
    assert ((low | high).sum(1) == k).all()
    # salt and pepper each with probability 1/2: 20,000 replacements, sd of the share ~ 0.0035
    salt_share = high.sum().item() / (2000 * k)
    assert salt_share == pytest.approx(0.5, abs=0.02)
    # positions are spread over the whole image: each of 100 positions expected 200 times, sd ~ 13
    per_position = changed.sum(0)
    assert (per_position - 200).abs().max() < 70, per_position


def test_salt_and_pepper_with_many_pixels_already_at_the_extremes():
    # MNIST-like: most pixels are already the image's minimum, so some replacements change nothing
    g = gen(16)
    raw = torch.randint(0, 256, (500, 3, 8, 8), generator=g)
    background = (torch.rand(500, 1, 8, 8, generator=g) < 0.6).expand(500, 3, 8, 8)
    raw[background] = 0  # 60% of positions are 0 in every channel
    raw[:, :, 0, 0] = 0  # every image has a minimum of 0 and a maximum of 255
    raw[:, :, 0, 1] = 255
    x = (raw.float() / 255 - 0.13) / 0.31
    k = round(0.25 * 64)
    noisy = salt_and_pepper(x, 0.25, gen(17))
    changed, low, high = _check_salt_and_pepper(x, noisy, k)
    assert (changed.sum(1) < k).any()  # the situation this test is about did occur


def test_salt_and_pepper_fraction_rounding_and_zero():
    x = images(50, c=3, h=7, w=7, seed=18)  # 3 channels: no clean position is all-extreme
    k = round(0.3 * 49)  # 14.7 -> 15
    noisy = salt_and_pepper(x, 0.3, gen(19))
    changed, _, _ = _check_salt_and_pepper(x, noisy, k)
    assert (changed.sum(1) == 15).all()
    assert torch.equal(salt_and_pepper(x, 0.0, gen(19)), x)


# --- apply_noise -----------------------------------------------------------------------------------

def test_apply_noise_none_returns_input_unchanged():
    x = images(25, c=3, h=6, w=6, seed=20)
    out, affected = apply_noise(x, "none", 0.7, gen(21))
    assert torch.equal(out, x)
    assert affected.numel() == 0
    assert "none" in NOISE_KINDS


def test_apply_noise_unknown_kind_raises():
    with pytest.raises(ValueError, match="speckle"):
        apply_noise(images(3, seed=22), "speckle", 0.5, gen(23))


def test_noise_strength_bench_separates_clean_from_noisy_test_images():
    """bench/noise_strength.py, the tool that chose the noise study's σ, on mnist_5k: without noise (σ 0)
    the "noisy" test images are as easy as the clean ones, at σ 8 they are much harder."""
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "noise_strength.py"), "--dataset", "mnist_5k",
                           "--stds", "0", "8", "--labels", "100", "--threads", "1", "--min_steps", "150",
                           "--epochs", "5"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = {float(cells[1]): [float(c) for c in cells[3:6]]
            for cells in (line.split("|") for line in proc.stdout.splitlines())
            if len(cells) > 6 and cells[1].strip().replace(".", "").isdigit()}
    (clean0, noisy0, _), (clean8, noisy8, _) = rows[0.0], rows[8.0]
    assert clean0 > 0.6 and abs(clean0 - noisy0) < 0.1  # it learned; σ 0 changes nothing
    assert noisy8 < clean8 - 0.2
    assert "chance: 0.100" in proc.stdout
