"""The documentation site builds with `--strict` (a broken link, anchor or page fails), its generated pages
follow the code, and the README stays a short entry point."""

import os
import re
import subprocess
import sys

from lcbench.methods import method_order
from tests.conftest import REPO

README = (REPO / "README.md").read_text()


def test_the_docs_site_builds_strictly_with_a_page_per_method(tmp_path):
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    for name in method_order():
        if name != "none":
            assert (site / "methods" / name / "index.html").is_file(), name
    cli = (site / "cli" / "index.html").read_text()
    assert "lcbench export" in cli and "--only-failed" in cli  # from argparse, not written by hand
    assert "label_smoothing" in (site / "config" / "index.html").read_text()


def test_the_readme_is_short_and_its_links_resolve():
    assert len(README.splitlines()) < 150
    assert "make reproduce" in README and "make test" in README
    assert "../" not in README and "shared/DESIGN.md" not in README
    for target in re.findall(r"\]\(([^)#][^)]*)\)", README):  # relative links must exist here
        if not target.startswith(("http://", "https://")):
            assert (REPO / target).exists(), target
