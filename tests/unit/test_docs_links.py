"""The documentation's links (issue 20): every relative link in README.md and docs/*.md leads to a file the
project ships and, with an #anchor, to a heading of that file; every docs/*.md the code cites exists; no
document names a Markdown file the project does not ship."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```.*?^```[ \t]*$", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`[^`]*`")
LINK = re.compile(r"\[([^\]]*)\]\(([^)\s]+)\)")
HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$", re.MULTILINE)
# Where the code names a document: comments, docstrings, messages, CI files.
CITING = ["harness", "testcases", "tests", "bench", "soak", "profiles", "scripts", "images", ".ci", ".github"]
CITING_FILES = ["Makefile", ".gitlab-ci.yml", "pyproject.toml", "conftest.py", "README.md"]
DOC_PATH = re.compile(r"\bdocs/[\w.-]+\.md\b")
MARKDOWN_NAME = re.compile(r"[\w./-]*\b[\w-]+\.md\b")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text without Markdown, lower case, punctuation dropped, spaces as -."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file, a repeated one numbered as GitHub does (-1, -2, ...)."""
    seen: dict[str, int] = {}
    out = set()
    for _, text in HEADING.findall(FENCE.sub("", path.read_text())):
        base = slug(text)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(path: Path) -> list[str]:
    """The targets of a Markdown file's links, outside code blocks and code spans."""
    text = CODE_SPAN.sub("", FENCE.sub("", path.read_text()))
    return [target for _, target in LINK.findall(text)]


def test_the_slugs_are_githubs() -> None:
    assert slug("`make check`: where the time goes") == "make-check-where-the-time-goes"
    assert slug("The VF's MAC while the primary is away (`--vf-mac-policy`)") == (
        "the-vfs-mac-while-the-primary-is-away---vf-mac-policy")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(doc: Path) -> None:
    broken = []
    for target in links(doc):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto: are not checked here
            continue
        name, _, anchor = target.partition("#")
        dest = (doc.parent / name).resolve() if name else doc
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.relative_to(REPO)}")
    assert not broken, f"{doc.relative_to(REPO)}: " + "; ".join(broken)


def test_every_cited_docs_file_exists() -> None:
    files = [REPO / f for f in CITING_FILES] + [p for d in CITING for p in (REPO / d).rglob("*")
                                                 if p.is_file() and "__pycache__" not in p.parts]
    files += DOCS
    missing = set()
    for path in files:
        try:
            text = path.read_text()
        except (UnicodeDecodeError, FileNotFoundError):
            continue
        for cited in DOC_PATH.findall(text):
            if not (REPO / cited).exists():
                missing.add(f"{path.relative_to(REPO)}: {cited}")
    assert not missing, sorted(missing)


def test_no_document_cites_one_the_project_does_not_ship() -> None:
    # Every Markdown file a document names is one of the repository's, and no link leaves it.
    shipped = {p.name for p in REPO.rglob("*.md") if ".venv" not in p.parts and ".git" not in p.parts}
    foreign = []
    for doc in DOCS:
        foreign += [f"{doc.relative_to(REPO)}: {name}" for name in MARKDOWN_NAME.findall(doc.read_text())
                    if Path(name).name not in shipped]
        foreign += [f"{doc.relative_to(REPO)}: {target}" for target in links(doc) if not re.match(r"[a-z]+:", target)
                    and not (doc.parent / target.partition("#")[0]).resolve().is_relative_to(REPO)]
    assert not foreign, foreign
