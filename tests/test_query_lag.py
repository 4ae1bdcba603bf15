"""--query_lag 1: the previous round's model chooses a round's batch while the round's own model trains.

What it means (the batch is what the previous round's model would have queried, from the pool without the
images just answered), what it leaves alone (random queries, the labelled sets), that a resumed run equals
an uninterrupted one, and that a person really gets the batch while the model trains.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request

import pandas as pd
import pytest
import torch

from config import Config
from conftest import ROOT, SMALL, Run, run_dirs
from data import PoolState, initial_positions, load_dataset
from loop import TrainedWeights, prepare_data, query, restore_labeled, retrained_model
from oracles.human.oracle import BATCH_FILE
from results import TIMING_COLUMNS, RunDir, read_config
from strategies import get_strategy

LAGGED = [*SMALL, "--n_round", "3", "--noise", "gaussian", "--noise_rate", "0.2", "--threads", "1"]


def run(cli, tmp_path, name, *argv) -> Run:
    rc, _, err, runs = cli(*LAGGED, *argv, output_dir=tmp_path / name)
    assert rc == 0, err
    [done] = runs
    return done


def test_random_queries_and_every_number_are_the_same_with_and_without_the_lag(cli, tmp_path):
    # Random queries do not look at the model, and the labelled set of round r is the same either way
    plain = run(cli, tmp_path, "plain", "--strategy", "random")
    lagged = run(cli, tmp_path, "lagged", "--strategy", "random", "--query_lag", "1")
    pd.testing.assert_frame_equal(plain.rounds.drop(columns=TIMING_COLUMNS), lagged.rounds.drop(columns=TIMING_COLUMNS))
    pd.testing.assert_frame_equal(plain.acquired.drop(columns="chosen_by"), lagged.acquired.drop(columns="chosen_by"))
    by_round = lagged.acquired.groupby("round")["chosen_by"].unique().map(list).to_dict()
    assert by_round == {-1: [-1], 0: [0], 1: [0], 2: [1]}  # round 0's batch: nothing older exists
    assert plain.acquired.groupby("round")["chosen_by"].unique().map(list).to_dict() == {-1: [-1], 0: [0], 1: [1],
                                                                                       2: [2]}
    assert lagged.config["query_lag"] == 1 and plain.config["query_lag"] == 0


def test_a_lagged_batch_is_what_the_previous_rounds_model_queries_from_the_pool_without_the_last_answers(
        cli, tmp_path):
    lagged = run(cli, tmp_path, "lagged", "--strategy", "bald", "--mc_samples", "5", "--query_lag", "1")
    plain = run(cli, tmp_path, "plain", "--strategy", "bald", "--mc_samples", "5")
    # Round 0 has no older model: the same batch; later batches differ (another model chose them)
    assert lagged.acquired.query("round <= 0").drop(columns="chosen_by").equals(
        plain.acquired.query("round <= 0").drop(columns="chosen_by"))
    assert set(lagged.acquired.query("round == 1")["pool_position"]) != \
        set(plain.acquired.query("round == 1")["pool_position"])
    # Rebuild it: round 0's model (trained again from its labels), asked in round 1 with round 1's labels
    cfg = Config.from_dict(read_config(lagged.path))
    data = prepare_data(cfg, load_dataset("mnist_5k", "data"), torch.device("cpu"))
    folder = RunDir.open(lagged.path)
    state = PoolState(data.pool_idx.numel())
    restore_labeled(state, data, [row for row in folder.acquired if row["round"] <= 0],
                    initial_positions(data.pool_y, cfg.n_init_labeled, cfg.seed))
    model = retrained_model(cfg, data, state, 0, TrainedWeights(folder, keep=False))
    positions, scores, _, _ = query(cfg, data, state, get_strategy("bald"), model, 1)
    asked = lagged.acquired.query("round == 1")
    assert asked["pool_position"].tolist() == positions.tolist()
    assert asked["score"].tolist() == pytest.approx(scores.tolist(), rel=1e-6)
    # Each round's model learnt from the labels it had when it began: 20, 30, 40, 50
    assert lagged.rounds["n_labeled"].tolist() == [20, 30, 40, 50]


def test_a_lagged_run_cut_after_two_rounds_resumes_to_the_uninterrupted_numbers(cli, tmp_path):
    import main
    whole = run(cli, tmp_path, "whole", "--strategy", "bald", "--mc_samples", "5", "--query_lag", "1")
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "config.json").write_bytes((whole.path / "config.json").read_bytes())
    whole.rounds.head(2).to_csv(cut / "rounds.csv", index=False, na_rep="nan")
    whole.acquired.query("round <= 1").fillna({"labeller": ""}).to_csv(cut / "acquired.csv", index=False,
                                                                   na_rep="nan")
    assert main.main(["--resume", str(cut)]) == 0
    resumed = Run(cut)
    pd.testing.assert_frame_equal(resumed.rounds.drop(columns=TIMING_COLUMNS),
                                  whole.rounds.drop(columns=TIMING_COLUMNS))
    pd.testing.assert_frame_equal(resumed.acquired, whole.acquired)


def test_a_bad_lag_is_refused_in_one_line(cli):
    rc, _, err, runs = cli(*SMALL, "--query_lag", "2")
    assert rc == 2 and err.count("\n") == 1 and "--query_lag" in err and "Traceback" not in err and not runs


def test_a_person_gets_the_next_batch_while_the_round_trains(tmp_path):
    # 1,000 steps a round: seconds of training, during which the second batch is already on the page
    out_dir = tmp_path / "runs"
    argv = [*SMALL, "--n_round", "2", "--min_steps", "1000", "--strategy", "bald", "--mc_samples", "5",
            "--oracle", "human", "--query_lag", "1", "--threads", "1", "--output_dir", str(out_dir)]
    proc = subprocess.Popen([sys.executable, str(ROOT / "main.py"), *argv], cwd=ROOT, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stderr:
            if "label the queried images at " in line:
                base, token = line.split(" at ")[-1].strip().split("/?token=")
                break
        else:
            pytest.fail(f"no address printed: {proc.communicate()}")

        def state() -> dict:
            return json.loads(urllib.request.urlopen(f"{base}/state?token={token}").read())

        def labelling(batch: int) -> dict:
            deadline = time.monotonic() + 120
            while (seen := state())["batch"] != batch:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.05)
            return seen

        def send(path, sent):
            req = urllib.request.Request(base + path, data=json.dumps(sent).encode(), method="POST",
                                         headers={"X-Token": token, "Content-Type": "application/json"})
            return urllib.request.urlopen(req).status

        for batch in (0, 1):
            seen = labelling(batch)
            if batch == 1:  # on screen at once, while round 1's model still trains on the first 30 labels
                assert seen["step"] == "training" and seen["round"] == 1 and seen["n_training"] == 30
                page = urllib.request.urlopen(f"{base}/view?token={token}").read().decode()
                assert "The model trained on 20 labelled images (the previous round's) chose these 10 images, " \
                       "while the next model trains on 30 in the background" in page, page
            for position in json.loads((run_dirs(out_dir)[0] / BATCH_FILE).read_text())["positions"]:
                assert send("/answer", {"batch": batch, "position": position, "label": 1}) == 200
            assert send("/submit", {"batch": batch}) == 200
        _, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    [folder] = run_dirs(out_dir)
    done = Run(folder)
    assert done.acquired.groupby("round")["chosen_by"].unique().map(list).to_dict() == {-1: [-1], 0: [0], 1: [0]}
    assert done.rounds["n_labeled"].tolist() == [20, 30, 40]


def test_a_person_gets_the_lag_by_default_and_the_simulated_oracle_does_not():
    from config import parse_config
    assert parse_config(["--oracle", "human"]).query_lag == 1
    assert parse_config(["--oracle", "human", "--query_lag", "0"]).query_lag == 0
    assert parse_config([]).query_lag == 0 and parse_config(["--query_lag", "1"]).query_lag == 1
