"""Input noise as pure seeded functions on normalised images.

Units: images are first normalised per channel, x = (pixel/255 - mean_c) / std_c, and noise acts on x.

* ``gaussian``: x + sigma * e with e ~ N(0, 1) drawn independently per value (pixel and channel);
  sigma = ``--noise_std`` (default 1, i.e. one dataset standard deviation). Values are not clipped.
* ``salt_and_pepper``: round(``--sp_fraction`` × H × W) distinct pixel positions of the image are
  replaced, in every channel, by the image's minimum (pepper) or maximum (salt) normalised value,
  each with probability 1/2. The minimum and maximum are over the whole clean image.

``noise_rate`` is the fraction of images affected: exactly round(rate × N) of them, chosen with the
generator. Each affected image's noise is drawn once; callers store the result, so the noise is fixed
for the whole run.
"""
from __future__ import annotations

import torch

from config import NOISES as NOISE_KINDS  # declared once, with the --noise flag


def choose_affected(n: int, rate: float, generator: torch.Generator) -> torch.Tensor:
    """Sorted indices of the round(rate × n) images that get noise."""
    k = int(round(rate * n))
    return torch.randperm(n, generator=generator)[:k].sort().values


def gaussian(x_N_C_H_W: torch.Tensor, std: float, generator: torch.Generator) -> torch.Tensor:
    """Additive N(0, std²) noise on every value."""
    e = torch.randn(x_N_C_H_W.shape, generator=generator, dtype=x_N_C_H_W.dtype)
    return x_N_C_H_W + std * e.to(x_N_C_H_W.device)


def salt_and_pepper(x_N_C_H_W: torch.Tensor, fraction: float, generator: torch.Generator) -> torch.Tensor:
    """Set round(fraction × H × W) pixel positions per image to its min or max (½ each)."""
    n, c, h, w = x_N_C_H_W.shape
    k = int(round(fraction * h * w))
    flat = x_N_C_H_W.reshape(n, c, h * w).clone()
    if n == 0 or k == 0:
        return flat.view(n, c, h, w)
    # k distinct positions per image: the k smallest of i.i.d. uniforms are a uniform k-subset.
    positions_N_k = torch.rand(n, h * w, generator=generator).topk(k, dim=1, largest=False).indices
    positions_N_k = positions_N_k.to(flat.device)
    salt_N_k = (torch.rand(n, k, generator=generator) < 0.5).to(flat.device)
    low_N = flat.amin(dim=(1, 2))
    high_N = flat.amax(dim=(1, 2))
    value_N_k = torch.where(salt_N_k, high_N[:, None], low_N[:, None])
    flat.scatter_(2, positions_N_k[:, None, :].expand(n, c, k), value_N_k[:, None, :].expand(n, c, k))
    return flat.view(n, c, h, w)


def apply_noise(x_N_C_H_W: torch.Tensor, kind: str, rate: float, generator: torch.Generator,
                std: float = 1.0, sp_fraction: float = 0.1) -> tuple:
    """(noisy copy of the images, indices of affected images). ``x`` is normalised float."""
    if kind not in NOISE_KINDS:
        raise ValueError(f"unknown noise {kind!r}; choose one of: {', '.join(NOISE_KINDS)}")
    affected = choose_affected(x_N_C_H_W.shape[0], rate if kind != "none" else 0.0, generator)
    out = x_N_C_H_W.clone()
    if affected.numel():
        chunk = x_N_C_H_W[affected]
        noisy = gaussian(chunk, std, generator) if kind == "gaussian" else \
            salt_and_pepper(chunk, sp_fraction, generator)
        out[affected] = noisy
    return out, affected
