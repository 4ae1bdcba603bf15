"""Self-supervised features of the training images, for the strategies that choose from embeddings.

With ``--embedding self_supervised``, typiclust, coreset and probcover read each image's features from a
small convolutional encoder trained once, without labels, on every training image as the run sees it (its
input noise included), instead of the classifier's penultimate layer learned from 20-100 labels. The
encoder learns by contrast (SimCLR, Chen et al. 2020, arXiv 2002.05709): two random views of an image
(shifts, a small rotation, contrast and brightness, a cut-out square) are pulled together and away from
the other images of the batch (NT-Xent). Its features depend on the images, the seed and ``SSLSpec``
only, so they are cached under ``--embedding_cache`` by a key of those: every strategy and every resume of
that (dataset, noise, seed) reads the same file instead of training again.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from augment import rotate_images, shift_images
from models import init_weights
from results import OutputError, atomic_write_bytes
from rng import torch_generator

SSL_VERSION = 2  # part of the cache key: a change of the encoder or its training invalidates old files


@dataclass(frozen=True)
class SSLSpec:
    """What the features depend on besides the images and the seed."""

    epochs: int = 30
    batch: int = 256
    dim: int = 128  # the encoder's feature size (the projection head's input)
    temperature: float = 0.5
    lr: float = 1e-3
    shift: int = 3
    degrees: float = 15.0


class Encoder(nn.Module):
    """Three conv-BatchNorm-ReLU blocks and a global average: ``dim`` features; the projection head (used
    only by the contrastive loss) is a two-layer MLP to 64."""

    def __init__(self, channels: int, dim: int):
        super().__init__()
        widths = (32, 64, dim)
        layers, c = [], channels
        for i, w in enumerate(widths):
            layers += [nn.Conv2d(c, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            c = w
        self.trunk = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(inplace=True), nn.Linear(dim, 64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x)


def view(x_B: torch.Tensor, spec: SSLSpec, generator: torch.Generator) -> torch.Tensor:
    """A random view of each (normalised) image: shift, rotation, contrast and brightness, a cut-out."""
    b, _, h, w = x_B.shape
    dev = x_B.device
    offsets = torch.randint(-spec.shift, spec.shift + 1, (b, 2), generator=generator, device=dev)
    out = shift_images(x_B, offsets, spec.shift)
    angles = (torch.rand(b, generator=generator, device=dev) * 2 - 1) * math.radians(spec.degrees)
    out = rotate_images(out, angles)
    contrast = 0.7 + 0.6 * torch.rand(b, 1, 1, 1, generator=generator, device=dev)
    brightness = 0.6 * torch.rand(b, 1, 1, 1, generator=generator, device=dev) - 0.3
    out = out * contrast + brightness
    side = max(1, h // 4)
    top = torch.randint(0, h - side + 1, (b,), generator=generator, device=dev)
    left = torch.randint(0, w - side + 1, (b,), generator=generator, device=dev)
    rows = torch.arange(h, device=dev)[None, :, None]
    cols = torch.arange(w, device=dev)[None, None, :]
    hole = ((rows >= top[:, None, None]) & (rows < top[:, None, None] + side)
            & (cols >= left[:, None, None]) & (cols < left[:, None, None] + side))
    keep = torch.rand(b, generator=generator, device=dev) < 0.5  # half the views get a cut-out
    return out.masked_fill((hole & keep[:, None, None])[:, None], 0.0)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's loss: each view's partner is its positive among the 2B − 1 other views of the batch."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.T / temperature
    sim.fill_diagonal_(float("-inf"))
    b = z1.shape[0]
    target = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)]).to(z.device)
    return F.cross_entropy(sim, target)


def train_encoder(images, idx: torch.Tensor, spec: SSLSpec, seed: int) -> Encoder:
    """An Encoder trained on images[idx] for spec.epochs, every draw from the run's seed."""
    device = idx.device
    torch_init = torch_generator(seed, "ssl", "weights")
    enc = Encoder(images.x.shape[1], spec.dim)
    init_weights(enc, torch_init)  # from the seed alone, as every classifier's weights
    enc = enc.to(device)
    opt = torch.optim.Adam(enc.parameters(), lr=spec.lr)
    order_gen = torch_generator(seed, "ssl", "order")
    view_gen = torch_generator(seed, "ssl", "views", device=device)
    enc.train()
    n = idx.numel()
    batch = min(spec.batch, n)
    for _ in range(spec.epochs):
        order = torch.randperm(n, generator=order_gen).to(device)
        for start in range(0, n - batch + 1, batch):  # whole batches: every view has 2B − 2 negatives
            x = images.batch(idx[order[start:start + batch]])
            z1, z2 = enc.head(enc(view(x, spec, view_gen))), enc.head(enc(view(x, spec, view_gen)))
            loss = nt_xent(z1, z2, spec.temperature)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return enc.eval()


@torch.inference_mode()
def encode(enc: Encoder, images, idx: torch.Tensor, chunk: int = 512) -> torch.Tensor:
    """N × dim features of images[idx] (eval mode), on the CPU."""
    return torch.cat([enc(images.batch(idx[s:s + chunk])).float().cpu() for s in range(0, idx.numel(), chunk)])


def cache_key(images, seed: int, spec: SSLSpec) -> dict:
    """What the features depend on: the images' exact values (the dataset and its input noise), the seed,
    the encoder's settings and SSL_VERSION."""
    pixels = hashlib.sha256(images.x.contiguous().cpu().numpy().tobytes()).hexdigest()
    return {"version": SSL_VERSION, "images": pixels, "shape": list(images.x.shape), "seed": seed, **asdict(spec)}


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/active-learning/embeddings (~/.cache/… by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "active-learning" / "embeddings"


def self_supervised_features(images, seed: int, spec: SSLSpec, cache_dir: Path, log=None) -> torch.Tensor:
    """Features of every image in ``images`` (N × dim, CPU float32): read from the cache when a file there
    has this key and sane contents, else trained now and written there (atomically). A cache file is data
    read from disk: a wrong key, shape or a non-finite value means it is not used (and is replaced)."""
    key = cache_key(images, seed, spec)
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    path = Path(cache_dir) / f"ssl_{name}.pt"
    n = images.x.shape[0]
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        feats = saved["features"] if isinstance(saved, dict) and saved.get("key") == key else None
        if isinstance(feats, torch.Tensor) and feats.shape == (n, spec.dim) and feats.dtype == torch.float32 \
                and bool(torch.isfinite(feats).all()):
            return feats
    except Exception:  # noqa: BLE001 - any file that cannot be read as ours (torch raises many kinds) is not used
        pass
    if log:
        log.info("self-supervised features: training the encoder (%d epochs over %d images; cached in %s)",
                 spec.epochs, n, path.parent)
    all_idx = torch.arange(n, device=images.x.device)
    enc = train_encoder(images, all_idx, spec, seed)
    feats = encode(enc, images, all_idx)
    buffer = io.BytesIO()
    torch.save({"key": key, "features": feats}, buffer)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, buffer.getvalue())
    except (OSError, OutputError) as err:  # no cache: the run goes on, the next one trains again
        if log:
            log.warning("self-supervised features not cached (%s)", err)
    return feats
