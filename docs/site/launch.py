"""Launch links: the repository address, the Colab setup cell of every notebook, the README badges.

The repository is named in ONE place, ``[project.urls] Repository`` in ``pyproject.toml``
(and its branch in ``[tool.course-site] branch``). Everything that must point at it is
derived from that value:

- the first code cell of every notebook (cell id ``colab-setup``), which on Google Colab
  clones the repository and installs the course, and does nothing anywhere else;
- the launch table in the README's course map (between ``<!-- launch:start -->`` and
  ``<!-- launch:end -->``), with a Colab and a Binder badge per notebook;
- the website's launch buttons (``docs/site/conf.py`` reads :func:`site_settings`).

``python -m docs.site.launch`` rewrites the cells and the README from the settings (it is
idempotent: a second run changes nothing); ``--check`` only reports what is out of date
(``tests/test_site.py`` runs the check, so a fork that changed the URL is told to run it).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence
from urllib.parse import quote

from course_utils.files import atomic_write_bytes
from course_grader.markers import notebook_bytes

REPO_ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = REPO_ROOT / "pyproject.toml"
README = REPO_ROOT / "README.md"
NOTEBOOK_DIR = REPO_ROOT / "notebooks"

COLAB_CELL_ID = "colab-setup"
# Where Colab clones the course; an absolute path, so that a re-run of the cell (after the
# cell has moved into the notebooks folder) finds the clone instead of cloning again.
COLAB_CLONE_DIR = "/content/anomaly-course"
LAUNCH_START, LAUNCH_END = "<!-- launch:start -->", "<!-- launch:end -->"
COLAB_BADGE = "https://colab.research.google.com/assets/colab-badge.svg"
BINDER_BADGE = "https://mybinder.org/badge_logo.svg"

_GITHUB = re.compile(r"^https://github\.com/(?P<owner>[A-Za-z0-9_.-]+)/(?P<name>[A-Za-z0-9_.-]+?)/?$")


@dataclass(frozen=True)
class SiteSettings:
    """Where the course lives: ``repository`` (``https://github.com/OWNER/NAME``) and ``branch``."""

    repository: str
    branch: str
    owner: str
    name: str

    def blob_url(self, path: str) -> str:
        """The repository's web page for ``path`` (relative to the repository root) on ``branch``."""
        return f"{self.repository}/blob/{self.branch}/{path}"

    def colab_url(self, notebook: str) -> str:
        """Open ``notebook`` (e.g. ``notebooks/00_x.ipynb``) from GitHub in Google Colab."""
        return f"https://colab.research.google.com/github/{self.owner}/{self.name}/blob/{self.branch}/{notebook}"

    def binder_url(self, notebook: str) -> str:
        """Start JupyterLab on mybinder.org (environment from ``binder/``) with ``notebook`` open."""
        return f"https://mybinder.org/v2/gh/{self.owner}/{self.name}/{self.branch}?labpath={quote(notebook, safe='')}"


def site_settings(pyproject: Path = PYPROJECT) -> SiteSettings:
    """Read the repository URL and branch from ``pyproject.toml``.

    Raises:
        ValueError: the URL is missing or not ``https://github.com/OWNER/NAME`` (Colab and
            Binder open notebooks from GitHub), or the branch is missing; the message names
            the file and the key to fix.
    """
    data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    url = data.get("project", {}).get("urls", {}).get("Repository", "")
    match = _GITHUB.match(url)
    if not match:
        raise ValueError(
            f"{pyproject}: [project.urls] Repository must be the course's GitHub address, "
            f"https://github.com/OWNER/NAME (Colab and Binder open notebooks from GitHub); got {url!r}"
        )
    branch = data.get("tool", {}).get("course-site", {}).get("branch", "")
    if not isinstance(branch, str) or not branch.strip():
        raise ValueError(f"{pyproject}: [tool.course-site] branch must name the branch the links open, e.g. \"main\"")
    return SiteSettings(url.rstrip("/"), branch.strip(), match["owner"], match["name"])


def course_notebooks(notebook_dir: Path = NOTEBOOK_DIR) -> list[Path]:
    """The course notebooks, in teaching order (``NN_name.ipynb``)."""
    return sorted(notebook_dir.glob("[0-9][0-9]_*.ipynb"))


# ------------------------------------------------------------------ the Colab setup cell
def colab_cell_source(settings: SiteSettings) -> str:
    """The code of the Colab setup cell. Outside Colab it only imports ``sys`` and tests a key."""
    return f'''# Google Colab only: install the course from its repository. Anywhere else this cell does nothing.
import sys

if "google.colab" in sys.modules:
    import os
    import subprocess

    if not os.path.isdir("{COLAB_CLONE_DIR}"):
        subprocess.run(["git", "clone", "--quiet", "--depth", "1", "--branch", "{settings.branch}",
                        "{settings.repository}.git", "{COLAB_CLONE_DIR}"], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "-e", "{COLAB_CLONE_DIR}"], check=True)
    sys.path.insert(0, "{COLAB_CLONE_DIR}")  # importable now, without restarting the runtime
    os.chdir("{COLAB_CLONE_DIR}/notebooks")  # relative paths resolve as in a local checkout'''


def is_colab_cell(cell: dict) -> bool:
    """True for the Colab setup cell (found by its cell id)."""
    return cell.get("id") == COLAB_CELL_ID


def with_colab_cell(notebook: dict, settings: SiteSettings) -> dict:
    """``notebook`` with the Colab setup cell right after the title cell, up to date.

    Idempotent: a notebook that already has the current cell comes back unchanged. The
    cell is committed without outputs, like every other cell.
    """
    cell = {
        "cell_type": "code",
        "execution_count": None,
        "id": COLAB_CELL_ID,
        # read-only in JupyterLab: an edited copy would be scanned by the grader like student code (it
        # imports subprocess), while the course's own version is trusted and never scanned
        "metadata": {"deletable": False, "editable": False, "tags": ["colab-setup"]},
        "outputs": [],
        "source": colab_cell_source(settings),
    }
    cells = [c for c in notebook["cells"] if not is_colab_cell(c)]
    if not cells or cells[0].get("cell_type") != "markdown":
        raise ValueError("a course notebook starts with its title cell (markdown); the Colab cell goes after it")
    return {**notebook, "cells": [cells[0], cell, *cells[1:]]}


# ------------------------------------------------------------------ README launch table
def readme_launch_block(settings: SiteSettings, notebooks: Sequence[Path]) -> str:
    """The README's launch table, markers included: one row per notebook, Colab and Binder badges."""
    rows = [LAUNCH_START, "", "| notebook | Colab | Binder |", "|---|---|---|"]
    for path in notebooks:
        relative = f"notebooks/{path.name}"
        rows.append(
            f"| `{path.stem}` | [![Open in Colab]({COLAB_BADGE})]({settings.colab_url(relative)}) "
            f"| [![Launch on Binder]({BINDER_BADGE})]({settings.binder_url(relative)}) |"
        )
    return "\n".join([*rows, "", LAUNCH_END])


def with_launch_block(readme: str, block: str) -> str:
    """``readme`` with its launch block replaced by ``block``.

    Raises:
        ValueError: README.md has no (or an unbalanced) pair of launch markers.
    """
    if readme.count(LAUNCH_START) != 1 or readme.count(LAUNCH_END) != 1:
        raise ValueError(f"{README}: put one '{LAUNCH_START}' / '{LAUNCH_END}' pair in the course map section")
    head, rest = readme.split(LAUNCH_START)
    _, tail = rest.split(LAUNCH_END)
    return head + block + tail


# ------------------------------------------------------------------ command line
def stale_files(settings: SiteSettings, *, write: bool) -> list[Path]:
    """Files whose Colab cell or launch table is out of date; rewritten (atomically) when ``write``."""
    stale: list[Path] = []
    for path in course_notebooks():
        current = path.read_bytes()
        wanted = notebook_bytes(with_colab_cell(json.loads(current), settings))
        if wanted != current:
            stale.append(path)
            if write:
                atomic_write_bytes(path, wanted)
    readme = README.read_text(encoding="utf-8")
    wanted_readme = with_launch_block(readme, readme_launch_block(settings, course_notebooks()))
    if wanted_readme != readme:
        stale.append(README)
        if write:
            atomic_write_bytes(README, wanted_readme.encode("utf-8"))
    return stale


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m docs.site.launch",
        description="Write the Colab setup cell into every notebook and the launch badges into README.md, "
        "from [project.urls] Repository in pyproject.toml.",
    )
    parser.add_argument("--check", action="store_true", help="only list out-of-date files; exit 1 if there are any")
    args = parser.parse_args(argv)
    settings = site_settings()
    stale = stale_files(settings, write=not args.check)
    for path in stale:
        print(f"{'out of date' if args.check else 'updated'}: {path.relative_to(REPO_ROOT)}")
    if args.check and stale:
        print("run `python -m docs.site.launch` to update them", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
