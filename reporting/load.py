"""The report's input: finds run folders, reads them (through results, the run folder's one reader), groups the runs."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from config import OPERATIONAL_FIELDS, STABLE_KAPPA, UNCERTAINTIES
from reporting.stats import aulc, first_stable, has_label_noise, noisy_query_fraction
from results import DamagedRun, OutputError, is_run_folder, read_config, read_rounds, read_summary, run_status

NOT_GROUPING = OPERATIONAL_FIELDS | {"strategy", "seed"}
# How a run gets its uncertainty: part of the method a run is compared as, not of the group. An ensemble's
# members train without dropout and take no dropout samples, so its dropout and mc_samples say nothing
# about the setting either (they would split it from the MC-dropout runs it is compared with).
UNCERTAINTY_FIELDS = ("uncertainty", "ensemble_size")
# How a strategy draws its batch and what it embeds: part of the method too (power-bald beside bald and random,
# coreset on self-supervised features beside coreset on the model's), not of the group.
METHOD_FIELDS = ("acquisition", "acquisition_beta", "embedding", "ssl_epochs", "embedding_cache")
ENSEMBLE_IGNORES = ("dropout", "mc_samples")
NAME_FIELDS = ("dataset", "model", "noise", "noise_rate")  # always in a group's name
NOISE_PARAMETERS = ("noise_rate", "noise_std", "sp_fraction")
LABEL_NOISE_FIELDS = ("label_noise", "label_noise_rate", "label_noise_initial")


class ReportError(ValueError):
    """A user-facing problem with the input (reported as one line, exit code 2)."""


def find_runs(paths) -> list:
    """Run folders (config.json and rounds.csv side by side) anywhere under ``paths``, sorted, no repeats."""
    found = {}
    for root in map(Path, paths):
        if not root.exists():
            raise ReportError(f"{root} does not exist")
        for rounds in sorted(root.rglob("rounds.csv")):
            if is_run_folder(rounds.parent):
                found.setdefault(rounds.parent.resolve(), rounds.parent)
    if not found:
        raise ReportError(f"no run folders (config.json with rounds.csv) under {' '.join(map(str, paths))}")
    return sorted(found.values())


def load_runs(folders, skipped: list | None = None) -> pd.DataFrame:
    """One row per run: its config fields, status, group, rounds finished, final metrics, AULC and
    whether it enters the statistics (``included``, with the reason in ``note`` when it does not).

    A folder whose files are damaged is left out, with its reason appended to ``skipped`` (the report
    says so and goes on with the rest); ReportError when no folder can be read.
    """
    rows = []
    for folder in folders:
        try:
            config = read_config(folder)
            rounds = read_rounds(folder).sort_values("n_labeled")
        except (OSError, OutputError) as err:
            if skipped is None:
                raise ReportError(f"cannot read run folder {folder}: {err}") from None
            skipped.append(f"{folder}: {err}")
            continue
        last = rounds.iloc[-1] if len(rounds) else {}
        # the run's own --stop_when_stable when it had one (its stopping point), else the report's STABLE_KAPPA
        stable_n_labeled, stable_test_acc = first_stable(rounds, config.get("stop_when_stable") or STABLE_KAPPA)
        rows.append({**config, "strategy": method_name(config), "run": str(folder), "status": run_status(folder),
                     "group_key": group_key(config),
                     "n_rounds": len(rounds), "final_n_labeled": last.get("n_labeled", math.nan),
                     "final_test_acc": last.get("test_acc", math.nan),
                     "final_n_corrupted": last.get("n_corrupted", math.nan),  # older runs: no column
                     # older runs: no clean/noisy split of the test accuracy (NaN, not recorded)
                     "final_test_acc_clean": last.get("test_acc_clean", math.nan),
                     "final_test_acc_noisy": last.get("test_acc_noisy", math.nan),
                     "aulc": aulc(rounds["n_labeled"], rounds["test_acc"]),
                     # older runs: no n_noisy, stop_kappa or pool fraction (NaN, not recorded)
                     "noisy_query_fraction": noisy_query_fraction(rounds, config["n_query"]),
                     "pool_noisy_fraction": _pool_noisy_fraction(folder),
                     "kappa_recorded": "stop_kappa" in rounds, "stable_n_labeled": stable_n_labeled,
                     "stable_test_acc": stable_test_acc, "stopped_early": bool(_stopped_because(folder)),
                     "planned_rounds": config["n_round"] + 1})
    if not rows:
        raise ReportError(f"no run folder could be read ({len(folders)} damaged: {skipped[0] if skipped else ''})")
    runs = pd.DataFrame(rows)
    runs["group_key"] = runs["group_key"].map(ensembles_beside_dropout(runs["group_key"]))
    runs["group"] = runs["group_key"].map(group_names(runs["group_key"]))
    return mark_included(runs.sort_values(["group", "strategy", "seed", "run"], ignore_index=True))


def _stopped_because(folder) -> str:
    """summary.json's stopped_because: why --stop_when_stable ended the run early ("" when it did not)."""
    try:
        value = read_summary(folder).get("stopped_because")
    except DamagedRun:
        return ""
    return value if isinstance(value, str) else ""


