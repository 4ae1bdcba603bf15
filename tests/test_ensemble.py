"""--uncertainty ensemble: M networks' predictions in place of K MC dropout samples (issue 17, item 1)."""
import math
import signal

import pandas as pd
import pytest
import torch
from torch import nn

from config import Config, parse_config
from conftest import Run, finished_run, run_process
from data import PoolState, initial_positions, load_dataset
from loop import Query, candidate_positions, draw_targets, prepare_data, query, train_model
from registries import CHOICES
from models import DropoutHead, Ensemble, TrunkHeadModel
from results import TIMING_COLUMNS, read_run
from rng import torch_generator
from strategies import get_strategy
from strategies.epig import epig
from strategies.scores import bald
from test_resume import _popen, _wait_rounds
from train import evaluate, log_probs_chunks


def _fixed_member(w, b):
    """A member whose logits are x @ w.T + b (identity trunk, one linear layer, no dropout)."""
    head = DropoutHead([len(w[0]), len(w)], 0.0)
    with torch.no_grad():
        head.linears[0].weight.copy_(torch.tensor(w))
        head.linears[0].bias.copy_(torch.tensor(b))
    return TrunkHeadModel(nn.Identity(), head)


def _two_members():
    return Ensemble([_fixed_member([[1.0, 0.0], [0.0, 1.0]], [0.0, 0.0]),
                     _fixed_member([[0.0, 1.0], [1.0, 0.0]], [0.0, 2.0])]).eval()


def test_the_prediction_is_the_members_mean_probability():
    x = torch.tensor([[1.0, 0.0], [0.0, 3.0]])
    ens = _two_members()
    with torch.no_grad():
        out = ens(x)
    # By hand: member A's logits are x, member B's are (x1, x0 + 2).
    sm = lambda a, b: [math.exp(a) / (math.exp(a) + math.exp(b)), math.exp(b) / (math.exp(a) + math.exp(b))]
    for row, (a, b) in enumerate([((1.0, 0.0), (0.0, 3.0)), ((0.0, 3.0), (3.0, 2.0))]):
        mean = [(p + q) / 2 for p, q in zip(sm(*a), sm(*b))]
        assert out[row].exp().tolist() == pytest.approx(mean, rel=1e-6)
    # Log-probabilities are logits whose softmax is the mean prediction, so evaluation reports it.
    assert torch.allclose(torch.softmax(out, -1), out.exp())
    # Both rows' mean prediction is (0.389, 0.611): class 1, so labels (0, 1) give accuracy 1/2.
    metrics = evaluate(ens, _Images(x), torch.arange(2), torch.tensor([0, 1]), chunk=1)
    assert metrics["acc"] == 0.5
    # The members' mean accuracy from the same pass: A is right on both rows, B on neither.
    assert metrics["member_acc"] == 0.5
    assert [evaluate(m, _Images(x), torch.arange(2), torch.tensor([0, 1]), chunk=1)["acc"] for m in ens.members] \
        == [1.0, 0.0]
    assert metrics["loss"] == pytest.approx(-(out[0, 0] + out[1, 1]).item() / 2, rel=1e-6)


class _Images:
    """The Images interface evaluate and log_probs_chunks read: batch(idx) gives model inputs."""

    def __init__(self, x):
        self.x = x

    def batch(self, idx):
        return self.x[idx]


def test_the_k_predictions_are_the_members_and_bald_reads_them():
    x = torch.tensor([[1.0, 0.0], [0.0, 3.0], [2.0, 2.0]])
    ens = _two_members()
    lp = torch.cat(list(log_probs_chunks(ens, _Images(x), torch.arange(3), 2, True, None, chunk=2)), dim=1)
    assert lp.shape == (2, 3, 2)
    for m, member in enumerate(ens.members):
        assert torch.equal(lp[m], torch.log_softmax(member(x), -1))
    # BALD by hand: entropy of the mean minus the mean of the entropies.
    p = lp.exp()
    h = lambda q: -(q * q.log()).sum(-1)
    assert torch.allclose(bald(lp), h(p.mean(0)) - h(p).mean(0), atol=1e-6)
    # The chunking does not change them, and K must be M.
    one = torch.cat(list(log_probs_chunks(ens, _Images(x), torch.arange(3), 2, True, None, chunk=1)), dim=1)
    assert torch.equal(one, lp)
    with pytest.raises(ValueError, match="gives 2 predictions, not 3"):
        ens.mc_logits(x, 3)


ENS_CFG = dict(dataset="mnist_5k", num_valid=100, n_init_labeled=20, n_query=10, n_round=1, epochs=1,
               min_steps=30, uncertainty="ensemble", ensemble_size=3, dropout=0.0, seed=5)


