"""The simulated oracles: the dataset's labels (CleanOracle) or a seeded annotator who lies (NoisyOracle).

Both have the interface described in ``oracles/__init__.py``; they always answer and need no person.

Label noise (``--label_noise``, ``--label_noise_rate r``):

- Which pool positions lie is fixed per position before any query: exactly ``round(r × pool size)``
  positions are marked, the first ones of a seeded permutation of the pool (stream
  ``(seed, "label_noise", "marked")``). "Exact" means this count over the whole pool; the fraction among
  the queried items is then r up to sampling error (a hypergeometric draw), whatever the strategy.
- With ``--no-label_noise_initial`` (the default) the initial set is exempt: its marked positions answer
  truthfully, and the marks of the rest of the pool do not change, so the queried items lie in the same
  way with the flag on or off.
- ``symmetric``: a marked position's wrong label is drawn once, uniformly from the other classes.
- ``pair``: a fixed, seeded derangement of the classes (a permutation with no fixed point): class c is
  always answered as ``pair[c]``, a consistent confusion.
- ``adversarial``: a malicious annotator answers with the wrong class the current model finds most
  plausible (highest probability among the classes other than the true one; ties: the lowest class).
  The first answer for a position is remembered. It has no model to follow for the initial set, so
  ``--label_noise adversarial --label_noise_initial`` is refused by Config.validate.
"""
from __future__ import annotations

import torch

from rng import torch_generator


NO_NOTE = {"flagged": 0, "labeller": ""}  # acquired.csv's notes of an answer: not flagged, nobody named


class CleanOracle:
    """Reveals the true label of each queried pool item."""

    needs_predictions = False

    def __init__(self, pool_y: torch.Tensor):
        self.pool_y = pool_y.cpu()
        self.answered_at: dict = {}  # a simulated oracle's answers have no time of their own
        self.labelled_by: dict = {}  # nor a labeller's name

    def notes(self, positions: torch.Tensor) -> list:
        """acquired.csv's flagged and labeller of the last answers: a simulated oracle flags nothing."""
        return [NO_NOTE] * torch.as_tensor(positions).numel()

    def corrections(self) -> list:
        """A simulated oracle never changes an answer."""
        return []

    def __call__(self, positions: torch.Tensor, probs: torch.Tensor | None = None) -> torch.Tensor:
        """Labels for pool positions."""
        return self.pool_y[torch.as_tensor(positions, dtype=torch.int64)]

    def remember(self, positions: torch.Tensor, labels: torch.Tensor) -> None:
        """Nothing to remember: the answer is always the true label. Answers that differ were not given
        by this oracle (acquired.csv changed by hand): ValueError."""
        _check_replayed(self.pool_y[torch.as_tensor(positions, dtype=torch.int64)], labels)

    def close(self, finished: bool = False) -> None:
        """Nothing to release."""


class NoisyOracle(CleanOracle):
    """Answers a fixed, seeded set of pool positions with a wrong label (see the module docstring)."""

    def __init__(self, pool_y: torch.Tensor, num_classes: int, kind: str, rate: float, seed: int,
                 exempt: torch.Tensor | None = None):
        super().__init__(pool_y)
        if kind not in ("symmetric", "pair", "adversarial"):
            raise ValueError(f"unknown label noise {kind!r}")
        if num_classes < 2:
            raise ValueError("label noise needs at least two classes")
        n = self.pool_y.numel()
        self.kind, self.num_classes = kind, num_classes
        self.needs_predictions = kind == "adversarial"
        order = torch.randperm(n, generator=torch_generator(seed, "label_noise", "marked"))
        self.marked_P = torch.zeros(n, dtype=torch.bool)
        self.marked_P[order[:round(rate * n)]] = True
        if exempt is not None:
            self.marked_P[torch.as_tensor(exempt, dtype=torch.int64)] = False
        # The answer of every position: the true label, a precomputed wrong one, or -1 (adversarial, not
        # asked yet).
        self.answer_P = self.pool_y.clone()
        if kind == "symmetric":
            offset = torch.randint(1, num_classes, (n,), generator=torch_generator(seed, "label_noise", "symmetric"))
            wrong = (self.pool_y + offset) % num_classes
            self.answer_P[self.marked_P] = wrong[self.marked_P]
        elif kind == "pair":
            self.pair = derangement(num_classes, torch_generator(seed, "label_noise", "pair"))
            self.answer_P[self.marked_P] = self.pair[self.pool_y[self.marked_P]]
        else:
            self.answer_P[self.marked_P] = -1

    def __call__(self, positions: torch.Tensor, probs: torch.Tensor | None = None) -> torch.Tensor:
        positions = torch.as_tensor(positions, dtype=torch.int64)
        new = self.answer_P[positions] < 0
        if new.any():
            if probs is None:
                raise ValueError("the adversarial oracle needs the model's probabilities of the queried items")
            probs = torch.as_tensor(probs, dtype=torch.float64).cpu()[new]
            true = self.pool_y[positions[new]]
            probs = probs.scatter(1, true.unsqueeze(1), -torch.inf)  # never the true class
            self.answer_P[positions[new]] = probs.argmax(1)
        return self.answer_P[positions].clone()

    def remember(self, positions: torch.Tensor, labels: torch.Tensor) -> None:
        """Take back answers given before (acquired.csv on --resume): a position keeps its first answer."""
        positions = torch.as_tensor(positions, dtype=torch.int64)
        labels = torch.as_tensor(labels, dtype=torch.int64)
        unknown = self.answer_P[positions] < 0
        _check_replayed(self.answer_P[positions[~unknown]], labels[~unknown])
        self.answer_P[positions[unknown]] = labels[unknown]


def _check_replayed(answers: torch.Tensor, labels: torch.Tensor) -> None:
    """A simulated oracle's answers are fixed per position: labels read back must be those answers."""
    differ = (torch.as_tensor(labels, dtype=torch.int64) != answers).nonzero().flatten()
    if differ.numel():
        raise ValueError(f"{differ.numel()} label(s) differ from what the oracle answers for those images")


def derangement(n: int, generator: torch.Generator) -> torch.Tensor:
    """A uniformly drawn permutation of 0..n-1 with no fixed point (rejection sampling; n ≥ 2)."""
    while True:
        perm = torch.randperm(n, generator=generator)
        if not (perm == torch.arange(n)).any():
            return perm

