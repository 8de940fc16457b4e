"""Sphinx configuration of the course website. Build with ``python -m docs.site.build``, not by hand.

The build stages the pages in ``build/site/src`` (executed notebooks and copies of the
Markdown documents) and runs Sphinx with this folder as its configuration folder and
``COURSE_SITE_MODE`` (``fast`` or ``release``) in the environment.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parents[2]
if str(_REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(_REPO_ROOT))

from docs.site.launch import site_settings  # noqa: E402

SITE_MODE = os.environ.get("COURSE_SITE_MODE", "")
if SITE_MODE not in ("fast", "release"):
    raise RuntimeError("build the site with `python -m docs.site.build --mode fast|release` (COURSE_SITE_MODE unset)")
_SETTINGS = site_settings()

project = "Image anomaly detection with deep generative models"
author = "the course authors"
copyright = "the course authors; code and notebooks MIT, datasets under their own licenses"

extensions = ["myst_nb"]
# The build executes the notebooks itself (docs/site/build.py): myst-nb only renders them.
nb_execution_mode = "off"
# Markdown outputs (the notebooks' AUROC tables) are rendered as MyST, which has tables.
nb_render_markdown_format = "myst"
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3  # GitHub-style anchors, so the documents' #section links resolve
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
suppress_warnings = [
    # external badge images (the README's) are allowed; everything else stays an error
    "image.nonlocal_uri",
    # myst-nb notes mime types it has no renderer for (e.g. a widget's text/plain fallback)
    "mystnb.unknown_mime_type",
    # Pygments cannot lex some shell snippets (an apostrophe in a placeholder); they still show
    "misc.highlighting_failure",
    # a document that jumps from # to ### (style, not a broken page)
    "myst.header",
]

html_theme = "sphinx_book_theme"
html_title = "Anomaly detection course"
html_static_path = [str(Path(__file__).resolve().parent / "static")]
html_css_files = ["course.css"]
html_theme_options = {
    "repository_url": _SETTINGS.repository,
    "repository_branch": _SETTINGS.branch,
    "path_to_docs": "",  # the staged notebooks sit at notebooks/NAME.ipynb, as in the repository
    "use_repository_button": True,
    "use_download_button": True,
    "launch_buttons": {
        "colab_url": "https://colab.research.google.com",
        "binderhub_url": "https://mybinder.org",
        "notebook_interface": "jupyterlab",
    },
    "show_toc_level": 2,
}
if SITE_MODE == "fast":
    html_theme_options["announcement"] = (
        '<span class="fast-build-banner">Preview build: every number and figure on this site comes from the '
        "small bundled sample (fast mode), not from the full datasets. They only show that the notebooks run."
        "</span>"
    )
