"""--dataset folder with an unlabeled/ subfolder: its images join the pool only when a person labels
(--oracle human); the initial, validation and test sets come from the labelled train/ and test/."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from config import Config, ConfigError
from conftest import ROOT
from data import load_dataset
from data.splits import initial_positions
from loop import prepare_data
from memory import check_budget
from test_folder import make_folder, pattern

N_UNLABELED = 10


def add_unlabeled(root: Path, n: int = N_UNLABELED) -> list:
    """root/unlabeled/ (some in a subfolder) with n grey images; their pixels in the loader's order."""
    files = []
    for i in range(n):
        folder = root / "unlabeled" / ("batch2" if i % 2 else "")
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"u{i:02d}.png"
        Image.fromarray(pattern(i % 3, 500 + i)).save(path)
        files.append(path)
    return [np.asarray(Image.open(f)) for f in sorted(files, key=str)]


def test_loader_reads_unlabeled_images_beside_the_labelled_ones(tmp_path):
    make_folder(tmp_path, 8, "train")
    make_folder(tmp_path, 3, "test", start=100)
    pixels = add_unlabeled(tmp_path)
    ds = load_dataset("folder", str(tmp_path), image_size=20)
    assert ds.train_x.shape == (24, 1, 20, 20) and ds.test_x.shape == (9, 1, 20, 20)
    assert ds.unlabeled_x.shape == (N_UNLABELED, 1, 20, 20) and ds.unlabeled_x.dtype == torch.uint8
    assert torch.equal(ds.unlabeled_x[:, 0], torch.from_numpy(np.stack(pixels)))
    # Without unlabeled/, there is none.
    (tmp_path / "other").mkdir()
    for f in (tmp_path / "unlabeled").rglob("*.png"):
        f.unlink()
    assert load_dataset("folder", str(tmp_path), image_size=20).unlabeled_x is None


def test_unlabeled_images_join_the_pool_only_for_a_person(tmp_path):
    make_folder(tmp_path, 8, "train")
    make_folder(tmp_path, 3, "test", start=100)
    add_unlabeled(tmp_path)
    ds = load_dataset("folder", str(tmp_path), image_size=28)
    common = dict(dataset="folder", data_dir=str(tmp_path), num_valid=6, n_init_labeled=6, image_size=28)
    simulated = prepare_data(Config(**common), ds, torch.device("cpu"))
    human = prepare_data(Config(**common, oracle="human"), ds, torch.device("cpu"))
    assert simulated.pool_idx.numel() == 18 and (simulated.pool_y >= 0).all()
    assert human.pool_idx.numel() == 18 + N_UNLABELED
    assert torch.equal(human.pool_y[18:], torch.full((N_UNLABELED,), -1))
    assert torch.equal(human.pool_idx[:18], simulated.pool_idx)  # the same validation split and labelled pool
    assert torch.equal(human.val_idx, simulated.val_idx)
    assert torch.equal(human.train.x[human.pool_idx[18:]], ds.unlabeled_x)
    # The initial set is drawn from the labelled positions only, as without unlabelled images.
    first = initial_positions(human.pool_y, 6, seed=42)
    assert torch.equal(first, initial_positions(simulated.pool_y, 6, seed=42))
    assert (human.pool_y[first] >= 0).all()


