"""What every dataset module shares: the Dataset in memory, a registry entry (DatasetSpec), DataUnavailable."""
from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from typing import Callable

import torch


def torchvision_datasets():
    """``torchvision.datasets``, imported on first use."""
    # Imported here on purpose: importing torchvision costs about 1.5 s of CPU in every process (its
    # models and ops pull in torch._dynamo), and mnist_5k with LeNet or the CNNs never needs it.
    import torchvision.datasets
    return torchvision.datasets


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
    # ``folder`` only: the files the images were read from, relative to ``root`` (the --data_dir): ``files``
    # by row of train_x, ``unlabeled_files`` by row of unlabeled_x (labels.csv, --export_to, the page).
    root: str | None = None
    files: tuple | None = None
    unlabeled_files: tuple | None = None

    @property
    def shape(self) -> tuple:
        """(channels, height, width) of one image."""
        return tuple(self.train_x.shape[1:])

    @functools.cached_property
    def fingerprint(self) -> dict:
        """A digest of each part of the data a run depends on (pixels, labels, file names): recorded when a
        run starts, so that a resume on changed data is refused, naming the part that changed. Computed once
        per loaded dataset (an experiment's seeds share it)."""
        parts = {"train images": self.train_x, "train labels": self.train_y, "test images": self.test_x,
                 "test labels": self.test_y, "unlabeled images": self.unlabeled_x}
        digest = {name: _digest(t.contiguous().numpy().tobytes()) for name, t in parts.items() if t is not None}
        if self.files is not None:
            digest["file names"] = _digest("\n".join(self.files + (self.unlabeled_files or ())).encode())
        return digest


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


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
    flips_keep_class: bool = False  # a left-right mirror image is of the same class (--augment standard)
    # Its labels are a person's own (the user's sorted images): a person is never asked for them again, and
    # only the labels a person gave in the labelling page may be corrected. Else they are the reference.
    own_labels: bool = False
    # Its images are files on disk a run can name and export (labels.csv, --export_to)
    has_files: bool = False
    # Its files ship inside a Python package: a damaged copy is fixed by reinstalling this (None: not so)
    package: str | None = None
