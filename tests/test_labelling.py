"""--oracle human: the HumanOracle's batches, its saved answers and their resume, the labelling page's token,
refusals and PNGs, the loop's "I don't know", the configuration checks, and one run labelled over HTTP."""
import io
import json
import logging
import os
import math
import re
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from config import Config, ConfigError
from conftest import ROOT, SMALL, probe_study_data, run_dirs
from data import Images, PoolState
from oracles.human.oracle import BATCH_FILE, TOKEN_FILE, HumanOracle, encode_png
from oracles.human.web import create_app, stability
from loop import OracleContext, acquired_rows, count_corrupted, restore_labeled
from results import ROUND_COLUMNS, DamagedRun, RunDir

N, N_POOL, C = 60, 40, 10
INITIAL = torch.tensor([0, 1, 2, 3])
ASKED = [10, 5, 30]
MEAN, STD = 0.5, 0.25
LOG = logging.getLogger("test_labelling")


def uint8_data():
    """A StudyData whose 28×28 images are stored raw (uint8), as without input noise."""
    x = torch.randint(0, 256, (N, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    data = probe_study_data(x.float(), N_POOL, C)
    data.train = data.test = Images(x, (MEAN,), (STD,))
    return data


@pytest.fixture
def run_dir(tmp_path):
    run = RunDir.create(str(tmp_path / "runs"), "human")
    run.write_config({"oracle": "human"})
    return run


@pytest.fixture
def make_oracle(run_dir):
    """HumanOracle(s) over one run folder, each serving on a free port; all closed at the end."""
    opened = []

    def make(data=None, port=0, host="127.0.0.1"):
        data = uint8_data() if data is None else data
        cfg = Config(oracle="human", human_host=host, human_port=port, n_round=3)
        oracle = HumanOracle(cfg, data.pool_y, INITIAL, OracleContext(data, PoolState(N_POOL), run_dir, LOG))
        opened.append(oracle)
        return oracle
    yield make
    for oracle in opened:
        oracle.close()


def ask(oracle, positions):
    """oracle(positions) in a daemon thread (it blocks until a submission): (thread, result dict)."""
    out = {}
    thread = threading.Thread(target=lambda: out.update(labels=oracle(torch.tensor(positions)).tolist()),
                              daemon=True)
    thread.start()
    return thread, out


def open_batch(oracle, positions=ASKED):
    """Ask for ``positions`` and wait until the batch is open: (thread, result, test client)."""
    thread, out = ask(oracle, positions)
    deadline = time.monotonic() + 10
    while oracle.view()["phase"] != "labelling":
        assert time.monotonic() < deadline and thread.is_alive(), out
        time.sleep(0.01)
    return thread, out, create_app(oracle).test_client()


def post(client, oracle, path, body):
    response = client.post(path, json=body, headers={"X-Token": oracle.token})
    return response.status_code, response.get_json()


def body(position=10, label=3, batch=0):
    return {"batch": batch, "position": position, "label": label}


def give(client, oracle, position, label):
    """POST one answer to the open batch (round 0): (status, JSON body)."""
    return post(client, oracle, "/answer", body(position, label))


def submit(client, oracle, batch=0):
    return post(client, oracle, "/submit", {"batch": batch})


def saved(oracle, key=None):
    """human_batch.json, or {position: label} of its ``key`` ("answers" or "unused")."""
    record = json.loads(oracle.path.read_text())
    return record if key is None else {p: a["label"] for p, a in record[key].items()}


def answers_in_view(oracle):
    return [item["answer"] for item in oracle.view()["items"]]


# ------------------------------------------------------------------------------------------ the token

def test_every_route_needs_the_token_and_posts_take_it_only_from_the_header(make_oracle):
    oracle = make_oracle()
    thread, out, client = open_batch(oracle)
    for path in ("/", "/view", "/state", "/image/10.png"):
        for query in ("", "?token=wrong", f"?token={oracle.token}x"):
            assert client.get(path + query).status_code == 403, path + query
        assert client.get(f"{path}?token={oracle.token}").status_code == 200, path
    before = oracle.path.read_bytes()
    in_query = f"?token={oracle.token}"
    for path, sent in (("/answer", body(10, 7)), ("/submit", {"batch": 0})):
        assert client.post(path + in_query, json=sent).status_code == 403
        assert client.post(path, json=sent, headers={"X-Token": "wrong"}).status_code == 403
    assert oracle.path.read_bytes() == before and answers_in_view(oracle) == [None, None, None]
    assert client.get(f"/state?token={oracle.token}").get_json() == \
        {"version": oracle.view()["version"], "phase": "labelling", "round": 0, "n_labeled": 0, "step": "training",
         "n_training": 0, "batch": 0,  # batch 0 open; the round's model learns from what the live record says
         # No finished round yet: no kappa; the stop set is every pool image outside the initial set
         "kappa": [], "stability": stability(math.nan, 0.0, N_POOL - len(INITIAL)), "stopped_because": None}
    # the real server, through its printed address
    with urllib.request.urlopen(oracle.url) as page:
        assert page.status == 200 and b"/image/10.png" in page.read()
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(oracle.url.split("?")[0])
    assert err.value.code == 403
    for position, label in zip(ASKED, (7, 1, 2)):
        assert give(client, oracle, position, label)[0] == 200
    assert submit(client, oracle) == (200, {"message": "round 1 of 4: 3 labels submitted; the model is training"})
    thread.join(5)
    assert out["labels"] == [7, 1, 2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_token_is_kept_in_the_run_folder_for_its_owner_only(make_oracle, run_dir):
    # Issue 16, "stop and come back": a resumed run's page has the same address (token from the run
    # folder, the port from --human_port), so a tab left open reconnects; the page still needs the token.
    path = run_dir.path / TOKEN_FILE
    for attempt in range(5):  # another test process may take the free port between two binds: try another
        port = free_port()
        try:
            first = make_oracle(port=port)
            assert path.read_text() == first.token + "\n" and stat.S_IMODE(path.stat().st_mode) == 0o600
            first.close()
            path.chmod(0o644)
            second = make_oracle(port=port)  # --resume
            break
        except ConfigError as err:
            assert "Address already in use" in str(err) and attempt < 4, err
    assert second.token == first.token and second.url == first.url
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    client = create_app(second).test_client()
    assert client.get("/state").status_code == 403 and client.get(f"/state?token={second.token}").status_code == 200
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(second.url.split("?")[0])
    assert err.value.code == 403
    second.close()
    path.write_text("not a token\n")  # damaged: replaced by a new one
    third = make_oracle()
    assert third.token != first.token and path.read_text() == third.token + "\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_token_file_that_is_a_link_or_a_fifo_is_replaced_and_what_it_led_to_left_alone(make_oracle, run_dir,
                                                                                          tmp_path):
    """A human_token symlink was followed, and the file it led to chmod-ed 0600 (issue 27, defect 11)."""
    path = run_dir.path / TOKEN_FILE
    victim = tmp_path / "victim"
    victim.write_text("A" * 40 + "\n")  # looks like a token
    victim.chmod(0o644)
    path.symlink_to(victim)
    oracle = make_oracle()
    assert oracle.token != "A" * 40 and not path.is_symlink() and path.read_text() == oracle.token + "\n"
    assert victim.read_text() == "A" * 40 + "\n" and stat.S_IMODE(victim.stat().st_mode) == 0o644
    oracle.close()
    path.unlink()
    os.mkfifo(path)  # read without blocking, and replaced
    replaced = make_oracle()
    assert stat.S_ISREG(path.lstat().st_mode) and path.read_text() == replaced.token + "\n"


# ------------------------------------------------------------------------------------------ a batch

def test_batch_is_saved_answer_by_answer_and_returned_on_submission(make_oracle):
    oracle = make_oracle()
    thread, out, client = open_batch(oracle)
    assert saved(oracle)["positions"] == ASKED and saved(oracle)["answers"] == {}
    expected = {}
    for position, label in ((10, 7), (5, "skip"), (30, 0)):
        assert give(client, oracle, position, label)[0] == 200
        expected[str(position)] = -1 if label == "skip" else label
        record = saved(oracle)
        assert (record["positions"], record["round"], record["submitted"]) == (ASKED, 0, False)
        assert saved(oracle, "answers") == expected
    assert give(client, oracle, 5, "skip")[1] == {"message": "image 2: I don't know (saved)"}
    assert thread.is_alive() and oracle.view()["answered"] == 3
    message = "round 1 of 4: 2 labels submitted, 1 skipped; the model is training"
    assert submit(client, oracle) == (200, {"message": message})
    thread.join(5)
    assert not thread.is_alive() and out["labels"] == [7, -1, 0]
    assert saved(oracle)["submitted"] is True and oracle.view()["phase"] == "training"
    before = oracle.path.read_bytes()
    for status, refused in (submit(client, oracle), give(client, oracle, 10, 1)):
        assert status == 409 and "the batch of round 0 was already submitted" in refused["error"]
    assert oracle.path.read_bytes() == before
    # Once the study has finished, the page's answer says so (it said "the model is training")
    oracle.close(finished=True)
    for status, refused in (submit(client, oracle), give(client, oracle, 10, 1)):
        assert status == 409 and refused["error"].startswith("the study is finished: no batch is waiting")
    assert oracle.path.read_bytes() == before


@pytest.mark.parametrize("path,sent,status,message", [
    ("/answer", body(label=10), 400, "unknown class 10: the classes are 0..9"),
    ("/answer", body(label=-1), 400, "unknown class -1"),
    ("/answer", body(label="3"), 400, "unknown class '3'"),
    ("/answer", body(label=True), 400, "unknown class True"),
    ("/answer", body(label=False), 400, "unknown class False"),
    ("/answer", body(label=2.5), 400, "unknown class 2.5"),
    ("/answer", body(position=11), 400, "image 11 was not queried in this batch (round 0)"),
    ("/answer", body(position="10"), 400, "image '10' was not queried"),
    ("/answer", body(batch=1), 409, "the open one is round 0's"),
    ("/answer", {"position": 10, "label": 3}, 400, "the batch must be a round number, not None"),
    ("/answer", body(batch=True), 400, "the batch must be a round number, not True"),
    ("/submit", {"batch": 0.0}, 400, "the batch must be a round number, not 0.0"),
    ("/answer", [0, 10, 3], 400, "must be a JSON object"),
    ("/submit", {"batch": 0}, 400, "2 of 3 images have no answer yet (image 2, 3); nothing was submitted"),
    ("/submit", {"batch": 2}, 409, "batch of round 2"),
])
def test_refused_requests_change_nothing(make_oracle, path, sent, status, message):
    oracle = make_oracle()
    thread, _, client = open_batch(oracle)
    assert give(client, oracle, 10, 4)[0] == 200
    before, version = oracle.path.read_bytes(), oracle.view()["version"]
    got_status, got = post(client, oracle, path, sent)
    assert got_status == status and list(got) == ["error"] and message in got["error"], got
    assert "nothing was" in got["error"] or sent == [0, 10, 3]
    assert oracle.path.read_bytes() == before
    assert answers_in_view(oracle) == [4, None, None] and oracle.view()["version"] == version
    assert thread.is_alive()


def test_an_answer_can_be_changed_before_submission_the_last_one_counts(make_oracle):
    oracle = make_oracle()
    thread, out, client = open_batch(oracle)
    for position, label in ((10, 7), (5, 3), (30, 1), (10, "skip"), (10, 2), (30, "skip")):
        assert give(client, oracle, position, label)[0] == 200
    assert answers_in_view(oracle) == [2, 3, -1]
    assert saved(oracle, "answers") == {"10": 2, "5": 3, "30": -1}
    assert submit(client, oracle)[0] == 200
    thread.join(5)
    assert out["labels"] == [2, 3, -1]


def test_initial_set_gets_the_dataset_labels_without_a_batch(make_oracle):
    oracle = make_oracle()
    version = oracle.view()["version"]
    thread, out = ask(oracle, INITIAL.flip(0).tolist())
    thread.join(5)
    assert out["labels"] == oracle.pool_y[INITIAL.flip(0)].tolist()
    view = oracle.view()
    assert view["phase"] == "training" and view["items"] == [] and view["version"] == version
    assert not oracle.path.exists()


# ------------------------------------------------------------------------------------------ images

def decoded(png_bytes):
    return np.array(Image.open(io.BytesIO(png_bytes)))


def test_image_of_the_open_batch_is_the_in_memory_pixels(make_oracle):
    oracle = make_oracle()
    data, (_, _, client) = oracle.study.data, open_batch(oracle)
    for position in ASKED:
        response = client.get(f"/image/{position}.png?token={oracle.token}")
        assert response.status_code == 200 and response.mimetype == "image/png"
        expected = data.train.x[data.pool_idx[position], 0].numpy()
        assert np.array_equal(decoded(response.data), expected)
    for position in (11, 0, 10_000):
        assert client.get(f"/image/{position}.png?token={oracle.token}").status_code == 404


def test_encode_png_round_trips_grey_and_rgb_exactly():
    rng = np.random.default_rng(0)
    for shape, mode in (((5, 7, 3), "RGB"), ((6, 4), "L")):
        array = rng.integers(0, 256, shape, dtype=np.uint8)
        image = Image.open(io.BytesIO(encode_png(array)))
        assert image.mode == mode and np.array_equal(np.array(image), array)


def test_normalised_images_are_shown_as_clamped_pixels(make_oracle):
    # stored x = ((v + 0.3) / 255 - mean) / std shows v; values beyond the pixel range show 0 or 255
    data = uint8_data()
    v = data.train.x.double()
    x = ((v + 0.3) / 255 - MEAN) / STD
    x[:, :, 0, :5] = -10.0  # below black
    x[:, :, 1, :5] = 10.0   # above white
    data.train = data.test = data.train.replaced(x)
    assert data.train.x.dtype == torch.float32
    oracle = make_oracle(data)
    _, _, client = open_batch(oracle)
    expected = v[data.pool_idx[30], 0].to(torch.uint8)
    expected[0, :5], expected[1, :5] = 0, 255
    png = client.get(f"/image/30.png?token={oracle.token}").data
    assert np.array_equal(decoded(png), expected.numpy())


# ------------------------------------------------------------------------------------------ resume

def interrupted(make_oracle, answers=((10, 7), (5, "skip")), submitted=False):
    """A first process's oracle that got ``answers`` for ASKED in round 0, then stopped."""
    first = make_oracle()
    thread, out, client = open_batch(first)
    for position, label in answers:
        assert give(client, first, position, label)[0] == 200
    if submitted:
        assert submit(client, first)[0] == 200
        thread.join(5)
    first.close()
    return first.path.read_bytes()


def test_resume_shows_the_saved_answers_of_the_same_batch(make_oracle):
    interrupted(make_oracle)
    second = make_oracle()
    thread, out, client = open_batch(second)
    assert answers_in_view(second) == [7, -1, None] and second.view()["answered"] == 2
    assert give(client, second, 30, 1)[0] == 200
    assert submit(client, second)[0] == 200
    thread.join(5)
    assert out["labels"] == [7, -1, 1]


@pytest.mark.parametrize("damage", [
    lambda r: r["answers"].update({"10": {"label": 99, "at": "x"}}),  # no class 99
    lambda r: r["answers"].update({"10": {"label": "x", "at": "x"}}),
    lambda r: r["answers"].update({"10": {"label": True, "at": "x"}}),
    lambda r: r["answers"].update({"10": 7}),
    lambda r: r["answers"].update({"100000": {"label": 1, "at": "x"}}),  # outside the pool
    lambda r: r.update(corrections={"10": {"label": -1, "at": "x"}}),  # a correction to "I don't know"
    lambda r: r.update(positions=[10, "x"]),
    lambda r: r.update(round=None),
], ids=["label 99", "label x", "label true", "not a dict", "position", "correction", "positions", "round"])
def test_a_damaged_batch_file_is_refused_before_it_is_replayed(make_oracle, run_dir, damage):
    """An answer edited to label 99 was replayed on --resume: a traceback, and 99 in acquired.csv so that
    every later resume was refused (issue 27, defect 2). Checked like the other run files: one line naming it."""
    interrupted(make_oracle)
    path = run_dir.path / BATCH_FILE
    record = json.loads(path.read_text())
    damage(record)
    path.write_text(json.dumps(record))
    before = path.read_bytes()
    with pytest.raises(DamagedRun, match=r"human_batch.json is damaged \(.*\): the person's answers in it cannot"):
        make_oracle()
    assert path.read_bytes() == before


def test_resume_keeps_answers_of_images_not_asked_again_under_unused(make_oracle):
    interrupted(make_oracle)
    second = make_oracle()
    _, _, client = open_batch(second, [10, 30, 33])
    assert answers_in_view(second) == [7, None, None]
    assert saved(second, "unused") == {"5": -1}
    give(client, second, 33, 4)
    assert saved(second, "unused") == {"5": -1}
    second.close()
    third = make_oracle()
    _, _, client = open_batch(third, [5, 33, 12])
    assert answers_in_view(third) == [-1, 4, None]
    assert saved(third, "unused") == {"10": 7} and saved(third, "answers") == {"5": -1, "33": 4}


def test_submitted_but_unrecorded_batch_is_not_asked_again(make_oracle, run_dir):
    before = interrupted(make_oracle, zip(ASKED, (7, "skip", 0)), submitted=True)
    assert json.loads(before)["submitted"] is True
    second = make_oracle()
    thread, out = ask(second, [30, 10, 5])
    thread.join(5)
    assert not thread.is_alive() and out["labels"] == [0, 7, -1]
    assert second.view()["phase"] == "training" and second.path.read_bytes() == before
    # Once round 0 is recorded, the same images in round 1 make a new, empty batch
    run_dir.append_round({c: 0 for c in ROUND_COLUMNS}, [])
    third = make_oracle()
    open_batch(third, [30, 10, 5])
    assert third.view()["batch_round"] == 1 and answers_in_view(third) == [None, None, None]


# ------------------------------------------------------------------------------------------ the loop

def test_set_aside_leaves_the_pool_and_refuses_a_labelled_item():
    state = PoolState(8)
    state.label(torch.tensor([0, 1]), torch.tensor([3, 4]), round_=0)
    state.set_aside(torch.tensor([5, 2]))
    assert state.unlabeled_positions().tolist() == [3, 4, 6, 7] and state.n_aside == 2
    with pytest.raises(ValueError, match="a labelled pool item cannot be set aside"):
        state.set_aside(torch.tensor([6, 1]))
    assert state.aside_P.nonzero().flatten().tolist() == [2, 5] and state.n_labeled == 2


@pytest.mark.parametrize("set_aside", [True, False])
def test_restore_labeled_never_labels_dont_know_rows(set_aside):
    data = probe_study_data(torch.zeros(N, 1, 28, 28), N_POOL, C)
    rows = acquired_rows(data, -1, INITIAL, data.pool_y[INITIAL], torch.full((4,), float("nan")))
    rows += acquired_rows(data, 0, torch.tensor(ASKED), torch.tensor([7, -1, -1]), torch.zeros(3))
    rows += acquired_rows(data, 1, torch.tensor([30, 12, 14]), torch.tensor([2, -1, -1]), torch.zeros(3))
    rows[-1]["flagged"] = 1  # "none of these": set aside whatever --dont_know says
    state = PoolState(N_POOL)
    restore_labeled(state, data, rows, INITIAL, set_aside=set_aside)
    assert state.labeled_positions().tolist() == [0, 1, 2, 3, 10, 30]
    assert state.labels_of(torch.tensor([10, 30])).tolist() == [7, 2]
    assert state.round_P[[10, 30]].tolist() == [1, 2] and state.label_P[[5, 12, 14]].tolist() == [-1, -1, -1]
    aside = [5, 12, 14] if set_aside else [14]  # 30 was answered later: labelled, not aside
    assert state.aside_P.nonzero().flatten().tolist() == aside
    expected = [p for p in range(N_POOL) if p not in (0, 1, 2, 3, 10, 30, *aside)]
    assert state.unlabeled_positions().tolist() == expected


def test_count_corrupted_ignores_images_without_a_dataset_label():
    data = probe_study_data(torch.zeros(N, 1, 28, 28), N_POOL, C)
    data.train_y[data.pool_idx[5]] = -1
    true = data.pool_y
    state = PoolState(N_POOL)
    state.label(torch.tensor([5, 6, 7]), torch.tensor([3, (int(true[6]) + 1) % C, int(true[7])]), round_=1)
    assert count_corrupted(data, state) == 1


# ------------------------------------------------------------------------------------------ configuration

@pytest.mark.parametrize("argv,message", [
    (["--oracle", "human", "--label_noise", "symmetric", "--label_noise_rate", "0.2"], "drop --label_noise"),
    (["--human_port", "70000"], "--human_port"),
    (["--dont_know", "maybe"], "--dont_know"),
])
def test_bad_human_settings_are_refused_with_one_line(cli, argv, message):
    from config import parse_config
    with pytest.raises(ConfigError, match=message):
        parse_config(argv)
    rc, out, err, runs = cli(*SMALL, *argv)
    assert rc == 2 and err.count("\n") == 1 and message in err and runs == []


def test_config_accepts_human_without_noise_and_refuses_it_with_noise():
    Config(oracle="human", label_noise="symmetric", label_noise_rate=0.0, human_port=65535, dont_know="pool").validate()
    for bad, message in (({"label_noise": "pair", "label_noise_rate": 0.1}, "with --oracle human"),
                         ({"human_port": -1}, "--human_port"), ({"dont_know": "maybe"}, "unknown --dont_know")):
        with pytest.raises(ConfigError, match=message):
            Config(oracle="human", **bad).validate()


def test_port_in_use_is_a_config_error_naming_it(make_oracle):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port} .*--human_port"):
            make_oracle(port=port)


def test_a_busy_port_or_unknown_host_is_refused_before_any_run_folder(cli, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        for flags, why in ((["--human_port", port], "Address already in use"),
                           (["--human_host", "no-such-host.invalid"], "no-such-host.invalid:0")):
            rc, out, err, runs = cli(*SMALL, "--oracle", "human", *flags)
            assert rc == 2 and err.count("\n") == 1 and err.startswith("error: --oracle human: cannot listen on")
            assert why in err and runs == [] and not (tmp_path / "runs").exists()


# ------------------------------------------------------------------------------------------ end to end

def test_a_person_labels_a_run_over_http(tmp_path):
    # main.py --oracle human: the printed address takes the answers; acquired.csv and rounds.csv record them
    out_dir = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, str(ROOT / "main.py"), *SMALL, "--oracle", "human", "--threads", "1",
                             "--output_dir", str(out_dir)], cwd=ROOT, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stderr:
            if "label the queried images at " in line:
                url = line.split(" at ")[-1].strip()
                break
        else:
            pytest.fail(f"no address printed: {proc.communicate()}")
        base, token = url.split("/?token=")
        deadline = time.monotonic() + 60
        while json.loads(urllib.request.urlopen(f"{base}/state?token={token}").read())["phase"] != "labelling":
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.1)
        [folder] = run_dirs(out_dir)
        positions = json.loads((folder / BATCH_FILE).read_text())["positions"]
        with urllib.request.urlopen(f"{base}/image/{positions[0]}.png?token={token}") as png:
            assert decoded(png.read()).shape == (28, 28)

        def send(path, sent):
            req = urllib.request.Request(base + path, data=json.dumps(sent).encode(), method="POST",
                                         headers={"X-Token": token, "Content-Type": "application/json"})
            return urllib.request.urlopen(req).status
        for position, label in zip(positions, ["skip"] * 4 + [3] * 6):
            assert send("/answer", {"batch": 0, "position": position, "label": label}) == 200
        assert send("/submit", {"batch": 0}) == 200
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    acquired = pd.read_csv(folder / "acquired.csv")
    queried = acquired[acquired["round"] == 0]
    assert queried["pool_position"].tolist() == positions
    assert queried["label"].tolist() == [-1] * 4 + [3] * 6
    rounds = pd.read_csv(folder / "rounds.csv")
    assert rounds["n_skipped"].tolist() == [4, 0] and rounds["n_labeled"].tolist() == [20, 26]
    wrong = int((queried["label"][4:] != queried["true_label"][4:]).sum())
    assert rounds["n_corrupted"].tolist() == [0, wrong]
    assert json.loads((folder / BATCH_FILE).read_text())["submitted"] is True


