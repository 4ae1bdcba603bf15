"""Shared helpers: run the real CLI in-process or as a subprocess, and read run folders."""
from __future__ import annotations

import json
import os
import socket
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]

# Small settings on the embedded dataset: every end-to-end test adds only what it checks.
# --min_steps 50 keeps them quick (the default, 1000, is for results, not for checks of the plumbing).
SMALL = ["--dataset", "mnist_5k", "--no-wandb", "--min_steps", "50", "--num_valid", "200",
         "--n_init_labeled", "20", "--n_query", "10", "--n_round", "1", "--epochs", "3"]


def pytest_configure(config):
    """Under pytest-xdist (pytest.ini's -n 2), each worker gets its own share of the cores.

    A run's torch threads default to the cores it may use (main.py), and its child processes inherit
    them: without this, two workers on 2 cores would run 2 threads each, and OpenMP threads waiting on
    each other on a busy core make a ResNet18 pass many times slower than one thread does.
    """
    worker, count = os.environ.get("PYTEST_XDIST_WORKER", ""), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    cores = sorted(os.sched_getaffinity(0))
    if worker.startswith("gw") and 1 < count <= len(cores):
        os.sched_setaffinity(0, cores[int(worker[2:]) % count::count])


# A bald study whose runs test_resume.py and test_training_engine.py kill and resume: rounds long enough
# (60 steps) that a kill lands in the middle of a round; 1 thread for bitwise reproducibility between
# processes; --device cpu: runs are bit-reproducible on the CPU (README), CUDA kernels need not be (seen
# on an H200).
RESUMABLE = ["--device", "cpu", "--dataset", "mnist_5k", "--no-wandb", "--num_valid", "100", "--n_init_labeled", "20",
             "--n_query", "10", "--n_round", "5", "--epochs", "1", "--min_steps", "60", "--threads", "1",
             "--strategy", "bald", "--mc_samples", "5", "--noise", "gaussian", "--noise_rate", "0.2",
             # a training recipe and a stochastic acquisition with random draws of their own: a killed run
             # resumes to the same numbers with them
             "--augment", "shift_rotate", "--lr_schedule", "onecycle", "--acquisition", "power"]


def run_dirs(output_dir: Path) -> list:
    """Run folders under output_dir (those with a config.json), oldest name first."""
    return sorted(p.parent for p in Path(output_dir).rglob("config.json") if "experiment_" not in p.parent.name)


class Run:
    """A finished run folder, read back from its files alone."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.config = json.loads((self.path / "config.json").read_text())
        self.summary = json.loads((self.path / "summary.json").read_text())
        self.rounds = pd.read_csv(self.path / "rounds.csv")
        self.acquired = pd.read_csv(self.path / "acquired.csv")


@pytest.fixture
def cli(tmp_path, capsys):
    """Call main.main(argv) in-process with --output_dir in tmp; returns (rc, stdout, stderr, runs)."""
    import main

    def call(*argv, output_dir=None):
        out = Path(output_dir or tmp_path / "runs")
        rc = main.main([*map(str, argv), "--output_dir", str(out)])
        captured = capsys.readouterr()
        runs = [Run(p) for p in run_dirs(out)] if out.exists() else []
        return rc, captured.out, captured.err, runs
    return call


def run_process(*argv, timeout=300, **kwargs) -> subprocess.CompletedProcess:
    """python main.py ARGV as a real process (no terminal), from the repository root."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *map(str, argv)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, **kwargs)


def finished_run(out: Path, *argv) -> Path:
    """The folder of one complete ``main.py ARGV`` process run into ``out``."""
    proc = run_process(*argv, "--output_dir", out)
    assert proc.returncode == 0, proc.stderr
    [folder] = run_dirs(out)
    return folder


@pytest.fixture(scope="session")
def uninterrupted(tmp_path_factory):
    """The RESUMABLE run, finished in one go: what a killed and resumed run must equal (tests only read it)."""
    return finished_run(tmp_path_factory.mktemp("full"), *RESUMABLE)


