"""The training engine: the convergence stopping rule, warm start (continue, shrink-perturb) and its
exact resume, and the one-step-epoch path that every small labelled set takes."""
import shutil
import signal

import pandas as pd
import pytest
import torch

import main
from conftest import Run, finished_run, run_process
from models import build_model
from results import TIMING_COLUMNS, WEIGHTS_FILE, read_run
from rng import torch_generator
from test_resume import ARGS, _popen, _wait_rounds
from train import Schedule, fit, make_optimizer, warm_start
from data import Images


# --- the stopping rule, on hand-made loss sequences ------------------------------------------------

def _rule(**kw) -> Schedule:
    return Schedule(epochs=1, batch_size=8, **{"stop_loss": 0.1, "stop_window": 4, "stop_min_steps": 6, **kw})


def test_rule_is_off_without_a_threshold():
    losses = torch.zeros(50)
    assert not Schedule(epochs=1, batch_size=8).converged(losses, 50)
    assert not _rule(stop_loss=0.0).converged(losses, 50)


def test_rule_waits_for_the_minimum_and_a_full_window():
    losses = torch.zeros(20)  # converged from the first step
    assert not _rule().converged(losses, 5)       # under --stop_min_steps 6
    assert _rule().converged(losses, 6)
    assert not _rule(stop_min_steps=0, stop_window=4).converged(losses, 3)  # window not yet full
    assert _rule(stop_min_steps=0, stop_window=4).converged(losses, 4)


def test_rule_averages_the_last_window_only():
    # mean of the last 4 of [1, 1, 1, 1, 1, 0.3, 0.05, 0.02, 0.01] = (0.3+0.05+0.02+0.01)/4 = 0.095 < 0.1
    losses = torch.tensor([1, 1, 1, 1, 1, 0.3, 0.05, 0.02, 0.01])
    assert not _rule().converged(losses, 8)  # last 4 up to step 8: (1+0.3+0.05+0.02)/4 = 0.3425
    assert _rule().converged(losses, 9)
    # a spike inside the window keeps the mean above the threshold; the rule then waits
    spiky = torch.tensor([0.01] * 8 + [0.5] + [0.01] * 3)
    assert not _rule().converged(spiky, 12)  # (0.5 + 3×0.01) / 4 = 0.1325
    assert _rule().converged(torch.cat([spiky, torch.tensor([0.01])]), 13)


def _tiny_task(n=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=g)
    return Images(x, 0.5, 0.25), torch.arange(n), torch.arange(n) % 3


def _fit(schedule, seed=0):
    images, idx, y = _tiny_task()
    model = build_model("lenet", 1, 28, 3, 0.5, torch_generator(seed, "w"))
    opt = make_optimizer(model, "adam", 1e-3, 0.0, 0.9)
    return model, fit(model, images, idx, y, opt, schedule, torch_generator(seed, "s"), torch_generator(seed, "d"))


def test_fit_stops_when_converged_and_never_past_the_budget():
    budget = Schedule(epochs=1, batch_size=8, min_steps=300)  # 3 steps an epoch: 100 epochs
    _, full = _fit(budget)
    assert full["steps"] == 300 and full["epochs"] == 100
    # a random 24-image, 3-class task is memorised fast: the loss converges well before 300 steps
    _, early = _fit(Schedule(epochs=1, batch_size=8, min_steps=300, stop_loss=0.05, stop_window=30,
                             stop_min_steps=60))
    assert 60 <= early["steps"] < 300 and early["steps"] % 3 == 0
    assert early["loss"] < 0.05 * 3  # the last epoch's loss, near the window's mean
    # an unreachable threshold: the stretched budget is the most it trains
    _, capped = _fit(Schedule(epochs=1, batch_size=8, min_steps=300, stop_loss=1e-12, stop_min_steps=0))
    assert capped["steps"] == 300


def test_fit_is_reproducible_and_reports_the_last_epoch_mean_loss():
    schedule = Schedule(epochs=5, batch_size=10)  # 24 items: batches of 10, 10, 4
    m1, a = _fit(schedule)
    m2, b = _fit(schedule)
    assert a == b
    for p, q in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(p, q)
    assert a["steps"] == 15 and a["epochs"] == 5 and 0 < a["loss"] < 5


# --- warm start ------------------------------------------------------------------------------------

def _trained_state(seed=1):
    model = build_model("lenet", 1, 28, 3, 0.5, torch_generator(seed, "previous"))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_continue_carries_exactly_the_previous_weights():
    previous = _trained_state()
    model = build_model("lenet", 1, 28, 3, 0.5, torch_generator(0, "weights", 1))
    warm_start(model, previous, "continue", 0.4, 0.1)
    for name, value in model.state_dict().items():
        assert torch.equal(value, previous[name]), name


