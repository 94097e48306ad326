"""The README a new user follows: no links outside the repository, a contents list that resolves."""

import re

from tests.conftest import REPO

README = (REPO / "README.md").read_text()


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_readme_stays_inside_the_repository():
    assert "../" not in README and "shared/DESIGN.md" not in README
    for target in re.findall(r"\]\(([^)#][^)]*)\)", README):  # relative links must exist here
        if not target.startswith(("http://", "https://")):
            assert (REPO / target).exists(), target


def test_readme_contents_list_resolves_to_headings():
    anchors = {_anchor(h) for h in re.findall(r"^## (.+)$", README, flags=re.M)}
    listed = re.findall(r"\]\(#([^)]+)\)", README)
    assert len(listed) >= 10 and "quick-start" in listed
    assert set(listed) <= anchors, set(listed) - anchors
