"""Seeded random streams: every random draw in a run takes a generator derived here from the run's seed.

A stream is named by the run seed plus labels, e.g. ``("weights", round)``. Named streams keep draws
independent of each other and of call order: the validation split does not change when the strategy
does, and a round's generators can be rebuilt from (seed, round) alone, which is what resume needs.
"""
from __future__ import annotations

import hashlib

import numpy as np
import torch


def derive_seed(seed: int, *stream) -> int:
    """A 63-bit seed for the named stream of a run seed (stable across Python processes)."""
    text = repr((int(seed),) + tuple(stream)).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") >> 1


def torch_generator(seed: int, *stream, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch.Generator on ``device`` seeded for the named stream."""
    gen = torch.Generator(device=device)
    gen.manual_seed(derive_seed(seed, *stream))
    return gen


def numpy_rng(seed: int, *stream) -> np.random.RandomState:
    """A numpy RandomState (what scikit-learn's random_state takes) for the named stream."""
    return np.random.RandomState(derive_seed(seed, *stream) % (2**32))
