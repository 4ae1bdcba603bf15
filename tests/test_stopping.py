"""stopping.py and the run's per-round signals: the stop set, Cohen's kappa's exact values, --stop_when_stable
ending a real run with its reason (and staying ended on resume), and acquired.csv's noisy against n_noisy."""
import json
import math

import pandas as pd
import pytest
import torch

from config import Config
from conftest import Run
from data import PoolState, initial_positions, load_dataset
from loop import TrainedWeights, prepare_data, predict_probs, restore_labeled, retrained_model
from results import TIMING_COLUMNS, RunDir, read_config, read_rounds
from stopping import StopSignal, reached, stop_kappa, stop_set_positions


def test_stop_set_is_seeded_drawn_outside_the_initial_set_and_capped():
    initial = torch.tensor([0, 3, 9])
    a = stop_set_positions(50, initial, 20, seed=4)
    assert torch.equal(a, stop_set_positions(50, initial, 20, seed=4))  # a resume rebuilds the same set
    assert not torch.equal(a, stop_set_positions(50, initial, 20, seed=5))
    assert a.numel() == 20 and a.unique().numel() == 20 and torch.equal(a, a.sort().values)
    assert not set(a.tolist()) & {0, 3, 9} and int(a.max()) < 50
    everything = stop_set_positions(50, initial, 1000, seed=4)  # capped: every image outside the initial set
    assert everything.tolist() == [p for p in range(50) if p not in (0, 3, 9)]


def test_kappa_known_values():
    # Agreement 4 of 6; marginals (1/3, 1/3, 1/3) and (2/6, 3/6, 1/6) give chance agreement 1/3:
    # kappa = (2/3 − 1/3) / (1 − 1/3) = 1/2.
    assert stop_kappa([0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 2, 0]) == pytest.approx(0.5, abs=1e-12)
    assert stop_kappa([0, 1], [1, 0]) == pytest.approx(-1.0, abs=1e-12)  # always disagree, chance 1/2
    assert stop_kappa([0, 0, 0], [1, 1, 1]) == 0.0
    assert stop_kappa([2, 0, 1, 1], [2, 0, 1, 1]) == 1.0
    assert stop_kappa([4, 4, 4], [4, 4, 4]) == 1.0  # one class, unchanged: scikit-learn alone says NaN
    assert math.isnan(stop_kappa(None, [0, 1]))  # round 0: nothing to compare with


def test_stop_signal_compares_each_round_with_the_one_before():
    signal = StopSignal(torch.tensor([1, 4, 6, 8, 9, 11]))
    assert math.isnan(signal.record(torch.tensor([0, 0, 1, 1, 2, 2])))
    assert signal.record(torch.tensor([0, 1, 1, 1, 2, 0])) == pytest.approx(0.5)
    assert signal.record(torch.tensor([0, 1, 1, 1, 2, 0])) == 1.0


def test_the_threshold_is_off_at_zero_and_never_reached_by_nan():
    assert reached(0.95, 0.9) and reached(0.9, 0.9) and not reached(0.89, 0.9)
    assert not reached(1.0, 0.0) and not reached(math.nan, 0.5)


# ------------------------------------------------------------------------------------------- a real run

STOPPING = ["--dataset", "mnist_5k", "--no-wandb", "--device", "cpu", "--threads", "1", "--min_steps", "30",
            "--num_valid", "200", "--n_init_labeled", "20", "--n_query", "10", "--n_round", "5", "--epochs", "1",
            "--strategy", "bald", "--mc_samples", "3", "--noise", "gaussian", "--noise_rate", "0.3",
            "--stop_set_size", "300", "--stop_when_stable", "0.01", "--seed", "3"]


@pytest.fixture(scope="module")
def stopped(tmp_path_factory):
    import main
    out = tmp_path_factory.mktemp("stopping")
    assert main.main([*STOPPING, "--output_dir", str(out)]) == 0
    [folder] = [p.parent for p in out.rglob("config.json")]
    return folder


