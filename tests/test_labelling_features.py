"""What people expect from a labelling tool (issue 16, features): labels.csv and --export_to, corrections
recorded and replayed on --resume; real runs of main.py on a small --dataset folder."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from config import Config
from export import MARKER, check_export_dir, export_labelled
from results import OutputError
from test_folder import make_folder

ORIGINAL_SIZE = (64, 40)  # unlabeled/ images: wider than tall, larger than the model's 28 pixels
N_UNLABELED = 8


def image_folder(root: Path) -> Path:
    """root/train/<3 classes>/ (8 each), root/test/ (3 each) and root/unlabeled/ (8, two in a subfolder)."""
    make_folder(root, 8, "train")
    make_folder(root, 3, "test", start=100)
    rng = np.random.default_rng(0)
    for i in range(N_UNLABELED):
        folder = root / "unlabeled" / ("more" if i >= N_UNLABELED - 2 else "")
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (ORIGINAL_SIZE[1], ORIGINAL_SIZE[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"u{i}.png")
    return root


def folder_args(data: Path, *extra) -> list:
    """A folder run of 2 query rounds of 3 images: 18 labelled pool images (6 initial) and 8 unlabelled."""
    return ["--dataset", "folder", "--data_dir", str(data), "--image_size", "28", "--num_valid", "6",
            "--n_init_labeled", "6", "--n_query", "3", "--n_round", "2", "--epochs", "1", "--min_steps", "5",
            "--no-wandb", "--threads", "1", "--run_name", "mine", *extra]


# ------------------------------------------------------------------------------------------ export

def test_labels_csv_names_each_labelled_file_and_export_links_them_into_class_folders(cli, tmp_path):
    data, out, dest = image_folder(tmp_path / "images"), tmp_path / "runs", tmp_path / "export"
    rc, _, err, [run] = cli(*folder_args(data, "--export_to", dest), output_dir=out)
    assert rc == 0, err
    labels = pd.read_csv(run.path / "labels.csv", keep_default_na=False)
    acquired = run.acquired[run.acquired["label"] >= 0]
    assert sorted(labels["pool_position"]) == sorted(acquired["pool_position"])
    by_position = labels.set_index("pool_position")
    for row in acquired.itertuples():
        got = by_position.loc[row.pool_position]
        assert (got["label"], got["round"], got["dataset_index"]) == (row.label, row.round, row.dataset_index)
        assert got["path"] == f"train/{got['label_name']}/{Path(got['path']).name}" and got["who"] == "folder"
        assert got["answered_at"] == ""  # the folder's own labels were not answered by anyone
    # Each labelled file, hard-linked (same filesystem) into export/<class>/, and nothing else
    exported = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file() and p.name != MARKER)
    assert exported == sorted(f"{r.label_name}/{Path(r.path).name}" for r in labels.itertuples())
    for r in labels.itertuples():
        assert os.path.samefile(data / r.path, dest / r.label_name / Path(r.path).name)

    # The same run resumed (complete: it only exports) into the same folder: the same files, no error
    rc, _, err, _ = cli("--resume", run.path, "--export_to", dest, output_dir=out)
    assert rc == 0, err
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file() and p.name != MARKER) \
        == exported
    # A new run may not export into another run's export, nor into a folder holding a user's file
    user_file = tmp_path / "mine" / "notes.txt"
    user_file.parent.mkdir()
    user_file.write_text("mine")
    for folder, why in ((dest, "holds 12 file(s) that this run did not export"), (user_file.parent, "notes.txt")):
        rc, _, err, runs = cli(*folder_args(data, "--export_to", folder), output_dir=tmp_path / "refused")
        assert rc == 2 and err.count("\n") == 1 and err.startswith(f"error: --export_to {folder} is not empty")
        assert why in err and runs == [] and not (tmp_path / "refused").exists()
    assert user_file.read_text() == "mine"
    rc, _, err, _ = cli(*folder_args(data, "--dataset", "mnist_5k", "--export_to", dest), output_dir=out)
    assert rc == 2 and "--export_to copies the labelled images' files: it needs --dataset folder" in err


def test_export_never_overwrites_a_file_that_appeared_and_copies_across_filesystems(cli, tmp_path, small_disk):
    data, out = image_folder(tmp_path / "images"), tmp_path / "runs"
    rc, _, err, [run] = cli(*folder_args(data), output_dir=out)
    assert rc == 0, err
    rows = pd.read_csv(run.path / "labels.csv", keep_default_na=False).to_dict("records")
    first = rows[0]
    dest = tmp_path / "export"
    check_export_dir(Config(dataset="folder", export_to=str(dest)), run.path)  # passes: nothing there yet
    # A user's file at a name the export wants, appearing after the check: refused, untouched, nothing written
    taken = dest / first["label_name"] / Path(first["path"]).name
    taken.parent.mkdir(parents=True)
    taken.write_bytes(b"the user's")
    with pytest.raises(OutputError, match=f"{taken} exists and was not exported by this run; nothing was exported"):
        export_labelled(rows, str(data), str(dest), run.path)
    assert taken.read_bytes() == b"the user's" and sorted(dest.rglob("*")) == [taken.parent, taken]
    # On another filesystem (a tmpfs): copies, byte for byte
    assert export_labelled(rows, str(data), str(small_disk / "export"), run.path) == (0, len(rows))
    for row in rows:
        copy = small_disk / "export" / row["label_name"] / Path(row["path"]).name
        assert copy.read_bytes() == (data / row["path"]).read_bytes()
        assert not os.path.samefile(copy, data / row["path"]) and stat.S_ISREG(copy.lstat().st_mode)
