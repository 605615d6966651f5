"""The first screen and the documentation: short, links that resolve, nothing only insiders can follow."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
USER_DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def test_readme_starts_with_the_two_setup_commands_and_stays_short():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= 150
    commands = [line.split("#")[0].strip() for line in lines[:6] if line.startswith("make ")]
    assert commands == ["make demo", "make test"]


def test_user_docs_name_no_issue_numbers_and_no_private_paths():
    for path in USER_DOCS:
        text = path.read_text()
        assert not re.search(r"\b[Ii]ssues? \d+|#\d+\b", text), path.name
        assert "../shared" not in text and "shared/real-brats" not in text, path.name


def test_readme_links_resolve():
    text = (REPO / "README.md").read_text()
    for target in re.findall(r"\]\(([^)#]+)\)", text):
        if not target.startswith("http"):
            assert (REPO / target).exists(), target