def test_stop_when_stable_ends_the_run_after_the_first_stable_round_with_the_reason(stopped):
    run = Run(stopped)
    kappa = run.rounds["stop_kappa"]
    last = len(run.rounds) - 1
    assert math.isnan(kappa[0]) and (kappa[1:last] < 0.01).all() and kappa[last] >= 0.01
    assert last < 5  # ended before its planned rounds ...
    assert run.summary["status"] == "complete" and run.summary["rounds_completed"] == last + 1
    reason = run.summary["stopped_because"]
    assert f"stop_kappa {kappa[last]:.4f} >= --stop_when_stable 0.01 at round {last}" in reason
    # ... and queried nothing in its last round: no label is asked for that no model will use
    assert run.rounds["n_scored"].iloc[-1] == 0 and (run.acquired["round"] < last).all()
    assert read_rounds(stopped)["stop_kappa"].iloc[1:].notna().all()


def test_stop_kappa_is_the_kappa_of_the_two_rounds_models_on_the_stop_set(stopped):
    """Exact: both rounds' models rebuilt (as a resume does) and their predictions compared."""
    cfg = Config.from_dict(read_config(stopped))
    data = prepare_data(cfg, load_dataset("mnist_5k", "data"), torch.device("cpu"))
    run = RunDir.open(stopped)
    state = PoolState(data.pool_idx.numel())
    first = initial_positions(data.pool_y, cfg.n_init_labeled, cfg.seed)
    restore_labeled(state, data, run.acquired, first)
    positions = stop_set_positions(len(state), first, cfg.stop_set_size, cfg.seed)
    weights = TrainedWeights(run, keep=False)
    predictions = [predict_probs(cfg, data, retrained_model(cfg, data, state, r, weights), positions).argmax(1).tolist()
                   for r in range(len(run.rounds))]
    for r in range(1, len(run.rounds)):
        assert run.rounds[r]["stop_kappa"] == stop_kappa(predictions[r - 1], predictions[r])
    # noisy is the dataset's noise mask, and n_noisy counts the noisy=1 rows of each round's queries
    acquired = pd.DataFrame(run.acquired)
    assert acquired["noisy"].tolist() == data.noisy_of(torch.tensor(acquired["pool_position"].tolist())).int().tolist()
    for row in run.rounds:
        assert row["n_noisy"] == int(acquired.loc[acquired["round"] == row["round"], "noisy"].sum())
    assert acquired["noisy"].sum() > 0 and run.read_config()["noise_rate"] == 0.3
    assert json.loads((stopped / "summary.json").read_text())["pool_noisy_fraction"] == pytest.approx(
        float(data.noisy_P.float().mean()))


def test_a_stopped_run_resumes_as_complete_without_new_rounds(stopped, capsys):
    import main
    before = {name: (stopped / name).read_bytes() for name in ("rounds.csv", "acquired.csv")}
    reason = Run(stopped).summary["stopped_because"]
    assert main.main(["--resume", str(stopped)]) == 0
    assert {name: (stopped / name).read_bytes() for name in before} == before
    summary = Run(stopped).summary
    assert summary["status"] == "complete" and summary["stopped_because"] == reason


def test_a_folder_from_before_noisy_and_stop_kappa_resumes_to_the_same_records(stopped, tmp_path, capsys):
    """Round 0 only, without noisy, n_noisy and stop_kappa: resumed, the columns are filled in (noisy from the
    run's noise) and round 1's kappa is exact again (round 0's model trained anew), as in the full run."""
    import main
    full = Run(stopped)
    old = tmp_path / "old"
    old.mkdir()
    (old / "config.json").write_bytes((stopped / "config.json").read_bytes())
    full.acquired.drop(columns=["noisy", "labeller"]).to_csv(old / "acquired.csv", index=False, na_rep="nan")
    full.rounds.head(1).drop(columns=["n_noisy", "stop_kappa"]).to_csv(old / "rounds.csv", index=False)
    assert main.main(["--resume", str(old)]) == 0
    resumed = Run(old)
    pd.testing.assert_frame_equal(resumed.rounds.drop(columns=TIMING_COLUMNS), full.rounds.drop(columns=TIMING_COLUMNS))
    assert (old / "acquired.csv").read_text() == (stopped / "acquired.csv").read_text()
    assert resumed.summary["stopped_because"] == full.summary["stopped_because"]


