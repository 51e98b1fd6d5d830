"""README and docs pages: every relative link resolves (file and #anchor); the README stays a front page."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted([ROOT / "README.md", ROOT / "benchmarks" / "README.md", *(ROOT / "docs").glob("*.md")])
README_MAX_LINES = 150

FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")
# [text](target) and ![alt](target); the target may be followed by a "title".
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # http:, https:, mailto:, ...


def _prose(text: str) -> str:
    """Markdown without fenced code blocks and inline code, where link syntax is literal text."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def heading_anchors(text: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to '-', '-N' on repeats."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    for title in HEADING.findall(FENCE.sub("", text)):
        slug = re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def broken_links(page: Path) -> list[str]:
    """Relative links of a Markdown page whose file, or #anchor in a Markdown file, does not exist."""
    text = page.read_text(encoding="utf-8")
    problems = []
    for target in LINK.findall(_prose(text)):
        if EXTERNAL.match(target):
            continue
        path_part, _, anchor = target.partition("#")
        linked = (page.parent / path_part).resolve() if path_part else page
        if not linked.exists():
            problems.append(f"{page.name}: {target} (no file {linked})")
        elif anchor and linked.suffix == ".md":
            if anchor not in heading_anchors(linked.read_text(encoding="utf-8")):
                problems.append(f"{page.name}: {target} (no heading #{anchor} in {linked.name})")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    assert broken_links(page) == []


def test_docs_has_one_page_per_topic():
    topics = {"cli", "psf-field", "dataset-format", "kernels", "calibration", "training", "cluster"}
    assert topics <= {p.stem for p in (ROOT / "docs").glob("*.md")}


def test_readme_is_a_front_page():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= README_MAX_LINES
    assert "make demo" in text and "make test" in text
    linked = {target.partition("#")[0] for target in LINK.findall(_prose(text))}
    assert {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")} <= linked, "every docs page is linked"


def test_checker_reports_missing_files_and_anchors(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "topic.md").write_text("# Topic\n\n## The PSF field: `at(y, x)`\n\ntext\n")
    (tmp_path / "picture.png").write_bytes(b"")
    page = tmp_path / "README.md"
    good = (
        "![p](picture.png) [t](docs/topic.md) [a](docs/topic.md#the-psf-field-aty-x) [self](#intro) "
        "[web](https://example.org/none.md) `[code](missing.md)`\n\n```\n[fenced](missing.md)\n```\n# Intro\n"
    )
    page.write_text(good)
    assert broken_links(page) == []

    page.write_text(good + "[gone](docs/gone.md) ![img](nope.png) [bad](docs/topic.md#no-such-heading)\n")
    problems = broken_links(page)
    assert len(problems) == 3
    assert any("docs/gone.md" in p for p in problems)
    assert any("nope.png" in p for p in problems)
    assert any("#no-such-heading" in p for p in problems)


def test_heading_anchors_follow_github():
    text = "# Kernels\n## Per-pixel kernels: `apply_pixel_kernels`\n## Kernels\n```\n# not a heading\n```\n"
    assert heading_anchors(text) == {"kernels", "per-pixel-kernels-apply_pixel_kernels", "kernels-1"}
