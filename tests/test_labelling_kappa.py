"""The stopping signal on the labelling page (issue 17): each finished round's stop_kappa on the curve and in
the state JSON, the plain-words message about it, and the final state when --stop_when_stable ends the run;
real runs of main.py on a small --dataset folder whose model really stops changing (warm start, a vanishing
learning rate)."""
from __future__ import annotations

import json
import math
import os
import re

import pandas as pd
import pytest

from config import STABLE_KAPPA
from oracles.human.web import curve, stability
from reporting.stats import first_stable
from test_labelling import free_port
from test_labelling_features import CHROMIUM, InThread, Page, image_folder, wait_for


def still(tmp_path, *extra) -> tuple:
    """(run, page): a run labelled by a person on test_labelling_features' folder, every labelled image its
    initial set, so that each round's 2 queries are unlabeled/ images and its 8 unlabeled/ images are the stop
    set; its model hardly moves: each round continues from the previous round's weights at a learning rate of
    1e-9, so consecutive rounds predict the same classes (kappa 1)."""
    data, out, port = image_folder(tmp_path / "images"), tmp_path / "runs", free_port()
    run = InThread(["--dataset", "folder", "--data_dir", data, "--image_size", "28", "--num_valid", "6",
                    "--n_init_labeled", "18", "--n_query", "2", "--n_round", "3", "--epochs", "1", "--min_steps", "5",
                    "--warm_start", "continue", "--lr", "1e-9", "--oracle", "human", "--human_port", port,
                    "--device", "cpu", "--threads", "1", "--no-wandb", "--run_name", "still", "--output_dir", out,
                    "--query_lag", "0", *extra])  # each batch chosen by its own round's model (its kappa shown)
    return run, Page(out, port, run)


def label_batch(page: Page, round_: int) -> None:
    """Answer every image of round ``round_``'s batch with class 0 and submit it, as the page's script does."""
    for position in page.wait_batch(round_):
        assert page.post("answer", {"batch": round_, "position": position, "label": 0})[0] == 200
    assert page.post("submit", {"batch": round_})[0] == 200


def state(page: Page) -> dict:
    return json.loads(page.get("state"))


# ------------------------------------------------------------------------------------------ the words

@pytest.mark.parametrize("kappa, stop_when_stable, reached, text", [
    (math.nan, 0.0, False, "Kappa, how well a round's predictions on 200 pool images agree with the previous "
                           "round's, shows once two rounds have finished: it says when the model has stopped changing."),
    (0.91, 0.0, False, "Kappa 0.910: the model is still changing (its predictions on 200 pool images against the "
                       "previous round's; from 0.99 on it counts as stable)."),
    # 0.9896 is not written 0.990 while 0.99 counts as stable
    (0.9896, 0.0, False, "Kappa 0.9896: the model is still changing (its predictions on 200 pool images against "
                         "the previous round's; from 0.99 on it counts as stable)."),
    (0.99, 0.0, True, "The model has stopped changing: its predictions on 200 pool images agree with the previous "
                      "round's (kappa 0.990; from 0.99 on it counts as stable). More labels may not pay off; you can "
                      "stop now (Ctrl-C where the run was started: every finished round is kept, and --resume goes "
                      "on from there)."),
    (0.995, 0.0, True, "The model has stopped changing: its predictions on 200 pool images agree with the previous "
                       "round's (kappa 0.995; from 0.99 on it counts as stable). More labels may not pay off; you "
                       "can stop now (Ctrl-C where the run was started: every finished round is kept, and --resume "
                       "goes on from there)."),
    # --stop_when_stable: its threshold, and the run stops by itself
    (math.nan, 0.9, False, "Kappa, how well a round's predictions on 200 pool images agree with the previous "
                           "round's, shows once two rounds have finished: it says when the model has stopped changing."),
    (0.95, 0.97, False, "Kappa 0.950: the model is still changing (its predictions on 200 pool images against the "
                        "previous round's; from 0.97 on it counts as stable, and the run stops by itself "
                        "(--stop_when_stable))."),
    (0.97, 0.97, True, "The model has stopped changing: its predictions on 200 pool images agree with the previous "
                       "round's (kappa 0.970, --stop_when_stable 0.97). The run stops here; every finished round is "
                       "kept."),
    (0.98, 0.97, True, "The model has stopped changing: its predictions on 200 pool images agree with the previous "
                       "round's (kappa 0.980, --stop_when_stable 0.97). The run stops here; every finished round is "
                       "kept."),
    (-0.05, 0.0, False, "Kappa -0.050: the model is still changing (its predictions on 200 pool images against the "
                        "previous round's; from 0.99 on it counts as stable)."),
])
def test_the_message_says_whether_the_model_has_stopped_changing(kappa, stop_when_stable, reached, text):
    said = stability(kappa, stop_when_stable, 200)
    assert (said["reached"], said["text"]) == (reached, text)
    assert said["threshold"] == (stop_when_stable or STABLE_KAPPA)
    assert said["kappa"] == (None if math.isnan(kappa) else kappa)


