"""Writes a report folder: every table as CSV, the figures and report.md, each file atomically."""
from __future__ import annotations

import os
import re
from pathlib import Path

import matplotlib
import pandas as pd

from reporting.load import ReportError, load_rounds, mark_versus
from reporting.markdown import LABEL_NOISE_PNG, markdown
from reporting.plots import plot_curves, plot_label_noise, plot_map
from reporting.stats import DEFAULT_AT, DEFAULT_TARGETS, build_tables, map_tests, ordered_strategies
from results import OutputError, atomic_write_bytes

RUN_CSV_COLUMNS = ["group", "strategy", "seed", "status", "included", "note", "n_rounds", "final_n_labeled",
                   "final_test_acc", "aulc", "run"]


def write_report(runs: pd.DataFrame, out, targets=DEFAULT_TARGETS, baseline: str = "random",
                 sources=(), versus=(), map_field: str = "", at=DEFAULT_AT) -> Path:
    """Write the PNGs, the CSVs and report.md into ``out``; returns the path of report.md. ``versus``: config
    fields whose variants are also compared, paired by strategy and seed, at the end and at the labelled-set
    sizes ``at`` (versus.csv). ``map_field``: a config field whose values are set against the strategies, each
    cell the paired difference from the baseline at the sizes ``at`` (map.csv, map_<setting>.png).

    Each file is replaced in one step, so a failed write (a full disk) raises ReportError naming the file
    and leaves that file's previous version, if any, whole."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ReportError(f"cannot create --out {out}: {err.strerror or err}") from None
    mode = _plain_file_mode()
    mapped = mark_versus(runs, [map_field], "--map") if map_field else None
    if versus:
        runs = mark_versus(runs, versus)
    rounds = load_rounds(runs[runs["included"]])
    tables = build_tables(runs, rounds, targets, baseline, at)
    if mapped is not None:
        tables["map"] = map_tests(mapped[mapped["included"]], rounds, map_field, at, baseline)
    for name, table in tables.items():
        csv = (table[RUN_CSV_COLUMNS] if name == "runs" else table).to_csv(index=False)
        _write(out / f"{name}.csv", csv.encode("utf-8"), mode)
    palette = matplotlib.colormaps["tab10"]
    colors = {s: palette(i % 10) for i, s in enumerate(ordered_strategies(runs["strategy"], baseline))}
    groups = sorted(runs["group"].unique())
    pngs = {}
    for group in groups:
        curves = tables["curves"][tables["curves"]["group"] == group]
        if len(curves):
            pngs[group] = f"curve_{_slug(group, set(pngs.values()))}.png"
            _write(out / pngs[group], plot_curves(curves, group, colors, baseline), mode)
    if "label_noise" in tables and len(tables["label_noise"]):
        _write(out / LABEL_NOISE_PNG, plot_label_noise(tables["label_noise"], colors, baseline), mode)
    map_pngs = {}
    if "map" in tables and tables["map"]["n_pairs"].sum() > 0:
        for setting, table in tables["map"].groupby("setting", sort=True):
            map_pngs[setting] = f"map_{_slug(setting, set(map_pngs.values()), 'map')}.png"
            _write(out / map_pngs[setting], plot_map(table, f"{setting}: strategy × {map_field}", baseline), mode)
    text = markdown(tables, groups, pngs, targets, baseline, sources, map_pngs)
    _write(out / "report.md", text.encode("utf-8"), mode)
    return out / "report.md"


def _write(path: Path, data: bytes, mode: int) -> None:
    try:
        atomic_write_bytes(path, data, mode)
    except OutputError as err:  # already one line naming the file, e.g. "cannot write …: No space left"
        raise ReportError(str(err)) from None


def _plain_file_mode() -> int:
    """The permissions open() gives a new file (0666 less the umask): a report is meant to be shared, and
    its files had these before they were written atomically (mkstemp alone gives 0600)."""
    umask = os.umask(0)  # the only way to read it; set back at once (report.py runs one thread)
    os.umask(umask)
    return 0o666 & ~umask


def _slug(name: str, taken: set, prefix: str = "curve") -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "group"
    candidate, i = slug, 1
    while f"{prefix}_{candidate}.png" in taken:
        i += 1
        candidate = f"{slug}_{i}"
    return candidate
