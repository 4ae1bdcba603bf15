"""The registries' names, for every command line's parser (main.py, sweep.py, the README's flags table)."""
from __future__ import annotations

from data import DATASETS
from models import MODELS
from strategies import STRATEGIES

# In their own order (the README's flags table), and sorted (argparse's choices)
REGISTRY_NAMES = {"dataset": list(DATASETS), "model": list(MODELS), "strategy": list(STRATEGIES)}
CHOICES = {name: sorted(names) for name, names in REGISTRY_NAMES.items()}
