"""Self-supervised features (selfsup.py, --embedding self_supervised): the contrastive loss's exact value,
seeded training, the cache read back as untrusted data, and the strategies that take the features."""
from __future__ import annotations

import math

import pytest
import torch

import selfsup
from config import ConfigError, parse_config
from data.images import Images
from loop import check_declared
from selfsup import SSLSpec, encode, nt_xent, self_supervised_features, train_encoder

TINY = SSLSpec(epochs=1, batch=16, dim=8)


def images(n: int = 48, seed: int = 0) -> Images:
    g = torch.Generator().manual_seed(seed)
    return Images(torch.randint(0, 256, (n, 1, 28, 28), generator=g, dtype=torch.uint8), (0.13,), (0.31,))


def test_nt_xent_exact_on_orthogonal_pairs():
    """Two images, each view equal to its partner, the two orthogonal: for each of the 4 views the positive has
    similarity 1/t and the two negatives 0, so the loss is −log(e^{1/t} / (e^{1/t} + 2))."""
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    t = 0.5
    assert float(nt_xent(z, z.clone(), t)) == pytest.approx(-math.log(math.exp(1 / t) / (math.exp(1 / t) + 2)))
    # the partner is the positive: swapping the second view's rows raises the loss
    assert float(nt_xent(z, z.flip(0), t)) > float(nt_xent(z, z.clone(), t))


def test_the_encoder_is_trained_from_the_seed_alone():
    x = images()
    idx = torch.arange(48)
    a, b = (encode(train_encoder(x, idx, TINY, seed=3), x, idx) for _ in range(2))
    c = encode(train_encoder(x, idx, TINY, seed=4), x, idx)
    assert a.shape == (48, 8) and torch.equal(a, b) and not torch.equal(a, c)


def test_features_are_cached_by_what_they_depend_on_and_a_bad_file_is_not_used(tmp_path, monkeypatch):
    x = images()
    first = self_supervised_features(x, 3, TINY, tmp_path)
    [cached] = list(tmp_path.glob("ssl_*.pt"))

    def no_training(*args, **kwargs):
        raise AssertionError("trained again instead of reading the cache")
    monkeypatch.setattr(selfsup, "train_encoder", no_training)
    assert torch.equal(self_supervised_features(x, 3, TINY, tmp_path), first)
    # Another seed, other images or other settings: another key, another file
    with pytest.raises(AssertionError, match="trained again"):
        self_supervised_features(x, 4, TINY, tmp_path)
    with pytest.raises(AssertionError, match="trained again"):
        self_supervised_features(images(seed=1), 3, TINY, tmp_path)
    monkeypatch.undo()
    # A damaged or foreign file under the right name is not used: the features are trained again
    for damage in (b"not a torch file", None):
        if damage is None:
            torch.save({"key": {"seed": 99}, "features": torch.full((48, 8), float("nan"))}, cached)
        else:
            cached.write_bytes(damage)
        assert torch.equal(self_supervised_features(x, 3, TINY, tmp_path), first)
    assert torch.load(cached, weights_only=True)["features"].isfinite().all()  # and the file is whole again


def test_only_strategies_that_choose_from_features_alone_take_them():
    for strategy in ("typiclust", "coreset", "probcover"):
        check_declared(parse_config(["--strategy", strategy, "--embedding", "self_supervised"]))
    for strategy in ("badge", "bald", "random"):
        with pytest.raises(ConfigError, match="--embedding self_supervised gives features to coreset, probcover, "
                                              "typiclust"):
            check_declared(parse_config(["--strategy", strategy, "--embedding", "self_supervised"]))


def test_a_run_chooses_from_the_cached_features_and_another_strategy_reuses_them(cli, tmp_path, caplog):
    argv = ["--dataset", "mnist_5k", "--no-wandb", "--num_valid", "100", "--n_init_labeled", "20", "--n_query", "10",
            "--n_round", "1", "--epochs", "1", "--min_steps", "10", "--threads", "1", "--stop_set_size", "10",
            "--embedding", "self_supervised", "--ssl_epochs", "1", "--embedding_cache", str(tmp_path / "cache")]
    rc, _, err, [run] = cli(*argv, "--strategy", "typiclust", output_dir=tmp_path / "a")
    assert rc == 0, err
    assert run.config["embedding"] == "self_supervised" and len(list((tmp_path / "cache").glob("ssl_*.pt"))) == 1
    assert len(run.acquired.query("round == 0")) == 10
    caplog.clear()
    rc, _, err, [other] = cli(*argv, "--strategy", "probcover", output_dir=tmp_path / "b")
    assert rc == 0, err
    assert "training the encoder" not in caplog.text and len(list((tmp_path / "cache").glob("ssl_*.pt"))) == 1
