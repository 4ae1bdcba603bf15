"""sweep.py and sweeps/: grids from flags and YAML, cell names, validation before anything is created, local workers
(failure, rerun, extension, a different sweep refused), resume after kill -9, and a real Slurm array with
a requeue (skipped where Slurm does not answer)."""
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import sweep
from conftest import ROOT, fill_disk, mount_tmpfs
from results import read_run
from sweeps.executors.slurm import CellJob, wait as slurm_wait
from sweeps.grid import MAX_NAME, SAFE_VALUE, Cell, Sweep, cell_name, cell_state

# The smallest real cells: 2 rounds of 20 steps on mnist_5k, a 200-image scored pool, 5 MC samples.
TINY = ["--dataset", "mnist_5k", "--n_init_labeled", "20", "--n_query", "10", "--n_round", "1", "--epochs", "1",
        "--min_steps", "20", "--num_valid", "100", "--pool_subset", "200", "--mc_samples", "5", "--no-wandb"]
# Cells that take several seconds of rounds, so that a signal lands mid-run.
SLOW = [*TINY[:TINY.index("--n_round")], "--n_round", "6", *TINY[TINY.index("--n_round") + 2:]]
SLOW[SLOW.index("--min_steps") + 1] = "100"


@pytest.fixture
def run_sweep(capsys):
    """sweep.main(argv) in-process: (exit code, stdout, stderr)."""
    def call(*argv):
        rc = sweep.main([str(a) for a in argv])
        out = capsys.readouterr()
        return rc, out.out, out.err
    return call


def _popen_sweep(*argv, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "sweep.py"), *map(str, argv)], cwd=ROOT,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _rounds(cell: Path) -> int:
    return len(read_run(cell)[0]) if (cell / "rounds.csv").exists() else 0


def _wait(predicate, what: str, timeout: float = 150, proc=None, poll: float = 0.05, logs=lambda: ()):
    """Poll until ``predicate`` holds; a failure quotes the tails of the files ``logs()`` names (the sweep's,
    a cell's, submitit's), since a Slurm test that fails in CI leaves nothing else behind."""
    def tails():
        return "".join(f"\n--- {p} (last 3,000 characters):\n{Path(p).read_text(errors='replace')[-3000:]}"
                       for p in logs() if Path(p).exists())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the sweep ended (exit {proc.returncode}) before {what}{tails()}")
        time.sleep(poll)
    raise AssertionError(f"timed out waiting for {what}{tails()}")


def _mtimes(folder: Path) -> dict:
    return {p: p.stat().st_mtime_ns for p in Path(folder).rglob("*") if p.is_file() and p.name != ".lock"}


# --- grids, names, validation -------------------------------------------------------------------------


def test_flags_and_yaml_give_the_same_cells_and_a_dry_run_creates_nothing(tmp_path, run_sweep):
    out = tmp_path / "s"
    flags = ["--grid", "strategy=random,bald", "--grid", "noise=none,gaussian", "--grid", "seed=1,2"]
    rc, text, err = run_sweep("--out", out, *flags, "--dry_run", "--", *TINY)
    assert rc == 0, err
    assert text.splitlines() == [
        f"strategy-{s}_noise-{n}_seed-{seed}  --strategy {s} --noise {n} --seed {seed}"
        for s in ("random", "bald") for n in ("none", "gaussian") for seed in (1, 2)]
    assert "8 cells" in err and "nothing created" in err
    grid = tmp_path / "grid.yaml"
    grid.write_text("strategy: [random, bald]\nnoise: [none, gaussian]\nseed: [1, 2]\n")
    rc, from_yaml, err = run_sweep("--out", out, "--grid_file", grid, "--dry_run", "--", *TINY)
    assert rc == 0, err
    assert from_yaml == text
    # YAML and flags together: the file's keys first; a scalar is a one-value key
    grid.write_text("strategy: bald\nlr: [0.001, 0.01]\n")
    rc, both, err = run_sweep("--out", out, "--grid_file", grid, "--grid", "seed=3", "--dry_run", "--", *TINY)
    assert rc == 0, err
    assert [line.split()[0] for line in both.splitlines()] == [
        "strategy-bald_lr-0.001_seed-3", "strategy-bald_lr-0.01_seed-3"]
    assert not out.exists()


