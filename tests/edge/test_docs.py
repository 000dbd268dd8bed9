"""The README and docs/ stay true to the repository: every relative link and picture points at a file that exists,
every ``#anchor`` at a heading of its page, and every input file an example posts is in the repository (or made by
the same example). The examples themselves were run against ``./serve.sh --random-weights``; the KServe ones are
run by tests/integration/test_kserve.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", ROOT / "SECURITY.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation but hyphens dropped, spaces as hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    prose = FENCE.sub("", page.read_text())
    return {slug(m.group(1)) for m in re.finditer(r"^#+ (.*)$", prose, re.M)}


def links(page: Path) -> list[str]:
    return LINK.findall(FENCE.sub("", page.read_text()))


def test_the_slug_is_githubs():
    assert slug("Jobs across workers and replicas: the job store") == "jobs-across-workers-and-replicas-the-job-store"
    assert slug("The pictures, on the project's own model") == "the-pictures-on-the-projects-own-model"
    assert slug("`mode=actmax` and Grad-CAM++") == "modeactmax-and-grad-cam"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_and_picture_of_a_page_points_at_something_that_exists(page):
    broken = []
    for target in links(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no file {file.relative_to(ROOT) if ROOT in file.parents else file}")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading #{anchor} in {file.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_the_readme_is_short_and_links_every_page_of_docs():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250, "the README's top is for a newcomer's five minutes: move reference to docs/"
    linked = {Path(t.partition("#")[0]).name for t in links(ROOT / "README.md")}
    assert {p.name for p in (ROOT / "docs").glob("*.md")} <= linked


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_file_an_example_posts_is_in_the_repository(page):
    """``-F data=@FILE``, ``--data-binary @FILE``, ``-T FILE``, ``base64 -w0 FILE``, ``open("FILE"``: run from the
    repository's folder. A file an earlier line of the same example writes (``--out``, ``-o``) counts."""
    text = page.read_text()
    missing = []
    for block in re.findall(r"```(?:bash|python)\n(.*?)```", text, re.S) + re.findall(r"`(curl [^`]*)`", text):
        made = set(re.findall(r"(?:--out|-o)\s+(\S+)", block))
        used = re.findall(r"(?:=@|--data-binary @|-T |base64 -w0 |open\(\")([\w./-]+)", block)
        missing += [f for f in used if f not in made and not (ROOT / f).exists()]
    assert not missing, f"{page.relative_to(ROOT)} posts files that are not in the repository: {sorted(set(missing))}"