def test_the_page_shows_the_round_in_progress_before_it_is_recorded(make_oracle):
    # The loop's live progress (OracleContext.live): the step in the status, and the evaluated round's
    # point on the curve while its batch waits for labels (rounds.csv gets the row only afterwards).
    oracle = make_oracle()
    live = oracle.study.live
    live.update(round=0, phase="training", n_labeled=4)
    first = oracle.view()
    assert first["round"] == 0 and first["step"] == "training" and first["rows"] == []
    live.update(phase="querying", val_acc=0.5, test_acc=0.625)
    view = oracle.view()
    assert view["version"] != first["version"]  # the page redraws on a new step
    assert view["step"] == "querying" and view["rows"] == [dict(live)]
    client = create_app(oracle).test_client()
    html = client.get(f"/view?token={oracle.token}").get_data(as_text=True)
    assert "is choosing the next batch" in html and "test 62.5% at 4 labels" in html


def status_line(client, oracle) -> str:
    """The page's status line (what the run is doing), as /view renders it."""
    html = client.get(f"/view?token={oracle.token}").get_data(as_text=True)
    return re.search(r'<p class="phase [a-z]+">(.*?)</p>', html, re.S).group(1)


def test_the_status_line_says_what_the_run_is_doing_from_start_to_finish(make_oracle):
    # Issue 16, bug 5: after a submission the old round's "choosing the next batch" stayed (with the new
    # labelled count) until the next round began; the last round promised a next batch.
    oracle = make_oracle()  # --n_round 3: rounds 0..3, counted 1..4 as summary.json counts them
    live, client = oracle.study.live, create_app(oracle).test_client()
    live.update(round=0, phase="training", n_labeled=4)
    assert status_line(client, oracle).startswith(
        "Round 1 of 4: the model is training on 4 labelled images, then it chooses the next batch.")
    live.update(phase="querying", val_acc=0.5, test_acc=0.625)
    assert status_line(client, oracle).startswith(
        "Round 1 of 4: the model trained on 4 labelled images is choosing the next batch.")
    thread, out, client = open_batch(oracle)
    assert status_line(client, oracle) == ("Round 1 of 4: waiting for you. The model trained on 4 labelled images "
                                           "chose these 3 images. Label them, then submit.")
    for position, label in ((10, 7), (5, "skip"), (30, 0)):
        assert give(client, oracle, position, label)[0] == 200
    assert submit(client, oracle)[0] == 200
    thread.join(5)
    # Submitted; the loop has not begun round 1 yet (its live step is still round 0's "querying")
    assert status_line(client, oracle).startswith(
        "Round 2 of 4: the model is training on 6 labelled images, then it chooses the next batch.")
    live.clear()
    live.update(round=3, phase="training", n_labeled=30)
    last = status_line(client, oracle)
    assert last.startswith("Round 4 of 4 (the last): the model is training on 30 labelled images; no images are "
                           "asked after it.") and "next batch" not in last
    live.update(phase="querying", val_acc=0.5, test_acc=0.7)  # the last round queries nothing
    assert "next batch" not in status_line(client, oracle)
    oracle.last_seen = 0.0  # no page watching: close does not linger
    oracle.close(finished=True)
    assert status_line(client, oracle) == "Finished: the study ran all 4 rounds and ended with 0 labelled images."


