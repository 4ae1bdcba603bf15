"""--experiment --jobs N: seeds in worker processes give the numbers of the seeds run one after another
with --threads 1, a failing seed fails alone, and SIGTERM stops every worker (then --resume finishes)."""
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import ROOT, Run, run_dirs
from results import TIMING_COLUMNS, read_run, run_status

# Two seeds of a tiny bald study on the CPU (bit-reproducible with one thread), four rounds each.
ARGS = ["--device", "cpu", "--dataset", "mnist_5k", "--no-wandb", "--num_valid", "100", "--n_init_labeled", "20",
        "--n_query", "10", "--n_round", "3", "--epochs", "1", "--min_steps", "20", "--strategy", "bald",
        "--mc_samples", "5", "--noise", "gaussian", "--noise_rate", "0.2", "--experiment", "--seeds", "1", "2"]
AGGREGATE_TIMING = [f"{c}_{stat}" for c in TIMING_COLUMNS for stat in ("mean", "sem")]


def _popen(*argv) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, str(ROOT / "main.py"), *map(str, argv)], cwd=ROOT, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _experiment(output_dir: Path) -> Path:
    [exp] = [p for p in Path(output_dir).iterdir() if p.name.startswith("experiment_")]
    return exp


def _seed_folders(exp: Path) -> dict:
    return {Run(p).config["seed"]: p for p in run_dirs(exp)}


def _metrics(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / "rounds.csv").drop(columns=TIMING_COLUMNS)


def _processes_mentioning(text: str) -> list:
    """Pids of the processes whose command line contains ``text`` (psutil, or /proc without it)."""
    try:
        import psutil
    except ImportError:
        commands = {}
        for entry in Path("/proc").iterdir():
            try:
                commands[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except (ValueError, OSError):
                continue
    else:
        commands = {p.info["pid"]: " ".join(p.info["cmdline"] or []) for p in psutil.process_iter(["pid", "cmdline"])}
    return [pid for pid, command in commands.items() if text in command]


@pytest.fixture(scope="module")
def experiments(tmp_path_factory):
    """The same experiment one seed after another with one thread, and with --jobs 2 (run side by side)."""
    out = tmp_path_factory.mktemp("experiments")
    procs = {"in_turn": _popen(*ARGS, "--jobs", "1", "--threads", "1", "--run_name", "in_turn",
                               "--output_dir", out / "in_turn"),
             "parallel": _popen(*ARGS, "--jobs", "2", "--run_name", "parallel", "--output_dir", out / "parallel")}
    stderr = {name: proc.communicate(timeout=300)[1] for name, proc in procs.items()}
    for name, proc in procs.items():
        assert proc.returncode == 0, stderr[name]
    return {name: _experiment(out / name) for name in procs}, stderr["parallel"]


def test_parallel_seeds_give_the_numbers_of_seeds_in_turn(experiments):
    exps, parallel_err = experiments
    in_turn, parallel = _seed_folders(exps["in_turn"]), _seed_folders(exps["parallel"])
    assert sorted(in_turn) == sorted(parallel) == [1, 2]
    for seed, folder in parallel.items():
        assert run_status(folder) == "complete" and len(read_run(folder)[0]) == 4
        pd.testing.assert_frame_equal(_metrics(folder), _metrics(in_turn[seed]))
        assert (folder / "acquired.csv").read_text() == (in_turn[seed] / "acquired.csv").read_text()
        assert f"--resume {folder} --threads 1" in (folder / "log.txt").read_text()  # its output is there
        assert f"seed {seed} started" in parallel_err and f"{folder / 'log.txt'}" in parallel_err
    for name in ("aggregate.csv", "final_rounds.csv"):
        timing = AGGREGATE_TIMING if name == "aggregate.csv" else TIMING_COLUMNS
        pd.testing.assert_frame_equal(pd.read_csv(exps["parallel"] / name).drop(columns=timing),
                                      pd.read_csv(exps["in_turn"] / name).drop(columns=timing))


def test_a_failing_seed_fails_alone(tmp_path, experiments, capsys):
    """Seed 2's acquired.csv no longer matches the dataset, so its process exits 2; seed 1 still finishes."""
    import main

    exp = tmp_path / experiments[0]["parallel"].name
    shutil.copytree(experiments[0]["parallel"], exp)
    seeds = _seed_folders(exp)
    for folder in seeds.values():  # round 0 only: both seeds have rounds to run
        pd.read_csv(folder / "rounds.csv").head(1).to_csv(folder / "rounds.csv", index=False)
    header, first, *rest = (seeds[2] / "acquired.csv").read_text().splitlines()
    values = dict(zip(header.split(","), first.split(",")), dataset_index="-1")  # an item of another split
    (seeds[2] / "acquired.csv").write_text("\n".join([header, ",".join(values.values()), *rest]) + "\n")

    summary_before = (seeds[2] / "summary.json").read_bytes()
    assert main.main(["--resume", str(exp), "--jobs", "2"]) == 1  # the workers are processes all the same
    assert "1 of 2 seeds failed: 2" in capsys.readouterr().err
    error = (seeds[2] / "error.txt").read_text()  # the tail of the worker's output
    assert f"--resume {seeds[2]}" in error and "error: the run folder's acquired.csv does not match" in error
    # seed 2's refused resume changes nothing in its folder (issue 15): its failure is in error.txt
    assert run_status(seeds[1]) == "complete" and (seeds[2] / "summary.json").read_bytes() == summary_before
    pd.testing.assert_frame_equal(_metrics(seeds[1]), _metrics(_seed_folders(experiments[0]["parallel"])[1]))
    assert pd.read_csv(exp / "final_rounds.csv")["seed"].tolist() == [1]


def test_sigterm_stops_every_worker_and_resume_finishes(tmp_path):
    proc = _popen(*ARGS, "--n_round", "8", "--jobs", "2", "--output_dir", tmp_path)
    deadline = time.time() + 180
    while len([f for f in run_dirs(tmp_path) if read_run(f)[0]]) < 2:  # each seed has finished a round
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.05)
    exp = _experiment(tmp_path)
    assert len(_processes_mentioning(str(exp))) == 2  # the two workers (the parent's command line lacks it)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert _processes_mentioning(str(exp)) == []
    seeds = _seed_folders(exp)
    assert any(run_status(folder) == "interrupted" for folder in seeds.values())
    for folder in seeds.values():
        assert Run(folder).summary["rounds_completed"] == len(read_run(folder)[0]) >= 1

    import main

    assert main.main(["--resume", str(exp), "--jobs", "2"]) == 0
    assert all(run_status(folder) == "complete" and len(read_run(folder)[0]) == 9 for folder in seeds.values())
    assert pd.read_csv(exp / "final_rounds.csv")["seed"].tolist() == [1, 2]


