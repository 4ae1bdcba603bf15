"""--dataset folder: the user's own images in an ImageFolder layout (data/folder.py)."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from config import Config
from conftest import Run, run_dirs, run_process
from data import DataUnavailable, load_dataset
from data.folder import FOLDER_SPLIT_SEED, held_out_split
from loop import prepare_data
from memory import check_budget
from sweeps.grid import _dataset_size

CLASSES = ["circle", "cross", "square"]  # sorted: labels 0, 1, 2


def pattern(label: int, i: int, size: int = 20, noise: float = 20.0) -> np.ndarray:
    """A grey size×size uint8 image: a class-dependent shape at a jittered place, with noise."""
    rng = np.random.default_rng(1000 * label + i)
    yy, xx = np.mgrid[:size, :size]
    cy, cx = size / 2 + rng.integers(-2, 3), size / 2 + rng.integers(-2, 3)
    r = size * 0.3
    if label == 0:
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r ** 2
    elif label == 1:
        mask = (np.abs(yy - cy) <= 1.5) | (np.abs(xx - cx) <= 1.5)
    else:
        mask = (np.abs(yy - cy) <= r) & (np.abs(xx - cx) <= r)
    img = 40 + 170 * mask + rng.normal(0, noise, (size, size))
    return np.clip(img, 0, 255).astype(np.uint8)


def make_folder(root: Path, per_class: int = 30, split: str = "train", classes=CLASSES, size: int = 20,
                start: int = 0) -> Path:
    """root/split/<class>/NNN.png grey images; returns root."""
    for label, name in enumerate(classes):
        d = root / split / name
        d.mkdir(parents=True, exist_ok=True)
        for i in range(start, start + per_class):
            Image.fromarray(pattern(label, i, size)).save(d / f"{i:03d}.png")
    return root


def stack_pngs(root: Path, split: str, classes=CLASSES) -> tuple:
    """(pixels N×1×H×W, labels) read back with PIL in sorted file order, as the loader orders them."""
    xs, ys = [], []
    for label, name in enumerate(classes):
        for f in sorted((root / split / name).iterdir()):
            xs.append(np.asarray(Image.open(f)))
            ys.append(label)
    return np.stack(xs)[:, None], np.array(ys)


# --- loading ---------------------------------------------------------------------------------------

def test_train_and_test_folders_give_uint8_images_labels_classes_and_train_statistics(tmp_path):
    make_folder(tmp_path, 30, "train")
    make_folder(tmp_path, 5, "test", start=100)
    ds = load_dataset("folder", str(tmp_path), image_size=20)  # 20 = the files' size: pixels unchanged
    assert ds.name == "folder" and ds.classes == tuple(CLASSES) and ds.num_classes == 3
    assert ds.train_x.dtype == torch.uint8 and tuple(ds.train_x.shape) == (90, 1, 20, 20)
    assert tuple(ds.test_x.shape) == (15, 1, 20, 20) and ds.shape == (1, 20, 20)
    x, y = stack_pngs(tmp_path, "train")
    assert np.array_equal(ds.train_x.numpy(), x) and np.array_equal(ds.train_y.numpy(), y)
    tx, ty = stack_pngs(tmp_path, "test")
    assert np.array_equal(ds.test_x.numpy(), tx) and np.array_equal(ds.test_y.numpy(), ty)
    pixels = x.astype(np.float64) / 255  # train images only
    assert ds.mean == pytest.approx((pixels.mean(),), abs=1e-12)
    assert ds.std == pytest.approx((pixels.std(),), abs=1e-12)


def test_images_are_resized_to_image_size(tmp_path):
    make_folder(tmp_path, 10, "train")
    make_folder(tmp_path, 2, "test", start=50)  # no held-out split: train keeps the files' order
    ds = load_dataset("folder", str(tmp_path), image_size=28)
    assert tuple(ds.train_x.shape[1:]) == (1, 28, 28) and ds.train_x.dtype == torch.uint8
    expected = np.asarray(Image.fromarray(pattern(0, 0)).resize((28, 28), Image.Resampling.BILINEAR))
    assert np.array_equal(ds.train_x[0, 0].numpy(), expected)  # circle/000.png: first in sorted order


def test_colour_images_of_other_sizes_make_rgb_and_grey_ones_get_three_equal_channels(tmp_path):
    make_folder(tmp_path, 6, "train")
    rng = np.random.default_rng(0)
    for k, (w, h) in enumerate([(40, 30), (17, 50), (64, 64)]):
        rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(tmp_path / "train" / CLASSES[k] / f"photo{k}.jpg", quality=95)
    Image.fromarray(rng.integers(0, 256, (12, 12, 4), dtype=np.uint8), "RGBA").save(
        tmp_path / "train" / "cross" / "alpha.png")
    ds = load_dataset("folder", str(tmp_path), image_size=16, test_fraction=0.25)
    n = ds.train_y.numel() + ds.test_y.numel()
    assert n == 3 * 6 + 4 and ds.train_x.shape[1:] == (3, 16, 16) and ds.test_x.shape[1:] == (3, 16, 16)
    assert len(ds.mean) == len(ds.std) == 3
    everything = torch.cat([ds.train_x, ds.test_x])
    grey = (everything[:, 0] == everything[:, 1]).flatten(1).all(1) & (everything[:, 1] == everything[:, 2]).flatten(1).all(1)
    assert int(grey.sum()) == 3 * 6  # the PNG patterns: one value in every channel; the photos are colour
    pixels = ds.train_x.numpy().astype(np.float64) / 255
    assert ds.mean == pytest.approx(tuple(pixels.mean(axis=(0, 2, 3))), abs=1e-12)
    assert ds.std == pytest.approx(tuple(pixels.std(axis=(0, 2, 3))), abs=1e-12)


def test_without_test_folder_a_fixed_stratified_split_independent_of_the_run_seed(tmp_path):
    make_folder(tmp_path, 30, "train")
    a = load_dataset("folder", str(tmp_path), image_size=20)  # test_fraction 0.2 of 90
    b = load_dataset("folder", str(tmp_path), image_size=20)
    assert a.test_y.numel() == 18 and a.train_y.numel() == 72
    assert np.bincount(a.test_y.numpy()).tolist() == [6, 6, 6]  # stratified
    for name in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    # Train and test are a partition of the files, and the held-out ones are those of the fixed seed.
    x, y = stack_pngs(tmp_path, "train")
    train_i, test_i = held_out_split(y, 0.2, CLASSES, "here")
    assert np.array_equal(a.test_x.numpy(), x[test_i]) and np.array_equal(a.train_x.numpy(), x[train_i])
    assert sorted([*train_i, *test_i]) == list(range(90)) and FOLDER_SPLIT_SEED == 0
    # The run's seed draws validation and pool from train only: the test images stay the same.
    cfg = Config(dataset="folder", num_valid=9, n_init_labeled=6, n_query=3, n_round=1, image_size=20)
    data1 = prepare_data(cfg.replace(seed=1), a, torch.device("cpu"))
    data2 = prepare_data(cfg.replace(seed=2), a, torch.device("cpu"))
    assert torch.equal(data1.test.x, data2.test.x) and not torch.equal(data1.val_idx, data2.val_idx)
    c = load_dataset("folder", str(tmp_path), image_size=20, test_fraction=0.5)
    assert c.test_y.numel() == 45 and np.bincount(c.test_y.numpy()).tolist() == [15, 15, 15]


def test_other_datasets_ignore_the_folder_options_and_keep_class_names():
    ds = load_dataset("mnist_5k", "data", image_size=64, test_fraction=0.5)
    assert ds.shape == (1, 28, 28) and ds.test_y.numel() == 1000
    assert ds.classes == tuple("0123456789")


def test_check_budget_sizes_the_model_from_image_size(tmp_path):
    cfg = Config(dataset="folder", num_valid=10, n_init_labeled=10, n_query=5, n_round=1, strategy="bald",
                 image_size=28)
    check_budget(cfg, n_train=100, num_classes=3)
    for model in ("cnn", "resnet18", "batchbald_cnn"):
        check_budget(cfg.replace(model=model, image_size=48), n_train=100, num_classes=3)
    from config import ConfigError
    with pytest.raises(ConfigError, match=r"lenet.*28 or 32.*--image_size"):
        check_budget(cfg.replace(image_size=48), n_train=100, num_classes=3)


# --- refusals: one error line, exit code 2, no run folder ------------------------------------------

def expect_refusal(cli, data_dir, *needles, extra=()):
    rc, out, err, runs = cli("--dataset", "folder", "--data_dir", data_dir, "--no-wandb", "--num_valid", "6",
                             "--n_init_labeled", "6", "--n_query", "3", "--n_round", "1", *extra)
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: dataset 'folder': "), err
    assert "Traceback" not in err and runs == []
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_missing_folder_or_missing_train_is_refused(tmp_path, cli):
    expect_refusal(cli, tmp_path / "nowhere", "does not exist", "train/<class>")
    (tmp_path / "photos").mkdir()
    expect_refusal(cli, tmp_path / "photos", "has no train/ folder")


def test_folder_without_images_is_refused(tmp_path, cli):
    for name in CLASSES:
        (tmp_path / "train" / name).mkdir(parents=True)
    (tmp_path / "train" / "circle" / "notes.txt").write_text("not an image")
    expect_refusal(cli, tmp_path, "no images")
    (tmp_path / "empty" / "train").mkdir(parents=True)
    expect_refusal(cli, tmp_path / "empty", "no class folders")


def test_single_class_is_refused(tmp_path, cli):
    make_folder(tmp_path, 10, classes=["only"])
    expect_refusal(cli, tmp_path, "only one class", "'only'")


def test_empty_class_is_named(tmp_path, cli):
    make_folder(tmp_path, 10)
    (tmp_path / "train" / "zebra").mkdir()
    expect_refusal(cli, tmp_path, "class 'zebra'", "has no images")


def test_unreadable_images_are_named_first_few_with_the_count(tmp_path, cli):
    make_folder(tmp_path, 10)
    for i in range(5):
        (tmp_path / "train" / "cross" / f"bad{i}.png").write_bytes(b"garbage, not a PNG " * 3)
    whole = (tmp_path / "train" / "circle" / "000.png").read_bytes()
    (tmp_path / "train" / "circle" / "000.png").write_bytes(whole[: len(whole) // 2])  # truncated
    line = expect_refusal(cli, tmp_path, "6 of 35 image files", "cannot be read", "and 3 more",
                          "train/circle/000.png (OSError", "train/cross/bad0.png (not an image",
                          "train/cross/bad1.png")
    assert "bad2.png" not in line


def test_test_classes_must_match_train(tmp_path, cli):
    make_folder(tmp_path, 10)
    make_folder(tmp_path, 3, "test", classes=["circle", "cross", "triangle"])
    expect_refusal(cli, tmp_path, "same class folders", "only in train/: square", "only in test/: triangle")


def test_too_few_images_for_the_held_out_split_is_refused(tmp_path):
    make_folder(tmp_path, 1)
    with pytest.raises(DataUnavailable, match="too few images"):
        load_dataset("folder", str(tmp_path), image_size=20)


def test_lenet_with_another_image_size_is_refused_before_any_run_folder(tmp_path, cli):
    make_folder(tmp_path / "d", 10)
    rc, out, err, runs = cli("--dataset", "folder", "--data_dir", tmp_path / "d", "--no-wandb", "--image_size",
                             "20", "--num_valid", "6", "--n_init_labeled", "6", "--n_query", "3", "--n_round", "1")
    assert rc == 2 and err.strip().startswith("error: --model lenet") and "--image_size" in err and runs == []


# --- image modes: 16-bit grey scaled to 8 bits; a mode without a fixed range refused -----------------

def save_folder_like(source: Path, target: Path, convert) -> Path:
    """target/ with every PNG of source/ passed through ``convert`` (PIL image -> image and suffix)."""
    for png in sorted(source.rglob("*.png")):
        image, suffix = convert(Image.open(png))
        path = (target / png.relative_to(source)).with_suffix(suffix)
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)
    return target


def widened(img: Image.Image) -> tuple:
    """The 8-bit grey image as 16 bits a pixel (v × 257: 0 -> 0, 255 -> 65535), a PNG of mode I;16."""
    return Image.fromarray(np.asarray(img).astype(np.uint16) * 257), ".png"


@pytest.mark.parametrize("image_size", [20, 28])
def test_16_bit_grey_pngs_give_what_their_8_bit_originals_give(tmp_path, image_size):
    eight = make_folder(tmp_path / "eight", 10)
    make_folder(eight, 3, "test", start=100)
    wide = save_folder_like(eight, tmp_path / "wide", widened)
    assert Image.open(wide / "train" / "circle" / "000.png").mode == "I;16"
    a = load_dataset("folder", str(eight), image_size=image_size)
    b = load_dataset("folder", str(wide), image_size=image_size)
    assert b.shape == (1, image_size, image_size)  # one channel, as for the 8-bit grey folder
    for name in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert (a.mean, a.std) == (b.mean, b.std)


def test_16_bit_values_keep_their_high_byte(tmp_path):
    values = np.arange(0, 65536, 64, dtype=np.uint16).reshape(32, 32)  # every 16-bit range, 0 to 65472
    for split, names in (("train", ("a", "b")), ("test", ("a", "b"))):
        for name in names:
            (tmp_path / split / name).mkdir(parents=True)
            for i in range(2):
                Image.fromarray(values[::-1] if i else values).save(tmp_path / split / name / f"{i}.png")
    ds = load_dataset("folder", str(tmp_path), image_size=32)
    assert ds.shape == (1, 32, 32)
    assert np.array_equal(ds.train_x[0, 0].numpy(), (values >> 8).astype(np.uint8))
    assert np.array_equal(ds.train_x[1, 0].numpy(), (values[::-1] >> 8).astype(np.uint8))


def grey8(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (12, 12), dtype=np.uint8)


def rgb8(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (12, 12, 3), dtype=np.uint8)


def palette_image(seed: int) -> tuple:
    """(a P image, its pixels as RGB): 16 palette colours."""
    rng = np.random.default_rng(seed)
    palette = rng.integers(0, 256, (16, 3), dtype=np.uint8)
    index = rng.integers(0, 16, (12, 12), dtype=np.uint8)
    img = Image.fromarray(index, "P")
    img.putpalette(palette.flatten().tolist())
    return img, palette[index]


# mode: (an image of that mode and its file suffix, the pixels expected: H×W grey or H×W×3 RGB)
MODES = {
    "1": lambda s: ((Image.fromarray(grey8(s) > 127), ".png"), np.where(grey8(s) > 127, 255, 0)),
    "L": lambda s: ((Image.fromarray(grey8(s)), ".png"), grey8(s)),
    "LA": lambda s: ((Image.fromarray(np.stack([grey8(s), grey8(s + 9)], -1), "LA"), ".png"), grey8(s)),
    "I;16": lambda s: ((Image.fromarray(grey8(s).astype(np.uint16) * 257), ".png"), grey8(s)),
    "I": lambda s: ((Image.fromarray(grey8(s).astype(np.int32) * 256 + 200), ".tif"), grey8(s)),  # >> 8, not / 257
    "P": lambda s: ((palette_image(s)[0], ".png"), palette_image(s)[1]),
    "CMYK": lambda s: ((Image.fromarray(rgb8(s)).convert("CMYK"), ".tif"), rgb8(s)),
    "RGBA": lambda s: ((Image.fromarray(np.dstack([rgb8(s), grey8(s + 9)]), "RGBA"), ".png"), rgb8(s)),
    "RGB": lambda s: ((Image.fromarray(rgb8(s)), ".png"), rgb8(s)),
}


@pytest.mark.parametrize("mode", MODES)
def test_every_image_mode_comes_out_as_grey_or_rgb_with_its_pixels(tmp_path, mode):
    expected = {}
    for split, count in (("train", 3), ("test", 1)):
        for name in ("a", "b"):
            (tmp_path / split / name).mkdir(parents=True)
            for i in range(count):
                seed = len(expected)
                (image, suffix), expected[seed] = MODES[mode](seed)
                image.save(tmp_path / split / name / f"{seed:02d}{suffix}")
                assert Image.open(tmp_path / split / name / f"{seed:02d}{suffix}").mode == mode
    ds = load_dataset("folder", str(tmp_path), image_size=12)
    grey = expected[0].ndim == 2
    assert ds.shape == ((1, 12, 12) if grey else (3, 12, 12))
    got = torch.cat([ds.train_x, ds.test_x]).numpy()
    want = np.stack([expected[s] for s in sorted(expected)]).astype(np.uint8)
    assert np.array_equal(got, want[:, None] if grey else want.transpose(0, 3, 1, 2))


@pytest.mark.parametrize("image, words", [
    (Image.fromarray(grey8().astype(np.float32) / 255), "PIL mode F"),
    (Image.fromarray(grey8().astype(np.int32) * 1000), "PIL mode I"),
    (Image.fromarray(grey8().astype(np.int32) - 100), "PIL mode I"),
], ids=["float", "int32-above-65535", "int32-negative"])
def test_images_without_a_fixed_range_are_refused_naming_the_file(tmp_path, cli, image, words):
    make_folder(tmp_path, 10)
    image.save(tmp_path / "train" / "cross" / "odd.tif")
    expect_refusal(cli, tmp_path, "1 of 31 image files", "train/cross/odd.tif (", words, "8 or 16 bits")


# --- links: each folder and file read once, never in train and test both ----------------------------

def warnings_while(load) -> tuple:
    """(what ``load()`` returns, the ProjectLogger warnings it logged)."""
    messages = []
    handler = logging.Handler()
    handler.emit = messages.append
    logging.getLogger("ProjectLogger").addHandler(handler)
    try:
        result = load()
    finally:
        logging.getLogger("ProjectLogger").removeHandler(handler)
    return result, [m.getMessage() for m in messages if m.levelname == "WARNING"]


def test_link_loops_are_read_once_with_one_warning_each(tmp_path):
    clean = load_dataset("folder", str(make_folder(tmp_path / "clean", 30)), image_size=20)
    looped = make_folder(tmp_path / "looped", 30)
    (looped / "train" / "circle" / "loop").symlink_to(".")  # the audit's case: 30 files became 1,230
    (looped / "train" / "circle" / "again").symlink_to(".")  # two loops: without a limit, memory ran out
    (looped / "train" / "cross" / "up").symlink_to("..")  # train/ itself: every class again, in cross
    (looped / "train" / "square" / "deep").mkdir()
    (looped / "train" / "square" / "deep" / "home").symlink_to(looped)  # the whole folder
    ds, warned = warnings_while(lambda: load_dataset("folder", str(looped), image_size=20))
    for name in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(ds, name), getattr(clean, name)), name  # so no test image is in train
    assert len(warned) == 4, warned
    for link in ("train/circle/loop", "train/circle/again", "train/cross/up", "train/square/deep/home"):
        [line] = [w for w in warned if f"{link}:" in w]
        assert "\n" not in line and "read already" in line


def test_a_file_reached_twice_is_counted_once_and_never_in_both_train_and_test(tmp_path):
    root = make_folder(tmp_path, 10)
    make_folder(root, 4, "test", start=100)
    (root / "train" / "square" / "copy.png").symlink_to("000.png")  # within a class
    (root / "train" / "circle" / "test-folder").symlink_to(root / "test" / "circle")  # a class of test/
    (root / "train" / "cross" / "x.png").symlink_to(root / "test" / "cross" / "100.png")  # one test image
    (root / "unlabeled").mkdir()
    (root / "unlabeled" / "u.png").symlink_to(root / "train" / "circle" / "001.png")
    Image.fromarray(pattern(0, 999)).save(root / "unlabeled" / "new.png")
    ds, warned = warnings_while(lambda: load_dataset("folder", str(root), image_size=20))
    assert ds.train_y.bincount().tolist() == [10, 11, 10]  # x.png joins cross; copy.png is 000.png
    assert ds.test_y.bincount().tolist() == [4, 3, 4]  # cross/100.png is in train already
    assert ds.unlabeled_x.shape[0] == 1  # u.png is train/circle/001.png
    train = {x.numpy().tobytes() for x in ds.train_x}
    assert not [x for x in ds.test_x if x.numpy().tobytes() in train]
    assert len(warned) == 2, warned
    [folder_line] = [w for w in warned if "train/circle/test-folder:" in w]
    [files_line] = [w for w in warned if "image files" in w]
    assert "3 image files" in files_line and "train/square/copy.png" in files_line, files_line


def test_a_run_on_a_folder_with_a_link_loop_warns_once_on_stderr(tmp_path):
    make_folder(tmp_path / "shapes", 20, size=28)
    (tmp_path / "shapes" / "train" / "circle" / "loop").symlink_to(".")
    proc = run_process("--dataset", "folder", "--data_dir", tmp_path / "shapes", "--image_size", "28",
                       "--n_init_labeled", "6", "--n_query", "3", "--n_round", "1", "--num_valid", "6",
                       "--epochs", "1", "--min_steps", "5", "--no-wandb", "--threads", "1",
                       "--output_dir", tmp_path / "runs", timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "circle/loop" in line]
    assert len(lines) == 1 and "WARNING" in lines[0] and "train/circle/loop" in lines[0], proc.stderr
    [run] = [Run(p) for p in run_dirs(tmp_path / "runs")]
    assert run.config["dataset"] == "folder" and len(run.rounds) == 2


# --- end to end ------------------------------------------------------------------------------------

def test_a_study_on_own_images_learns(tmp_path, cli):
    make_folder(tmp_path / "shapes", 40, size=24)
    rc, out, err, runs = cli("--dataset", "folder", "--data_dir", tmp_path / "shapes", "--image_size", "28",
                             "--n_init_labeled", "9", "--n_query", "6", "--n_round", "2", "--num_valid", "15",
                             "--epochs", "2", "--min_steps", "60", "--no-wandb", "--threads", "1",
                             "--strategy", "entropy", "--mc_samples", "1")
    assert rc == 0, err
    (run,) = runs
    assert run.config["dataset"] == "folder" and run.config["image_size"] == 28
    assert len(run.rounds) == 3 and run.rounds["n_labeled"].tolist() == [9, 15, 21]
    assert run.rounds["test_acc"].iloc[-1] >= 0.7  # chance is 1/3


def test_sweep_checks_budgets_against_the_folder_as_its_cells_will_load_it(tmp_path):
    make_folder(tmp_path, 20)  # 60 images
    assert _dataset_size("folder", str(tmp_path), True, image_size=20, test_fraction=0.2) == (48, 3)
    assert _dataset_size("folder", str(tmp_path), True, image_size=20, test_fraction=0.5) == (30, 3)


def test_a_fifo_or_socket_named_like_an_image_is_skipped_with_a_warning_not_read(tmp_path):
    """A FIFO named fifo.png in train/<class>/ blocked loading forever (and SIGTERM did not stop it)."""
    import os
    import socket
    import threading
    clean = load_dataset("folder", str(make_folder(tmp_path / "clean", 30)), image_size=20)
    odd = make_folder(tmp_path / "odd", 30)
    os.mkfifo(odd / "train" / "circle" / "fifo.png")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(odd / "train" / "cross" / "sock.jpg"))
    result = {}

    def load():
        result["ds"], result["warned"] = warnings_while(lambda: load_dataset("folder", str(odd), image_size=20))
    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    loader.join(timeout=60)
    sock.close()
    if loader.is_alive():  # blocked in open(): a writer that comes and goes lets it end (no hang at exit)
        os.close(os.open(odd / "train" / "circle" / "fifo.png", os.O_WRONLY | os.O_NONBLOCK))
    assert not loader.is_alive(), "loading blocked on the FIFO"
    for name in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(result["ds"], name), getattr(clean, name)), name
    assert sorted(w for w in result["warned"] if "not a regular file" in w) == [
        "dataset 'folder': skipped train/circle/fifo.png: not a regular file (a FIFO, socket or device)",
        "dataset 'folder': skipped train/cross/sock.jpg: not a regular file (a FIFO, socket or device)"]


def test_a_resume_on_changed_data_is_refused_naming_what_changed(tmp_path):
    """Image contents swapped between two classes after a run: --resume refused in one line (issue 27,
    defect 12); the unchanged data resume; config.json's flags stay flags (the fingerprint beside them)."""
    import json
    import shutil

    import main
    from results import read_config
    data, out = make_folder(tmp_path / "images", 12), tmp_path / "runs"
    make_folder(data, 4, "test", start=100)
    argv = ["--dataset", "folder", "--data_dir", str(data), "--image_size", "28", "--num_valid", "6",
            "--n_init_labeled", "6", "--n_query", "3", "--n_round", "1", "--epochs", "1", "--min_steps", "3",
            "--no-wandb", "--threads", "1", "--output_dir", str(out)]
    assert main.main(argv) == 0
    [run] = run_dirs(out)
    saved = json.loads((run / "config.json").read_text())
    assert set(saved["dataset_fingerprint"]) == {"train images", "train labels", "test images", "test labels",
                                                 "file names"}
    assert "dataset_fingerprint" not in read_config(run)
    assert main.main(["--resume", str(run)]) == 0  # the same data: complete, nothing to do
    a, b = data / "train" / "circle" / "000.png", data / "train" / "cross" / "000.png"
    shutil.copyfile(a, tmp_path / "a.png")
    shutil.copyfile(b, a)
    shutil.copyfile(tmp_path / "a.png", b)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    proc = run_process("--resume", run)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "the dataset changed since the run started (train images differ)" in proc.stderr
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