def test_keys_pool_round_and_legend_agree_with_the_run(make_oracle, run_dir):
    # Issue 16, bug 7: "Keys 0–9" for 3 classes, a pool count that never decreased, rounds counted from 0
    # (summary.json counts from 1), and a curve without a legend.
    data = uint8_data()
    data.num_classes = 3
    oracle = make_oracle(data)
    client, state, live = create_app(oracle).test_client(), oracle.study.state, oracle.study.live
    page = client.get(f"/?token={oracle.token}").get_data(as_text=True)
    assert re.search(r"<footer>(.*?)</footer>", page, re.S).group(1).startswith(
        '<span class="keys-help">Keys: <kbd>0</kbd>–<kbd>2</kbd> label the highlighted image')
    assert oracle.view()["pool"] == N_POOL
    state.label(INITIAL, oracle.pool_y[INITIAL], round_=0)
    state.set_aside(torch.tensor([7]))
    assert oracle.view()["pool"] == N_POOL - 5
    live.update(round=0, phase="querying", n_labeled=4, val_acc=0.5, test_acc=0.625)
    html = client.get(f"/view?token={oracle.token}").get_data(as_text=True)
    assert f"round 1 of 4 · <span id=\"n-labeled\">4</span> labelled · 1 set aside (I don't know) · " \
           f"<span id=\"pool\">{N_POOL - 5}</span> unlabelled left in the pool" in html
    legend = re.findall(r'<g class="legend"><line [^>]*stroke="([^"]+)"[^>]*?( stroke-dasharray="4 3")?/>'
                        r'<text [^>]*>([^<]+)</text></g>', html)
    assert legend == [("#999", ' stroke-dasharray="4 3"', "validation accuracy"), ("#1a5fb4", "", "test accuracy")]
    # The finished page counts as summary.json does: rounds_completed of rounds_planned
    run_dir.planned_rounds = 4
    for r in range(4):
        run_dir.append_round({**{c: 0 for c in ROUND_COLUMNS}, "round": r}, [])
    live.clear()
    oracle.last_seen = 0.0
    oracle.close(finished=True)
    summary = json.loads((run_dir.path / "summary.json").read_text())
    html = client.get(f"/view?token={oracle.token}").get_data(as_text=True)
    assert f"round {summary['rounds_completed']} of {summary['rounds_planned']} ·" in html


