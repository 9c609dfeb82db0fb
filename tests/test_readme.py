"""README.md is the user's manual: its contents list every section, and its links within the
page lead somewhere."""

from __future__ import annotations

import re

from tests.conftest import ROOT


def _headings(text: str) -> list[tuple[int, str]]:
    out, in_code = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        match = None if in_code else re.match(r"^(##|###) (.+)$", line)
        if match and match.group(2) != "Contents":
            out.append((len(match.group(1)), match.group(2)))
    return out


def _anchor(heading: str) -> str:
    """GitHub's: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_contents_lists_every_section_in_order() -> None:
    text = (ROOT / "README.md").read_text()
    contents = text[text.index("## Contents\n"): text.index("\n## ", text.index("## Contents\n") + 5)]
    listed = re.findall(r"^\s*- \[(.+)\]\(#([^)]+)\)$", contents, flags=re.MULTILINE)
    assert [title for title, _ in listed] == [heading for _, heading in _headings(text)]


def test_every_link_within_the_page_has_a_section() -> None:
    text = (ROOT / "README.md").read_text()
    anchors = {_anchor(heading) for _, heading in _headings(text)}
    links = set(re.findall(r"\]\(#([^)]+)\)", text))
    assert links and not links - anchors, sorted(links - anchors)
