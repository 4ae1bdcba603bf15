"""The oracles answer label queries. Labels reach training only through an oracle and the PoolState.

An oracle is built by ``make_oracle`` and has one interface whatever its kind, so the loop never asks
which kind it holds:

- ``needs_predictions``: when True, the loop passes the deterministic model's class probabilities of
  the queried items (``probs_N_C``) to each call after a model exists (as strategies declare theirs);
- ``oracle(positions, probs=None)``: the given labels of those pool positions;
- ``remember(positions, labels)``: answers given earlier (read back from acquired.csv on --resume), so
  that asking again gives the same answer;
- ``corrections()``: answers the oracle changed since it was last called (a person correcting an earlier
  label), as dicts ``{"pool_position", "label", "at"}``; the loop relabels those items from the next round
  on and records each change in corrections.csv (acquired.csv keeps the first answer). Simulated: none;
- ``answered_at``: when its answers (and corrections) were given, by pool position, where the oracle knows
  (a person's; labels.csv shows them); empty for a simulated oracle;
- ``close(finished=False)``: the study has ended (finished, or stopped by an error or Ctrl-C).

The records need nothing else from an oracle: the dataset's label of each item and whether the given one
differs come from the dataset (loop.acquired_rows, loop.count_corrupted).

An oracle may answer -1 for an item: "I don't know". The loop records it and sets the item aside or
leaves it in the pool (--dont_know). Simulated oracles always answer; a person may not.

- ``simulated.py``: the clean and the noisy oracle (--label_noise);
- ``human/``: a person labels in a local web page (``--oracle human``).
"""
from __future__ import annotations

import torch

from config import ORACLES, OracleKind  # what each --oracle is, declared beside the flag

from oracles.human.address import check_address
from oracles.simulated import CleanOracle, NoisyOracle

__all__ = ["ORACLES", "CleanOracle", "NoisyOracle", "OracleKind", "check_address", "make_oracle",
           "replayable_oracle"]


def make_oracle(cfg, pool_y: torch.Tensor, num_classes: int, initial: torch.Tensor | None = None, study=None):
    """The oracle a configuration asks for; ``initial``: the initial set's pool positions (exempt from
    label noise unless --label_noise_initial; a person is not asked for them). ``study``
    (loop.OracleContext): the images, labelled set and records, which the human oracle shows."""
    if ORACLES[cfg.oracle].interactive:
        # Imported here, not above: the human oracle brings Flask and its page, which a simulated run (nearly
        # every run, every sweep cell) has no use for and should not spend its start-up loading.
        from oracles.human.oracle import HumanOracle
        return HumanOracle(cfg, pool_y, initial, study)
    return replayable_oracle(cfg, pool_y, num_classes, initial)


def replayable_oracle(cfg, pool_y: torch.Tensor, num_classes: int, initial: torch.Tensor | None = None):
    """The simulated oracle a configuration asks for, whose answers are fixed per image, so that answers
    read back on --resume can be checked (``remember`` raises ValueError on one it did not give); None
    for ``--oracle human``: a person's answers are whatever the person said."""
    if not ORACLES[cfg.oracle].replayable:
        return None
    if (pool_y < 0).any():
        raise ValueError("the pool holds images without labels: only --oracle human can label them")
    if cfg.label_noise == "none" or cfg.label_noise_rate == 0:
        return CleanOracle(pool_y)
    exempt = None if cfg.label_noise_initial else initial
    return NoisyOracle(pool_y, num_classes, cfg.label_noise, cfg.label_noise_rate, cfg.seed, exempt=exempt)
