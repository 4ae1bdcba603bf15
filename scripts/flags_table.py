"""Rewrite the README's flags table from the field declarations in config.py: python -m scripts.flags_table

tests/test_config.py checks that the README holds exactly this table, so a new field is documented
by declaring it.
"""
from __future__ import annotations

import sys
from pathlib import Path

from config import flags_table
from registries import REGISTRY_NAMES

ROOT = Path(__file__).resolve().parents[1]

HEADER = "| flag | default | meaning |"


def readme_table(text: str) -> tuple:
    """(start, end) character offsets of the flags table in the README's text."""
    start = text.index(HEADER)
    end = text.index("\n\n", start) + 1
    return start, end


def main() -> int:
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    start, end = readme_table(text)
    readme.write_text(text[:start] + flags_table(REGISTRY_NAMES) + text[end:], encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
