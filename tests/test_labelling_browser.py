"""The labelling page in a real browser: Debian's Chromium driven by playwright, against a real
``main.py --oracle human`` run on mnist_5k.

One study of 3 query rounds of 5 images: batch 0 is labelled by clicking (with a reload half-way and
refused answers through the page), batch 1 by keyboard, batch 2 is half labelled when the run is
killed with SIGKILL; the resumed run (the same address: the token is kept in the run folder, the port is
--human_port's) shows the answers again in the tab left open, which reconnects by itself; the rest is
labelled and the run finishes. acquired.csv must then hold exactly the answers given.

On the way, the keyboard flow of issue 16 (at 1280×800, where the fifth card starts below the fold):
focus stays on a pressed button when the page redraws, Enter presses a focused button and submits an
incomplete batch only to show the run's refusal, the highlighted card scrolls into view, an answer given
after the run stopped is never shown as saved, and the status and message lines follow the run to
"finished" with the round count of summary.json.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from conftest import ROOT, record_messages, wait_said

CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                reason=f"no {CHROMIUM} (scripts/install_chromium.sh installs it as root)")
playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect  # polls from Python: the page's CSP forbids eval, which wait_for_function needs

N_QUERY, N_ROUND = 5, 3
ARGS = ["--dataset", "mnist_5k", "--oracle", "human", "--n_init_labeled", "20", "--n_query", str(N_QUERY),
        "--n_round", str(N_ROUND), "--num_valid", "200", "--epochs", "1", "--min_steps", "30", "--no-wandb",
        "--threads", "1", "--run_name", "human",
        "--query_lag", "0"]  # the waiting protocol: each batch chosen by its round's model (lag 1: test_query_lag.py)


STARTED: list = []  # every study process of the test: killed at the end, whatever happened


@pytest.fixture(autouse=True)
def kill_leftovers():
    yield
    for proc in STARTED:
        if proc.poll() is None:  # a failed test leaves a run waiting for labels forever
            proc.kill()
            proc.wait()
    STARTED.clear()


class Study:
    """A main.py process whose stderr goes to a file; ``url`` is the labelling page it printed."""

    def __init__(self, argv: list, log: Path):
        self.log = log
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with open(log, "w") as err:
            self.proc = subprocess.Popen([sys.executable, str(ROOT / "main.py"), *argv], cwd=ROOT, env=env,
                                         stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL)
        STARTED.append(self.proc)
        self.url = self._wait_for(r"label the queried images at (http://\S+)")

    def _wait_for(self, pattern: str, timeout: float = 120) -> str:
        deadline = time.time() + timeout
        while time.time() < deadline:
            found = re.search(pattern, self.log.read_text())
            if found:
                return found.group(1)
            assert self.proc.poll() is None, f"main.py exited {self.proc.returncode}:\n{self.log.read_text()}"
            time.sleep(0.1)
        raise AssertionError(f"no {pattern!r} in {self.log}:\n{self.log.read_text()}")

    def wait(self, timeout: float = 120) -> int:
        return self.proc.wait(timeout=timeout)


def status_of(url: str, data: bytes | None = None, headers: dict | None = None) -> int:
    request = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def batch_file(folder: Path) -> dict:
    return json.loads((folder / "human_batch.json").read_text())


def saved_answers(folder: Path, round_: int) -> dict:
    saved = batch_file(folder)
    assert saved["round"] == round_
    return {int(p): a["label"] for p, a in saved["answers"].items()}


def open_batch(page, round_: int) -> list:
    """Wait for the page to show round ``round_``'s batch; its pool positions, in page order."""
    page.wait_for_selector(f'#batch[data-round="{round_}"]', timeout=120_000)
    return [int(p) for p in page.eval_on_selector_all(".card", "cs => cs.map(c => c.dataset.position)")]


def card(page, position: int):
    return page.locator(f'.card[data-position="{position}"]')


def wait_saved(folder: Path, round_: int, n: int) -> dict:
    deadline = time.time() + 30
    while time.time() < deadline:
        answers = saved_answers(folder, round_)
        if len(answers) >= n:
            return answers
        time.sleep(0.05)
    raise AssertionError(f"human_batch.json has {len(answers)} answers, expected {n}")