def test_shrink_perturb_is_lambda_previous_plus_sigma_fresh():
    previous = _trained_state()
    fresh = build_model("lenet", 1, 28, 3, 0.5, torch_generator(0, "weights", 1))
    fresh_state = {k: v.clone() for k, v in fresh.state_dict().items()}
    model = build_model("lenet", 1, 28, 3, 0.5, torch_generator(0, "weights", 1))
    warm_start(model, previous, "shrink_perturb", 0.4, 0.1)
    for name, value in model.state_dict().items():
        expected = 0.4 * previous[name] + 0.1 * fresh_state[name]
        torch.testing.assert_close(value, expected, rtol=0, atol=0)
    # one weight by hand: the formula, not just the same code twice
    w = model.trunk.conv1.weight[0, 0, 0, 0].item()
    assert w == pytest.approx(0.4 * previous["trunk.conv1.weight"][0, 0, 0, 0].item()
                              + 0.1 * fresh_state["trunk.conv1.weight"][0, 0, 0, 0].item(), rel=1e-6)
    # λ = 1, σ = 0 is continue; λ = 0, σ = 1 is a fresh start
    same = build_model("lenet", 1, 28, 3, 0.5, torch_generator(0, "weights", 1))
    warm_start(same, previous, "shrink_perturb", 1.0, 0.0)
    assert all(torch.equal(v, previous[k]) for k, v in same.state_dict().items())
    again = build_model("lenet", 1, 28, 3, 0.5, torch_generator(0, "weights", 1))
    warm_start(again, previous, "shrink_perturb", 0.0, 1.0)
    assert all(torch.equal(v, fresh_state[k]) for k, v in again.state_dict().items())


def test_batchnorm_buffers_come_from_the_previous_round():
    previous_model = build_model("resnet18", 1, 28, 3, 0.5, torch_generator(1, "w"))
    norm = next(m for m in previous_model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    norm.running_mean.fill_(0.7)  # what a previous round's training left
    previous = {k: v.clone() for k, v in previous_model.state_dict().items()}
    model = build_model("resnet18", 1, 28, 3, 0.5, torch_generator(0, "w"))
    warm_start(model, previous, "shrink_perturb", 0.5, 0.5)
    for name, value in model.state_dict().items():
        if "running" in name or "num_batches" in name:
            assert torch.equal(value, previous[name]), name


WARM = [*ARGS, "--warm_start", "shrink_perturb", "--shrink", "0.5", "--perturb", "0.2"]


@pytest.fixture(scope="module")
def warm_uninterrupted(tmp_path_factory):
    return finished_run(tmp_path_factory.mktemp("warm"), *WARM)


def _metrics(folder):
    return pd.read_csv(folder / "rounds.csv").drop(columns=TIMING_COLUMNS)


def test_warm_start_changes_the_run_and_keeps_two_rounds_of_weights(uninterrupted, warm_uninterrupted):
    cold_folder = uninterrupted  # the same run without --warm_start
    assert not (cold_folder / WEIGHTS_FILE).exists()  # retraining keeps no weights
    cold_m, warm_m = _metrics(cold_folder), _metrics(warm_uninterrupted)
    assert cold_m.loc[0].equals(warm_m.loc[0])  # round 0 starts fresh either way
    assert not cold_m["train_loss"].iloc[1:].equals(warm_m["train_loss"].iloc[1:])
    saved = torch.load(warm_uninterrupted / WEIGHTS_FILE, weights_only=True)
    assert sorted(saved) == [4, 5]
    assert Run(warm_uninterrupted).config["warm_start"] == "shrink_perturb"
    assert Run(warm_uninterrupted).config["shrink"] == 0.5 and Run(warm_uninterrupted).config["perturb"] == 0.2


def test_killed_warm_start_run_resumes_to_identical_metrics(tmp_path, warm_uninterrupted):
    proc = _popen(*WARM, "--output_dir", tmp_path)
    folder = _wait_rounds(tmp_path, 2, proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    done = len(read_run(folder)[0])
    assert 2 <= done < 6
    resumed = run_process("--resume", folder)
    assert resumed.returncode == 0, resumed.stderr
    pd.testing.assert_frame_equal(_metrics(folder), _metrics(warm_uninterrupted))
    assert (folder / "acquired.csv").read_text() == (warm_uninterrupted / "acquired.csv").read_text()


def test_resume_without_the_previous_weights_is_refused(tmp_path, warm_uninterrupted, capsys):
    # A copy of the finished warm run, cut back to 3 finished rounds: resuming it needs round 2's weights.
    folder = tmp_path / warm_uninterrupted.name
    shutil.copytree(warm_uninterrupted, folder)
    rounds = (folder / "rounds.csv").read_text().splitlines(keepends=True)
    (folder / "rounds.csv").write_text("".join(rounds[:4]))
    (folder / WEIGHTS_FILE).write_bytes(b"not a weights file")
    # In-process (no interpreter start per refusal): an uncaught error would raise here instead of exiting 2
    assert main.main(["--resume", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "weights.pt cannot be read" in err
    shutil.copy(warm_uninterrupted / WEIGHTS_FILE, folder / WEIGHTS_FILE)  # rounds 4 and 5: the wrong ones
    assert main.main(["--resume", str(folder)]) == 2
    assert "weights.pt does not hold round 2's" in capsys.readouterr().err