def test_a_failed_write_takes_no_answer_and_stops_the_run_with_an_output_error(make_oracle, monkeypatch):
    # A full disk, say: the page gets a 500 and nothing changes; opening a batch raises OutputError
    # (main.py's one error line), not a page refusal.
    import oracles.human.oracle as human
    from results import OutputError
    oracle = make_oracle()
    thread, out, client = open_batch(oracle)
    before, version = oracle.path.read_bytes(), oracle.view()["version"]

    def full_disk(path, obj):
        raise OutputError(f"cannot write {path}: No space left on device")
    monkeypatch.setattr(human, "write_json", full_disk)
    status, reply = give(client, oracle, 10, 7)
    assert status == 500 and reply["error"].startswith("the answer could not be saved, so it was not taken")
    assert "No space left on device" in reply["error"]
    assert oracle.path.read_bytes() == before and answers_in_view(oracle) == [None, None, None]
    assert oracle.view()["version"] == version
    assert submit(client, oracle)[0] == 400  # still open, still unanswered
    second = make_oracle()
    with pytest.raises(OutputError, match="No space left on device"):
        second(torch.tensor([11, 12]))
    assert second.batch is None and second.view()["phase"] == "training"  # no batch was opened
    assert thread.is_alive() and out == {}


# ------------------------------------------------------------------------------------------ the audit