def wait_redrawn(page, base: str, token: str) -> None:
    """Wait until the page has drawn the run's latest state (its poll fetched /view after the last change)."""
    deadline = time.time() + 30
    while time.time() < deadline:
        with urllib.request.urlopen(f"{base}/state?token={token}", timeout=10) as r:
            server = json.loads(r.read())["version"]
        if page.get_attribute("#view", "data-version") == server:
            return
        time.sleep(0.1)
    raise AssertionError("the page did not follow the run's state")


FOCUSED = "(() => { const b = document.activeElement; const c = b.closest('.card'); " \
          "return [b.tagName, b.dataset.label || null, c ? Number(c.dataset.position) : null]; })()"


def test_label_a_study_in_the_browser(tmp_path):
    out = tmp_path / "runs"
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    study = Study([*ARGS, "--human_port", str(port), "--output_dir", str(out)], tmp_path / "run1.log")
    (folder,) = out.iterdir()  # human_<timestamp>
    given: dict = {}  # pool position -> label given (-1: I don't know)
    base = study.url.split("/?token=")[0]
    token = study.url.split("token=")[1]
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            record_messages(page)
            page.goto(study.url)

            # No token, a wrong token, or a POST whose token is only in the address: 403.
            assert status_of(base + "/") == 403
            assert status_of(base + "/view?token=" + "x" * len(token)) == 403
            assert status_of(base + "/image/0.png") == 403
            body = json.dumps({"batch": 0, "position": 0, "label": 1}).encode()
            assert status_of(f"{base}/answer?token={token}", body, {"Content-Type": "application/json"}) == 403
            assert status_of(base + "/state?token=" + token) == 200

            # Batch 0, by clicking; a reload half-way keeps the answers.
            positions = open_batch(page, 0)
            assert len(positions) == N_QUERY
            for i, p in enumerate(positions[:2]):
                card(page, p).locator(f'button[data-label="{i + 3}"]').click()
                given[p] = i + 3
            wait_saved(folder, 0, 2)
            page.reload()
            assert open_batch(page, 0) == positions
            for p in positions[:2]:
                assert card(page, p).locator("button.chosen").get_attribute("data-label") == str(given[p])
            assert page.locator("#answered").inner_text() == "2"
            assert page.locator("#submit").is_disabled()

            # Refused through the page: a clear message, and nothing changes.
            before = (folder / "human_batch.json").read_bytes()
            page.evaluate(f"sendAnswer({positions[2]}, 10)")
            page.wait_for_selector("#message.bad")
            assert "unknown class 10" in page.locator("#message").inner_text()
            page.evaluate("sendAnswer(999999, 1)")
            expect(page.locator("#message")).to_contain_text("not queried", timeout=60_000)
            assert (folder / "human_batch.json").read_bytes() == before

            card(page, positions[2]).locator('button[data-label="skip"]').click()
            given[positions[2]] = -1
            for p in positions[3:]:
                card(page, p).locator('button[data-label="7"]').click()
                given[p] = 7
            card(page, positions[3]).locator('button[data-label="1"]').click()  # changed before submitting
            given[positions[3]] = 1
            wait_saved(folder, 0, N_QUERY)
            page.screenshot(path=str(tmp_path / "labelling_batch0.png"), full_page=True)
            page.keyboard.press("Enter")  # after clicks too: a clicked button keeps no focus to press again
            wait_said(page, "submitted")
            assert batch_file(folder)["submitted"] is True
            # A second submission of the same batch is refused.
            second = page.evaluate("async () => { const r = await fetch('/submit', {method: 'POST', headers: "
                                   "{'Content-Type': 'application/json', 'X-Token': document.body.dataset.token}, "
                                   "body: JSON.stringify({batch: 0})}); return [r.status, (await r.json()).error]; }")
            assert second[0] == 409 and "already submitted" in second[1]

            # Batch 1, by keyboard (the page follows by itself, no reload): digits label the highlighted
            # image and move on; "?" is "I don't know"; Enter submits.
            positions = open_batch(page, 1)
            # The learning curve has rounds 0 and 1 (round 1's model chose this batch: its kappa against
            # round 0 is drawn too), with a legend for its lines; batch 0's "submitted" line is gone.
            assert page.locator("#curve").count() == 1
            assert page.locator("#curve .legend").all_text_contents() == ["validation accuracy", "test accuracy",
                                                                          "kappa"]
            assert page.locator("#message").inner_text() == ""
            assert page.locator(".phase").inner_text().startswith("Round 2 of 4: waiting for you.")
            # Enter on an incomplete batch: the run's refusal, on the page, where the person is looking (issue 26,
            # flaw 2: it was at the top of the page, off screen when the person is at the cards)
            page.set_viewport_size({"width": 1280, "height": 500})
            page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
            page.keyboard.press("Enter")
            expect(page.locator("#message.bad")).to_contain_text("5 of 5 images have no answer yet (image 1, 2, 3, "
                                                                 "4, 5)", timeout=10_000)
            box = page.locator("#message").bounding_box()
            assert page.evaluate("window.scrollY") > 0 and box and 0 <= box["y"] and box["y"] + box["height"] <= 500
            page.set_viewport_size({"width": 1280, "height": 800})
            # Space on a focused button labels its card; focus stays there when the page redraws, and Tab
            # goes on to the next button of that card.
            card(page, positions[0]).locator('button[data-label="2"]').focus()
            page.keyboard.press(" ")
            given[positions[0]] = 2
            wait_saved(folder, 1, 1)
            wait_redrawn(page, base, token)
            assert page.evaluate(FOCUSED) == ["BUTTON", "2", positions[0]]
            page.keyboard.press("Tab")
            assert page.evaluate(FOCUSED) == ["BUTTON", "3", positions[0]]
            # Enter on a focused button presses it, and does not submit.
            card(page, positions[1]).locator('button[data-label="skip"]').focus()
            page.keyboard.press("Enter")
            given[positions[1]] = -1
            assert wait_saved(folder, 1, 2) == {positions[0]: 2, positions[1]: -1}
            # The keys label the highlighted card; the highlight moves on, and the card it moves to is in view.
            for p, key in zip(positions[2:4], ["5", "5"]):
                page.keyboard.press(key)
                given[p] = int(key)
            assert page.locator(".card.current").get_attribute("data-position") == str(positions[4])
            # In view within a pixel (layout is sub-pixel: once the card ended 0.27 px below the 800 px
            # viewport), polled for a moment (the scroll may land after the key's handler returns)
            deadline = time.monotonic() + 5
            while True:
                box = page.locator(".card.current").bounding_box()
                if box["y"] >= -1 and box["y"] + box["height"] <= 800 + 1 or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            assert box["y"] >= -1 and box["y"] + box["height"] <= 800 + 1, box
            page.keyboard.press("9")
            given[positions[4]] = 9
            wait_saved(folder, 1, N_QUERY)
            page.locator("#submit").focus()  # Enter on the focused Submit button submits once
            page.keyboard.press("Enter")
            wait_said(page, "round 2 of 4: 4 labels submitted, 1 skipped")

            # Batch 2: two answers, then the run is killed (SIGKILL) mid-batch.
            positions = open_batch(page, 2)
            page.keyboard.press("4")
            page.keyboard.press("8")
            assert wait_saved(folder, 2, 2) == {positions[0]: 4, positions[1]: 8}
            study.proc.send_signal(signal.SIGKILL)
            study.wait()
            page.wait_for_selector("#online.offline", timeout=10_000)
            # An answer given now is not saved, and the page never shows it as saved.
            expect(page.locator("#online")).to_contain_text("disconnected")
            page.keyboard.press("3")
            expect(card(page, positions[2])).to_have_class(re.compile(r"\bunsaved\b"), timeout=10_000)
            assert "answered" not in card(page, positions[2]).get_attribute("class").split()
            assert card(page, positions[2]).locator("button.unsent").get_attribute("data-label") == "3"
            assert page.locator("#answered").inner_text() == "2"
            assert "Not saved" in page.locator("#message").inner_text()
            assert saved_answers(folder, 2) == {positions[0]: 4, positions[1]: 8}

            # Resumed at the same address: the tab left open reconnects by itself and shows the same batch
            # with the two saved answers, and not the one given while disconnected; finish it.
            resumed = Study(["--resume", str(folder)], tmp_path / "run2.log")
            assert resumed.url == study.url
            deadline = time.time() + 120
            while json.loads(urllib.request.urlopen(f"{base}/state?token={token}", timeout=10).read())["phase"] \
                    != "labelling":
                assert time.time() < deadline and resumed.proc.poll() is None, resumed.log.read_text()
                time.sleep(0.1)
            wait_redrawn(page, base, token)
            expect(page.locator("#online")).to_have_text("connected")
            assert open_batch(page, 2) == positions
            assert "answered" not in card(page, positions[2]).get_attribute("class").split()
            assert page.locator("#answered").inner_text() == "2"
            # The highlight is where it was, or on the first open card when the page showed the training
            # in between: a click on the card's image puts it on card 3.
            card(page, positions[2]).locator("img").click()
            for p, label in ((positions[0], 4), (positions[1], 8)):
                assert card(page, p).locator("button.chosen").get_attribute("data-label") == str(label)
                given[p] = label
            for p, key in zip(positions[2:], ["0", "?", "6"]):
                page.keyboard.press(key)
                given[p] = -1 if key == "?" else int(key)
            wait_saved(folder, 2, N_QUERY)
            page.locator("#submit").click()
            # The page follows to the end: it says finished, and no message says the model is training.
            expect(page.locator("#view .phase")).to_contain_text("Finished", timeout=120_000)
            assert "training" not in page.locator("#message").inner_text()
            counts = page.locator("#view .counts").inner_text()
            assert resumed.wait() == 0, resumed.log.read_text()
        finally:
            browser.close()

    acquired = pd.read_csv(folder / "acquired.csv")
    queried = acquired[acquired["round"] >= 0]
    assert dict(zip(queried["pool_position"], queried["label"])) == given
    assert sorted(queried.groupby("round").size().tolist()) == [N_QUERY] * N_ROUND
    rounds = pd.read_csv(folder / "rounds.csv")
    assert rounds["round"].tolist() == list(range(N_ROUND + 1))
    assert rounds["n_skipped"].tolist() == [1, 1, 1, 0]
    # --dont_know out (the default): skipped images leave the pool; 20 initial + 4 labels a round.
    assert rounds["n_labeled"].tolist() == [20, 24, 28, 32]
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["status"] == "complete"
    assert json.loads((folder / "config.json").read_text())["oracle"] == "human"
    # The page counted the rounds as summary.json does.
    assert counts.startswith(f"round {summary['rounds_completed']} of {summary['rounds_planned']} · 32 labelled")


