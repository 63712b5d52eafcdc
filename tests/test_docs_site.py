"""The documentation: the MkDocs site builds with --strict (a broken link between pages, a
missing anchor or a page left out of the nav fails), every relative link of the README and
the docs resolves (anchors included, as MkDocs and GitHub both spell them), and the README
stays the front door."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml
from markdown.extensions.toc import slugify

REPO_ROOT = Path(__file__).resolve().parents[1]
README = REPO_ROOT / "README.md"
DOCS = REPO_ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
MAX_README_LINES = 250

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def prose(text: str) -> str:
    """The text without code blocks (their brackets are not links, their # not headings)."""
    return FENCE.sub("", text)


def heading_text(heading: str) -> str:
    """A heading as rendered: inline code and emphasis marks dropped, links to their text."""
    heading = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    return heading.replace("`", "").replace("**", "").replace("*", "")


def github_slug(text: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, each space a '-'."""
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(page: Path) -> tuple[set[str], set[str]]:
    """(MkDocs' anchors, GitHub's anchors) of a page's headings."""
    texts = [heading_text(h) for h in HEADING.findall(prose(page.read_text()))]
    return {slugify(t, "-") for t in texts}, {github_slug(t) for t in texts}


def links(page: Path) -> list[str]:
    return [target for target in LINK.findall(INLINE_CODE.sub("", prose(page.read_text())))
            if not re.match(r"[a-z][a-z0-9+.-]*:", target)]  # http:, https:, mailto: ...


def test_the_site_builds_strictly(tmp_path):
    """A real build: `.venv/bin/mkdocs build --strict`, MkDocs' own link and anchor checks on."""
    mkdocs = Path(sys.executable).with_name("mkdocs")
    site = tmp_path / "site"
    result = subprocess.run([str(mkdocs), "build", "--strict", "--site-dir", str(site)],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNING" not in result.stderr, result.stderr
    page = (site / "security" / "index.html").read_text()
    assert 'id="what-the-policy-scan-skips"' in page  # the section the checkov test reads
    assert (site / "reference" / "configuration" / "index.html").is_file()
    assert (site / "screenshots" / "predict.png").is_file()


def test_every_page_is_in_the_nav():
    config = yaml.safe_load((REPO_ROOT / "mkdocs.yml").read_text())

    def files(nav) -> list[str]:
        found = []
        for entry in nav:
            value = next(iter(entry.values())) if isinstance(entry, dict) else entry
            found += files(value) if isinstance(value, list) else [value]
        return found

    assert sorted(files(config["nav"])) == sorted(str(p.relative_to(DOCS)) for p in PAGES)


def test_every_relative_link_resolves():
    """Links from the README and the docs to files, and anchors, as both MkDocs and GitHub
    render them (a link MkDocs accepts can still break on GitHub, and the README is read
    only there)."""
    broken = []
    for page in [README, *PAGES]:
        for target in links(page):
            path, _, anchor = target.partition("#")
            destination = (page.parent / path).resolve() if path else page
            where = f"{page.relative_to(REPO_ROOT)}: {target}"
            if not destination.exists():
                broken.append(f"{where}: no such file")
            elif anchor and destination.suffix == ".md":
                mkdocs_anchors, github_anchors = anchors(destination)
                if anchor not in mkdocs_anchors or anchor not in github_anchors:
                    broken.append(f"{where}: no such heading")
    assert broken == []


def test_the_checker_sees_a_broken_link_and_a_broken_anchor(tmp_path):
    page = tmp_path / "page.md"
    (tmp_path / "other.md").write_text("# Other\n\n## What `pulumi up` waits for\n")
    page.write_text("[a](other.md#what-pulumi-up-waits-for) [b](other.md#nothing) [c](gone.md)\n"
                    "```\n[not a link](nowhere.md)\n```\n[web](https://example.com)\n")
    assert links(page) == ["other.md#what-pulumi-up-waits-for", "other.md#nothing", "gone.md"]
    mkdocs_anchors, github_anchors = anchors(tmp_path / "other.md")
    assert "what-pulumi-up-waits-for" in mkdocs_anchors & github_anchors
    assert "nothing" not in mkdocs_anchors | github_anchors


def test_the_readme_is_the_front_door():
    """Short, and it leads to every page of the docs."""
    assert len(README.read_text().splitlines()) <= MAX_README_LINES
    linked = {(REPO_ROOT / t.partition("#")[0]).resolve() for t in links(README)}
    missing = [str(p.relative_to(REPO_ROOT)) for p in PAGES
               if p.resolve() not in linked and p.name != "index.md"]
    assert missing == []


def test_the_docs_cite_only_what_users_have():
    """The design document kept outside the repository is not the users': the docs state
    its facts instead of pointing at it."""
    for page in [README, *PAGES]:
        text = page.read_text()
        assert "DESIGN.md" not in text and "../shared" not in text, page.name
