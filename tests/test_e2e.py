"""End-to-end runs of the real CLI on the embedded mnist_5k digits, with accuracy floors."""
import logging
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from conftest import ROOT, SMALL, Run, run_dirs, wandb_record_log
from results import ACQUIRED_COLUMNS, ROUND_COLUMNS, TIMING_COLUMNS

# --min_steps 200 (30 epochs of 200 labels are 120 steps): quick, and the floors below still hold.
LENET = ["--dataset", "mnist_5k", "--no-wandb", "--num_valid", "200", "--n_init_labeled", "200",
         "--n_query", "20", "--n_round", "1", "--epochs", "30", "--min_steps", "200", "--noise", "gaussian",
         "--noise_rate", "0.1"]


def check_run_folder(run: Run, n_init: int, n_query: int, n_round: int) -> None:
    """Every file is there and consistent with the configuration and with each other."""
    assert run.summary["status"] == "complete"
    assert list(run.rounds.columns) == ROUND_COLUMNS
    assert list(run.acquired.columns) == ACQUIRED_COLUMNS
    assert run.rounds["round"].tolist() == list(range(n_round + 1))
    assert run.rounds["n_labeled"].tolist() == [n_init + n_query * r for r in range(n_round + 1)]
    assert (run.rounds["test_error"] - (1 - run.rounds["test_acc"])).abs().max() < 1e-9
    assert (run.rounds[TIMING_COLUMNS] >= 0).all().all()
    counts = run.acquired.groupby("round").size().to_dict()
    assert counts == {-1: n_init, **{r: n_query for r in range(n_round)}}
    # Nothing is labelled twice, and pool positions map to one dataset index each.
    assert run.acquired["pool_position"].is_unique and run.acquired["dataset_index"].is_unique
    assert run.summary["final_test_acc"] == pytest.approx(run.rounds["test_acc"].iloc[-1])


# --stop_set_size 10: the default stop set's 1,000 images per round were 2,000 of a run's 6,500 ResNet18 passes
# (training counted 3 a step). --eval_batch_size 100: 512-image chunks made 100 MB activations whose pages
# are mapped and zeroed afresh each time (1 thread: 3.8 s of sys per 512 images, 0.7 s in chunks of 100).
# Neither changes what is checked: seed 42 bald gave the same rounds.csv (but stop_kappa and test_loss in its
# 7th digit) and a byte-identical acquired.csv.
RESNET = ["--dataset", "mnist_5k", "--model", "resnet18", "--no-wandb", "--num_valid", "100",
          "--n_init_labeled", "60", "--n_query", "10", "--n_round", "1", "--epochs", "5", "--min_steps", "0",
          "--batch_size", "20",
          "--pool_subset", "100", "--stop_set_size", "10", "--eval_batch_size", "100"]

# (argv, initial labels, queried per round, pool items scored in round 0, test accuracy floor).
# Chance is 0.10. LeNet with 200 labels must reach 70%; ResNet18 from scratch on 60 labels, 5 epochs
# (15 and 20 steps; 8 epochs took a third longer), gave at least 0.56 in every round, validation and test,
# with seeds 1-3 under random and bald on CPU (with its BatchNorm statistics recalibrated), floor 50%.
SETTINGS = {"lenet": (LENET, 200, 20, 5000 - 1000 - 200 - 200, 0.70), "resnet18": (RESNET, 60, 10, 100, 0.50)}


STRATEGIES = ["random", "entropy", "bald"]


def check_model_learns(cli, model: str, strategy: str) -> None:
    """One run of SETTINGS[model] with ``strategy``: a consistent run folder, both rounds above the floor."""
    argv, n_init, n_query, n_scored, floor = SETTINGS[model]
    rc, out, err, runs = cli(*argv, "--strategy", strategy)
    assert rc == 0, err
    [run] = runs
    check_run_folder(run, n_init=n_init, n_query=n_query, n_round=1)
    assert run.rounds["n_scored"].iloc[0] == n_scored  # the whole unlabelled pool, or --pool_subset
    assert run.rounds["test_acc"].min() >= floor, run.rounds
    assert run.rounds["val_acc"].min() >= floor
    # test_acc splits into the clean and the noisy test images (exactly round(rate × 1,000) of them noisy)
    rounds, n_noisy = run.rounds, round(run.config["noise_rate"] * 1000) if run.config["noise"] != "none" else 0
    if n_noisy:
        whole = (rounds["test_acc_clean"] * (1000 - n_noisy) + rounds["test_acc_noisy"] * n_noisy) / 1000
        assert (whole - rounds["test_acc"]).abs().max() < 1e-9
    else:
        assert (rounds["test_acc_clean"] == rounds["test_acc"]).all() and rounds["test_acc_noisy"].isna().all()
    # The acquired labels are the true ones of those dataset items (clean oracle).
    from data import load_dataset
    y = load_dataset("mnist_5k", "data").train_y
    assert (y.numpy()[run.acquired["dataset_index"].to_numpy()] == run.acquired["label"].to_numpy()).all()
    assert "round" in out and "test_acc" in out  # the per-round table


