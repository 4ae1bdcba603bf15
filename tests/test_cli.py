"""Bad input: one line on stderr, exit code 2, no traceback, no run folder."""
import pytest

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
    pytest.param(OK + ["--strategy", "coreset"], "invalid choice: 'coreset'", id="unknown-strategy"),
    pytest.param(OK + ["--noise", "speckle"], "invalid choice: 'speckle'", id="unknown-noise"),
    pytest.param(OK + ["--epochs", "0"], "epochs", id="epochs-zero"),
    pytest.param(OK + ["--strategy", "bald", "--mc_samples", "1"], "mc_samples", id="bald-one-sample"),
    pytest.param(OK + ["--epochs", "ten"], "invalid int value", id="not-a-number"),
    pytest.param(OK + ["--device", "cuda"], "not available", id="missing-device"),
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