def test_cell_names_are_deterministic_unique_and_safe():
    assert cell_name({"strategy": "bald", "noise": "gaussian", "seed": "1"}) == \
        "strategy-bald_noise-gaussian_seed-1"
    odd = [{"data_dir": "data/a b"}, {"data_dir": "data/a_b"}, {"data_dir": "data/a-b"}]
    names = [cell_name(v) for v in odd]
    assert len(set(names)) == 3 and names == [cell_name(v) for v in odd]  # unique and stable
    assert all(SAFE_VALUE.fullmatch(n) for n in names)
    assert names[0].startswith("data_dir-data-a-b-") and len(names[0].rsplit("-", 1)[1]) == 8  # hashed
    long = {"data_dir": "x" * 200, "seed": "1"}
    assert len(cell_name(long)) == MAX_NAME <= 120
    assert cell_name(long) != cell_name({"data_dir": "x" * 200, "seed": "2"})


@pytest.mark.parametrize("argv, message", [
    (["--grid", "strategy=random", "--grid", "foo=1,2"], "unknown grid key 'foo'"),
    (["--grid", "output_dir=a,b"], "grid key 'output_dir' cannot vary"),
    (["--grid", "wandb=true,false"], "grid key 'wandb' cannot vary"),
    (["--grid", "seed=1,1"], "repeats the value(s) 1"),
    (["--grid", "seed"], "expected KEY=V1,V2"),
    (["--grid", "seed=1,2", "--", "--seed", "3"], "--seed is both a grid key and a pass-through flag"),
    (["--grid", "seed=1,2", "--", "--output_dir", "x"], "--output_dir cannot be passed to the cells"),
    (["--grid", "seed=1,2", "--", "--export_to", "x"], "--export_to cannot be passed to the cells"),
    (["--grid", "export_to=a,b"], "grid key 'export_to' cannot vary"),
    (["--", "--seed", "3"], "no grid"),
])
def test_bad_grids_are_refused_with_one_error_line(tmp_path, run_sweep, argv, message):
    out = tmp_path / "s"
    rc, text, err = run_sweep("--out", out, *argv)
    assert rc == 2
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1, err
    assert not out.exists()


def test_every_invalid_cell_is_reported_before_anything_is_created(tmp_path, run_sweep):
    out = tmp_path / "s"
    i = TINY.index("--n_round")
    rc, text, err = run_sweep("--out", out, "--grid", "n_round=1,5000", "--grid", "model=lenet,nope",
                              "--", *TINY[:i], *TINY[i + 2:])
    assert rc == 2
    lines = err.splitlines()
    assert lines[0] == "error: 3 of 4 cells are invalid (nothing was created):"
    assert [line.split(":")[0].strip() for line in lines[1:]] == [
        "n_round-1_model-nope", "n_round-5000_model-lenet", "n_round-5000_model-nope"]
    assert "exceeds the pool" in lines[2] and "invalid choice: 'nope'" in lines[1]
    assert not out.exists()


def _alias_bomb() -> str:
    """A grid file of under 300 bytes whose one bad value expands to 9**6 strings (an 8 MB repr)."""
    lines, previous = ["seed: [1, [&a [lol, lol, lol, lol, lol, lol, lol, lol, lol],"], "a"
    for name in "bcdef":
        lines.append(f"  &{name} [{', '.join(['*' + previous] * 9)}],")
        previous = name
    return "\n".join([*lines, "  *f]]"]) + "\n"


