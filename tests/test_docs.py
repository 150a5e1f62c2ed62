"""The docs show what the code does: the supervision tree in docs/design.md
is the one ``supervisor/tree.py`` declares."""

from pathlib import Path

from supervisor import draw

ROOT = Path(__file__).resolve().parent.parent


def test_design_md_shows_the_current_tree():
    text = (ROOT / "docs" / "design.md").read_text()
    assert draw.embedded(text) == draw.render(), (
        "docs/design.md is stale: run `python -m supervisor.draw --update docs/design.md`")
