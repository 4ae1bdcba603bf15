"""Published protocols as presets: ``--preset NAME`` takes these values as defaults; explicit flags win.

Standard library only (config.py imports it). Each preset names its source, and where the released code
and the paper differ, which one it follows; the README's preset table is written from these entries.
"""
from __future__ import annotations

PRESETS = {
    "gal2017": {
        "source": "Gal, Islam & Ghahramani 2017, Deep Bayesian Active Learning with Image Data "
                  "(arXiv 1703.02910), and their Keras code",
        "values": {"model": "cnn", "n_init_labeled": 20, "num_valid": 100, "n_query": 10, "n_round": 100,
                   "optimizer": "adam", "lr": 0.001, "batch_size": 128, "epochs": 50,
                   "weight_decay_scaled": 7.0, "min_steps": 0, "mc_samples": 100, "pool_subset": 2000,
                   "dropout": 0.5},
        "differences": "model as the paper's text (conv 32 4×4 ×2, dense 128), not the code's 3×3 kernels, 5×5 "
                       "pooling and dense 256; the code's L2 c/N with c = 3.5 is Keras's penalty c/N·Σw², "
                       "whose gradient is torch's weight decay 2c/N = 7/N, here on every layer; acquired "
                       "images leave the pool (the code puts them back); 50 epochs and no --min_steps, as the "
                       "code: with the scaled weight decay, 500 steps gained ≤ 1.5 points at 20 and 100 "
                       "labels for 9–20× the training time (measured on mnist_5k)",
    },
    "batchbald2019": {
        "source": "Kirsch, van Amersfoort & Gal 2019, BatchBALD (arXiv 1906.08158), MNIST, and their code",
        "values": {"model": "batchbald_cnn", "n_init_labeled": 20, "n_query": 10, "n_round": 28,
                   "num_valid": 1024, "optimizer": "adam", "lr": 0.001, "batch_size": 64, "epochs": 30,
                   "epoch_samples": 5056, "early_stopping": 3, "min_steps": 0, "mc_samples": 100,
                   "dropout": 0.5},
        "differences": "dropout only in the classifier head (the paper's CNN also drops in the conv block: "
                       "this project samples a deterministic trunk once per image); patience 3 and at "
                       "most 30 epochs of 5,056 samples; 20 initial labels drawn class-balanced",
    },
    "constrained": {
        "source": "the original project's report (lucapantea/active-learning), constrained setting",
        "values": {"n_init_labeled": 100, "num_valid": 300, "n_query": 10, "epochs": 100},
        "differences": "Adam at lr 1e-3 and --min_steps as the project's defaults (the report's SGD did not learn)",
    },
    "ideal": {
        "source": "the original project's report (lucapantea/active-learning), ideal setting",
        "values": {"n_init_labeled": 1000, "num_valid": 5000, "n_query": 1000, "n_round": 10},
        "differences": "needs a dataset with more than 15,000 training images (not mnist_5k)",
    },
}


def markdown_table() -> str:
    """The README's preset table, written from PRESETS (a test keeps the README equal to it)."""
    lines = ["| preset | values | source | differences |", "|---|---|---|---|"]
    for name, preset in PRESETS.items():
        values = ", ".join(f"`--{key} {value}`" for key, value in preset["values"].items())
        lines.append(f"| `{name}` | {values} | {preset['source']} | {preset['differences']} |")
    return "\n".join(lines)