def over_http(oracle, path, host=None, body=None):
    """(status, reply bytes) of a real request to the oracle's server through 127.0.0.1, with the token
    (query or header) and, when given, this Host header; a POST when ``body`` (raw bytes) is given."""
    port = oracle.server.server_address[1]
    headers = {} if host is None else {"Host": host}
    if body is not None:
        headers.update({"X-Token": oracle.token, "Content-Type": "application/json"})
    else:
        path += f"?token={oracle.token}"
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, headers=headers,
                                 method="GET" if body is None else "POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_a_page_listening_beyond_this_machine_says_so_on_stderr(tmp_path):
    # --human_host 0.0.0.0 (a phone on the LAN labels): allowed, with a warning line before the address,
    # and any Host header is answered (the machine's LAN address or name, whatever the phone typed).
    proc = subprocess.Popen([sys.executable, str(ROOT / "main.py"), *SMALL, "--oracle", "human", "--threads", "1",
                             "--human_host", "0.0.0.0", "--output_dir", str(tmp_path / "runs")], cwd=ROOT,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        before = []
        for line in proc.stderr:
            if "label the queried images at " in line:
                url = line.split(" at ")[-1].strip()
                break
            before.append(line)
        else:
            pytest.fail(f"no address printed: {proc.communicate()}")
        [warning] = [line for line in before if "WARNING" in line]
        assert "0.0.0.0" in warning and "plain HTTP" in warning and "--human_host 127.0.0.1" in warning
        base, token = url.split("/?token=")
        port = base.rsplit(":", 1)[1]
        req = urllib.request.Request(f"http://127.0.0.1:{port}/state?token={token}",
                                     headers={"Host": f"labelling-box.lan:{port}"})
        assert urllib.request.urlopen(req, timeout=10).status == 200
    finally:
        proc.kill()
        proc.communicate()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_a_page_on_this_machine_only_gives_no_warning(make_oracle, caplog, host):
    with caplog.at_level(logging.INFO, logger=LOG.name):
        make_oracle(host=host)
    assert [r.levelname for r in caplog.records if r.name == LOG.name] == ["INFO"]  # the address, nothing more


@pytest.mark.parametrize("nested", [b"[" * 60_000, b"[" * 900 + b"]" * 900])
def test_deeply_nested_json_is_a_400_with_a_short_error_and_no_traceback(make_oracle, capfd, nested):
    # 60 KB of "[" (under the 64 KB body limit) defeats json's decoder; 900 levels decode, and must not be
    # echoed back in full
    oracle = make_oracle()
    thread, _, _ = open_batch(oracle)
    assert give(create_app(oracle).test_client(), oracle, 10, 4)[0] == 200
    before, version = oracle.path.read_bytes(), oracle.view()["version"]
    for sent in (nested, b'{"batch": 0, "position": 10, "label": ' + nested + b"}", b'{"batch": ' + nested + b"}"):
        status, reply = over_http(oracle, "/answer", body=sent)
        assert status == 400 and len(json.loads(reply)["error"]) < 200, (status, reply[:300])
    assert oracle.path.read_bytes() == before and oracle.view()["version"] == version and thread.is_alive()
    err = capfd.readouterr().err
    assert "Traceback" not in err and "RecursionError" not in err, err[-2000:]


def test_the_page_answers_only_to_the_names_of_its_address(make_oracle):
    # A Host check closes DNS rebinding: a site whose name re-resolves to 127.0.0.1 cannot reach the page
    oracle = make_oracle()  # 127.0.0.1
    thread, _, _ = open_batch(oracle)
    port = oracle.server.server_address[1]
    ssh_tunnel = "localhost:8022"  # ssh -L 8022:127.0.0.1:PORT: the browser names the tunnel's end
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}", f"[::1]:{port}", "localhost",
                 ssh_tunnel):
        for path in ("/", "/state", "/image/10.png"):
            assert over_http(oracle, path, host)[0] == 200, (host, path)
    before = oracle.path.read_bytes()
    for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1.evil.example:{port}", "localhost.evil.example",
                 f"127.0.0.2:{port}", ""):
        for path in ("/", "/view", "/state", "/image/10.png"):
            assert over_http(oracle, path, host)[0] == 400, (host, path)
        answer = json.dumps(body(10, 7)).encode()
        assert over_http(oracle, "/answer", host, answer)[0] == 400, host
        assert over_http(oracle, "/submit", host, b'{"batch": 0}')[0] == 400, host
    assert oracle.path.read_bytes() == before and answers_in_view(oracle) == [None, None, None]
    assert thread.is_alive()
    anywhere = make_oracle(host="0.0.0.0")  # every interface: whatever name reached it is fine
    assert over_http(anywhere, "/state", f"evil.example:{port}")[0] == 200