@pytest.mark.parametrize("text, message", [
    (_alias_bomb(), "anchors and aliases (& and *) are not allowed"),
    ("base: &b [1, 2]\nseed: *b\n", "anchors and aliases (& and *) are not allowed"),
    ("seed: " + "[" * 5000 + "1" + "]" * 5000 + "\n", "nested deeper than"),  # a RecursionError before
    ("seed: [1, {k: " + "x" * 5000 + "}]\n", "a value must be a number or a string"),
    ("? " + "x" * 5000 + "\n: [1, 2]\n", "unknown grid key 'xxxx"),
    ("seed: [" + ", ".join(str(i // 2) for i in range(3000)) + "]\n", "repeats the value(s) 0, 1, 10, 100, "),
])
def test_a_hostile_grid_file_gives_one_short_error_line(tmp_path, run_sweep, text, message):
    """Audit defect 4: aliases and deep nesting are refused while the file is read, and every message
    quotes a user's value briefly (a 283-byte alias bomb gave an 8 MB error line)."""
    grid = tmp_path / "grid.yaml"
    grid.write_text(text)
    assert grid.stat().st_size < 20_000
    rc, out, err = run_sweep("--out", tmp_path / "s", "--grid_file", grid, "--dry_run", "--", *TINY)
    assert rc == 2 and out == ""
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1, err[:300]
    assert len(err) < 400, f"{len(err)} characters: {err[:300]}"
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("argv, message", [
    (["--grid", "seed" + "1" * 5000], "expected KEY=V1,V2"),
    (["--grid", "seed=1", "--", "--output_dir=" + "d" * 5000], "cannot be passed to the cells"),
    (["--grid", "seed=1", "--nope" * 2000], "unrecognized arguments: --nope"),
])
def test_long_flags_are_quoted_briefly(tmp_path, run_sweep, argv, message):
    rc, out, err = run_sweep("--out", tmp_path / "s", *argv)
    assert rc == 2 and message in err and len(err.splitlines()) == 1 and len(err) < 400, err[:300]


@contextlib.contextmanager
def _within(seconds: int):
    """Fail (instead of hanging) when the block takes longer than ``seconds``."""
    def too_long(signum, frame):
        raise AssertionError(f"took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, too_long)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_a_grid_over_the_cell_limit_is_refused_before_any_cell_is_built(tmp_path, run_sweep):
    """Audit defect 7: 20,000 cells are refused at once from the value lists (before: every cell was
    built and checked, about 10 ms each); --max_cells raises the limit."""
    out = tmp_path / "s"
    with _within(20):
        rc, text, err = run_sweep("--out", out, "--grid", "seed=" + ",".join(map(str, range(20_000))),
                                  "--dry_run", "--", *TINY)
    assert rc == 2 and text == ""
    assert err == ("error: the grid has 20,000 cells (20000), more than --max_cells 10,000; every cell is parsed "
                   "and checked before anything runs: use fewer values, or raise --max_cells\n")
    grid = ["--grid", "strategy=random,bald,entropy", "--grid", "seed=1,2"]
    rc, text, err = run_sweep("--out", out, *grid, "--max_cells", "5", "--dry_run", "--", *TINY)
    assert rc == 2 and "the grid has 6 cells (3 × 2), more than --max_cells 5" in err and len(err.splitlines()) == 1
    rc, text, err = run_sweep("--out", out, *grid, "--max_cells", "6", "--dry_run", "--", *TINY)
    assert rc == 0 and len(text.splitlines()) == 6, err
    rc, text, err = run_sweep("--out", out, *grid, "--max_cells", "0")
    assert rc == 2 and err == "error: --max_cells must be at least 1, got 0\n"
    assert not out.exists()


def test_every_seed_of_an_invalid_budget_is_reported(tmp_path, run_sweep):
    """The budget is checked once per configuration apart from its seed, and its answer given to every seed."""
    i = TINY.index("--n_round")
    rc, text, err = run_sweep("--out", tmp_path / "s", "--grid", "n_round=1,5000", "--grid", "seed=1,2,3",
                              "--", *TINY[:i], *TINY[i + 2:])
    assert rc == 2
    lines = err.splitlines()
    assert lines[0] == "error: 3 of 6 cells are invalid (nothing was created):"
    assert [line.split(":")[0].strip() for line in lines[1:]] == [f"n_round-5000_seed-{s}" for s in (1, 2, 3)]
    assert len({line.split(":", 1)[1] for line in lines[1:]}) == 1 and "exceeds the pool" in lines[1]


@pytest.mark.parametrize("argv", [["--", "--help"], ["--out", "OUT", "--grid", "seed=1,2", "--", "-h"],
                                  ["--out", "OUT", "--grid", "seed=1", "--", "--dataset", "mnist_5k", "--help"]])
def test_help_after_the_separator_is_refused(tmp_path, run_sweep, argv):
    """main.py's help printed under "usage: sweep.py" with exit 0 read as the sweep's own; it is refused."""
    rc, text, err = run_sweep(*[str(tmp_path / "s") if a == "OUT" else a for a in argv])
    assert rc == 2 and text == ""
    assert err == ("error: --help after -- would go to every cell: for the cells' flags see python main.py --help, "
                   "for the sweep's sweep.py --help\n")
    assert not (tmp_path / "s").exists()


def test_slurm_without_sbatch_is_refused_before_anything_is_created(tmp_path, run_sweep, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    out = tmp_path / "s"
    rc, text, err = run_sweep("--out", out, "--grid", "seed=1,2", "--executor", "slurm", "--", *TINY)
    assert rc == 2 and err.startswith("error: --executor slurm: sbatch is not on this machine")
    assert not out.exists()


def test_checkpoint_requeues_the_same_cell():
    """What submitit calls on SIGUSR2 (time limit or pre-emption): the same callable, the same cell."""
    from submitit.helpers import Checkpointable, DelayedSubmission

    job = CellJob(threads=2, wandb_group="g", no_wandb=True)
    assert isinstance(job, Checkpointable)
    again = job.checkpoint("/runs/sweeps/x/cells/seed-1")
    assert isinstance(again, DelayedSubmission)
    assert again.function is job and again.args == ("/runs/sweeps/x/cells/seed-1",) and not again.kwargs
    assert job.argv("/c") == ["--resume", "/c", "--threads", "2", "--wandb_group", "g", "--no-wandb"]


# --- the local executor -------------------------------------------------------------------------------


def test_an_out_that_cannot_be_a_sweep_folder_is_one_line_and_leaves_nothing(tmp_path, run_sweep):
    """--out on an existing file, a read-only filesystem, a full disk: tracebacks, and an OUT holding only
    .lock left behind (issue 27, defect 6)."""
    grid = ["--grid", "seed=1,2", "--", *TINY]
    blocker = tmp_path / "a-file"
    blocker.write_text("mine")
    rc, _, err = run_sweep("--out", blocker, *grid)
    assert rc == 2 and err.count("\n") == 1 and "exists and is not a folder" in err and blocker.read_text() == "mine"
    disk = tmp_path / "disk"
    mount_tmpfs(disk, "1m")
    try:
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        rc, _, err = run_sweep("--out", disk / "sweep", *grid)
        assert rc == 2 and err.count("\n") == 1 and "Read-only file system" in err, err
        subprocess.run(["mount", "-o", "remount,rw", str(disk)], check=True)
        fill_disk(disk)
        rc, _, err = run_sweep("--out", disk / "sweep", *grid)
        assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, err
        assert "No space left on device" in err and not (disk / "sweep").exists()
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_local_sweep_reruns_extends_refuses_and_survives_a_failing_cell(tmp_path, run_sweep):
    out = tmp_path / "sweeps" / "tiny"
    grid1 = ["--grid", "strategy=random,bald", "--grid", "seed=1"]
    rc, text, err = run_sweep("--out", out, *grid1, "--workers", "2", "--", *TINY)
    assert rc == 0, text + err
    cells = {n: out / "cells" / n for n in ("strategy-random_seed-1", "strategy-bald_seed-1")}
    for cell in cells.values():
        assert json.loads((cell / "summary.json").read_text())["status"] == "complete"
        assert _rounds(cell) == 2
        config = json.loads((cell / "config.json").read_text())
        assert config["run_name"] == cell.name and config["wandb_group"] == "tiny"
        assert config["output_dir"] == str(out / "cells") and config["resume"] == ""
        assert config["threads"] == 0  # the sweep passes --threads when it runs the cell
        assert "--resume" in (cell / "log.txt").read_text()
    assert text.count(" start  ") == 2 and text.count(" finish ") == 2
    assert "round   0 |" not in text  # cell output goes to the cells' log.txt, not the console
    assert "2 cells: 2 complete" in text
    recorded = json.loads((out / "sweep.json").read_text())
    assert recorded["grid"] == {"strategy": ["random", "bald"], "seed": ["1"]}
    assert recorded["passthrough"] == TINY

    # the same command again: nothing runs, nothing in the cells changes
    before = _mtimes(out / "cells")
    t0 = time.monotonic()
    rc, text, err = run_sweep("--out", out, *grid1, "--workers", "2", "--", *TINY)
    assert rc == 0, err
    assert text.count(" skip   ") == 2 and " start " not in text
    assert time.monotonic() - t0 < 20
    assert _mtimes(out / "cells") == before
    rc, text, err = run_sweep("--out", out, "--status")
    assert rc == 0 and "strategy-bald_seed-1" in text and "complete  2/2" in text

    # operational flags are no part of what a sweep is: without --no-wandb, it is the same sweep
    assert TINY[-1] == "--no-wandb"
    rc, text, err = run_sweep("--out", out, *grid1, "--dry_run", "--", *TINY[:-1])
    assert rc == 0, err
    # a different sweep into the same folder is refused (other flags, another key, other key order, fewer
    # values), and nothing changes
    for other in ([*grid1, "--", *TINY, "--lr", "0.01"],
                  ["--grid", "strategy=random,bald", "--grid", "seed=1", "--grid", "noise=none", "--", *TINY],
                  ["--grid", "seed=1", "--grid", "strategy=random,bald", "--", *TINY],
                  ["--grid", "strategy=random", "--grid", "seed=1", "--", *TINY]):
        rc, text, err = run_sweep("--out", out, *other)
        assert rc == 2 and err.startswith("error: ") and "holds another sweep" in err, (other, err)
    assert _mtimes(out / "cells") == before

    # one cell damaged (its config.json unreadable, the run not finished): it fails alone, and the grid
    # extended by a seed adds two cells that complete beside it; the untouched cell is skipped
    broken = cells["strategy-bald_seed-1"]
    (broken / "config.json").write_text("{damaged")
    summary = json.loads((broken / "summary.json").read_text())
    (broken / "summary.json").write_text(json.dumps({**summary, "status": "interrupted"}))
    kept = _mtimes(cells["strategy-random_seed-1"])
    rc, text, err = run_sweep("--out", out, "--grid", "strategy=random,bald", "--grid", "seed=1,2",
                              "--workers", "2", "--", *TINY)
    assert rc == 1, text + err
    assert "finish strategy-bald_seed-1: failed (exit 2" in text
    table = text[text.index("cell "):]
    assert "strategy-bald_seed-1    failed" in table and "4 cells: 3 complete, 1 failed" in table
    assert "config.json cannot be read" in (broken / "log.txt").read_text()
    for name in ("strategy-random_seed-2", "strategy-bald_seed-2"):
        assert _rounds(out / "cells" / name) == 2
    assert _mtimes(cells["strategy-random_seed-1"]) == kept
    rc, text, err = run_sweep("--out", out, "--status")
    assert rc == 1 and "strategy-bald_seed-1    failed" in text


def test_a_worker_killed_mid_run_and_a_stopped_sweep_resume(tmp_path, run_sweep):
    """kill -9 of one worker, then SIGTERM to the sweep (which stops the other worker): the same command
    continues both cells from their last finished round."""
    out = tmp_path / "killed"
    argv = ["--out", out, "--grid", "seed=1,2", "--workers", "2", "--", *SLOW]
    proc = _popen_sweep(*argv, log=tmp_path / "sweep.log")
    a, b = out / "cells" / "seed-1", out / "cells" / "seed-2"
    try:
        _wait(lambda: _rounds(a) >= 1, "a finished round", proc=proc)
        pid = json.loads((a / "summary.json").read_text())["pid"]
        os.kill(pid, signal.SIGKILL)
        _wait(lambda: "finish seed-1" in (tmp_path / "sweep.log").read_text(), "the sweep to see the kill", proc=proc)
        _wait(lambda: _rounds(b) >= 1, "a finished round of the other cell", proc=proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=90) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
    log = (tmp_path / "sweep.log").read_text()
    assert "finish seed-1: interrupted (killed by signal 9" in log
    assert cell_state(a)["status"] == "interrupted"
    assert cell_state(b)["status"] in ("interrupted", "complete")  # b may have just finished
    done_a = _rounds(a)
    assert 1 <= done_a < 7
    rc, text, err = run_sweep(*argv)
    assert rc == 0, text + err
    for cell in (a, b):
        rounds, _ = read_run(cell)
        assert [r["round"] for r in rounds] == list(range(7))
        assert json.loads((cell / "summary.json").read_text())["status"] == "complete"
    second = (a / "log.txt").read_text().split("=== ")[-2]  # the resumed attempt's output
    assert "round   0 |" not in second and f"round   {done_a} |" in second


# --- the Slurm executor -------------------------------------------------------------------------------


def _slurm_unavailable() -> str:
    if not shutil.which("sinfo") or not shutil.which("sbatch"):
        return "slurm not installed: run scripts/local_slurm.sh as root"
    try:
        states = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=10)
    except (subprocess.SubprocessError, OSError) as err:
        return f"sinfo does not answer ({err}): run scripts/local_slurm.sh as root"
    if states.returncode != 0 or not {"idle", "mixed", "allocated"} & set(states.stdout.split()):
        return f"no Slurm node is up ({(states.stdout + states.stderr).strip()}): run scripts/local_slurm.sh as root"
    return ""


def _job_of(out: Path, cell: str) -> str:
    try:
        return json.loads((out / "sweep.json").read_text())["slurm_jobs"].get(cell, "")
    except (OSError, ValueError, KeyError):
        return ""


def _release_if_held(job: str) -> None:
    """A requeued job waits about 2 minutes (Slurm's BeginTime after a requeue); the test starts it now."""
    state = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T %r"], capture_output=True, text=True).stdout
    if "BeginTime" in state:
        subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], capture_output=True)


def test_waiting_goes_on_while_squeue_fails(tmp_path, monkeypatch):
    """A failed squeue call (a busy controller times out) says nothing about the jobs: --wait ended after
    two of them in a row while a requeued task was still pending; it waits until squeue says they are gone."""
    calls = tmp_path / "calls"
    (tmp_path / "bin").mkdir()
    squeue = tmp_path / "bin" / "squeue"  # fails 3 times, then lists the job once, then lists nothing
    squeue.write_text(f"""#!/bin/sh
echo call >> {calls}
n=$(wc -l < {calls})
if [ "$n" -le 3 ]; then echo "slurm_load_jobs error: Socket timed out on send/recv operation" >&2; exit 1; fi
if [ "$n" -eq 4 ]; then echo "7_0|PENDING"; fi
""")
    squeue.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    out = tmp_path / "s"
    out.mkdir()
    (out / "sweep.json").write_text(json.dumps({"grid": {"seed": ["1"]}, "slurm_jobs": {"seed-1": "7_0"}}))
    assert slurm_wait(Sweep(out, {"seed": ["1"]}, [], [Cell("seed-1", {"seed": "1"}, [])]), {"7_0"}, poll_s=0.01) == 1
    assert len(calls.read_text().splitlines()) == 6  # 3 failed, 1 listing the job, 2 empty


def test_slurm_array_completes_and_a_preempted_cell_is_requeued(tmp_path):
    reason = _slurm_unavailable()
    if reason:
        print(f"skipped: {reason}")
        pytest.skip(reason)
    out = tmp_path / "slurm"
    proc = _popen_sweep("--out", out, "--grid", "seed=1,2", "--executor", "slurm", "--cpus", "1", "--mem_gb", "2",
                        "--time_min", "10", "--wait", "--", *SLOW, log=tmp_path / "sweep.log")
    a = out / "cells" / "seed-1"
    try:
        def logs():
            return (tmp_path / "sweep.log", a / "log.txt", *sorted((out / "slurm").glob("**/*_log.*")))
        _wait(lambda: _rounds(a) >= 1, "a finished round in a Slurm job", proc=proc, timeout=240, logs=logs)
        job = _job_of(out, "seed-1")
        assert "_" in job  # one job array: ARRAYID_TASK
        # what a pre-emption (or the time limit, --signal_delay_s before it) sends: submitit checkpoints
        # and requeues the task, which continues the cell from its last finished round
        subprocess.run(["scancel", "--signal=USR2", job], check=True)
        _wait(lambda: "restart 1" in (a / "log.txt").read_text() or _release_if_held(job), "the requeued task",
              proc=proc, timeout=240, poll=0.5, logs=logs)
        assert proc.wait(timeout=240) == 0, (tmp_path / "sweep.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
        jobs = json.loads((out / "sweep.json").read_text()).get("slurm_jobs", {}) if (out / "sweep.json").exists() else {}
        subprocess.run(["scancel", *jobs.values()], capture_output=True)
    text = (tmp_path / "sweep.log").read_text()
    assert "2 cells: 2 complete" in text, text
    for cell in (a, out / "cells" / "seed-2"):
        assert [r["round"] for r in read_run(cell)[0]] == list(range(7))
    log = (a / "log.txt").read_text()
    assert "Caught signal SIGUSR2" in log and "Requeued job" in log
    resumed = log.split("restart 1")[-1]
    assert "round   0 |" not in resumed  # continued, not started again
    assert json.loads((a / "attempt.json").read_text())["exit"] == 0
    status = subprocess.run([sys.executable, str(ROOT / "sweep.py"), "--out", out, "--status"], capture_output=True,
                            text=True, cwd=ROOT)
    assert status.returncode == 0 and "slurm job" in status.stdout, status.stdout + status.stderr


@pytest.mark.skipif(os.environ.get("SWEEP_SLOW_TESTS") != "1", reason="about 3 minutes: set SWEEP_SLOW_TESTS=1")
def test_slurm_time_limit_requeues_until_the_cell_completes(tmp_path):
    """A cell that needs more than its 1-minute time limit: Slurm sends SIGUSR2 --signal_delay_s before
    the limit, submitit requeues the task (a timeout, counted against --max_timeouts), and it completes."""
    reason = _slurm_unavailable()
    if reason:
        pytest.skip(reason)
    out = tmp_path / "timeout"
    slow = [*SLOW]
    slow[slow.index("--n_round") + 1] = "40"
    proc = _popen_sweep("--out", out, "--grid", "seed=1", "--executor", "slurm", "--time_min", "1",
                        "--signal_delay_s", "20", "--wait", "--", *slow, log=tmp_path / "sweep.log")
    cell = out / "cells" / "seed-1"
    try:
        while proc.poll() is None:
            job = _job_of(out, "seed-1")
            if job:
                _release_if_held(job)
            time.sleep(1)
        assert proc.returncode == 0, (tmp_path / "sweep.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert len(read_run(cell)[0]) == 41
    assert "this job is timed-out" in (cell / "log.txt").read_text()