def _pool_noisy_fraction(folder) -> float:
    """summary.json's pool_noisy_fraction; NaN when it has none (older runs) or is damaged (its status says so)."""
    try:
        value = read_summary(folder).get("pool_noisy_fraction")
    except DamagedRun:
        return math.nan
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def load_rounds(runs: pd.DataFrame) -> pd.DataFrame:
    """rounds.csv of the given runs, one row per finished round, with run, group, strategy and seed."""
    frames = [read_rounds(r.run).assign(run=r.run, group=r.group, strategy=r.strategy, seed=r.seed)
              for r in runs.itertuples()]
    if not frames:
        return pd.DataFrame(columns=["run", "group", "strategy", "seed", "n_labeled", "test_acc"])
    return pd.concat(frames, ignore_index=True)


def seeded_rounds(run_paths) -> list:
    """rounds.csv of each run folder, with the folder's name (``run``) and its seed in front, for
    reporting.stats.aggregate_runs."""
    frames = []
    for path in run_paths:
        df = read_rounds(path)
        df.insert(0, "run", Path(path).name)
        df.insert(1, "seed", read_config(path)["seed"])
        frames.append(df)
    return frames


def method_name(config: dict) -> str:
    """The name a run is compared under: its strategy; "power-bald" (β when not 1) for a stochastic
    --acquisition; "(self-supervised)" for an embedding strategy on self-supervised features; and "(ensemble
    of M)" when its uncertainty comes from an ensemble (with the members' dropout when they have any), so that
    bald, power-bald and bald by an ensemble are methods of one comparison."""
    name = config["strategy"]
    acquisition = config.get("acquisition", "top_k")
    if acquisition != "top_k":  # (only score strategies take one: loop.check_declared)
        beta = config.get("acquisition_beta", 1.0)
        name = f"{acquisition}-{name}" + (f" (β {beta:g})" if beta != 1 else "")
    if config.get("embedding", "model") == "self_supervised":  # (only embedding strategies take it)
        name += " (self-supervised)"
    if not several_networks(config):
        return name
    dropout = f", dropout {config['dropout']:g}" if config.get("dropout") else ""
    members = _source(config).networks(config)
    return f"{name} (ensemble of {members}{dropout})"


def _source(config: dict):
    """A saved config's --uncertainty, as config.UNCERTAINTIES declares it (older folders: MC dropout)."""
    return UNCERTAINTIES[config.get("uncertainty", "mc_dropout")]


def several_networks(config: dict) -> bool:
    """Whether a saved config's uncertainty comes from several networks."""
    return _source(config).several_networks


def group_key(config: dict) -> str:
    """What must be equal for runs to be compared: every field but strategy, seed, operational ones and how
    the uncertainty is obtained or the batch drawn (UNCERTAINTY_FIELDS, METHOD_FIELDS; method_name tells those
    apart).

    Without noise, the noise parameters change nothing, so they do not split groups; the same for label
    noise (clean labels: no label_noise fields in the key). An ensemble run's key also leaves out
    ENSEMBLE_IGNORES; ensembles_beside_dropout then puts it with the MC-dropout runs it matches."""
    noiseless = config.get("noise", "none") == "none"
    clean = not has_label_noise(config)
    ensemble = several_networks(config)
    return json.dumps({k: v for k, v in config.items()
                       if k not in NOT_GROUPING and k not in UNCERTAINTY_FIELDS and k not in METHOD_FIELDS
                       and not (ensemble and k in ENSEMBLE_IGNORES)
                       and not (noiseless and k in NOISE_PARAMETERS)
                       and not (clean and k in LABEL_NOISE_FIELDS)}, sort_keys=True)


def ensembles_beside_dropout(keys) -> dict:
    """Each group key mapped to the key its runs are reported under: an ensemble-only key (no dropout or
    mc_samples in it) joins the one MC-dropout key that equals it but for those fields, so that ensembles
    are compared with the MC-dropout strategies (random above all) of the same setting. With none or more
    than one such key (runs at several dropout rates), it stays a group of its own."""
    configs = {key: json.loads(key) for key in pd.unique(pd.Series(keys))}
    reduced = {}
    for key, c in configs.items():
        if all(f in c for f in ENSEMBLE_IGNORES):
            reduced.setdefault(json.dumps({k: v for k, v in c.items() if k not in ENSEMBLE_IGNORES},
                                          sort_keys=True), []).append(key)
    return {key: (reduced[key][0] if len(reduced.get(key, [])) == 1 else key) for key in configs}


