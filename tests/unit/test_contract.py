"""The published contract is the code's: each generated document matches its committed copy."""

from __future__ import annotations

from pathlib import Path

from rethink.shared.contract import CODES_END, CODES_START, codes_markdown

ROOT = Path(__file__).resolve().parents[2]
GUIDE = (ROOT / "docs" / "agencies.md").read_text(encoding="utf-8")


def test_the_guide_lists_every_rejection_code_as_the_code_defines_it():
    block = GUIDE.split(CODES_START + "\n", 1)[1].split(CODES_END, 1)[0]
    assert block == codes_markdown()
