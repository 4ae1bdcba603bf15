"""HumanOracle: the loop's oracle when a person labels (``--oracle human``).

The loop calls it like any oracle, with the pool positions a round queried. It opens a *batch*, shows it
in the labelling page (web.py), blocks until the person submits it, and returns the labels (-1: "I don't
know"). Every answer is saved in ``human_batch.json`` before the page is told it was taken, so nothing a
person answers is lost to a closed tab, Ctrl-C, kill -9 or a resume. What is asked, what is kept and how
corrections reach the loop: docs/labelling.md, "How the human oracle keeps every answer".
"""
from __future__ import annotations

import errno
import io
import json
import math
import os
import re
import reprlib
import secrets
import stat
import threading
import time
from datetime import datetime, timezone

import torch
import numpy as np
from PIL import Image

from data import DATASETS
from data.folder import eight_bits
from memory import starts_from_known_labels
from oracles.human.address import check_address, is_loopback
from oracles.human.web import Refused, stability, start_server
from oracles.simulated import NO_NOTE, CleanOracle
from results import DamagedRun, OutputError, atomic_write_text, write_json
from stopping import stop_set_size

BATCH_FILE = "human_batch.json"
TOKEN_FILE = "human_token"
SKIP = -1  # the label of an "I don't know" answer
FLAG = -2  # the label of a "none of these" answer (flagged: no class fits); training sees -1, as for SKIP
FLAG_KEY = "!"
LABELLER_MAX = 40  # characters of a labeller's name
# Keyboard shortcuts of the class buttons: 0-9 for the first ten classes, then a-y (z zooms the image).
KEYS = "0123456789abcdefghijklmnopqrstuvwxy"
# The image formats a browser shows as they are; the others (TIFF, PGM, PPM) are sent as PNG.
BROWSER_FORMATS = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp",
                   ".bmp": "image/bmp", ".gif": "image/gif"}