# ResNet18's run: tests/test_e2e_resnet.py (a file of its own, for pytest-xdist's balance)
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_lenet_learns_with_each_strategy(cli, strategy):
    check_model_learns(cli, "lenet", strategy)


@pytest.mark.parametrize("strategy", ["var_ratios", "mean_std", "margin", "least_confidence", "batchbald"])
def test_published_acquisition_functions_run_end_to_end(cli, strategy):
    argv, n_init, n_query, _, floor = SETTINGS["lenet"]
    rc, out, err, runs = cli(*argv, "--strategy", strategy, "--pool_subset", "500")
    assert rc == 0, err
    [run] = runs
    check_run_folder(run, n_init=n_init, n_query=n_query, n_round=1)
    assert run.rounds["n_scored"].iloc[0] == 500
    assert run.rounds["test_acc"].min() >= floor, run.rounds
    assert run.acquired.query("round == 0")["score"].notna().all()


# Gal et al.'s protocol, shortened: 20 labels, 100 validation images, K=100, a pool subset of 2,000.
@pytest.mark.parametrize("model, floor", [("cnn", 0.45), ("batchbald_cnn", 0.45)])
def test_published_models_learn_from_20_labels_with_their_preset(cli, model, floor):
    rc, out, err, runs = cli("--preset", "gal2017", "--dataset", "mnist_5k", "--model", model, "--n_round", "1",
                             "--strategy", "bald", "--no-wandb")
    assert rc == 0, err
    [run] = runs
    check_run_folder(run, n_init=20, n_query=10, n_round=1)
    assert run.config["preset"] == "gal2017" and run.config["mc_samples"] == 100
    assert run.config["weight_decay_scaled"] == 7.0 and run.config["pool_subset"] == 2000
    assert run.rounds["n_scored"].iloc[0] == 2000
    assert run.rounds["train_steps"].tolist() == [50, 50]  # 50 epochs of one batch (20 and 30 < 128 labels)
    assert run.rounds["test_acc"].min() >= floor, run.rounds


def metrics(run: Run) -> pd.DataFrame:
    return run.rounds.drop(columns=TIMING_COLUMNS)


def test_same_seed_gives_identical_numbers(cli, tmp_path):
    # --device cpu: the promise is for the CPU; CUDA kernels need not be bit-reproducible (seen on an H200)
    args = [*SMALL, "--device", "cpu", "--strategy", "bald", "--noise", "salt_and_pepper", "--noise_rate", "0.3",
            "--n_round", "2"]
    _, _, _, [a] = cli(*args, output_dir=tmp_path / "a")
    _, _, _, [b] = cli(*args, output_dir=tmp_path / "b")
    pd.testing.assert_frame_equal(metrics(a), metrics(b))
    pd.testing.assert_frame_equal(a.acquired, b.acquired)
    _, _, _, [c] = cli(*args[:-2], "--n_round", "2", "--seed", "7", output_dir=tmp_path / "c")
    assert not metrics(a).equals(metrics(c))
    assert set(a.acquired["dataset_index"]) != set(c.acquired["dataset_index"])


def test_strategies_are_paired_by_seed(cli, tmp_path):
    """Same seed: same validation split, noise, initial set and initial weights, whatever the strategy."""
    args = [*SMALL, "--noise", "gaussian", "--noise_rate", "0.5"]
    _, _, _, [rand] = cli(*args, "--strategy", "random", output_dir=tmp_path / "r")
    _, _, _, [bald] = cli(*args, "--strategy", "bald", output_dir=tmp_path / "b")
    # n_noisy counts the queries that follow round 0's training, which differ by strategy
    pd.testing.assert_series_equal(metrics(rand).iloc[0].drop("n_noisy"), metrics(bald).iloc[0].rename(0).drop("n_noisy"),
                                   check_names=False)
    initial = lambda run: run.acquired[run.acquired["round"] == -1].drop(columns="score")  # noqa: E731
    pd.testing.assert_frame_equal(initial(rand), initial(bald))
    assert set(rand.acquired["dataset_index"]) != set(bald.acquired["dataset_index"])


