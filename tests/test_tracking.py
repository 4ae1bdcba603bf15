"""tracking.py: wandb group and job type, a start-up failure remembered per process, prompt Ctrl-C."""
import logging
import subprocess
import sys
import textwrap

import pytest

import tracking
from conftest import ROOT, interrupt_during_wandb_start, unreachable_wandb_env, wandb_record_log


@pytest.fixture(autouse=True)
def fresh_process_state(monkeypatch):
    """Each test starts as a new process would: no remembered wandb failure."""
    monkeypatch.setattr(tracking, "_start_failure", None)


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc login
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))


class Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture
def log():
    logger = logging.getLogger("test-tracking")
    handler = Records()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.records = handler.records
    yield logger
    logger.removeHandler(handler)


def test_group_and_job_type_reach_wandb(tmp_path, offline_wandb, log):
    """A real offline wandb run: the run object and its record log both hold the group and job type."""
    tracker = tracking.start_tracker(True, "proj", "run-a", {"lr": 0.1}, tmp_path, log,
                                     group="sweep-7f3a", job_type="strategy-bald-x")
    assert isinstance(tracker, tracking.WandbTracker)
    assert tracker.run.group == "sweep-7f3a" and tracker.run.job_type == "strategy-bald-x"
    tracker.log({"round": 0, "n_labeled": 20, "test_acc": 0.5})
    tracker.finish({"status": "complete"})
    blob = wandb_record_log(tmp_path)
    assert b"sweep-7f3a" in blob and b"strategy-bald-x" in blob


@pytest.mark.parametrize("group, job_type", [("", ""), (None, None)])
def test_empty_group_and_job_type_mean_none(tmp_path, offline_wandb, log, group, job_type):
    tracker = tracking.start_tracker(True, "proj", "run-b", {}, tmp_path, log, group=group, job_type=job_type)
    assert not tracker.run.group and not tracker.run.job_type
    tracker.finish({"status": "complete"})


def test_the_positional_call_of_main_py_still_works(tmp_path, offline_wandb, log):
    tracker = tracking.start_tracker(True, "proj", "run-c", {"a": 1}, tmp_path, log)
    assert isinstance(tracker, tracking.WandbTracker) and not tracker.run.group
    tracker.finish({"status": "complete"})


def test_disabled_tracking_never_imports_or_calls_wandb(tmp_path, log, monkeypatch):
    import wandb
    monkeypatch.setattr(wandb, "init", lambda **kw: pytest.fail("wandb.init called"))
    assert isinstance(tracking.start_tracker(False, "p", "n", {}, tmp_path, log), tracking.NullTracker)


@pytest.mark.parametrize("error", [
    TimeoutError("Timed out while retrying: connection refused"), OSError("Network is unreachable"),
    RuntimeError(""), ValueError("bad api key\nsecond line"),
], ids=["timeout", "oserror", "empty-message", "bad-key"])
def test_a_failed_start_is_remembered_for_the_rest_of_the_process(tmp_path, log, monkeypatch, error):
    import wandb
    calls = []

    def failing_init(**kwargs):
        calls.append(kwargs)
        raise error

    monkeypatch.setattr(wandb, "init", failing_init)
    for seed in range(3):  # an experiment's seeds
        assert isinstance(tracking.start_tracker(True, "p", f"seed{seed}", {}, tmp_path, log), tracking.NullTracker)
    assert len(calls) == 1  # tried once: the later runs skip it at once
    assert len(log.records) == 3 and all(r.levelname == "WARNING" for r in log.records)
    assert "could not start" in log.records[0].getMessage()
    assert all("earlier in this process" in r.getMessage() for r in log.records[1:])
    assert all("\n" not in r.getMessage() for r in log.records)


def test_keyboard_interrupt_in_wandb_init_propagates_and_is_not_a_failure(tmp_path, log, monkeypatch):
    import wandb

    def interrupted_init(**kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(wandb, "init", interrupted_init)
    with pytest.raises(KeyboardInterrupt):
        tracking.start_tracker(True, "p", "n", {}, tmp_path, log)
    assert tracking._start_failure is None and not log.records


# --- real processes, wandb online against a closed local port: what a user without network meets ------

SCRIPT = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {root!r})
    import tracking
    from config import get_logger
    tracking.INIT_TIMEOUT_S = {timeout}
    log = get_logger("ProjectLogger")
    try:
        for i in range({runs}):
            t = time.perf_counter()
            tracker = tracking.start_tracker(True, "p", f"seed{{i}}", {{"a": 1}}, {run_dir!r}, log)
            print(f"start {{i}} {{type(tracker).__name__}} {{time.perf_counter() - t:.2f}}", flush=True)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        sys.exit(130)
""")


def start_process(tmp_path, runs, timeout):
    env = unreachable_wandb_env(tmp_path)
    code = SCRIPT.format(root=str(ROOT), timeout=timeout, runs=runs, run_dir=str(tmp_path / "run"))
    (tmp_path / "run").mkdir()
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, stdin=subprocess.DEVNULL)


def test_unreachable_wandb_costs_its_timeout_once_per_process(tmp_path):
    proc = start_process(tmp_path, runs=3, timeout=3)
    out, err = proc.communicate(timeout=120)
    starts = [line.split() for line in out.splitlines() if line.startswith("start")]
    assert [s[2] for s in starts] == ["NullTracker"] * 3, out + err
    first, *later = [float(s[3]) for s in starts]
    assert first >= 2.0  # the first run waited for wandb (INIT_TIMEOUT_S = 3 here)
    assert all(t < 0.5 for t in later), starts  # the next ones did not
    assert err.count("wandb could not start (") == 1 and err.count("earlier in this process") == 2


def test_ctrl_c_during_wandb_start_up_exits_promptly(tmp_path):
    """Measured before the fix: 17 s from SIGINT to exit (wandb's exit hook waited out the init timeout)."""
    proc = start_process(tmp_path, runs=1, timeout=tracking.INIT_TIMEOUT_S)
    out, err, elapsed = interrupt_during_wandb_start(proc, tmp_path / "run")
    assert proc.returncode == 130 and "interrupted" in out, out + err
    assert elapsed < 5.0, f"{elapsed:.1f} s from SIGINT to exit"
    assert "Exception ignored" not in err and "Traceback" not in err, err