# ------------------------------------------------------------------------------ --stop_set_size 0: kappa off

def test_stop_set_size_zero_is_an_empty_stop_set_that_is_off():
    assert stop_set_positions(50, torch.tensor([0, 3]), 0, seed=4).numel() == 0
    assert StopSignal(stop_set_positions(50, torch.tensor([0, 3]), 0, seed=4)).off
    assert not StopSignal(torch.tensor([5])).off


def test_without_a_stop_set_kappa_is_not_computed_and_nothing_else_changes(tmp_path, capsys, monkeypatch):
    """The same run with a stop set and with --stop_set_size 0: every record but stop_kappa (and timings) is
    equal, stop_kappa is empty in every round; resumed after round 0, the run does not retrain round 0 (there
    is no kappa to rebuild) and ends with the same records."""
    import loop
    import main
    argv = [a for a in STOPPING if a not in ("--stop_when_stable", "0.01")]
    argv[argv.index("--n_round") + 1] = "2"
    with_set, without = tmp_path / "with", tmp_path / "without"
    assert main.main([*argv, "--output_dir", str(with_set)]) == 0
    assert main.main([*argv, "--stop_set_size", "0", "--output_dir", str(without)]) == 0
    [a], [b] = ([p.parent for p in out.rglob("config.json")] for out in (with_set, without))
    ra, rb = Run(a), Run(b)
    assert ra.rounds["stop_kappa"].iloc[1:].notna().all() and rb.rounds["stop_kappa"].isna().all()
    pd.testing.assert_frame_equal(ra.rounds.drop(columns=[*TIMING_COLUMNS, "stop_kappa"]),
                                  rb.rounds.drop(columns=[*TIMING_COLUMNS, "stop_kappa"]))
    assert (a / "acquired.csv").read_text() == (b / "acquired.csv").read_text()

    cut = tmp_path / "cut"
    cut.mkdir()
    for name in ("config.json", "acquired.csv"):
        (cut / name).write_bytes((b / name).read_bytes())
    rb.rounds.head(1).to_csv(cut / "rounds.csv", index=False, na_rep="nan")
    monkeypatch.setattr(loop, "retrained_model", lambda *a, **k: pytest.fail("round 0 was retrained"))
    assert main.main(["--resume", str(cut)]) == 0
    pd.testing.assert_frame_equal(Run(cut).rounds.drop(columns=TIMING_COLUMNS), rb.rounds.drop(columns=TIMING_COLUMNS))


def test_stop_when_stable_without_a_stop_set_is_refused_in_one_line(tmp_path, capsys):
    import main
    assert main.main([*STOPPING, "--stop_set_size", "0", "--output_dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--stop_when_stable needs a stop set" in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())


def test_the_labelling_page_says_kappa_is_off_without_a_stop_set():
    from oracles.human.web import stability
    said = stability(math.nan, 0.0, 0)
    assert said["kappa"] is None and not said["reached"] and "--stop_set_size 0" in said["text"]


def test_the_report_keeps_a_real_run_that_stop_when_stable_ended(stopped):
    """The report reads summary.json's stopped_because: the run is in the statistics, with a note."""
    from reporting.load import load_runs
    [run] = load_runs([stopped]).to_dict("records")
    rounds = Run(stopped).rounds
    assert run["stopped_early"] and run["included"] and run["n_rounds"] < run["planned_rounds"]
    assert run["note"].startswith(f"stopped early by --stop_when_stable at {rounds['n_labeled'].iloc[-1]} labels")
    assert run["stable_n_labeled"] == rounds["n_labeled"].iloc[-1]  # its own threshold (0.01), where it stopped