def test_the_page_and_the_report_call_the_same_kappa_stable():
    assert STABLE_KAPPA == 0.99 and stability(0.5, 0.0, 1)["threshold"] is STABLE_KAPPA
    rounds = pd.DataFrame({"round": [0, 1, 2], "n_labeled": [20, 30, 40], "test_acc": [0.5, 0.6, 0.7],
                           "stop_kappa": [math.nan, STABLE_KAPPA - 1e-9, STABLE_KAPPA]})
    assert first_stable(rounds) == (40, 0.7)


def test_the_curve_draws_each_rounds_kappa_on_the_accuracy_axis_without_nans():
    rows = [{"n_labeled": 20, "val_acc": 0.5, "test_acc": 0.5, "stop_kappa": math.nan},
            {"n_labeled": 30, "val_acc": 0.6, "test_acc": 0.6, "stop_kappa": 0.5},
            {"n_labeled": 40, "val_acc": 0.7, "test_acc": 0.7, "stop_kappa": 1.0},
            {"n_labeled": 50, "val_acc": 0.8, "test_acc": 0.8}]  # the live round: evaluated, no kappa recorded
    drawn = curve(rows)
    series = {s["name"]: s for s in drawn["series"]}
    assert list(series) == ["validation accuracy", "test accuracy", "kappa"] and drawn["kappa"]
    grid = dict((acc, y) for y, acc in drawn["grid"])
    xs = [x for x, _ in series["test accuracy"]["points"]]
    test_ys = [y for _, y in series["test accuracy"]["points"]]  # test accuracy 0.5 first: kappa 0.5's height
    assert series["kappa"]["points"] == [(xs[1], test_ys[0]), (xs[2], grid[1.0])]
    # The legend in one row inside the picture, the entries apart: test, validation, kappa
    lefts = [series[name]["legend_x"] for name in ("test accuracy", "validation accuracy", "kappa")]
    assert 0 <= lefts[0] < lefts[1] < lefts[2] and lefts[2] + 24 + 6 * len("kappa") <= drawn["width"]
    # Round 0 alone, or no kappa at all: no kappa line, no legend entry for it
    alone = curve(rows[:1])
    assert [s["name"] for s in alone["series"]] == ["validation accuracy", "test accuracy"] and not alone["kappa"]


def test_the_curve_uses_its_height_labels_the_rounds_and_writes_the_value_above_the_plot():
    """Issue 26, flaw 6: three series in 0.88-1.0 were squeezed into a 0-100% axis, the value text was drawn over
    the lines, and only the first and last x labels were shown."""
    rows = [{"n_labeled": n, "val_acc": 0.88 + 0.02 * i, "test_acc": 0.89 + 0.02 * i, "stop_kappa": 0.95 + 0.01 * i}
            for i, n in enumerate((20, 40, 60, 80, 100))]
    drawn = curve(rows)
    values = [v for _, v in drawn["grid"]]
    assert values[0] == 0.85 and values[-1] == 1.0 and len(values) <= 5  # the axis starts below 0.88, not at 0
    ys = [y for s in drawn["series"] for _, y in s["points"]]
    assert max(ys) - min(ys) > 0.6 * (drawn["height"] - 26 - 50)  # the lines use most of the plot's height
    assert [n for _, n in drawn["ticks"]] == [20, 40, 60, 80, 100]  # every round has room here
    assert min(ys) >= drawn["top"]  # the value text (written above "top") is above every line
    crowded = curve([{"n_labeled": n, "val_acc": 0.5, "test_acc": 0.5} for n in range(20, 420, 10)])
    ticks = [px for px, _ in crowded["ticks"]]
    assert crowded["ticks"][-1][1] == 410 and all(b - a >= 34 for a, b in zip(ticks, ticks[1:]))
    assert [v for _, v in crowded["grid"]] == [0.4, 0.6, 0.8, 1.0]  # 0.4 to 1 by 0.1, every other one labelled