def test_at_the_default_flags_the_next_batch_is_on_screen_while_the_model_trains(tmp_path):
    """Issue 26, item 1, in Chromium at --oracle human's defaults (--query_lag 1): after batch 1's submission,
    batch 2 is on screen at once, chosen by round 0's model, while round 1's model (1,000 steps) still
    trains on the labels of batch 1; the page says so, and acquired.csv records which model chose it."""
    out = tmp_path / "runs"
    study = Study(["--dataset", "mnist_5k", "--oracle", "human", "--n_init_labeled", "20", "--n_query", "3",
                   "--n_round", "2", "--num_valid", "200", "--min_steps", "1000", "--no-wandb", "--threads", "1",
                   "--run_name", "lagged", "--output_dir", str(out)], tmp_path / "run.log")
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(study.url)
            for r in (0, 1):
                open_batch(page, r)
                if r == 1:  # at once: round 1's model is still training, on the 23 labels of round 0's batch
                    phase = page.locator("#view .phase").inner_text()
                    assert "(the previous round's) chose these 3 images, while the next model trains on 23 in " \
                           "the background" in phase, phase
                    state = json.loads(urllib.request.urlopen(study.url.replace("/?", "/state?")).read())
                    assert (state["step"], state["n_training"]) == ("training", 23)
                for key in ("1", "2", "3"):
                    page.keyboard.press(key)
                expect(page.locator("#answered")).to_have_text("3")
                page.keyboard.press("Enter")  # taken: the next batch opens (its message cleared at once) or the end
            expect(page.locator("#view .phase")).to_contain_text("Finished", timeout=120_000)
            assert study.wait() == 0, study.log.read_text()
        finally:
            browser.close()
    [folder] = [p for p in out.iterdir() if p.is_dir()]
    acquired = pd.read_csv(folder / "acquired.csv")
    assert acquired.groupby("round")["chosen_by"].unique().map(list).to_dict() == {-1: [-1], 0: [0], 1: [0]}
    assert json.loads((folder / "config.json").read_text())["query_lag"] == 1