def test_the_keys_legend_names_every_key_up_to_four_classes_and_favicon_is_no_error(make_oracle):
    """Issue 26, flaws 7 and 8: with 4 classes the legend read "0 1 2 … 3"; /favicon.ico answered 403 (a console
    error on every load), since browsers ask for it without the token."""
    def legend(num_classes):
        data = uint8_data()
        data.num_classes = num_classes
        oracle = make_oracle(data)
        thread, out, client = open_batch(oracle)
        html = client.get(f"/view?token={oracle.token}").get_data(as_text=True)
        return re.search(r'<p class="legend" id="keys">Keys: (.*?)label', html).group(1).strip()
    assert legend(4) == "<kbd>0</kbd> <kbd>1</kbd> <kbd>2</kbd> <kbd>3</kbd>"
    assert legend(10) == "<kbd>0</kbd> <kbd>1</kbd> <kbd>2</kbd> … <kbd>9</kbd>"
    oracle = make_oracle()
    client = create_app(oracle).test_client()
    assert client.get("/favicon.ico").status_code == 204
    assert client.get("/view").status_code == 403  # every other route still needs the token
    page = client.get(f"/?token={oracle.token}").get_data(as_text=True)
    assert '<link rel="icon" href="data:,">' in page  # the page asks for no icon at all


