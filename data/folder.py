"""``--dataset folder``: the user's own images in an ImageFolder layout, read once into uint8 tensors.

    PATH/train/<class>/<image files>     required; class names are the sorted subfolder names
    PATH/test/<class>/<image files>      optional; the same class folders as train/
    PATH/unlabeled/<image files>         optional, any subfolders: images without labels, which only a
                                         person can label (--oracle human adds them to the pool)

Without test/, a stratified ``test_fraction`` of train is held out with the fixed FOLDER_SPLIT_SEED, so
that every run of a study (every seed, every strategy) tests on the same images; the run's seed then
only draws validation, pool and initial set, as for the other datasets.

Every image is decoded with PIL once, at load time, resized to image_size × image_size (aspect ratio
not kept, bilinear), and stacked N×C×H×W uint8: one channel when every image is grey (PIL modes 1, L,
LA, and 16-bit grey, I;16 and I, brought to 8 bits first), else RGB (alpha dropped; palette, CMYK and
the other colour modes through PIL's conversion). Floating-point images (F), and 32-bit ones with values
outside 16 bits, have no fixed range to map to 8 bits: they are refused, each file named. Files whose
extension is not an image extension of torchvision's ImageFolder, and hidden files and folders (names
starting with "."), are ignored.

Links are followed, but each folder and each file is read once, by what it is on disk (its device and
inode): a link back into a folder being read (a loop), or to a folder or file read elsewhere, is skipped
with a warning. The first path counts, in the order train/, test/, unlabeled/, classes and names
sorted; so no file is in two classes, or in both train and test.
"""
from __future__ import annotations

import logging
import os
import stat
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from data.base import DataUnavailable, Dataset, torchvision_datasets
from data.splits import stratified_draw

FOLDER_SPLIT_SEED = 0  # a fixed split, like an official one: every run tests on the same images
GREY_MODES = ("1", "L", "LA")
# 16 bits a pixel of grey. PIL opens 16-bit PNGs and TIFFs as I;16 (B: big-endian); I is 32-bit signed,
# what some versions and formats use for the same 16-bit data.
WIDE_GREY_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
LAYOUT = "PATH/train/<class>/<images> (and optionally PATH/test/<class>/<images>)"
UNLABELED = "unlabeled"  # PATH/unlabeled/: images without labels (--oracle human)
SHOWN_UNREADABLE = 3  # unreadable files named in the error; the count says how many in all
SHOWN_REPEATED = 3  # files reached again named in the warning


def _fail(message: str) -> DataUnavailable:
    return DataUnavailable(f"dataset 'folder': {message}")


def class_names(split_dir: str) -> list:
    """Sorted names of the visible subfolders of ``split_dir``."""
    with os.scandir(split_dir) as entries:
        return sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))


class ReadOnce:
    """The folders and files of one dataset by what they are on disk, (st_dev, st_ino) after links.

    Links may lead back into a folder being read (a loop: without a limit, one link to "." repeats a
    class 40 times over, until the path is too long, and two double the paths at every level) or to a
    folder or file read elsewhere. The first path to each counts; later ones are skipped.
    """

    def __init__(self, root: str, folders: list):
        self.root = root
        self.folders: dict = {}  # (st_dev, st_ino) -> the path it was first reached by
        self.files: dict = {}
        self.repeated_files: list = []  # (path, the first path to the same file)
        for folder in folders:  # read already, in effect: they are walked from the top, never through a link
            self._first(self.folders, folder)

    def new_folder(self, path: str) -> bool:
        """Whether the folder ``path`` leads to is not read yet (a warning names it when it is)."""
        first = self._first(self.folders, path)
        if first is not None:
            logging.getLogger("ProjectLogger").warning(
                "dataset 'folder': skipped %s: the folder it leads to is read already (as %s)",
                self.rel(path), self.rel(first))
        return first is None

    def new_file(self, path: str) -> bool:
        """Whether the file ``path`` leads to is not read yet (else it is kept for warn_repeated_files)."""
        first = self._first(self.files, path)
        if first is not None:
            self.repeated_files.append((path, first))
        return first is None

    def warn_repeated_files(self) -> None:
        """One warning line for the files reached by more than one path, the first few named."""
        n = len(self.repeated_files)
        if not n:
            return
        shown = ", ".join(f"{self.rel(path)} (as {self.rel(first)})"
                          for path, first in self.repeated_files[:SHOWN_REPEATED])
        more = f"; and {n - SHOWN_REPEATED} more" if n > SHOWN_REPEATED else ""
        logging.getLogger("ProjectLogger").warning(
            "dataset 'folder': %d image %s reached by more than one path, read once: %s%s",
            n, "file is" if n == 1 else "files are", shown, more)

    @staticmethod
    def _first(seen: dict, path: str) -> str | None:
        """None when ``path`` is the first way to what it leads to (now recorded), else that first path."""
        try:
            st = os.stat(path)
        except OSError:  # nothing there (a broken link): never a repeat; reading it names the file
            return None
        first = seen.setdefault((st.st_dev, st.st_ino), path)
        return None if first == path else first

    def rel(self, path: str) -> str:
        return os.path.relpath(path, self.root)


