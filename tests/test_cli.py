"""Bad input: one line on stderr, exit code 2, no traceback, no run folder."""
import pytest
import torch

import memory
from conftest import SMALL, run_process

OK = ["--dataset", "mnist_5k", "--no-wandb", "--n_init_labeled", "20", "--n_query", "10", "--n_round", "2"]

BAD = [
    pytest.param(["--dataset", "mnist_5k", "--no-wandb"], "exceeds the pool", id="budget-over-pool-defaults"),
    pytest.param(OK[:-1] + ["400"], "exceeds the pool", id="budget-over-pool"),
    pytest.param(OK + ["--num_valid", "4000"], "num_valid", id="num_valid-too-large"),
    pytest.param(OK + ["--num_valid", "3"], "num_valid", id="num_valid-below-classes"),
    pytest.param(OK + ["--noise_rate", "1.5"], "noise_rate", id="rate-above-1"),
    pytest.param(OK + ["--noise_rate", "-0.1"], "noise_rate", id="rate-below-0"),
    pytest.param(OK + ["--sp_fraction", "1.2"], "sp_fraction", id="sp-fraction"),
    pytest.param(OK + ["--dataset", "imagenet"], "invalid choice: 'imagenet'", id="unknown-dataset"),
    pytest.param(OK + ["--model", "vgg16"], "invalid choice: 'vgg16'", id="unknown-model"),
    pytest.param(OK + ["--strategy", "vaal"], "invalid choice: 'vaal'", id="unknown-strategy"),
    pytest.param(OK + ["--noise", "speckle"], "invalid choice: 'speckle'", id="unknown-noise"),
    pytest.param(OK + ["--epochs", "0"], "epochs", id="epochs-zero"),
    pytest.param(OK + ["--strategy", "bald", "--mc_samples", "1"], "mc_samples", id="bald-one-sample"),
    pytest.param(OK + ["--strategy", "bald", "--uncertainty", "ensemble", "--ensemble_size", "1"], "ensemble_size",
                 id="bald-ensemble-of-one"),
    pytest.param(OK + ["--strategy", "coreset", "--uncertainty", "ensemble"], "does not take --uncertainty ensemble",
                 id="embeddings-strategy-with-an-ensemble"),
    pytest.param(OK + ["--epochs", "ten"], "invalid int value", id="not-a-number"),
    pytest.param(OK + ["--device", "cuda"], "not available", id="missing-device",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")),
    # numbers that are not finite or out of range, for several fields (every field: test_config.py)
    pytest.param(OK + ["--lr", "nan"], "--lr must be a finite number", id="lr-nan"),
    pytest.param(OK + ["--lr", "inf"], "--lr must be a finite number", id="lr-inf"),
    pytest.param(OK + ["--noise_std", "nan"], "--noise_std must be a finite number", id="noise-std-nan"),
    pytest.param(OK + ["--weight_decay", "nan"], "--weight_decay must be a finite number", id="weight-decay-nan"),
    pytest.param(OK + ["--weight_decay_scaled=-inf"], "--weight_decay_scaled", id="weight-decay-scaled-inf"),
    pytest.param(OK + ["--momentum", "-1"], "--momentum must be in [0, 1)", id="momentum-negative"),
    pytest.param(OK + ["--momentum", "1"], "--momentum must be in [0, 1)", id="momentum-one"),
    pytest.param(OK + ["--seed", str(2**64)], "--seed must be in", id="seed-too-large"),
    pytest.param(OK + ["--threads", "100000"], "--threads must be in", id="threads-too-many"),
    # budgets that passed the check but failed later
    pytest.param(OK[:3] + ["--n_init_labeled", "3000", "--n_round", "0"], "must leave at least one",
                 id="initial-set-is-the-whole-pool"),
    pytest.param(OK[:3] + ["--n_init_labeled", "1", "--n_round", "0", "--num_valid", "3999"],
                 "must leave at least one", id="pool-of-one"),
    pytest.param(["--dataset", "mnist", "--no-wandb", "--data_dir", "{tmp}/empty"], "mnist_5k",
                 id="mnist-missing-offline"),
    pytest.param(["--dataset", "cifar10", "--no-wandb", "--data_dir", "{tmp}/empty"], "cifar-10-batches-py",
                 id="cifar-missing-offline"),
]


@pytest.mark.parametrize("argv, message", BAD)
def test_bad_input_exits_2_with_one_line(cli, tmp_path, argv, message):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    rc, out, err, runs = cli(*argv)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert message in lines[0]
    assert "Traceback" not in err and out == ""
    assert not (tmp_path / "runs").exists(), "a bad input must not leave a run folder"


def test_unwritable_output_dir(cli, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    rc, out, err, _ = cli(*OK, output_dir=blocker / "runs")
    assert rc == 2
    assert err.count("\n") == 1 and "cannot write to --output_dir" in err


@pytest.mark.parametrize("argv, message", [
    (["--noise_rate", "2"], "--noise_rate must be in [0, 1]"),
    (["--strategy", "nope"], "invalid choice: 'nope'"),
    (["--dataset", "mnist", "--data_dir", "{tmp}/none", "--no-wandb"], "could not be downloaded"),
])
def test_real_process_prints_one_line_and_no_traceback(tmp_path, argv, message):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    proc = run_process(*argv, "--output_dir", tmp_path / "runs", timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "runs").exists()


def test_debug_gives_debug_logging_and_post_mortem_path(tmp_path, monkeypatch, capsys):
    """--debug logs at DEBUG; an uncaught error prints its traceback and, without a terminal, skips ipdb."""
    import loop
    import main

    def broken(*args, **kwargs):
        raise RuntimeError("boom in the loop")

    monkeypatch.setattr(main, "run_study", broken)
    rc = main.main([*SMALL, "--debug", "--output_dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert rc == 1
    assert "RuntimeError: boom in the loop" in err
    assert loop.get_strategy("bald")  # the loop module itself is untouched
    summary = next((tmp_path / "runs").rglob("summary.json")).read_text()
    assert '"status": "failed"' in summary


def test_without_debug_a_bug_is_not_swallowed(tmp_path, monkeypatch):
    import main

    monkeypatch.setattr(main, "run_study", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("bug")))
    with pytest.raises(RuntimeError, match="bug"):
        main.main([*SMALL, "--output_dir", str(tmp_path / "runs")])


MEMORY = [
    pytest.param(["--strategy", "bald", "--mc_samples", "100000000"], "to score even one pool image", id="bald-k-1e8"),
    pytest.param(["--strategy", "entropy", "--mc_samples", "1000000", "--model", "cnn"],
                 "to score even one pool image", id="cnn-entropy-k-1e6"),
    pytest.param(["--strategy", "batchbald", "--mc_samples", "100000"], "K × N × C = 100000 × 3970 × 10",
                 id="batchbald-k-1e5"),
    pytest.param(["--strategy", "batchbald", "--mc_samples", "20000", "--pool_subset", "3000"],
                 "K × N × C = 20000 × 3000 × 10", id="batchbald-subset"),
    # An ensemble counts its M members: as the joint query's K, and as M networks held at once.
    pytest.param(["--strategy", "batchbald", "--uncertainty", "ensemble", "--ensemble_size", "20000", "--pool_subset",
                  "3000"], "K × N × C = 20000 × 3000 × 10", id="batchbald-ensemble-subset"),
    pytest.param(["--strategy", "entropy", "--uncertainty", "ensemble", "--ensemble_size", "40000"],
                 "keeps 40000 networks", id="ensemble-of-40000-lenets"),
]


@pytest.mark.parametrize("argv, message", MEMORY)
def test_queries_too_large_for_memory_exit_2_before_a_folder(cli, tmp_path, monkeypatch, argv, message):
    # The same limit on every machine; patched where check_budget looks it up (memory.py's own name).
    monkeypatch.setattr(memory, "memory_limit", lambda device=None: 8 * 2**30)
    rc, out, err, runs = cli(*OK, "--num_valid", "10", *argv)
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], err
    assert "GiB" in lines[0] and "Traceback" not in err and out == ""
    assert not (tmp_path / "runs").exists()


TINY = ["--dataset", "mnist_5k", "--no-wandb", "--epochs", "1", "--min_steps", "1", "--num_valid", "3960"]


@pytest.mark.parametrize("argv, n_init, n_query, n_round", [
    pytest.param(["--n_init_labeled", "20", "--n_query", "10", "--n_round", "2"], 20, 10, 2,
                 id="budget-fills-the-pool"),
    pytest.param(["--n_init_labeled", "39", "--n_query", "1", "--n_round", "0"], 39, 1, 0, id="all-but-one-no-query"),
    pytest.param(["--n_init_labeled", "3", "--n_query", "5", "--n_round", "1", "--strategy", "bald",
                  "--mc_samples", "2"], 3, 5, 1, id="fewer-initial-labels-than-classes"),
    pytest.param(["--n_init_labeled", "30", "--n_query", "10", "--n_round", "1", "--strategy", "batchbald",
                  "--mc_samples", "3"], 30, 10, 1, id="batchbald-takes-the-last-images"),
    pytest.param(["--n_init_labeled", "20", "--n_query", "10", "--n_round", "2", "--strategy", "entropy",
                  "--pool_subset", "1000"], 20, 10, 2, id="subset-larger-than-the-pool"),
])
def test_edge_budgets_run(cli, argv, n_init, n_query, n_round):
    """A pool of 40 images (4000 − 3960): budgets at its edges run to the end."""
    rc, out, err, runs = cli(*TINY, *argv)
    assert rc == 0, err
    [run] = runs
    assert run.rounds["n_labeled"].tolist() == [n_init + n_query * r for r in range(n_round + 1)]
    assert run.acquired["pool_position"].is_unique and len(run.acquired) == n_init + n_query * n_round


@pytest.mark.parametrize("damage, words", [("truncated", "truncated"), ("label-200", "label 200 at position 3"),
                                           ("not-idx", "not an IDX file")])
def test_damaged_dataset_file_exits_2_naming_the_file(cli, tmp_path, damage, words):
    from test_data import IDX_NAMES, damage_idx, fake_idx_splits, write_idx_files

    arrays = fake_idx_splits(40, n_train=300, n_test=50)
    write_idx_files(tmp_path / "data" / "MNIST" / "raw", arrays)
    key = ("train", "labels") if damage != "truncated" else ("train", "images")
    path = tmp_path / "data" / "MNIST" / "raw" / IDX_NAMES[key]
    damage_idx(path, damage)
    rc, out, err, runs = cli("--dataset", "mnist", "--data_dir", tmp_path / "data", "--no-wandb",
                             "--n_init_labeled", "20", "--n_query", "10", "--n_round", "1", "--num_valid", "50")
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and f"{path} is damaged" in lines[0] and words in lines[0]
    assert "Traceback" not in err and out == "" and not (tmp_path / "runs").exists()


def test_noise_without_a_rate_warns_in_one_line_naming_noise_rate(cli):
    """The design card's command `main.py --strategy bald --noise gaussian` noises no image (--noise_rate
    defaults to 0, as in the original): one warning says so; with a rate, no warning."""
    rc, _, err, [run] = cli(*SMALL, "--n_round", "0", "--noise", "gaussian", "--threads", "1")
    assert rc == 0, err
    [line] = [line for line in err.splitlines() if "--noise_rate" in line]
    assert line.startswith("--noise gaussian adds noise to no image: --noise_rate is 0")
    rc, _, err, _ = cli(*SMALL, "--n_round", "0", "--noise", "gaussian", "--noise_rate", "0.1", "--threads", "1")
    assert rc == 0 and "--noise_rate is 0" not in err


@pytest.mark.parametrize("argv, message", [
    (["--warm_start", "shrink_perturb", "--perturb", "1e30"], "--perturb must be in [0, 1], got 1e+30"),
    (["--warm_start", "shrink_perturb", "--shrink", "0", "--perturb", "0"], "starts every round from all-zero weights"),
])
def test_shrink_perturb_flags_are_bounded(cli, argv, message):
    rc, _, err, runs = cli(*SMALL, *argv)
    assert rc == 2 and runs == [] and err.count("\n") == 1 and message in err


def test_a_diverged_round_stops_the_run_cleanly_with_its_finished_rounds_kept(cli, monkeypatch):
    """Any cause of non-finite training (here a weight poisoned in round 1's fit): one line, exit 2, the
    finished round 0 kept, summary.json 'failed', and no query made from the diverged model."""
    import loop
    real_fit = loop.fit

    def poisoned_fit(model, *args, **kwargs):
        fitted = real_fit(model, *args, **kwargs)
        if kwargs.get("desc") == "round 1 epochs":
            with torch.no_grad():
                next(model.parameters())[0].fill_(float("nan"))
        return fitted
    monkeypatch.setattr(loop, "fit", poisoned_fit)
    rc, _, err, [run] = cli(*SMALL, "--strategy", "bald", "--mc_samples", "3", "--threads", "1")
    assert rc == 2 and "Traceback" not in err
    [line] = [line for line in err.splitlines() if line.startswith("error:")]
    assert line.startswith("error: round 1: training diverged (training loss") and "not finite, such as" in line
    assert run.rounds["round"].tolist() == [0] and run.summary["status"] == "failed"
    assert sorted(run.acquired["round"].unique()) == [-1, 0]  # round 0's queries; none from round 1's model


def test_a_learning_rate_that_diverges_is_one_line_in_a_real_process(tmp_path):
    proc = run_process(*SMALL, "--lr", "1e30", "--threads", "1", "--output_dir", tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines()[-1].startswith("error: round 0: training diverged (training loss nan")
