"""Augmentation of the labelled batch while training: pure seeded functions of normalised image tensors.

``--augment shift``: each image moves by a whole number of pixels, up to ``--augment_shift`` in each
direction (zero padding of the raw image, then a crop of the original size); ``shift_rotate`` adds a small
rotation (bilinear, up to ROTATE_DEGREES); ``standard`` adds a horizontal flip of half the images, only for
datasets that declare a flip keeps the class (DatasetSpec.flips_keep_class: not digits). Training only:
the pool's scoring, validation, test and the stop set always see the images as they are.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# What each --augment name applies, in this order
AUGMENTS = {"none": (), "shift": ("shift",), "shift_rotate": ("shift", "rotate"),
            "standard": ("shift", "rotate", "flip")}
ROTATE_DEGREES = 10.0


@dataclass(frozen=True)
class Augmenter:
    """The transforms of one --augment name; ``black_C`` is a raw black pixel after normalisation (what
    padding and rotation fill with: the background of digits, and torchvision's RandomCrop fill)."""

    transforms: tuple
    shift: int
    black_C: tuple

    def __call__(self, x_B: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The batch x_B (B×C×H×W, normalised) with each image's own random transforms; draws from
        ``generator`` (on x_B's device) in a fixed order, so a seed gives the same batches."""
        black = torch.tensor(self.black_C, dtype=x_B.dtype, device=x_B.device).view(1, -1, 1, 1)
        out = x_B - black  # black is 0 here: padding and rotation fill with zeros
        if "shift" in self.transforms and self.shift > 0:
            out = shift_images(out, draw_offsets(out.shape[0], self.shift, generator), self.shift)
        if "rotate" in self.transforms:
            out = rotate_images(out, draw_angles(out.shape[0], ROTATE_DEGREES, generator))
        if "flip" in self.transforms:
            out = flip_images(out, torch.rand(out.shape[0], generator=generator, device=out.device) < 0.5)
        layout = torch.channels_last if x_B.is_contiguous(memory_format=torch.channels_last) else None
        return (out + black).contiguous(memory_format=layout or torch.contiguous_format)


def make_augmenter(name: str, shift: int, mean: tuple, std: tuple) -> Augmenter | None:
    """The Augmenter for --augment ``name`` (None for none) on a dataset normalised with ``mean``, ``std``."""
    if not AUGMENTS[name]:
        return None
    return Augmenter(AUGMENTS[name], shift, tuple(-m / s for m, s in zip(mean, std)))


def draw_offsets(n: int, shift: int, generator: torch.Generator) -> torch.Tensor:
    """n×2 whole-pixel offsets (rows, columns), each uniform in -shift..shift."""
    return torch.randint(-shift, shift + 1, (n, 2), generator=generator, device=generator.device)


def shift_images(x_B: torch.Tensor, offsets_B2: torch.Tensor, pad: int) -> torch.Tensor:
    """Each image moved by its (rows, columns) offset: the crop of the zero-padded image at pad + offset.

    Image b's pixel (i, j) becomes padded[b, :, pad + dy + i, pad + dx + j]: one gather for the batch."""
    b, _, h, w = x_B.shape
    padded = F.pad(x_B, (pad, pad, pad, pad))
    rows = (pad + offsets_B2[:, 0:1] + torch.arange(h, device=x_B.device))  # B×H
    cols = (pad + offsets_B2[:, 1:2] + torch.arange(w, device=x_B.device))  # B×W
    batch = torch.arange(b, device=x_B.device)[:, None, None]
    return padded[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)  # B×H×W×C → B×C×H×W


def draw_angles(n: int, degrees: float, generator: torch.Generator) -> torch.Tensor:
    """n angles in radians, uniform in ±degrees."""
    u = torch.rand(n, generator=generator, device=generator.device)
    return (2 * u - 1) * math.radians(degrees)


def rotate_images(x_B: torch.Tensor, angles_B: torch.Tensor) -> torch.Tensor:
    """Each image rotated about its centre by its angle (bilinear; corners outside fill with 0)."""
    cos, sin = torch.cos(angles_B).to(x_B.dtype), torch.sin(angles_B).to(x_B.dtype)
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)  # B×2×3
    grid = F.affine_grid(theta, list(x_B.shape), align_corners=False)
    return F.grid_sample(x_B, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def flip_images(x_B: torch.Tensor, flip_B: torch.Tensor) -> torch.Tensor:
    """The images where ``flip_B`` is true mirrored left to right, the others as they are."""
    return torch.where(flip_B.view(-1, 1, 1, 1), x_B.flip(-1), x_B)