def test_a_disabled_submit_says_which_images_are_still_to_answer(make_oracle):
    """Issue 26, flaw 9: the disabled Submit button did not say which image was missing (only Enter did)."""
    oracle = make_oracle()
    thread, out, client = open_batch(oracle)

    def missing():
        html = client.get(f"/view?token={oracle.token}").get_data(as_text=True)
        return re.search(r'<span id="missing" class="missing">(.*?)</span>', html).group(1)
    assert missing() == "still to answer: image 1, 2, 3"
    assert give(client, oracle, ASKED[1], 4)[0] == 200
    assert missing() == "still to answer: image 1, 3"
    for position in (ASKED[0], ASKED[2]):
        give(client, oracle, position, 1)
    assert missing() == ""
    assert submit(client, oracle)[0] == 200
    thread.join(10)


def test_the_kappa_line_is_the_newest_models_and_the_finished_page_keeps_it(make_oracle, run_dir):
    """Issue 26, flaw 1: the page said 0.952 "still changing" (the last recorded round's kappa) while the model
    that chose the open batch had kappa 1.000; and a finished page showed no kappa at all."""
    oracle = make_oracle()
    run_dir.planned_rounds = 4
    run_dir.append_round({**{c: 0 for c in ROUND_COLUMNS}, "round": 0, "stop_kappa": math.nan}, [])
    run_dir.append_round({**{c: 0 for c in ROUND_COLUMNS}, "round": 1, "n_labeled": 10, "stop_kappa": 0.952}, [])
    oracle.study.live.update(round=2, phase="querying", n_labeled=14, val_acc=0.8, test_acc=0.8, stop_kappa=1.0)
    thread, out, client = open_batch(oracle)

    def said():
        html = client.get(f"/view?token={oracle.token}").get_data(as_text=True)
        found = re.search(r'<p id="stability" class="[^"]*">(.*?)</p>', html, re.S)
        return found and found.group(1)
    assert "kappa 1.000" in said() and "stopped changing" in said()
    state = client.get(f"/state?token={oracle.token}").get_json()
    assert state["stability"]["kappa"] == 1.0
    assert [k["stop_kappa"] for k in state["kappa"]] == [None, 0.952]  # recorded rounds only
    batch = oracle.view()["batch_round"]
    for position in ASKED:
        post(client, oracle, "/answer", {**body(position, 1), "batch": batch})
    assert submit(client, oracle, batch)[0] == 200
    thread.join(10)
    run_dir.append_round({**{c: 0 for c in ROUND_COLUMNS}, "round": 2, "n_labeled": 14, "stop_kappa": 1.0}, [])
    oracle.study.live.clear()
    oracle.last_seen = 0.0
    oracle.close(finished=True)
    assert "kappa 1.000" in said()  # the finished page keeps the last model's


