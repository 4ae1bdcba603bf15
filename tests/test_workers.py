"""workers.WorkerPool, the one pool that runs an experiment's seeds and a local sweep's cells: at most N at a
time, in order, logs appended; a signal starts no new worker and stops the running ones; an error stops them."""
from __future__ import annotations

import os
import signal
import sys
import time

import pytest

from workers import Job, WorkerPool

# A worker that records its start, sleeps, and on SIGTERM writes "saved" and exits 130 (as main.py does)
WORKER = ("import signal, sys, time\n"
          "signal.signal(signal.SIGTERM, lambda *a: (print('saved', flush=True), sys.exit(130)))\n"
          "print('start', time.monotonic(), flush=True)\n"
          "time.sleep(float(sys.argv[1]))\n"
          "print('end', time.monotonic(), flush=True)\n")


def job(tmp_path, name, seconds, events, **callbacks):
    return Job([sys.executable, "-c", WORKER, str(seconds)], tmp_path / f"{name}.log", "test",
               started=callbacks.get("started", lambda proc, n: events.append(("start", name, n))),
               finished=lambda proc, s, out: events.append(("end", name, proc.returncode, out)))


def test_runs_size_at_a_time_in_order_and_logs_each_worker(tmp_path):
    events = []
    pool = WorkerPool(2, poll_s=0.02)
    assert pool.run([job(tmp_path, name, 0.3, events) for name in "abc"]) is False
    starts = [(e[1], e[2]) for e in events if e[0] == "start"]
    assert starts == [("a", 1), ("b", 2), ("c", 3)]
    assert [e[0] for e in events].index("end") == 2  # c started only after a worker ended
    for e in (e for e in events if e[0] == "end"):
        assert e[2] == 0 and "start" in e[3] and "end" in e[3] and "=== exit" not in e[3]
    text = (tmp_path / "a.log").read_text()
    assert text.startswith("\n=== ") and " test: " in text and text.endswith("=== exit 0\n")


def test_a_signal_starts_no_new_worker_and_stops_the_running_ones(tmp_path):
    events, stops = [], []

    def started(proc, n):
        events.append(("start", "x", n))
        time.sleep(0.3)  # the worker installs its SIGTERM handler
        os.kill(os.getpid(), signal.SIGINT)  # as a Ctrl-C at the terminal

    pool = WorkerPool(1, poll_s=0.02, on_stop=stops.append)
    before = signal.getsignal(signal.SIGINT)
    jobs = [job(tmp_path, "x", 30, events, started=started), job(tmp_path, "y", 30, events)]
    t0 = time.monotonic()
    assert pool.run(jobs) is True and pool.stopping
    assert time.monotonic() - t0 < 10 and stops == [1]
    [end] = [e for e in events if e[0] == "end"]
    assert end[1:3] == ("x", 130) and "saved" in end[3]
    assert not (tmp_path / "y.log").exists()
    assert signal.getsignal(signal.SIGINT) is before  # the pool's handler is gone again


def test_an_error_in_a_callback_stops_the_workers_and_propagates(tmp_path):
    events, procs = [], []

    def started(proc, n):
        procs.append(proc)
        if n == 2:
            raise RuntimeError("disk full")

    pool = WorkerPool(2, poll_s=0.02)
    with pytest.raises(RuntimeError, match="disk full"):
        pool.run([job(tmp_path, name, 30, events, started=started) for name in "ab"])
    assert all(p.poll() is not None for p in procs)