def test_budget_counts_unlabeled_images_but_not_for_the_initial_set():
    # Every labelled image is in round 0's set: the queries must fit the 10 unlabelled ones
    known = Config(dataset="folder", num_valid=6, n_init_labeled=3, n_query=5, n_round=2, oracle="human",
                   image_size=28)
    check_budget(known, 24, 3, n_unlabeled=10)
    with pytest.raises(ConfigError, match=r"--n_query × --n_round = 5 × 3 exceeds the 10 unlabelled images"):
        check_budget(known.replace(n_round=3), 24, 3, n_unlabeled=10)
    # --no-known_labels_first: --n_init_labeled of the labelled ones, the rest of the pool queried
    cfg = Config(dataset="folder", num_valid=6, n_init_labeled=18, n_query=5, n_round=2, oracle="human",
                 image_size=28, known_labels_first=False)
    check_budget(cfg, 24, 3, n_unlabeled=10)  # 18 labelled + 10 unlabelled ≥ 18 + 10
    with pytest.raises(ConfigError, match="exceeds the pool of 28 images"):
        check_budget(cfg.replace(n_round=3), 24, 3, n_unlabeled=10)
    with pytest.raises(ConfigError, match="unlabeled/ images cannot be in the initial set"):
        check_budget(cfg.replace(n_init_labeled=19, n_round=1), 24, 3, n_unlabeled=10)


def queries_of(out: Path) -> tuple:
    """(the one run folder under ``out``, its acquired.csv, the rows of the images queried after round 0)."""
    (folder,) = out.iterdir()
    acquired = pd.read_csv(folder / "acquired.csv")
    return folder, acquired, acquired[acquired["round"] >= 0]


def folder_run(tmp_path: Path, n_init_labeled: int, n_query: int, *extra: str) -> tuple:
    """A real main.py --oracle human run of 2 query rounds over a folder of 24 labelled images (3 classes;
    18 in the pool after 6 for validation, pool positions 0-17) and 10 unlabelled ones (positions 18-27):
    (the process, its stderr log, the output folder)."""
    data = tmp_path / "images"
    make_folder(data, 8, "train")
    make_folder(data, 3, "test", start=100)
    add_unlabeled(data)
    out = tmp_path / "runs"
    log = tmp_path / "run.log"
    argv = ["--dataset", "folder", "--data_dir", str(data), "--image_size", "28", "--oracle", "human",
            "--num_valid", "6", "--n_init_labeled", str(n_init_labeled), "--n_query", str(n_query), "--n_round",
            "2", "--epochs", "1", "--min_steps", "5", "--no-wandb", "--threads", "1", "--output_dir", str(out),
            "--run_name", "mine", *extra]
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, str(ROOT / "main.py"), *argv], cwd=ROOT, stderr=err,
                                stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return proc, log, out


def test_a_person_labels_the_unlabeled_images_of_a_folder(tmp_path):
    """A real main.py run: the whole labelled pool is the initial set, so every query is an unlabelled
    image; the answers (over HTTP, as the page sends them) are what acquired.csv records. --n_init_labeled 6
    is not what round 0 trains on (issue 26, item 2: known labels used): a person who has labelled 18
    images expects the model to learn from all 18 at once, and every query to be an image nobody labelled."""
    proc, log, out = folder_run(tmp_path, n_init_labeled=6, n_query=3)
    try:
        given = {}
        for round_ in range(2):
            url = wait_for(log, rf"round {round_}: 3 images to label at (http://\S+)", proc)
            base, token = url.split("/?token=")
            with urllib.request.urlopen(f"{base}/view?token={token}", timeout=10) as r:
                html = r.read().decode()
            positions = [int(p) for p in re.findall(r'data-position="(\d+)"', html)]
            assert "the model started from the 18 images your train/ folders label" in html
            for i, p in enumerate(positions):
                label = "skip" if (round_, i) == (1, 2) else i % 3
                post(base, token, "answer", {"batch": round_, "position": p, "label": label})
                given[p] = -1 if label == "skip" else label
            post(base, token, "submit", {"batch": round_})
        assert proc.wait(timeout=120) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    folder, acquired, queried = queries_of(out)
    assert dict(zip(queried["pool_position"], queried["label"])) == given
    assert (queried["pool_position"] >= 18).all() and (queried["true_label"] == -1).all()
    initial = acquired[acquired["round"] == -1]
    assert sorted(initial["pool_position"]) == list(range(18)) and (initial["true_label"] >= 0).all()
    assert json.loads((folder / "config.json").read_text())["known_labels_first"] is True
    rounds = pd.read_csv(folder / "rounds.csv")
    assert rounds["n_labeled"].tolist() == [18, 21, 23] and rounds["n_corrupted"].tolist() == [0, 0, 0]
    assert json.loads((folder / "summary.json").read_text())["status"] == "complete"