def closed_port() -> int:
    """A local TCP port that refuses connections (an unreachable server, e.g. for wandb)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again on leaving: connections are refused


def unreachable_wandb_env(tmp_path: Path) -> dict:
    """Environment for a process whose wandb is online, with a key, but cannot reach its server."""
    return {**os.environ, "WANDB_MODE": "online", "WANDB_API_KEY": "x" * 40, "PYTHONUNBUFFERED": "1",
            "WANDB_BASE_URL": f"http://127.0.0.1:{closed_port()}", "HOME": str(tmp_path),
            "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config")}


def wandb_record_log(run_dir: Path) -> bytes:
    """The bytes of the one offline wandb record log under ``run_dir``, once wandb has written all of it.

    ``run.finish()`` returns when the service has the run's last record, not when its writer has flushed
    the file: under load a test that read at once saw only the file's header. ``wandb.teardown()`` waits
    for the service process to exit, as a user's program does at exit, so the file is complete after it.
    """
    import wandb

    wandb.teardown()
    [offline] = list((run_dir / "wandb").glob("offline-run-*"))
    [records] = list(offline.glob("run-*.wandb"))
    return records.read_bytes()


def interrupt_during_wandb_start(proc: subprocess.Popen, folder: Path) -> tuple:
    """Send SIGINT once wandb's service is up under ``folder`` and init is pending: (out, err, seconds
    from the signal to the exit)."""
    deadline = time.time() + 90
    while not list(Path(folder).rglob("debug-internal.log")):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.1)
    time.sleep(1.0)
    sent = time.perf_counter()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    return out, err, time.perf_counter() - sent


def mount_tmpfs(path: Path, size: str) -> None:
    """A real filesystem of ``size`` at ``path`` (a new folder); skips the test where it cannot be had."""
    path.mkdir()
    if os.geteuid() != 0:
        pytest.skip("a small real filesystem needs root (mount -t tmpfs)")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")


def fill_disk(folder: Path) -> None:
    """Write ``folder``/filler until the disk is full."""
    with open(folder / "filler", "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MB tmpfs under tmp_path, unmounted afterwards."""
    disk = tmp_path / "disk"
    mount_tmpfs(disk, "4m")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def probe_study_data(x, n_pool: int, num_classes: int):
    """A StudyData over the images ``x`` (N×1×H×W floats, used as they are): labels index % 10, a pool of
    ``n_pool`` in seeded shuffled dataset order, the rest validation, test = train."""
    import torch

    from data import Images
    from loop import StudyData

    n_train = x.shape[0]
    pool_idx = torch.randperm(n_train, generator=torch.Generator().manual_seed(1))[:n_pool]
    val_idx = torch.tensor(sorted(set(range(n_train)) - set(pool_idx.tolist())))
    y = torch.arange(n_train) % 10
    images = Images(x, (0.0,), (1.0,)).replaced(x)
    return StudyData(train=images, train_y=y, test=images, test_y=y, val_idx=val_idx, pool_idx=pool_idx,
                     num_classes=num_classes)


# The labelling page shows a batch's "N labels submitted" only until it draws the next batch (or the end),
# which, with the next batch chosen at once, can be within milliseconds: a browser test that reads the
# message afterwards races the page. record_messages(page), before page.goto, keeps every message shown.
_RECORD_MESSAGES = """
window.__messages = [];
document.addEventListener("DOMContentLoaded", () => {
  const m = document.getElementById("message");
  if (m) new MutationObserver(() => { if (m.textContent) window.__messages.push(m.textContent); })
    .observe(m, {childList: true, characterData: true, subtree: true});
});
"""


def record_messages(page) -> None:
    page.add_init_script(_RECORD_MESSAGES)


def wait_said(page, text: str, timeout: float = 60) -> str:
    """The first message the page has shown (since its last load) that contains ``text``; waits for it."""
    deadline = time.time() + timeout
    while True:
        said = page.evaluate("window.__messages || []")
        found = [m for m in said if text in m]
        if found:
            return found[0]
        assert time.time() < deadline, f"the page never said {text!r}; it said {said}"
        time.sleep(0.05)