def image_files(top: str, once: ReadOnce) -> list:
    """Image files under ``top`` (subfolders included, links followed, each folder and file once), sorted."""
    tv_folder, found = torchvision_datasets().folder, []  # ImageFolder's rule for which files are images
    for folder, dirs, files in os.walk(top, followlinks=True):
        # Sorted, so that which of two paths to one folder or file counts does not depend on the disk.
        dirs[:] = [d for d in sorted(dirs) if not d.startswith(".") and once.new_folder(os.path.join(folder, d))]
        found += [os.path.join(folder, f) for f in sorted(files)
                  if not f.startswith(".") and tv_folder.has_file_allowed_extension(f, tv_folder.IMG_EXTENSIONS)
                  and regular_file(os.path.join(folder, f), once) and once.new_file(os.path.join(folder, f))]
    return sorted(found)


def regular_file(path: str, once: ReadOnce) -> bool:
    """Whether ``path`` (after links) is a regular file; a FIFO, socket or device named like an image would
    block or never end when read: it is skipped, with a warning naming it. A broken link counts (reading it
    names the file)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return True
    if stat.S_ISREG(mode):
        return True
    logging.getLogger("ProjectLogger").warning("dataset 'folder': skipped %s: not a regular file (a FIFO, socket "
                                               "or device)", once.rel(path))
    return False


def list_split(root: str, split: str, once: ReadOnce, classes: list | None = None) -> tuple:
    """(class names, [(path, label)]) of root/split; DataUnavailable for no images, one class, empty classes."""
    split_dir = os.path.join(root, split)
    names = class_names(split_dir)
    if classes is not None and names != classes:
        only_train, only_test = sorted(set(classes) - set(names)), sorted(set(names) - set(classes))
        raise _fail(f"{split_dir} must hold the same class folders as {os.path.join(root, 'train')}: "
                    f"only in train/: {', '.join(only_train) or '-'}; only in {split}/: {', '.join(only_test) or '-'}")
    if not names:
        raise _fail(f"{split_dir} has no class folders; expected {LAYOUT}")
    files = {name: image_files(os.path.join(split_dir, name), once) for name in names}
    if not any(files.values()):
        extensions = ", ".join(torchvision_datasets().folder.IMG_EXTENSIONS)
        raise _fail(f"no images in {split_dir}/<class>/ (looked for {extensions})")
    if classes is None and len(names) == 1:
        raise _fail(f"{split_dir} has only one class ({names[0]!r}); classification needs at least 2 class folders")
    empty = [name for name in names if not files[name]]
    if empty:
        shown = ", ".join(repr(n) for n in empty)
        raise _fail(f"class {shown} in {split_dir} has no images" if len(empty) == 1
                    else f"classes {shown} in {split_dir} have no images")
    return names, [(path, label) for label, name in enumerate(names) for path in files[name]]


class Refused(ValueError):
    """An image PIL reads, in a mode with no fixed range to map to 8 bits (the reason names the mode)."""


def eight_bits(img: Image.Image) -> Image.Image:
    """``img`` as 8-bit grey (mode L) or RGB; Refused for floating-point or out-of-range 32-bit pixels.

    16-bit grey keeps its high byte (value >> 8): every 8-bit value stands for 256 consecutive 16-bit
    ones (rounding value / 257 gives 0 and 255 half as many), it is exact integer arithmetic, and an
    8-bit image widened the usual way (v × 257, as PNG and PIL widen) comes back as the very same pixels.
    The scale is fixed, not stretched per image, so one value means one grey in every image.
    """
    if img.mode in GREY_MODES:
        return img.convert("L")
    if img.mode in WIDE_GREY_MODES:
        values = np.asarray(img).astype(np.int64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise Refused(f"PIL mode {img.mode}: 32-bit pixels from {values.min()} to {values.max()}, beyond 16 "
                          f"bits, have no fixed range to map to 8 bits, save the image with 8 or 16 bits a channel")
        return Image.fromarray((values >> 8).astype(np.uint8), "L")
    if img.mode == "F":
        raise Refused("PIL mode F: floating-point pixels have no fixed range to map to 8 bits, "
                      "save the image with 8 or 16 bits a channel")
    return img.convert("RGB")


def read_image(path: str, size: int) -> tuple:
    """(uint8 array H×W (grey) or H×W×3, None) resized to size × size, or (None, reason) when unreadable."""
    try:
        with Image.open(path) as img:
            img.load()
            img = eight_bits(img).resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(img, dtype=np.uint8), None
    except UnidentifiedImageError:
        return None, "not an image PIL can read"
    except Refused as err:
        return None, str(err)
    except Exception as err:  # PIL raises OSError (truncated), ValueError, SyntaxError, DecompressionBombError…
        text = (str(err).splitlines() or [""])[0].replace(repr(path), "").replace(path, "").strip(" :")
        return None, f"{type(err).__name__}: {text}" if text else type(err).__name__


def read_images(root: str, paths: list, size: int) -> np.ndarray:
    """Every image of ``paths`` as one uint8 N×C×size×size array; DataUnavailable names unreadable ones."""
    workers = max(1, min(8, len(os.sched_getaffinity(0))))
    with ThreadPoolExecutor(workers) as pool, \
            tqdm(total=len(paths), desc="reading images", unit="img", disable=not sys.stderr.isatty()) as bar:
        results = []
        for result in pool.map(lambda p: read_image(p, size), paths):
            results.append(result)
            bar.update()
    bad = [(path, why) for path, (_, why) in zip(paths, results) if why is not None]
    if bad:
        shown = "; ".join(f"{os.path.relpath(p, root)} ({why})" for p, why in bad[:SHOWN_UNREADABLE])
        more = f"; and {len(bad) - SHOWN_UNREADABLE} more" if len(bad) > SHOWN_UNREADABLE else ""
        raise _fail(f"{len(bad)} of {len(paths)} image files in {root} cannot be read: {shown}{more}; "
                    f"remove or replace them")
    arrays = [a for a, _ in results]
    if all(a.ndim == 2 for a in arrays):
        return np.stack(arrays)[:, None]
    # Some image is in colour: grey ones get their value in all three channels (as PIL's L → RGB).
    return np.stack([np.repeat(a[:, :, None], 3, axis=2) if a.ndim == 2 else a for a in arrays]).transpose(0, 3, 1, 2)


def channel_stats(x: torch.Tensor) -> tuple:
    """(mean, std) per channel of pixel/255 over all of ``x`` (N×C×H×W uint8), from exact value counts."""
    values = np.arange(256, dtype=np.float64) / 255
    means, stds = [], []
    for c in range(x.shape[1]):
        counts = np.bincount(x[:, c].numpy().ravel(), minlength=256).astype(np.float64)
        mean = float(counts @ values / counts.sum())
        std = float(np.sqrt(counts @ (values - mean) ** 2 / counts.sum()))
        means.append(mean)
        stds.append(std if std > 0 else 1.0)  # constant images: normalising only shifts them
    return tuple(means), tuple(stds)


def held_out_split(y: np.ndarray, test_fraction: float, classes: list, where: str) -> tuple:
    """Sorted (train, test) positions: a stratified test_fraction with the fixed FOLDER_SPLIT_SEED."""
    counts = np.bincount(y, minlength=len(classes))
    n_test = int(np.ceil(test_fraction * len(y)))  # as scikit-learn rounds a fractional test size
    if counts.min() < 2 or n_test < len(classes) or len(y) - n_test < len(classes):
        small = classes[int(counts.argmin())]
        raise _fail(f"{where} has too few images to hold out a stratified --test_fraction {test_fraction:g} "
                    f"({len(y)} images, {n_test} for test, class {small!r} has {counts.min()}): every class "
                    f"needs images on both sides; add images, change --test_fraction, or provide a test/ folder")
    # n_test, not the fraction: scikit-learn turns a fraction into this very count (ceil), so the split
    # is the one a fraction gives.
    train_i, test_i = stratified_draw(y, n_test, FOLDER_SPLIT_SEED)
    return train_i.numpy(), test_i.numpy()


def list_folder(root: str) -> tuple:
    """(classes, train [(path, label)], test [(path, label)], unlabeled paths) of root, each file once."""
    splits = ["train", "test"] if os.path.isdir(os.path.join(root, "test")) else ["train"]
    # The layout's own folders come first: a link to one of them, from anywhere inside, is not followed.
    layout = [root, *(os.path.join(root, d) for d in (*splits, UNLABELED))]
    layout += [os.path.join(root, s, c) for s in splits for c in class_names(os.path.join(root, s))]
    once = ReadOnce(root, layout)
    classes, train_items = list_split(root, "train", once)
    test_items = list_split(root, "test", once, classes)[1] if "test" in splits else []
    unlabeled_dir = os.path.join(root, UNLABELED)
    unlabeled = image_files(unlabeled_dir, once) if os.path.isdir(unlabeled_dir) else []
    once.warn_repeated_files()
    return classes, train_items, test_items, unlabeled


def load_image_folder(data_dir: str, image_size: int = 32, test_fraction: float = 0.2) -> Dataset:
    """The images in ``data_dir`` (see the module's docstring) as a Dataset."""
    root = os.path.abspath(data_dir)
    if not os.path.isdir(root):
        raise _fail(f"--data_dir {root} does not exist; expected {LAYOUT}")
    if not os.path.isdir(os.path.join(root, "train")):
        raise _fail(f"{root} has no train/ folder; expected {LAYOUT}")
    classes, train_items, test_items, unlabeled = list_folder(root)
    items = train_items + test_items
    # Read together, so that one colour image anywhere makes every image RGB.
    x = torch.from_numpy(np.ascontiguousarray(read_images(root, [p for p, _ in items] + unlabeled, image_size)))
    x, unlabeled_x = x[:len(items)], x[len(items):].contiguous()
    y = torch.tensor([label for _, label in items], dtype=torch.int64)
    if test_items:
        train_i, test_i = torch.arange(len(train_items)), torch.arange(len(train_items), len(items))
    else:
        train_i, test_i = map(torch.as_tensor, held_out_split(y.numpy(), test_fraction, classes,
                                                               os.path.join(root, "train")))
    train_x, test_x = x[train_i].contiguous(), x[test_i].contiguous()
    mean, std = channel_stats(train_x)
    files = tuple(os.path.relpath(items[i][0], root) for i in train_i.tolist())
    return Dataset("folder", train_x, y[train_i], test_x, y[test_i], len(classes), mean, std,
                   classes=tuple(classes), unlabeled_x=unlabeled_x if unlabeled else None, root=root, files=files,
                   unlabeled_files=tuple(os.path.relpath(p, root) for p in unlabeled) if unlabeled else None)