def _study(**changes):
    cfg = Config(**{**ENS_CFG, **changes})
    data = prepare_data(cfg, load_dataset("mnist_5k", "data"), torch.device("cpu"))
    state = PoolState(data.pool_idx.numel())
    first = initial_positions(data.pool_y.cpu(), cfg.n_init_labeled, cfg.seed)
    state.label(first, data.pool_y[first], round_=0)
    return cfg, data, state


def _trained(**changes):
    return train_model(*_study(**changes), 0)


def test_members_differ_from_each_other_and_are_reproducible_by_seed():
    torch.set_num_threads(1)
    model, trained = _trained()
    again, _ = _trained()
    other_seed, _ = _trained(seed=6)
    assert isinstance(model, Ensemble) and len(model) == 3
    assert trained["steps"] == 3 * 30  # every member trained its own schedule
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    first = [m.trunk.conv1.weight for m in model.members]
    assert not torch.equal(first[0], first[1]) and not torch.equal(first[1], first[2])
    assert not torch.equal(first[0], other_seed.members[0].trunk.conv1.weight)
    x = torch.randn(8, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        preds = model.member_log_probs(x)
    assert not torch.allclose(preds[0], preds[1])


def test_members_have_no_dropout_unless_it_is_given():
    assert parse_config(["--uncertainty", "ensemble"], CHOICES).dropout == 0.0
    assert parse_config(["--uncertainty", "ensemble", "--dropout", "0.25"], CHOICES).dropout == 0.25
    assert parse_config([], CHOICES).dropout == 0.5  # mc_dropout: unchanged


ENS_RUN = ["--device", "cpu", "--dataset", "mnist_5k", "--no-wandb", "--num_valid", "100", "--n_init_labeled",
           "20", "--n_query", "10", "--n_round", "4", "--epochs", "1", "--min_steps", "40", "--threads", "1",
           "--strategy", "bald", "--uncertainty", "ensemble", "--ensemble_size", "3"]


@pytest.fixture(scope="module")
def ensemble_run(tmp_path_factory):
    return finished_run(tmp_path_factory.mktemp("ensemble"), *ENS_RUN)


def _metrics(folder):
    return pd.read_csv(folder / "rounds.csv").drop(columns=TIMING_COLUMNS)


def test_an_ensemble_run_records_its_members_and_learns(ensemble_run):
    run = Run(ensemble_run)
    assert run.config["uncertainty"] == "ensemble" and run.config["ensemble_size"] == 3
    assert run.config["dropout"] == 0.0
    assert (run.rounds.train_steps == 3 * 40).all()
    # The mean prediction and the members' mean accuracy are two numbers (equal only by chance).
    assert (run.rounds.member_test_acc != run.rounds.test_acc).any()
    assert run.rounds.test_acc.iloc[-1] > 0.6 and run.rounds.member_test_acc.iloc[-1] > 0.5
    assert run.acquired.score[run.acquired["round"] >= 0].gt(0).all()  # BALD over members: disagreement


def test_a_killed_ensemble_run_resumes_to_identical_metrics(tmp_path, ensemble_run):
    proc = _popen(*ENS_RUN, "--output_dir", tmp_path)
    folder = _wait_rounds(tmp_path, 2, proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert 2 <= len(read_run(folder)[0]) < 5
    resumed = run_process("--resume", folder)
    assert resumed.returncode == 0, resumed.stderr
    pd.testing.assert_frame_equal(_metrics(folder), _metrics(ensemble_run))
    assert (folder / "acquired.csv").read_text() == (ensemble_run / "acquired.csv").read_text()


def test_epig_scores_an_ensemble_from_its_members_predictions():
    torch.set_num_threads(1)
    cfg, data, state = _study(strategy="epig", epig_targets=20, pool_subset=200, min_steps=10)
    model, _ = train_model(cfg, data, state, 0)
    picked, scores, _, n_scored = query(cfg, data, state, get_strategy("epig"), model, 0)
    assert n_scored == 200 and picked.numel() == cfg.n_query
    # The same scores by hand: the members' predictions of the candidates and of the drawn targets.
    q = Query(cfg, data, state, get_strategy("epig"), model, 0,
              candidate_positions(state, cfg.pool_subset, torch_generator(cfg.seed, "subset", 0)))
    images, target_idx = draw_targets(q)
    with torch.no_grad():
        targets = model.member_log_probs(images.batch(target_idx))
        pool = model.member_log_probs(data.train.batch(q.idx))
    expected = epig(pool, targets)
    assert torch.allclose(scores, expected[q.candidates.new_tensor(
        [q.candidates.tolist().index(p) for p in picked.tolist()])], atol=1e-5)
    assert (expected >= -1e-5).all()