def test_experiment_runs_each_seed_and_writes_aggregate(cli, tmp_path):
    rc, out, err, runs = cli(*SMALL, "--experiment", "--seeds", "3", "5")
    assert rc == 0, err
    assert sorted(r.config["seed"] for r in runs) == [3, 5]
    [exp] = [p for p in (tmp_path / "runs").iterdir() if p.name.startswith("experiment_")]
    agg = pd.read_csv(exp / "aggregate.csv")
    finals = pd.read_csv(exp / "final_rounds.csv")
    assert agg["round"].tolist() == [0, 1]
    last = [r.rounds["test_acc"].iloc[-1] for r in runs]
    assert agg["test_acc_mean"].iloc[-1] == pytest.approx(sum(last) / 2)
    assert agg["test_acc_sem"].iloc[-1] == pytest.approx(abs(last[0] - last[1]) / 2)
    assert sorted(finals["seed"]) == [3, 5]
    assert "±" in out and f"{sum(last) / 2:.4f}" in out


def test_runs_never_overwrite_each_other(cli, tmp_path):
    for _ in range(2):
        rc, *_ = cli(*SMALL, "--n_round", "0", "--run_name", "same")
        assert rc == 0
    folders = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert len(folders) == 2 and all(f.startswith("same_") for f in folders)


def test_wandb_offline_run_is_written_and_announced(cli, tmp_path, monkeypatch):
    """A real wandb run, offline for lack of a key: it lands in the run folder and never blocks."""
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc login
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    args = [a for a in SMALL if a != "--no-wandb"]
    messages = []
    handler = logging.Handler()
    handler.emit = messages.append
    logging.getLogger("ProjectLogger").addHandler(handler)
    try:
        rc, out, err, [run] = cli(*args, "--wandb")
    finally:
        logging.getLogger("ProjectLogger").removeHandler(handler)
    assert rc == 0, err
    # The record log holds config, per-round history and the summary (protobuf keeps keys as bytes).
    blob = wandb_record_log(run.path)
    assert blob.count(b"test_acc") >= 2 and b"n_labeled" in blob
    assert b"final_test_acc" in blob and b"mnist_5k" in blob
    assert run.summary["status"] == "complete"
    assert not [r for r in messages if "wandb" in r.getMessage() and r.levelname == "WARNING"]
    assert any("wandb sync" in r.getMessage() for r in messages)


def _start(tmp_path, *extra):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, str(ROOT / "main.py"), *SMALL[:-4], "--n_round", "200", "--epochs", "2",
           "--output_dir", str(tmp_path / "runs"), *extra]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for_rounds(tmp_path, n, proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        folders = run_dirs(tmp_path / "runs")
        if folders and (folders[0] / "rounds.csv").exists():
            if len((folders[0] / "rounds.csv").read_text().splitlines()) - 1 >= n:
                return folders[0]
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    raise AssertionError("the run did not reach the rounds in time")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill-9"])
def test_interrupted_run_keeps_every_finished_round(tmp_path, sig):
    proc = _start(tmp_path)
    folder = _wait_for_rounds(tmp_path, 3, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    run = Run(folder)
    assert len(run.rounds) >= 3
    assert run.rounds["round"].tolist() == list(range(len(run.rounds)))
    assert not run.rounds[["val_acc", "test_acc", "train_s"]].isna().any().any()
    # Each finished round's queries are recorded; the initial set too.
    assert set(range(len(run.rounds))) <= set(run.acquired["round"]) | {-1} | set()
    assert run.acquired["round"].max() >= len(run.rounds) - 1
    if sig == signal.SIGINT:
        assert proc.returncode == 130
        assert run.summary["status"] == "interrupted"
        assert run.summary["rounds_completed"] == len(run.rounds)
        assert "Traceback" not in err
    else:
        assert run.summary["status"] == "running"  # the last summary written before the kill


def test_batchbald_protocol_with_early_stopping_end_to_end(cli):
    """The batchbald2019 preset's machinery (fixed-length epochs, early stopping), shortened."""
    rc, out, err, runs = cli("--preset", "batchbald2019", "--dataset", "mnist_5k", "--n_round", "1",
                             "--strategy", "batchbald", "--no-wandb", "--num_valid", "300", "--epochs", "8",
                             "--epoch_samples", "256", "--early_stopping", "2", "--mc_samples", "10",
                             "--pool_subset", "300")
    assert rc == 0, err
    [run] = runs
    check_run_folder(run, n_init=20, n_query=10, n_round=1)
    assert run.config["preset"] == "batchbald2019" and run.config["model"] == "batchbald_cnn"
    assert run.config["early_stopping"] == 2 and run.config["epoch_samples"] == 256 and run.config["min_steps"] == 0
    epochs = run.rounds["train_epochs"]
    assert ((epochs >= 3) & (epochs <= 8)).all()  # at least one epoch, then patience 2; at most --epochs
    assert (run.rounds["train_steps"] == epochs * 4).all()  # 256 draws of 20-30 images, batch 64
    assert run.rounds["test_acc"].min() >= 0.4, run.rounds