SKIP_KEY = "?"  # also "/" (the same key without Shift)
LINGER_S = 2.5  # after the last round, a page seen this recently gets time to show "finished" (it polls each 1 s)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class HumanOracle(CleanOracle):
    """Asks a person, through a local web page, for the labels of each round's queried images.

    From CleanOracle: ``pool_y`` (the dataset's labels, -1 for an image it has none for; the initial set,
    and with DatasetSpec.own_labels every labelled image, is answered from it). ``remember`` keeps nothing: recorded
    rounds are never asked again. Whether a person's answer is wrong is found afterwards, from the
    dataset (acquired.csv's true_label).
    """

    needs_predictions = False

    def remember(self, positions: torch.Tensor, labels: torch.Tensor) -> None:
        """Nothing to remember or check: a person's recorded answers are the labels, right or wrong."""

    def __init__(self, cfg, pool_y: torch.Tensor, initial: torch.Tensor | None, study):
        if study is None:
            raise ValueError("the human oracle needs the study (images, labelled set, run folder)")
        super().__init__(pool_y)
        self.cfg, self.study, self.log = cfg, study, study.log
        self.needs_predictions = cfg.show_guess
        self.initial = set(torch.as_tensor(initial).tolist()) if initial is not None else set()
        # The positions answered from the dataset without asking: the initial set, and every image the
        # user's own folder labels
        self.known = set(self.initial)
        # A dataset whose labels a person gave (DatasetSpec.own_labels): a query for one of its labelled images
        # is answered with that label. Other datasets' labels are the reference a person's answers are
        # measured against (n_corrupted), so there the person is asked.
        if DATASETS[cfg.dataset].own_labels:
            self.known |= set(torch.nonzero(self.pool_y >= 0).flatten().tolist())
        data = study.data
        names = data.classes or tuple(str(c) for c in range(data.num_classes))
        self.classes = tuple(str(n) for n in names)
        self.n_stop = stop_set_size(len(self.pool_y), len(self.initial), cfg.stop_set_size)
        self.path = study.run_dir.path / BATCH_FILE
        self.token = self._token(study.run_dir.path / TOKEN_FILE)
        self.lock = threading.Lock()
        self.version = 0          # bumped on every change the page must show
        self.process = secrets.token_hex(4)  # in the version: a tab that outlived a resumed run's restart redraws
        self.batch = None         # the open (or last) batch: see __call__
        self.finished = False
        self.last_seen = 0.0      # monotonic time of the last request with the token
        self._submitted = threading.Event()
        self._png: dict = {}
        self._corrections: dict = {}  # a submitted batch's corrections, until the loop takes them
        self._notes: dict = {}    # the last submitted batch's flags and labellers, for acquired.csv
        self.guesses: dict = {}   # --show_guess: pool position -> (the model's top class, its probability)
        self.returned = None      # monotonic time the last batch was taken: the next round's training began
        self.saved = self._read_saved()
        if self.saved and self.saved.get("submitted"):  # recorded, perhaps not yet in labels.csv: its times
            self._keep_given(self.saved["answers"])
        try:
            self.server, self.url = start_server(self, cfg.human_host, cfg.human_port)
        except OSError:
            check_address(cfg.human_host, cfg.human_port)  # raises ConfigError with the reason
            raise
        if not is_loopback(self.server.server_address[0]):  # said, not refused: people label from a phone on the LAN
            self.log.warning("the labelling page listens on %s, reachable from other machines, over plain HTTP "
                             "with the token in its address: anyone on the network can read the token and "
                             "answer for you; use --human_host 127.0.0.1 (and an SSH tunnel) to keep it on "
                             "this machine", cfg.human_host)
        self.log.info("label the queried images at %s", self.url)

    # ------------------------------------------------------------------ the oracle interface
    def __call__(self, positions: torch.Tensor, probs: torch.Tensor | None = None) -> torch.Tensor:
        positions = torch.as_tensor(positions, dtype=torch.int64).cpu()
        wanted = positions.tolist()
        if all(p in self.known for p in wanted):  # the initial set (or a folder's labels): the dataset's labels
            labels = self.pool_y[positions]
            if (labels < 0).any():
                raise ValueError("the initial set must be labelled images")
            if not all(p in self.initial for p in wanted):
                self.log.info("round %d: the %d images chosen are labelled in the folder; nobody is asked",
                              len(self.study.run_dir.rounds), len(wanted))
            self.returned = time.monotonic()
            return labels.clone()
        asked = [p for p in wanted if p not in self.known]
        r = len(self.study.run_dir.rounds)
        answers, unused = self._saved_answers(r, asked)
        corrections = self._saved_corrections(r)
        if probs is not None:  # --show_guess: the model's top class of each image, and its probability
            top = torch.as_tensor(probs, dtype=torch.float64).cpu().max(1)
            self.guesses = {p: (int(c), float(q)) for p, c, q in zip(wanted, top.indices, top.values)}
        if self.saved and self.saved.get("round") == r and self.saved.get("submitted") \
                and sorted(self.saved.get("positions", [])) == sorted(asked) and len(answers) == len(asked):
            self.log.info("round %d: the batch was submitted before the interruption; its answers are kept", r)
            self.saved = None
            return self._taken(wanted, answers, corrections)
        batch = {"round": r, "positions": asked, "answers": answers, "submitted": False, "opened": _now(),
                 "unused": unused, "from_dataset": len(wanted) - len(asked), "corrections": corrections}
        given = f" ({len(answers)} answered before the interruption)" if answers else ""
        known = f" ({batch['from_dataset']} more labelled in the folder, not asked)" if batch["from_dataset"] else ""
        return self._open_and_wait(batch, wanted, f"round {r}: {len(asked)} images to label{given}{known} at "
                                                  f"{self.url}")

    def review_after_end(self, r: int) -> None:
        """A finished run resumed (``--resume``): no images to label, but every earlier answer can be corrected,
        and an "I don't know" labelled, in the review until the person presses Done. The corrections are those
        of an empty batch of round ``r`` (the last round), saved with it as any batch's are (a second resume
        shows them again); ``corrections()`` then hands them to the loop."""
        batch = {"round": r, "positions": [], "answers": {}, "submitted": False, "opened": _now(), "unused": {},
                 "from_dataset": 0, "corrections": self._saved_corrections(r), "review_only": True}
        self._open_and_wait(batch, [], f"the study is finished: correct your answers at {self.url}, then press Done")

    def _open_and_wait(self, batch: dict, wanted: list, said: str) -> torch.Tensor:
        """Show ``batch`` on the page (saved first), log ``said``, wait for its submission: the labels of the
        pool positions ``wanted`` (_taken)."""
        with self.lock:
            self._write(batch)  # on disk before the page can show it
            self.batch, self._png = batch, {}
            self._submitted.clear()
            self.version += 1
        self.saved = None
        self.log.info("%s", said)
        while not self._submitted.wait(0.5):  # short waits: Ctrl-C and SIGTERM get through
            pass
        with self.lock:
            return self._taken(wanted, self.batch["answers"], self.batch["corrections"])

    def notes(self, positions: torch.Tensor) -> list:
        """acquired.csv's flagged and labeller of the last batch's images, in the order of ``positions``."""
        return [self._notes.get(p, NO_NOTE) for p in torch.as_tensor(positions).tolist()]

    @staticmethod
    def _labeller(name) -> dict:
        """{"labeller": name} for an answer given under a name ({} without one); Refused for a name that is not
        a short line of text."""
        if name in (None, ""):
            return {}
        if not _is_labeller(name):
            raise Refused(f"a labeller's name is up to {LABELLER_MAX} characters of text on one line, not "
                          f"{reprlib.repr(name)}; nothing was changed")
        return {"labeller": name.strip()}

    def corrections(self) -> list:
        """The corrections given while the last batch was open (each once): the loop applies and records them."""
        taken, self._corrections = self._corrections, {}
        self.answered_at.update({p: c["at"] for p, c in taken.items()})
        self.labelled_by.update({p: c.get("labeller", "") for p, c in taken.items()})
        return [{"pool_position": p, "label": c["label"], "at": c["at"]} for p, c in taken.items()]

    def close(self, finished: bool = False) -> None:
        """Stop the page's server (after a moment when the study finished and a page is watching)."""
        server = getattr(self, "server", None)
        if server is None:
            return
        if finished:
            with self.lock:
                self.finished = True
                self.version += 1
            if time.monotonic() - self.last_seen < 3:
                time.sleep(LINGER_S)
        self.server = None
        server.shutdown()
        server.server_close()

    # ------------------------------------------------------------------ what the page does
    def answer(self, batch_round, position, label, labeller="") -> str:
        """Record one answer (a class index, or "skip") for an image of the open batch.

        Refused values are quoted with reprlib.repr: briefly, whatever a request sent (a long string, a list
        nested hundreds deep)."""
        with self.lock:
            b = self._open_batch(batch_round)
            if isinstance(position, bool) or not isinstance(position, int) or position not in b["positions"]:
                raise Refused(f"image {reprlib.repr(position)} was not queried in this batch "
                              f"(round {b['round']}); nothing was changed")
            if label in ("skip", "flag"):
                label = SKIP if label == "skip" else FLAG
            elif isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < len(self.classes):
                raise Refused(f"unknown class {reprlib.repr(label)}: the classes are 0..{len(self.classes) - 1} "
                              f"({', '.join(self.classes)}), \"skip\" or \"flag\"; nothing was changed")
            given = {"label": label, "at": _now(), **self._labeller(labeller)}
            answers = {**{p: a for p, a in b["answers"].items() if p != position},
                       position: given}  # the newest last: what undo takes back
            self._write({**b, "answers": answers})
            b["answers"] = answers
            self.version += 1
            what = ("I don't know" if label == SKIP else "none of these (flagged)" if label == FLAG
                    else self.classes[label])
            return f"image {b['positions'].index(position) + 1}: {what} (saved)"

    def undo(self, batch_round) -> tuple:
        """Take back the last answer given in the open batch: (its pool position, the message)."""
        with self.lock:
            b = self._open_batch(batch_round)
            if not b["answers"]:
                raise Refused(f"no answer to take back in the batch of round {b['round'] + 1}; nothing was changed")
            # The newest by its time; among equal times (one millisecond), the later given (dict order)
            order = list(b["answers"])
            position = max(order, key=lambda p: (b["answers"][p].get("at", ""), order.index(p)))
            answers = {p: a for p, a in b["answers"].items() if p != position}
            self._write({**b, "answers": answers})
            b["answers"] = answers
            self.version += 1
            return position, f"image {b['positions'].index(position) + 1}: answer taken back (saved)"

    def correct(self, batch_round, position, label, labeller="") -> str:
        """Change the label of an image the person labelled in an earlier round (the review). Taken while a
        batch is open, saved with it, and handed to the loop with it: the next round trains on the new label."""
        with self.lock:
            b = self._open_batch(batch_round)
            mine = self._correctable_by_person()
            if isinstance(position, bool) or not isinstance(position, int) or position not in mine \
                    or position in b["positions"]:
                raise Refused(f"image {reprlib.repr(position)} is not one you answered in an earlier round; "
                              "nothing was changed")
            if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < len(self.classes):
                raise Refused(f"unknown class {reprlib.repr(label)}: the classes are 0..{len(self.classes) - 1} "
                              f"({', '.join(self.classes)}); nothing was changed")
            now = int(self.study.state.labels_of(torch.tensor([position]))[0])  # corrections recorded included
            corrections = {p: c for p, c in b["corrections"].items() if p != position}
            if label != now:
                corrections[position] = {"label": label, "at": _now(), **self._labeller(labeller)}
            self._write({**b, "corrections": corrections})
            b["corrections"] = corrections
            self.version += 1
            round_ = mine[position][0] + 1  # counted from 1, as the page counts rounds
            then = "recorded when you press Done" if b.get("review_only") else "the next round trains on it"
            if now == SKIP:
                return (f"round {round_}'s image, answered \"I don't know\" then: labelled {self.classes[label]} "
                        f"(saved; {then})")
            if label == now:
                return f"round {round_}'s image stays {self.classes[label]} (saved)"
            return f"round {round_}'s image: {self.classes[now]} corrected to {self.classes[label]} (saved; {then})"

    def review(self) -> dict:
        """What the review shows: every answer the person gave in the recorded rounds, its label now (a
        correction recorded, or one given while this batch is open), and whether corrections are taken now."""
        with self.lock:
            b = self.batch
            open_ = b is not None and not b["submitted"] and not self.finished
            pending = b["corrections"] if open_ else {}
            label_P = self.study.state.label_P
            rows = []
            skipped = self._skipped_by_person()
            for row in self._asked_of_person():
                p = row["pool_position"]
                # An "I don't know" still unlabelled can be labelled here; one asked again later has that row
                open_to_label = row["label"] >= 0 or (p in skipped and skipped[p][0] == row["round"])
                now = pending[p]["label"] if p in pending else int(label_P[p]) if label_P[p] >= 0 else SKIP
                rows.append({"round": row["round"] + 1, "position": p, "given": row["label"],
                             "flagged": row.get("flagged", 0), "labeller": row.get("labeller", ""),
                             "label": now if open_to_label else SKIP, "pending": p in pending and open_to_label,
                             "correctable": open_to_label and not (open_ and p in b["positions"])})
            # No batch will open again: the last was submitted, or the study finished
            final = self.finished or (b is not None and b["submitted"] and b["round"] >= self.cfg.n_round - 1)
            return {"rows": rows, "open": open_, "batch_round": b["round"] if open_ else None, "final": final,
                    "review_only": open_ and bool(b.get("review_only")), "run_path": str(self.study.run_dir.path),
                    "classes": self.classes, "token": self.token, "originals": self.study.data.files is not None}

    def submit(self, batch_round) -> str:
        """Close the open batch when every image has an answer; the run then trains on it."""
        with self.lock:
            b = self._open_batch(batch_round)
            missing = [i + 1 for i, p in enumerate(b["positions"]) if p not in b["answers"]]
            if missing:
                raise Refused(f"{len(missing)} of {len(b['positions'])} images have no answer yet "
                              f"(image {', '.join(map(str, missing))}); nothing was submitted")
            self._write({**b, "submitted": True, "submitted_at": _now()})
            b["submitted"] = True
            self.version += 1
            self._submitted.set()
            if b.get("review_only"):
                return f"{len(b['corrections'])} corrections recorded; the run is finished and this page closes"
            skipped = sum(a["label"] == SKIP for a in b["answers"].values())
            flagged = sum(a["label"] == FLAG for a in b["answers"].values())
            # Rounds counted from 1, as the page and summary.json count them (rounds.csv's round + 1)
            return (f"round {b['round'] + 1} of {self.cfg.n_round + 1}: {len(b['positions']) - skipped - flagged} "
                    "labels submitted" + (f", {skipped} skipped" if skipped else "")
                    + (f", {flagged} flagged" if flagged else "") + "; the model is training")

    def png(self, position: int) -> bytes | None:
        """The PNG of a pool image the page shows, from the in-memory tensor (None: one it does not show)."""
        with self.lock:
            if not self._may_show(position):
                return None
            if position not in self._png:
                self._png[position] = encode_png(self._image(position))
            return self._png[position]

    def original(self, position: int) -> tuple | None:
        """(bytes, media type) of the file a pool image was read from (--dataset folder), found by its pool
        position in the files the run was given: the file itself when a browser shows its format, else a
        PNG of it; None when the page does not show that image or the dataset has no files."""
        data = self.study.data
        with self.lock:
            if data.files is None or not self._may_show(position):
                return None
            path = os.path.join(data.root, data.files[int(data.pool_idx[position])])
        return read_original(path)

    def view(self) -> dict:
        """Everything the page shows, read under the lock."""
        state, run_dir = self.study.state, self.study.run_dir
        with self.lock:
            rows = [dict(row) for row in run_dir.rounds]
            # The stopping signal of the finished rounds (the live one below is not recorded yet)
            kappas = [{"round": row["round"], "n_labeled": row["n_labeled"],
                       "stop_kappa": _finite(row.get("stop_kappa", math.nan))} for row in rows]
            live = dict(self.study.live)
            if live.get("round") == len(rows) and "test_acc" in live:
                rows.append(live)  # the round in progress, evaluated but not recorded yet (shown, not saved)
            b = self.batch
            open_ = b is not None and not b["submitted"]
            # What the page says about stopping: the kappa of the model that chose the open batch (the newest
            # model; with --query_lag 1 the previous round's, while this round's trains), else the newest's
            chooser = [row for row in rows if open_ and row["round"] == live.get("chosen_by")]
            latest = float((chooser or rows)[-1].get("stop_kappa", math.nan)) if rows else math.nan
            # --query_lag 1: the open batch's chooser learnt from fewer labels than the model training now
            lagged = bool(chooser) and open_ and chooser[-1]["round"] < live.get("round", -1)
            if self.finished:
                phase = "finished"
            elif open_:
                phase = "labelling"
            else:
                phase = "training"
            round_, step = live.get("round", len(run_dir.rounds)), live.get("phase", "training")
            n_training = live.get("n_labeled", state.n_labeled)  # what the round's model trains on
            if b is not None and b["submitted"] and round_ == b["round"] and step != "training":
                # Submitted, and the loop has not started the next round yet (its live step says "querying"):
                # the next round trains next, on the labels just given. (With --query_lag 1 the batch may be
                # submitted while its round's model still trains: that round is the one shown.)
                round_, step = b["round"] + 1, "training"
                n_training += b.get("from_dataset", 0) + sum(a["label"] >= 0 for a in b["answers"].values())
            guesses = self.guesses if self.cfg.show_guess else {}
            items = [{"index": i + 1, "position": p, "answer": b["answers"].get(p, {}).get("label"),
                      "by": b["answers"].get(p, {}).get("labeller", ""),
                      "guess": (self.classes[guesses[p][0]], guesses[p][1]) if p in guesses else None}
                     for i, p in enumerate(b["positions"])] if open_ else []
            estimate, elapsed, progress = self._estimate(phase, live, run_dir.rounds)
            unlabeled = self.pool_y < 0  # a folder's unlabeled/ images
            return {
                # Changes whenever the page must be redrawn: an answer, a batch, a recorded round, a step.
                "version": f"{self.process}.{self.version}.{len(run_dir.rounds)}.{live.get('round')}."
                           f"{live.get('phase')}.{progress}",
                "phase": phase, "round": min(round_, self.cfg.n_round), "step": step, "n_training": n_training,
                "last": round_ >= self.cfg.n_round, "from_dataset": b.get("from_dataset", 0) if open_ else 0,
                "n_round": self.cfg.n_round, "n_labeled": state.n_labeled, "n_aside": state.n_aside,
                "rows": rows, "batch_round": b["round"] if open_ else None, "items": items,
                "review_only": open_ and bool(b.get("review_only")),  # a finished run resumed: Done, no batch
                "lagged": lagged, "chooser_labels": chooser[-1]["n_labeled"] if lagged else n_training,
                "trains_now": lagged and step == "training",
                "answered": sum(item["answer"] is not None for item in items),
                "classes": self.classes, "keys": KEYS[:len(self.classes)], "skip_key": SKIP_KEY, "flag_key": FLAG_KEY,
                "token": self.token, "run_name": run_dir.name, "run_path": str(run_dir.path),
                "dataset": self.cfg.dataset,
                "strategy": self.cfg.strategy, "model": self.cfg.model,
                "pool": int(state.unlabeled_positions().numel()),  # what queries can still choose
                "originals": self.study.data.files is not None,  # the person's own files (--dataset folder)
                "n_unlabeled": int(unlabeled.sum()),
                "unlabeled_left": int((unlabeled & (state.round_P < 0) & ~state.aside_P).sum()),
                "n_given": len(self._answered_by_person()),  # labels the person gave in the recorded rounds
                # --known_labels_first: round 0 trained on every image the folder labels (else 0)
                "known_start": len(self.initial) if starts_from_known_labels(self.cfg) else 0,
                "estimate_s": estimate, "elapsed_s": elapsed,
                "steps_done": live.get("steps_done", 0), "steps_planned": live.get("steps_planned", 0),
                "kappas": kappas, "n_stop": self.n_stop,
                "stability": stability(latest, self.cfg.stop_when_stable, self.n_stop),
                "stopped_because": run_dir.stopped_because,  # --stop_when_stable ended the run (else None)
            }

    def _estimate(self, phase: str, live: dict, rounds: list) -> tuple:
        """(estimate_s, elapsed_s, progress) of the round in progress, for the page's bar: the time since the
        batch was taken (or, after a resume, since training began) and the time it will have taken. While
        the model trains, from its own steps so far (steps left at the rate measured now, which follows the
        machine's load, plus the last round's evaluation and query); after that, or before a first step,
        from the last recorded round. ``progress``: tenths of the steps done (the page redraws on each)."""
        done, planned = live.get("steps_done", 0), live.get("steps_planned", 0)
        progress = 10 * done // planned if planned else 0
        since = self.returned if self.returned is not None else live.get("train_started")
        if phase != "training" or since is None:
            return None, None, progress
        now = time.monotonic()
        last = rounds[-1] if rounds else None
        tail = last["eval_s"] + last["query_s"] if last else 0.0
        if live.get("phase") == "training" and done > 0 and planned and "train_started" in live:
            left = (now - live["train_started"]) * max(planned - done, 0) / done + tail
            return now - since + left, now - since, progress
        if last is None:
            return None, None, progress
        return last["train_s"] + last["eval_s"] + last["query_s"], now - since, progress

    # ------------------------------------------------------------------ internals
    def _may_show(self, position) -> bool:
        """Whether the page shows the image at this pool position: the open batch's, and those the person
        answered in a recorded round, "I don't know" included (the review lists them all); under the lock."""
        return (self.batch is not None and position in self.batch["positions"]) or \
            any(row["pool_position"] == position for row in self._asked_of_person())

    def _taken(self, wanted: list, answers: dict, corrections: dict) -> torch.Tensor:
        """The labels of a submitted batch; its answer times are kept for labels.csv, its corrections for
        the loop (``corrections``), and when it returned for the page's estimate of the next round."""
        self._keep_given(answers)
        self._notes = {p: {"flagged": int(a["label"] == FLAG), "labeller": a.get("labeller", "")}
                       for p, a in answers.items()}
        self._corrections = dict(corrections)
        self.returned = time.monotonic()
        return self._labels(wanted, answers)

    def _keep_given(self, answers: dict) -> None:
        """When, and under which name, each label of ``answers`` was given (labels.csv's answered_at and
        labeller); "I don't know" and "none of these" give no label."""
        given = {p: a for p, a in answers.items() if a["label"] >= 0 and "at" in a}
        self.answered_at.update({p: a["at"] for p, a in given.items()})
        self.labelled_by.update({p: a.get("labeller", "") for p, a in given.items()})

    def _labels(self, wanted: list, answers: dict) -> torch.Tensor:
        """The labels of the pool positions ``wanted``: the person's answers, the dataset's for the known."""
        return torch.tensor([int(self.pool_y[p]) if p in self.known else max(answers[p]["label"], SKIP)
                             for p in wanted], dtype=torch.int64)

    def _open_batch(self, batch_round) -> dict:
        b = self.batch
        if isinstance(batch_round, bool) or not isinstance(batch_round, int):
            raise Refused(f"the batch must be a round number, not {reprlib.repr(batch_round)}; "
                          "nothing was changed")
        if self.finished:
            raise Refused("the study is finished: no batch is waiting for labels, and none will be; nothing was "
                          "changed", 409)
        if b is None:
            raise Refused("no batch is waiting for labels: the model is training; the page shows the next "
                          "batch when it is chosen", 409)
        if batch_round != b["round"]:
            raise Refused(f"this page shows the batch of round {batch_round!r}, but the open one is round "
                          f"{b['round']}'s: the page reloads it; nothing was changed", 409)
        if b["submitted"]:
            raise Refused(f"the batch of round {b['round']} was already submitted; nothing was changed", 409)
        return b

    def _write(self, batch: dict) -> None:
        """Save a batch (atomically) before the change is taken. A failed write raises OutputError and
        nothing changes: the page answers 500 (web.py), the run stops with one error line (main.py)."""
        record = {**batch, "answers": {str(p): a for p, a in batch["answers"].items()},
                  "unused": {str(p): a for p, a in batch.get("unused", {}).items()},
                  "corrections": {str(p): c for p, c in batch.get("corrections", {}).items()},
                  "classes": list(self.classes), "updated": _now()}
        write_json(self.path, record)

    def _token(self, path) -> str:
        """The page's token: the run folder's (a resumed run's page keeps its address), or a new one saved
        there, readable by the owner only (whoever reads it can answer for the person)."""
        try:
            # Never through a link (the file it leads to would be read and chmod-ed), never blocking on a FIFO
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            fd = None
        except OSError as err:
            if err.errno != errno.ELOOP:
                raise OutputError(f"cannot use {path}: {err.strerror or err}") from None
            fd = None
            self.log.warning("%s is a link: it is replaced by a file holding a new token (and the page gets a new "
                             "address); what it led to is left alone", path)
        if fd is not None:
            with os.fdopen(fd, "rb") as f:
                regular = stat.S_ISREG(os.fstat(fd).st_mode)
                token = f.read(4096).decode("ascii", "replace").strip() if regular else ""
                if re.fullmatch(r"[A-Za-z0-9_-]{32,}", token):
                    os.fchmod(fd, 0o600)
                    return token
            self.log.warning("%s does not hold a token: the page gets a new one (and a new address)", path)
        token = secrets.token_urlsafe(24)
        atomic_write_text(path, token + "\n")  # its temporary file is created 0600, and renamed so
        return token

    def _read_saved(self) -> dict | None:
        """The batch file a previous process left (None when there is none or it cannot be read)."""
        if not self.path.exists():
            return None
        try:
            saved = json.loads(self.path.read_text())
            for key in ("answers", "unused", "corrections"):
                saved[key] = {int(p): a for p, a in saved.get(key, {}).items()}
        except (OSError, ValueError, AttributeError) as err:
            self.log.warning("%s cannot be read (%s): its answers are not shown again", self.path, err)
            return None
        problem = self._saved_problem(saved)
        if problem:  # replayed, it would write a label that is no class into acquired.csv
            raise DamagedRun(f"{self.path} is damaged ({problem}): the person's answers in it cannot be trusted; "
                             "move it away to label this batch again, then --resume")
        return saved

    def _saved_problem(self, saved: dict) -> str:
        """What in a read-back batch file is not as this oracle writes it ("" when all is): positions in the
        pool, a round number, answers with a class (or -1, "I don't know") and a time, corrections with a class."""
        n, c = len(self.pool_y), len(self.classes)

        def is_int(v, low, high):
            return isinstance(v, int) and not isinstance(v, bool) and low <= v <= high
        if not is_int(saved.get("round"), 0, 10**9) or not isinstance(saved.get("positions", []), list) \
                or not all(is_int(p, 0, n - 1) for p in saved.get("positions", [])):
            return "its round or positions are not this run's"
        for key, lowest in (("answers", FLAG), ("unused", FLAG), ("corrections", 0)):
            for p, a in saved[key].items():
                if not is_int(p, 0, n - 1) or not isinstance(a, dict) or not is_int(a.get("label"), lowest, c - 1) \
                        or not isinstance(a.get("at", ""), str) or not _is_labeller(a.get("labeller", "")):
                    return f"{key} of position {p}: {reprlib.repr(a)} is not a label {lowest}..{c - 1} with a time"
        return ""

    def _saved_answers(self, r: int, wanted: list) -> tuple:
        """(answers to show again for the images ``wanted`` in round r, answers kept for other images)."""
        if not self.saved or self.saved.get("round") != r:
            return {}, {}
        known = {**self.saved.get("unused", {}), **self.saved.get("answers", {})}
        answers = {p: known[p] for p in wanted if p in known}
        unused = {p: a for p, a in known.items() if p not in answers}
        if unused:
            self.log.warning("round %d: %d saved answers are for images this round did not query again; "
                             "they stay in %s under 'unused'", r, len(unused), self.path)
        return answers, unused

    def _saved_corrections(self, r: int) -> dict:
        """Corrections saved while round r's batch was open (before an interruption), of answers still
        recorded as the person's (an "I don't know" still unlabelled included)."""
        if not self.saved or self.saved.get("round") != r:
            return {}
        mine = self._correctable_by_person()
        return {p: c for p, c in self.saved.get("corrections", {}).items() if p in mine}

    def _asked_of_person(self) -> list:
        """acquired.csv's rows (their first answers) of the images the person was asked in the recorded rounds,
        "I don't know" included: not the initial set, nor those the dataset answered."""
        return [row for row in list(self.study.run_dir.acquired)
                if row["round"] >= 0 and row["pool_position"] not in self.known]

    def _skipped_by_person(self) -> dict:
        """{pool position: (round, -1)} of the images the person answered "I don't know" in the recorded
        rounds and nobody has labelled since: the review offers them to label."""
        round_P = self.study.state.round_P
        return {row["pool_position"]: (row["round"], SKIP) for row in self._asked_of_person()
                if row["label"] == SKIP and round_P[row["pool_position"]] < 0}

    def _correctable_by_person(self) -> dict:
        """{pool position: (round, label given)} of what the review lets the person change: every label they gave
        and every "I don't know" still unlabelled (-1)."""
        return {**self._skipped_by_person(), **self._answered_by_person()}

    def _answered_by_person(self) -> dict:
        """{pool position: (round, label given)} of every label the person gave in the recorded rounds
        ("I don't know" aside)."""
        return {row["pool_position"]: (row["round"], row["label"]) for row in self._asked_of_person()
                if row["label"] >= 0}

    def _image(self, position: int):
        """H×W or H×W×3 uint8 array of a pool image as the model sees it (noise included)."""
        data = self.study.data
        images = data.train
        x = images.x[data.pool_idx[position]].cpu()
        if x.dtype != torch.uint8:  # stored normalised (input noise): back to pixels
            mean, std = images.mean.cpu()[0], images.std.cpu()[0]
            x = (x * std + mean).clamp(0, 1).mul(255).round().to(torch.uint8)
        x = x.permute(1, 2, 0)
        return (x[:, :, 0] if x.shape[2] == 1 else x).numpy()


def _is_labeller(name) -> bool:
    return isinstance(name, str) and len(name) <= LABELLER_MAX and name.isprintable()


def _finite(value) -> float | None:
    """A recorded number as JSON carries it: None for NaN (JSON has no NaN)."""
    value = float(value)
    return None if math.isnan(value) else value


def read_original(path: str) -> tuple | None:
    """(bytes, media type) of an image file as a browser can show it: the file's own bytes when the
    browser reads its format, else a PNG of it (TIFF, PGM/PPM; 16-bit grey as the loader reads it);
    None when it cannot be read now (moved or damaged since the run loaded it)."""
    kind = BROWSER_FORMATS.get(os.path.splitext(path)[1].lower())
    try:
        if kind is not None:
            with open(path, "rb") as f:
                return f.read(), kind
        with Image.open(path) as img:
            img.load()
            return encode_png(np.asarray(eight_bits(img))), "image/png"
    except (OSError, ValueError, SyntaxError):  # PIL's errors for a file that changed since it was loaded
        return None


def encode_png(array) -> bytes:
    """PNG bytes of an H×W (grey) or H×W×3 (RGB) uint8 array."""
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()