def test_kill_9_of_the_parent_stops_its_workers_and_a_resume_finishes(tmp_path):
    """kill -9 of an --experiment --jobs 2 parent left its workers running, so that an immediate --resume
    reported every seed "failed" while they held the locks (issue 27, defect 7): they die with it now (and a
    resume meanwhile says one is still running); a later success keeps error.txt under a past name."""
    import main
    proc = _popen(*ARGS, "--n_round", "20", "--jobs", "2", "--output_dir", tmp_path)  # orphans: 20 s more
    deadline = time.time() + 180
    while len([f for f in run_dirs(tmp_path) if read_run(f)[0]]) < 2:
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.05)
    exp = _experiment(tmp_path)
    assert len(_processes_mentioning(str(exp))) == 2
    proc.kill()
    proc.communicate(timeout=60)
    deadline = time.time() + 10
    while _processes_mentioning(str(exp)):  # the workers got SIGTERM from the kernel: they save and exit
        assert time.time() < deadline, "the workers outlived their parent"
        time.sleep(0.1)
    seeds = _seed_folders(exp)
    assert all(run_status(folder) == "interrupted" for folder in seeds.values())
    (seeds[1] / "error.txt").write_text("an earlier attempt failed\n")
    assert main.main(["--resume", str(exp), "--jobs", "2"]) == 0
    assert all(run_status(folder) == "complete" and len(read_run(folder)[0]) == 21 for folder in seeds.values())
    assert not (seeds[1] / "error.txt").exists()
    [kept] = seeds[1].glob("error_before_*.txt")
    assert kept.read_text() == "an earlier attempt failed\n"


def test_jobs_beyond_the_seeds_or_without_experiment_run_as_usual(tmp_path):
    import main

    tiny = [*ARGS[:ARGS.index("--experiment")], "--n_round", "0", "--jobs", "3"]
    assert main.main([*tiny, "--experiment", "--seeds", "5", "--output_dir", str(tmp_path / "one_seed")]) == 0
    [seed] = run_dirs(tmp_path / "one_seed")
    assert run_status(seed) == "complete" and not (seed / "log.txt").exists()  # one seed: run in this process
    assert main.main([*tiny, "--output_dir", str(tmp_path / "single")]) == 0  # --jobs is ignored
    assert run_status(run_dirs(tmp_path / "single")[0]) == "complete"