def test_images_the_folder_labels_are_never_asked_of_the_person(tmp_path):
    """Issue 16, bug 8: the labelled train/ images left in the pool may be queried; they are answered with
    the folder's label, and the page asks the person only for unlabeled/ images (a real run, answered over
    HTTP as the page does)."""
    # 6 of the 18 labelled pool images are the initial set (the protocol before --known_labels_first): 10
    # queries from 22 candidates reach both kinds
    proc, log, out = folder_run(tmp_path, 6, 5, "--no-known_labels_first")
    try:
        base, token = wait_for(log, r"label the queried images at (http://\S+)", proc).split("/?token=")
        shown = {}  # round -> pool positions the page asked the person for
        deadline = time.time() + 120
        while proc.poll() is None and time.time() < deadline:
            try:
                with urllib.request.urlopen(f"{base}/view?token={token}", timeout=10) as r:
                    html = r.read().decode()
            except OSError:  # the run closes the page when it finishes
                time.sleep(0.1)
                continue
            batch = re.search(r'id="batch" data-round="(\d+)"', html)
            if batch and int(batch.group(1)) not in shown:
                round_ = int(batch.group(1))
                shown[round_] = [int(p) for p in re.findall(r'data-position="(\d+)"', html)]
                for p in shown[round_]:
                    post(base, token, "answer", {"batch": round_, "position": p, "label": 2})
                post(base, token, "submit", {"batch": round_})
            time.sleep(0.1)
        assert proc.wait(timeout=120) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    folder, acquired, queried = queries_of(out)
    from_folder = queried[queried["pool_position"] < 18]
    assert len(queried) == 10 and len(from_folder) > 0  # the strategy did choose images the folder labels
    asked = sorted(p for positions in shown.values() for p in positions)
    assert asked == sorted(queried.loc[queried["pool_position"] >= 18, "pool_position"])  # and only the others
    assert (from_folder["label"] == from_folder["true_label"]).all() and (from_folder["true_label"] >= 0).all()
    assert (queried.loc[queried["pool_position"] >= 18, "label"] == 2).all()
    assert re.search(r"more labelled in the folder, not asked|are labelled in the folder; nobody is asked",
                     log.read_text())
    rounds = pd.read_csv(folder / "rounds.csv")
    assert rounds["n_labeled"].tolist() == [6, 11, 16] and rounds["n_corrupted"].tolist() == [0, 0, 0]


def wait_for(log: Path, pattern: str, proc, timeout: float = 120) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = re.search(pattern, log.read_text())
        if found:
            return found.group(1)
        assert proc.poll() is None, log.read_text()
        time.sleep(0.1)
    raise AssertionError(log.read_text())


def post(base: str, token: str, route: str, body: dict) -> dict:
    request = urllib.request.Request(f"{base}/{route}", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", "X-Token": token})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_a_run_folder_from_before_known_labels_first_resumes_with_its_own_initial_set(tmp_path):
    """config.json written before the flag existed has no known_labels_first: such a run began with a drawn
    initial set, and read back it keeps that protocol (results.LEGACY_DEFAULTS), so its resume matches."""
    from config import DEFAULT_CONFIG
    from results import read_config
    (tmp_path / "config.json").write_text(json.dumps({k: v for k, v in DEFAULT_CONFIG.items()
                                                      if k != "known_labels_first"}))
    assert read_config(tmp_path)["known_labels_first"] is False
    (tmp_path / "config.json").write_text(json.dumps(DEFAULT_CONFIG))
    assert read_config(tmp_path)["known_labels_first"] is True
