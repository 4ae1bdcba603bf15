"""Labelling-page benchmark: how long a batch takes to label by keyboard, and whether the page stays
responsive while the model trains.

Starts a real ``main.py --oracle human`` study (mnist_5k, bald, the default training: 1,000 steps a
round), opens the page in Debian's Chromium through playwright, and for every batch:

- times the wait from the previous batch's acknowledgement to this batch on screen (``wait_s``);
- presses one key per image (the dataset's true digit), ``--pace`` seconds apart (0: the page's own cost,
  with no person's reading time in it; a person takes one to a few seconds an image) and Enter, and times
  it from the batch appearing to the run's acknowledgement;
- while the next round trains, fetches ``/state`` and ``/view`` (what the page polls and renders) every
  100 ms from a second client and records their latency, and compares with the same requests while
  the run waits for labels.

Prints JSON lines (one per batch, then a summary). ``--screenshot PATH`` saves the page half-way
through the last batch (the README's picture), ``--phone_screenshot PATH`` the same page's first screen
on a phone in dark mode.

    .venv/bin/python bench/bench_labelling.py --rounds 2 --screenshot docs/labelling_page.png \
        --phone_screenshot docs/labelling_page_phone.png
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from results import read_run  # noqa: E402


def true_labels(num_valid: int, seed: int) -> list:
    """The dataset label of every pool position, as prepare_data orders the pool (no input noise)."""
    from data import load_dataset
    from data.splits import split_train

    ds = load_dataset("mnist_5k", "data")
    return ds.train_y[split_train(ds.train_y, num_valid, seed).pool_idx].tolist()


class Prober(threading.Thread):
    """Fetches /state and /view every 100 ms; latencies (ms) by the phase the run reported."""

    def __init__(self, base: str, token: str):
        super().__init__(daemon=True)
        self.base, self.token, self.stop = base, token, threading.Event()
        self.ms = {"training": {"state": [], "view": []}, "labelling": {"state": [], "view": []}}

    def get(self, route: str) -> tuple:
        t = time.perf_counter()
        with urllib.request.urlopen(f"{self.base}/{route}?token={self.token}", timeout=30) as r:
            body = r.read()
        return (time.perf_counter() - t) * 1000, body

    def run(self):
        while not self.stop.is_set():
            try:
                ms, body = self.get("state")
                phase = json.loads(body)["phase"]
                if phase in self.ms:
                    self.ms[phase]["state"].append(ms)
                    self.ms[phase]["view"].append(self.get("view")[0])
            except OSError:
                pass
            time.sleep(0.1)


def stats(values: list) -> dict:
    if not values:
        return {"n": 0}
    values = sorted(values)
    return {"n": len(values), "median_ms": round(statistics.median(values), 1),
            "p95_ms": round(values[int(0.95 * (len(values) - 1))], 1), "max_ms": round(values[-1], 1)}


def phone_screenshot(browser, url: str, r: int, path: str) -> None:
    """The page as a phone in dark mode shows it: its first screen, batch ``r`` open."""
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True,
                                  color_scheme="dark", device_scale_factor=2)
    phone = context.new_page()
    phone.goto(url)
    phone.wait_for_selector(f'#batch[data-round="{r}"] img')
    time.sleep(0.5)  # the pictures drawn
    phone.screenshot(path=path)
    context.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    parser.add_argument("--rounds", type=int, default=3, help="query rounds (batches to label)")
    parser.add_argument("--n_query", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0, help="torch threads of the run (0 = all cores)")
    parser.add_argument("--screenshot", default="", help="save the page half-way through the last batch here")
    parser.add_argument("--phone_screenshot", default="",
                        help="and the same page on a phone (390×844, dark mode), its first screen, here")
    parser.add_argument("--pace", type=float, default=0.0,
                        help="seconds a simulated person spends on each image before its key (0: none)")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args, extra = parser.parse_known_args()  # anything else goes to main.py (e.g. --warm_start continue)
    from playwright.sync_api import expect, sync_playwright

    num_valid, seed = 200, 42
    labels = true_labels(num_valid, seed)
    out = Path(tempfile.mkdtemp(prefix="bench_labelling_"))
    log = out / "run.log"
    argv = [sys.executable, str(ROOT / "main.py"), "--dataset", "mnist_5k", "--strategy", "bald", "--oracle", "human",
            "--n_init_labeled", "20", "--n_query", str(args.n_query), "--n_round", str(args.rounds),
            "--num_valid", str(num_valid), "--seed", str(seed), "--no-wandb", "--threads", str(args.threads),
            "--output_dir", str(out / "runs"), "--run_name", "bench", *extra]
    with open(log, "w") as err:
        proc = subprocess.Popen(argv, cwd=ROOT, stderr=err, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        while not (found := re.search(r"label the queried images at (http://\S+)", log.read_text())):
            if proc.poll() is not None:
                raise SystemExit(log.read_text())
            time.sleep(0.1)
        url = found.group(1)
        base, token = url.split("/?token=")
        prober = Prober(base, token)
        prober.start()
        batches = []
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1500, "height": 1150})
            page.goto(url)
            submitted = None
            for r in range(args.rounds):
                page.wait_for_selector(f'#batch[data-round="{r}"]', timeout=600_000)
                t0 = time.perf_counter()
                # From the previous batch's acknowledgement to this batch on screen: the person's wait
                # (the next round's training, evaluation and query, plus the page's poll interval).
                wait_s = None if submitted is None else round(t0 - submitted, 3)
                positions = [int(p) for p in page.eval_on_selector_all(".card", "cs => cs.map(c => c.dataset.position)")]
                for i, p in enumerate(positions):
                    time.sleep(args.pace)
                    page.keyboard.press(str(labels[p]))
                    if args.screenshot and r == args.rounds - 1 and i == len(positions) // 2:
                        page.screenshot(path=args.screenshot, full_page=True)
                    if args.phone_screenshot and r == args.rounds - 1 and i == len(positions) // 2:
                        phone_screenshot(browser, url, r, args.phone_screenshot)
                page.keyboard.press("Enter")
                expect(page.locator("#message")).to_contain_text(f"round {r + 1} of", timeout=60_000)
                submitted = time.perf_counter()
                seconds = submitted - t0
                row = {"event": "batch", "round": r, "images": len(positions), "keyboard_s": round(seconds, 3),
                       "wait_s": wait_s,
                       "ms_per_image": round(1000 * seconds / len(positions), 1)}
                batches.append(row)
                print(json.dumps(row), flush=True)
            browser.close()
        rc = proc.wait(timeout=900)
        prober.stop.set()
        folder = next((out / "runs").iterdir())
        train_s = [row["train_s"] for row in read_run(folder)[0]]
        waits = [b["wait_s"] for b in batches if b["wait_s"] is not None]
        summary = {"event": "summary", "exit_code": rc, "batches": len(batches), "pace_s": args.pace,
                   "max_wait_s": max(waits, default=0), "flags": extra,
                   "median_keyboard_s": statistics.median(b["keyboard_s"] for b in batches),
                   "median_wait_s": statistics.median([b["wait_s"] for b in batches if b["wait_s"] is not None] or [0]),
                   "median_train_s": round(statistics.median(train_s), 2),
                   "while_training": {k: stats(v) for k, v in prober.ms["training"].items()},
                   "while_labelling": {k: stats(v) for k, v in prober.ms["labelling"].items()},
                   "run_folder": str(folder)}
        print(json.dumps(summary), flush=True)
        return 0 if rc == 0 else 1
    finally:
        if proc.poll() is None:
            proc.kill()


if __name__ == "__main__":
    sys.exit(main())
