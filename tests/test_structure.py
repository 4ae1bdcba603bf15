"""The house rules that a reader relies on, checked on the source (issue 27): capabilities are declared, not
recognised by name, and only entry points import main."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted(p for p in ROOT.rglob("*.py") if not {".venv", "tests", "runs"} & set(p.relative_to(ROOT).parts))
ENTRY_POINTS = {"main.py", "sweep.py", "report.py"}


def test_no_oracle_is_recognised_by_its_name_outside_its_declaration():
    """Code asks ORACLES[cfg.oracle] (declared in config.py) what an oracle is (interactive, replayable, labels
    new images), config.py's own validation included."""
    pattern = re.compile(r"""oracle\s*(==|!=)\s*["']|oracle\s+(not\s+)?in\s+[({\[]\s*["']""")
    found = [f"{p.relative_to(ROOT)}:{n}" for p in SOURCES
             for n, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert found == []


def test_no_uncertainty_source_is_recognised_by_its_name():
    """What an --uncertainty is (how many networks, which flag sets K, the members' dropout) is declared once in
    config.UNCERTAINTIES; code asks cfg.source, never compares the name."""
    pattern = re.compile(r"""["'](ensemble|mc_dropout)["']\s*(==|!=)|(==|!=)\s*["'](ensemble|mc_dropout)["']""")
    found = [f"{p.relative_to(ROOT)}:{n}" for p in SOURCES
             for n, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert found == []


def test_no_dataset_capability_is_recognised_by_its_name_in_generic_code():
    """What a dataset can do is a DatasetSpec property (own_labels, has_files, package, flips_keep_class)."""
    pattern = re.compile(r"""(OWN_LABELS|(dataset|name)\s*(==|!=)\s*["'](folder|mnist_5k)["'])""")
    found = [f"{p.relative_to(ROOT)}:{n}" for p in SOURCES
             for n, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert found == []


def test_only_entry_points_import_main():
    """The registries' names live in registries.py; a sweep starts main.py as a process; only a Slurm job's
    callable (the job's own entry point) imports it, inside the call."""
    top_level = re.compile(r"^(import main\b|from main import)")
    found = [str(p.relative_to(ROOT)) for p in SOURCES if str(p.relative_to(ROOT)) not in ENTRY_POINTS
             and not p.relative_to(ROOT).parts[0] == "bench"
             and any(top_level.match(line) for line in p.read_text().splitlines())]
    assert found == []


def test_every_relative_link_in_the_readme_and_docs_names_a_file_that_exists():
    """The README is the front door and docs/ holds the rest: a link to a moved or renamed file is a dead end."""
    dead = []
    for md in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", md.read_text(encoding="utf-8")):
            if not re.match(r"[a-z]+:", target) and not (md.parent / target).exists():
                dead.append(f"{md.relative_to(ROOT)} → {target}")
    assert dead == []


def test_the_readme_stays_a_front_door():
    """What a new user needs (the two commands, the flags table, where things live), about 400 lines; studies
    and benchmark histories go to docs/."""
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 410