def test_two_people_see_whose_answer_stands_and_a_flag_is_an_answer_of_its_own(make_oracle):
    """Issue 26, item 4: answers carry the labeller's name (the page sends it); the newest answer stands and the
    card says whose it is; "flag" ("none of these") is answered, submitted and handed over as not labelled."""
    oracle = make_oracle()
    thread, out, client = open_batch(oracle)
    assert post(client, oracle, "/answer", {**body(10, 7), "labeller": "Ana"}) == \
        (200, {"message": "image 1: 7 (saved)"})
    assert post(client, oracle, "/answer", {**body(10, 2), "labeller": "Ben"})[0] == 200
    assert post(client, oracle, "/answer", {**body(5, "flag"), "labeller": "Ana"}) == \
        (200, {"message": "image 2: none of these (flagged) (saved)"})
    items = {item["position"]: item for item in oracle.view()["items"]}
    assert (items[10]["answer"], items[10]["by"], items[5]["answer"], items[5]["by"]) == (2, "Ben", -2, "Ana")
    html = client.get(f"/view?token={oracle.token}").get_data(as_text=True)
    assert "answered by Ben" in html and "answered by Ana" in html and 'data-label="flag"' in html
    # A name is one short line of text: anything else is refused and changes nothing
    before = oracle.path.read_bytes()
    for name in ("x" * 41, "two\nlines", 7, ["Ana"]):
        status, reply = post(client, oracle, "/answer", {**body(30, 1), "labeller": name})
        assert status == 400 and "labeller's name" in reply["error"] and "nothing was changed" in reply["error"]
    assert oracle.path.read_bytes() == before
    assert post(client, oracle, "/answer", body(30, 1))[0] == 200  # no name: fine, recorded without one
    assert submit(client, oracle) == (200, {"message": "round 1 of 4: 2 labels submitted, 1 flagged; the model is "
                                                       "training"})
    thread.join(5)
    assert out["labels"] == [2, -1, 1]  # in ASKED's order: the flagged image has no label
    # Before the next round starts, the page counts what it will train on: the 4 it had and 2 labels, not the flag
    oracle.study.live.update(round=0, phase="querying", n_labeled=4)
    assert oracle.view()["n_training"] == 6
    assert oracle.notes(torch.tensor(ASKED)) == [{"flagged": 0, "labeller": "Ben"}, {"flagged": 1, "labeller": "Ana"},
                                                 {"flagged": 0, "labeller": ""}]
    assert oracle.labelled_by == {10: "Ben", 30: ""}
