"""The README is a front page and docs/ holds the reference: every relative link in README.md,
BENCHMARKS.md and docs/*.md resolves (the file exists, and a ``#anchor`` names a heading of it, as
GitHub makes anchors), every page of docs/ is reachable from the README, and the README fits a
few screens."""

import re
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", ROOT / "BENCHMARKS.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^(```|~~~)")
INLINE_CODE = re.compile(r"`[^`]*`")
# [text](target) and ![alt](target); the target ends at whitespace or the closing parenthesis.
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def _prose_lines(text: str, keep_code: bool = False) -> list[str]:
    """The lines outside fenced code blocks and indented code, inline code removed unless
    ``keep_code`` (a heading's anchor keeps the text of its code)."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
            continue
        if fenced or (line.startswith("    ") and not line.lstrip().startswith(("-", "*", "|"))):
            continue
        lines.append(line if keep_code else INLINE_CODE.sub("", line))
    return lines


def anchors(path: Path) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces to
    hyphens, a repeated slug numbered -1, -2, ..."""
    seen: dict[str, int] = {}
    result = set()
    for line in _prose_lines(path.read_text(encoding="utf-8"), keep_code=True):
        match = HEADING.match(line)
        if not match:
            continue
        text = re.sub(r"[*_`]|<[^>]+>", "", match.group(2)).strip().lower()
        slug = re.sub(r"[^\w\- ]", "", text).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        result.add(slug if count == 0 else f"{slug}-{count}")
    return result


def relative_links(path: Path) -> list[str]:
    """The page's link targets that are not URLs (http:, mailto:, ...)."""
    targets = []
    for line in _prose_lines(path.read_text(encoding="utf-8")):
        for target in LINK.findall(line):
            if not re.match(r"^[a-z][a-z0-9+.-]*:", target):
                targets.append(target)
    return targets


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    """``page: target (why)`` for each relative link of ``path`` that does not resolve."""
    broken = []
    for target in relative_links(path):
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / unquote(file_part)).resolve() if file_part else path
        if not linked.exists():
            broken.append(f"{path.relative_to(root)}: {target} (no such file)")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{path.relative_to(root)}: {target} (no heading with that anchor)")
    return broken


def test_every_relative_link_resolves_to_a_file_and_a_heading():
    assert len(PAGES) > 5
    broken = [problem for page in PAGES for problem in broken_links(page)]
    assert not broken, "\n".join(broken)


def test_the_checker_finds_a_missing_file_and_a_missing_anchor(tmp_path):
    (tmp_path / "other.md").write_text("# Some Title: with `code`\n\n## Where the code is\n")
    page = tmp_path / "page.md"
    page.write_text("[ok](other.md#some-title-with-code) [ok](other.md#where-the-code-is)\n"
                    "[bad](other.md#nowhere) [gone](missing.md) [self](#nothing)\n"
                    "`[in code](missing2.md)`\n```\n[fenced](missing3.md)\n```\n"
                    "[web](https://example.com/x.md)\n")
    assert broken_links(page, root=tmp_path) == ["page.md: other.md#nowhere (no heading with that anchor)",
                        "page.md: missing.md (no such file)",
                        "page.md: #nothing (no heading with that anchor)"]


def test_every_docs_page_is_reachable_from_the_readme():
    reached, todo = set(), [ROOT / "README.md"]
    while todo:
        page = todo.pop()
        if page in reached:
            continue
        reached.add(page)
        for target in relative_links(page):
            file_part = target.partition("#")[0]
            linked = (page.parent / unquote(file_part)).resolve() if file_part else page
            if linked.suffix == ".md" and linked.exists():
                todo.append(linked)
    orphans = [str(p.relative_to(ROOT)) for p in PAGES if p not in reached]
    assert not orphans, f"pages no link from README.md leads to: {orphans}"


def test_the_readme_is_a_front_page():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 150
    # The two commands a newcomer needs, and the test command CI runs (.ci/run runs `make test`).
    assert "make sweep" in text and "make test" in text
    assert "make test" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")