# ------------------------------------------------------------------------------------------ real runs

def test_the_state_carries_each_rounds_kappa_and_the_end_says_the_model_stopped_changing(tmp_path):
    # --stop_when_stable 0.99: round 1 predicts as round 0 did (kappa 1), so the run ends after it
    run, page = still(tmp_path, "--stop_when_stable", "0.99")
    page.wait_batch(0)
    first = state(page)
    assert first["kappa"] == [] and first["stopped_because"] is None  # round 0 is not recorded yet
    assert first["stability"]["kappa"] is None and not first["stability"]["reached"]
    assert "shows once two rounds have finished" in page.get("view")
    label_batch(page, 0)
    # The page sees the end (the server lingers while a page is watching)
    wait_for(lambda: state(page)["phase"] == "finished", "the run finished", timeout=60)
    last, html = state(page), page.get("view")
    assert run.join() == 0
    assert last["kappa"] == [{"round": 0, "n_labeled": 18, "stop_kappa": None},
                             {"round": 1, "n_labeled": 20, "stop_kappa": 1.0}]
    assert last["stability"]["reached"] and last["stability"]["threshold"] == 0.99
    summary = json.loads((page.folder / "summary.json").read_text())
    assert summary["status"] == "complete" and last["stopped_because"] == summary["stopped_because"]
    assert re.search(r'<p class="phase finished">(.*?)</p>', html, re.S).group(1) == (
        "Finished early, because the model stopped changing: after round 2 of 4 its predictions on 8 pool images "
        "agreed with the previous round's (kappa 1.000, --stop_when_stable 0.99), so the run ended there with 20 "
        "labelled images.")
    assert 'id="stability"' not in html and "Finished: the study ran all" not in html
    assert '<g class="legend"><line' in html and ">kappa</text></g>" in html
    assert pd.read_csv(page.folder / "rounds.csv")["stop_kappa"].tolist()[1:] == [1.0]


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no {CHROMIUM} (scripts/install_chromium.sh installs it)")
def test_in_the_browser_the_page_says_the_model_stopped_changing_once_kappa_reached_0_99(tmp_path):
    # No --stop_when_stable: the page only suggests stopping, and the run goes on to its last round
    sync_api = pytest.importorskip("playwright.sync_api")  # optional, and heavy: only the browser tests need it
    expect = sync_api.expect
    run, http = still(tmp_path)
    label_batch(http, 0)
    http.wait_batch(1)
    # Batch 1 was chosen by round 1's model, whose kappa (against round 0) the page shows before rounds.csv
    # has it: the line is the newest model's, not one round behind (issue 26, flaw 1)
    assert "shows once two rounds have finished" not in http.get("view")
    assert state(http)["stability"]["kappa"] == 1.0 and state(http)["kappa"] == [
        {"round": 0, "n_labeled": 18, "stop_kappa": None}]
    label_batch(http, 1)
    http.wait_batch(2)  # rounds 0 and 1 finished: round 1's kappa is 1
    assert [r["stop_kappa"] for r in state(http)["kappa"]] == [None, 1.0]
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(f"{http.base}/?token={http.token}")
            page.wait_for_selector('#batch[data-round="2"]')
            message = page.locator("#stability")
            expect(message).to_be_visible()
            expect(message).to_have_class("stability stable")
            expect(message).to_contain_text("The model has stopped changing: its predictions on 8 pool images "
                                            "agree with the previous round's (kappa 1.000;")
            expect(message).to_contain_text("you can stop now")
            assert page.locator("#curve .legend").all_text_contents() == ["validation accuracy", "test accuracy",
                                                                          "kappa"]
            # rounds 1 and 2 (the live one, whose model chose the open batch); round 0's NaN has no point
            assert page.locator('#curve circle[fill="#c64600"]').count() == 2
            label_batch(http, 2)
            expect(page.locator("#view .phase")).to_have_text(
                "Finished: the study ran all 4 rounds and ended with 24 labelled images.", timeout=60_000)
            expect(message).to_contain_text("kappa 1.000")  # the finished page keeps the last model's
        finally:
            browser.close()
    assert run.join() == 0
