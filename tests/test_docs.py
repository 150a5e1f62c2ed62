"""The docs show what the code does: the supervision tree in docs/design.md
is the one ``supervisor/tree.py`` declares."""

from pathlib import Path

from supervisor import draw

ROOT = Path(__file__).resolve().parent.parent


def test_design_md_shows_the_current_tree():
    text = (ROOT / "docs" / "design.md").read_text()
    assert draw.embedded(text) == draw.render(), (
        "docs/design.md is stale: run `python -m supervisor.draw --update docs/design.md`")


def test_docs_are_readable_prose():
    """Every doc stays a document: a scripted edit once spliced one paragraph
    between every character of docs/cluster.md (17 MB) and nothing failed."""
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = doc.read_text()
        assert len(text) < 100_000, (doc.name, len(text))
        lines = text.splitlines()
        assert lines and lines[0].startswith("# "), doc.name
        assert max(map(len, lines)) < 1_000, doc.name