def mark_versus(runs: pd.DataFrame, fields, flag: str = "--versus") -> pd.DataFrame:
    """For ``report.py --versus FIELD …``: ``setting``, the name of what runs share but for those fields (and
    strategy and seed), and ``variant``, their values ("resnet18/imagenet/300"), so that runs differing only
    there are paired by strategy and seed (reporting.stats.versus_tests)."""
    fields = list(fields)
    unknown = [f for f in fields if f not in runs.columns or f in NOT_GROUPING]
    if unknown:
        raise ReportError(f"{flag} {unknown[0]}: not a configuration field that tells runs apart "
                          "(strategy, seed and the operational fields are not)")
    keys = runs["group_key"].map(lambda k: json.dumps({f: v for f, v in json.loads(k).items() if f not in fields},
                                                      sort_keys=True))
    names = group_names(keys)
    # a field the varied ones make irrelevant (resnet_stem for LeNet) still names each variant
    return runs.assign(setting=keys.map(names), variant=runs[fields].astype(str).agg("/".join, axis=1))


def group_names(keys) -> dict:
    """A readable, unique name per group key: dataset, model, noise, label noise (when any group has
    some, e.g. "labels symmetric 0.2" or "clean labels"), then the other fields that vary."""
    configs = {key: json.loads(key) for key in pd.unique(pd.Series(keys))}
    fields = sorted({f for c in configs.values() for f in c} - set(NAME_FIELDS) - set(LABEL_NOISE_FIELDS))
    varying = [f for f in fields if len({json.dumps(c[f]) for c in configs.values() if f in c}) > 1]
    label_noises = {json.dumps([c.get(f) for f in LABEL_NOISE_FIELDS]) for c in configs.values()}
    any_label_noise = any(has_label_noise(c) for c in configs.values())
    names = {}
    for key, c in configs.items():
        noise = c.get("noise", "none")
        rate = c.get("noise_rate") or 0
        parts = [*(str(c[f]) for f in ("dataset", "model") if f in c),  # --versus model: no model in the key
                 f"{noise} {rate:g}" if rate and noise != "none" else "no noise"]
        if any_label_noise and len(label_noises) > 1:
            parts.append(_label_noise_name(c))
        names[key] = ", ".join(parts + [f"{f}={c[f]}" for f in varying if f in c])
    return names


def _label_noise_name(config: dict) -> str:
    if not has_label_noise(config):
        return "clean labels"
    initial = " incl. initial set" if config.get("label_noise_initial") else ""
    return f"labels {config['label_noise']} {config['label_noise_rate']:g}{initial}"


def mark_included(runs: pd.DataFrame) -> pd.DataFrame:
    """``included``: complete, ending where most complete runs of its group end, first of its strategy and
    seed. ``note`` says why a run is left out of the statistics.

    A run that --stop_when_stable ended early ended where its own rule said: it is in the statistics when it
    planned the rounds that the group's runs end at (or when every run of the group stopped early), with a
    note saying where it stopped.
    """
    runs = runs.copy()
    runs["included"] = runs["status"] == "complete"
    runs["note"] = np.where(runs["included"], "", "status " + runs["status"] + ": not in the statistics")
    for _, g in runs[runs["included"]].groupby("group"):
        ran_out = g[~g["stopped_early"]]
        if ran_out.empty:
            n_rounds, final = g["planned_rounds"].max(), math.nan
        else:
            ends = ran_out.groupby(["n_rounds", "final_n_labeled"], dropna=False).size()
            n_rounds, final = ends[ends == ends.max()].index.max()  # most common end; ties: the longest
        elsewhere = np.where(g["stopped_early"], g["planned_rounds"] != n_rounds,
                             (g["n_rounds"] != n_rounds) | (g["final_n_labeled"] != final))
        short = g.index[elsewhere]
        runs.loc[short, "included"] = False
        runs.loc[short, "note"] = f"ends elsewhere than the group's {n_rounds} rounds / {final:g} labels"
        stopped = g.index[g["stopped_early"] & ~elsewhere]
        runs.loc[stopped, "note"] = [f"stopped early by --stop_when_stable at {n:g} labels (round {int(r) - 1} of "
                                     f"{int(p) - 1})" for n, r, p in runs.loc[stopped, ["final_n_labeled", "n_rounds",
                                                                                    "planned_rounds"]].to_numpy()]
    kept = runs[runs["included"]]
    repeated = kept.index[kept.duplicated(["group", "strategy", "seed"])]
    runs.loc[repeated, "included"] = False
    runs.loc[repeated, "note"] = "repeats the strategy and seed of an earlier run folder"
    return runs
