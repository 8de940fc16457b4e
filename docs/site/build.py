"""Build the course website: ``python -m docs.site.build --mode fast|release [--out build/site]``.

Steps (each a function below):

1. **Check the data** (release only): every dataset must load from its full copy
   (``course_utils.data.load_dataset(..., source="full")``); a missing one stops the build
   with the library's own message saying which command fetches it. The bundled sample is
   never used: ``COURSE_FAST=0``, and a notebook output that mentions the sample fallback
   fails the build too.
2. **Execute** every ``notebooks/NN_*.ipynb`` with nbclient (``--jobs`` kernels at a time,
   widget state stored). Release runs in full mode with your ``COURSE_DATA_DIR`` /
   ``COURSE_CACHE_DIR`` (import a checkpoint cache first, or it trains); fast runs in fast
   mode with a checkpoint cache of its own under ``OUT/fast-cache``. Executed notebooks are
   kept under ``OUT/executed/MODE`` with a key of their inputs (the notebook, the mode, the
   course code and the committed results), so an unchanged notebook is not run again; an
   execution made elsewhere can be handed in with ``record_execution`` (the test suite's
   notebook re-run test hands in its first pass).
3. **Stage** the pages in ``OUT/src``: the course map (from README.md), every notebook
   (launch links under the title, the Colab cell hidden, each widget replaced by a static
   snapshot of its state and a note to run it live), the benchmark results
   (``benchmarks/results/README.md``, rendered from the JSON), the teaching guide and the
   design document. Relative links are rewritten: to the page when the target is on the
   site, else to the file in the repository.
4. **Sphinx** (``docs/site/conf.py``, myst-nb, sphinx-book-theme) writes ``OUT/html`` with
   warnings as errors, so a broken cross-reference or link target fails the build. A fast
   build shows a banner on every page: its numbers come from the small bundled sample.

``OUT`` defaults to ``build/site`` (git-ignored). Open ``OUT/html/index.html``.
"""

from __future__ import annotations

import argparse
import hashlib
import html
import json
import multiprocessing
import os
import posixpath
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from course_utils.files import atomic_write_bytes
from course_grader.markers import notebook_bytes
from docs.site.launch import REPO_ROOT, SiteSettings, course_notebooks, is_colab_cell, site_settings

MODES = ("fast", "release")
# A fast-mode cell takes seconds; a stuck one (a kernel that once stopped answering on a heavily
# loaded machine) fails the build after this long instead of after an hour.
FAST_CELL_TIMEOUT_S = 300
DEFAULT_OUT = REPO_ROOT / "build" / "site"
SAMPLE_FALLBACK_TEXT = "USING THE SMALL BUNDLED SAMPLE"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
# Widgets a reader would operate: their snapshot gets the "run it live" note.
_CONTROL_MODELS = re.compile(r"(Slider|Dropdown|Button|Text|Textarea|Checkbox|Select|Toggle|Picker|Play)Model$")
# Files whose change can change a notebook's outputs (besides the notebook itself).
_EXECUTION_INPUTS = ("course_utils/**/*.py", "data_download/*.py", "benchmarks/results/*.json",
                     "course_utils/sample_data/*.npz")

# Pages made from repository files: repository path -> page path in the site source.
DOCUMENT_PAGES = {
    "benchmarks/results/README.md": "results.md",
    "docs/teaching.md": "teaching.md",
    "docs/design.md": "design.md",
}


class SiteBuildError(RuntimeError):
    """The site cannot be built; the message says why and what to do."""


# ============================================================================ 1. data
def check_full_datasets() -> None:
    """Raise SiteBuildError unless every dataset loads from its full copy (release builds).

    Uses ``load_dataset(..., source="full")``, which tries the local copy, then a download,
    and never the bundled sample; its error names the command that fetches the data.
    """
    from course_utils.data import DATASETS, dataset_info, load_dataset

    missing = []
    for name in DATASETS:
        for split in dataset_info(name).splits:
            try:
                load_dataset(name, split, source="full")
            except FileNotFoundError as error:
                missing.append(f"- {name} {split}: {error}")
                break
    if missing:
        raise SiteBuildError(
            "a release build runs every notebook on the full datasets and never on the bundled sample, "
            "but these are missing:\n" + "\n".join(missing)
        )


# ============================================================================ 2. execution
@dataclass(frozen=True)
class Execution:
    """One executed notebook: where it is, how long it took (0.0 when reused from the cache)."""

    notebook: Path
    executed: Path
    seconds: float
    reused: bool


def kernel_environment(mode: str, out: Path) -> dict[str, str]:
    """The environment the notebook kernels run in (a copy of ours, with the mode's settings)."""
    env = dict(os.environ)
    env["COURSE_FAST"] = "1" if mode == "fast" else "0"
    if mode == "fast":
        # a fast build never writes its tiny checkpoints into the cache a student or a release uses
        env["COURSE_CACHE_DIR"] = str(out / "fast-cache")
    env.setdefault("OMP_NUM_THREADS", "1")  # several kernels share the cores
    env.setdefault("MPLBACKEND", "Agg")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")]))
    return env


def execution_key(notebook: Path, mode: str) -> str:
    """A hash of everything a notebook's outputs depend on that the build can see."""
    digest = hashlib.sha256()
    digest.update(mode.encode())
    digest.update(notebook.read_bytes())
    for pattern in _EXECUTION_INPUTS:
        for path in sorted(REPO_ROOT.glob(pattern)):
            digest.update(path.relative_to(REPO_ROOT).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _execute_one(notebook: Path, executed: Path, env: dict[str, str], timeout: int) -> float:
    """Run ``notebook`` top to bottom in a fresh kernel, write it with outputs; return seconds.

    Runs in a worker process, so that kernels of several notebooks run side by side and
    the environment of one build never leaks into the caller.
    """
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError

    os.environ.clear()
    os.environ.update(env)
    nb = nbformat.read(notebook, as_version=4)
    start = time.perf_counter()
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", store_widget_state=True,
                            resources={"metadata": {"path": str(notebook.parent)}})
    try:
        client.execute()
    except CellExecutionError as error:
        raise SiteBuildError(f"{notebook.relative_to(REPO_ROOT)} failed while building the site:\n{error}") from None
    except CellTimeoutError as error:
        raise SiteBuildError(f"{notebook.relative_to(REPO_ROOT)}: a cell ran longer than {timeout} s ({error}); "
                             "raise --timeout if it is a slow full-mode cell") from None
    seconds = time.perf_counter() - start
    atomic_write_bytes(executed, notebook_bytes(nb))
    return seconds


def _store_execution(executed: Path, data: dict, key: str) -> None:
    """Write an executed notebook with the key of the inputs it was run from (atomically)."""
    data["metadata"]["course_site_key"] = key
    atomic_write_bytes(executed, notebook_bytes(data))


def record_execution(notebook: Path, executed: dict, mode: str, out: Path) -> Path:
    """Keep an execution made elsewhere as this build's own, so that ``execute_notebooks`` reuses it.

    For a run that already executes every notebook top to bottom: the notebook re-run test
    (``tests/test_notebook_hygiene.py``) hands its first pass to the fast site it runs before, so
    the test suite executes each notebook once for both. ``executed`` must be ``notebook`` run
    top to bottom in one fresh kernel in ``mode``'s settings (fast: ``COURSE_FAST=1`` and an empty
    checkpoint cache of its own), with the widget state stored in ``metadata.widgets``, as nbclient's
    ``store_widget_state=True`` writes it. It is stored with the key of the notebook's current
    inputs, so a later change to the notebook or the course code makes the build execute it again.
    Returns the path it was written to (``out/executed/MODE/NAME.ipynb``).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    cells = [c for c in executed["cells"] if c["cell_type"] == "code"]
    if any(o.get("output_type") == "error" for c in cells for o in c.get("outputs", [])):
        raise SiteBuildError(f"{notebook.name}: the execution to record has an error output; the site shows "
                             "only notebooks that ran without one")
    folder = Path(out).resolve() / "executed" / mode
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / notebook.name
    _store_execution(path, json.loads(json.dumps(executed)), execution_key(notebook, mode))
    return path


def execute_notebooks(notebooks: Sequence[Path], mode: str, out: Path, *, jobs: int, timeout: int,
                      log: Any = print) -> list[Execution]:
    """Execute (or reuse) every notebook; raise SiteBuildError on the first failing one."""
    folder = out / "executed" / mode
    folder.mkdir(parents=True, exist_ok=True)
    env = kernel_environment(mode, out)
    results: dict[Path, Execution] = {}
    todo = []
    for notebook in notebooks:
        key = execution_key(notebook, mode)
        executed = folder / notebook.name
        if executed.is_file() and json.loads(executed.read_bytes())["metadata"].get("course_site_key") == key:
            results[notebook] = Execution(notebook, executed, 0.0, True)
            log(f"  {notebook.name}: unchanged, reusing {executed.relative_to(out)}")
        else:
            todo.append((notebook, executed, key))
    # "spawn": a fork of a process with threads (pytest's, a browser driver's) can deadlock in the child
    with ProcessPoolExecutor(max_workers=max(1, jobs), mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {nb: (pool.submit(_execute_one, nb, executed, env, timeout), executed, key)
                   for nb, executed, key in todo}
        for notebook, (future, executed, key) in futures.items():
            seconds = future.result()  # a SiteBuildError of the worker is raised here
            _store_execution(executed, json.loads(executed.read_bytes()), key)
            results[notebook] = Execution(notebook, executed, seconds, False)
            log(f"  {notebook.name}: executed in {seconds:.1f} s")
    return [results[nb] for nb in notebooks]


def outputs_text(notebook: dict) -> str:
    """All text a notebook's outputs show (streams, plain text, HTML, markdown, errors)."""
    parts = []
    for cell in notebook["cells"]:
        for output in cell.get("outputs", []):
            parts.append(_joined(output.get("text", "")))
            for mime in ("text/plain", "text/html", "text/markdown"):
                parts.append(_joined(output.get("data", {}).get(mime, "")))
    return "\n".join(parts)


def _joined(value: str | list[str]) -> str:
    return "".join(value) if isinstance(value, list) else value


# ============================================================================ 3. pages
_MD_LINK = re.compile(r"(?P<bang>!?)\[(?P<text>[^\]\n]*)\]\((?P<target>[^)\s]+)\)")


def site_page_map(notebooks: Iterable[Path]) -> dict[str, str]:
    """Repository path -> page path in the site source, for every file the site shows as a page."""
    return {**DOCUMENT_PAGES, "README.md": "index.md", **{f"notebooks/{p.name}": f"notebooks/{p.name}" for p in notebooks}}


def rewrite_links(text: str, source: str, page: str, settings: SiteSettings, site_pages: dict[str, str], *,
                  anchors_to_repository: bool = False) -> str:
    """Rewrite the relative markdown links of ``text`` (from repository file ``source``) for ``page``.

    A target in ``site_pages`` (see :func:`site_page_map`) links to that page; any other
    repository file to its web page in the repository; absolute URLs stay. Anchor-only
    links (``#x``) stay, unless ``anchors_to_repository`` (a page that shows only part of
    ``source``).
    """

    def replace(match: re.Match) -> str:
        target = match["target"]
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):
            return match[0]
        if target.startswith("#"):
            if not anchors_to_repository:
                return match[0]
            return f"{match['bang']}[{match['text']}]({settings.blob_url(source)}{target})"
        path, _, anchor = target.partition("#")
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(source), path))
        fragment = f"#{anchor}" if anchor else ""
        if resolved in site_pages and not match["bang"]:
            relative = posixpath.relpath(site_pages[resolved], posixpath.dirname(page) or ".")
            return f"[{match['text']}]({relative}{fragment})"
        return f"{match['bang']}[{match['text']}]({settings.blob_url(resolved)}{fragment})"

    return _MD_LINK.sub(replace, text)


def _readme_section(readme: str, heading: str) -> str:
    """The body of README's ``## heading`` section (up to the next ``## ``)."""
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", readme, re.S | re.M)
    if not match:
        raise SiteBuildError(f"README.md has no '## {heading}' section; the site's home page is made from it")
    return match.group(1).strip()


def index_page(settings: SiteSettings, site_pages: dict[str, str]) -> str:
    """The home page: the README's introduction and course map, and the site's table of contents."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    title, _, rest = readme.partition("\n")
    intro = rest.split("\n## ", 1)[0].strip()
    course_map = _readme_section(readme, "Course map")
    # the README's launch table is for GitHub readers; every notebook page has its own launch links
    course_map = re.sub(r"<!-- launch:start -->.*?<!-- launch:end -->\n*", "", course_map, flags=re.S)
    body = "\n\n".join([
        title.strip(),
        intro,
        "## Course map",
        course_map,
        f"The source, the tests and the install instructions are in the [repository]({settings.repository}).",
    ])
    toc = "\n".join([
        "```{toctree}", ":caption: Notebooks", ":maxdepth: 1", "",
        *sorted(page.removesuffix(".ipynb") for page in site_pages.values() if page.endswith(".ipynb")), "```", "",
        "```{toctree}", ":caption: Reference", ":maxdepth: 1", "",
        *(page.removesuffix(".md") for page in DOCUMENT_PAGES.values()), "```",
    ])
    return rewrite_links(body, "README.md", "index.md", settings, site_pages, anchors_to_repository=True) + "\n\n" + toc + "\n"


def _markdown_cell(source: str, cell_id: str) -> dict:
    return {"cell_type": "markdown", "id": cell_id, "metadata": {}, "source": source}


def launch_links_markdown(settings: SiteSettings, notebook: str) -> str:
    """The line under each notebook's title: run it on Colab or Binder, or get the file."""
    return (
        f"**Run this notebook:** [open in Colab]({settings.colab_url(notebook)}) · "
        f"[launch on Binder]({settings.binder_url(notebook)}) · "
        f"[the notebook in the repository]({settings.blob_url(notebook)})"
    )


def site_notebook(executed: dict, name: str, settings: SiteSettings, site_pages: dict[str, str]) -> dict:
    """The executed notebook as the site shows it.

    Launch links under the title; the Colab cell removed (myst-nb's ``remove-cell`` tag);
    every widget output replaced by a static snapshot; relative links rewritten.
    """
    nb = json.loads(json.dumps(executed))
    relative = f"notebooks/{name}"
    states = nb["metadata"].pop("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    cells = []
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown":
            cell["source"] = rewrite_links(_joined(cell["source"]), relative, relative, settings, site_pages)
        if is_colab_cell(cell):
            cell["metadata"].setdefault("tags", []).append("remove-cell")
        if cell["cell_type"] == "code":
            cell["outputs"] = [out for output in cell["outputs"] for out in static_outputs(output, states)]
        cells.append(cell)
    cells.insert(1, _markdown_cell(launch_links_markdown(settings, relative), "site-launch-links"))
    nb["cells"] = cells
    return nb


# ----------------------------------------------------------------- widgets -> static snapshot
def static_outputs(output: dict, states: dict[str, dict]) -> list[dict]:
    """``output`` unchanged, or, for a widget view, the widget's state drawn as static outputs.

    A widget with controls (slider, dropdown, ...) is preceded by a note that it is a snapshot
    and needs a live kernel; progress bars become one line of text.

    Raises:
        SiteBuildError: a widget view whose state was not stored (the page would show
            ``VBox(...)`` as text).
    """
    view = output.get("data", {}).get(WIDGET_VIEW)
    if view is None:
        return [output]
    model_id = view["model_id"]
    if model_id not in states:
        raise SiteBuildError(f"widget {model_id} has no stored state; execute with store_widget_state=True")
    drawn: list[dict] = []
    pending_html: list[str] = []
    _draw_widget(model_id, states, drawn, pending_html)
    _flush_html(drawn, pending_html)
    if _has_controls(model_id, states):
        note = ('<div class="admonition note widget-snapshot-note"><p class="admonition-title">Interactive widget</p>'
                "<p>This is a static snapshot of the widget's first state. To move its controls, run the "
                "notebook live: use the Colab or Binder link at the top of the page, or "
                "<code>jupyter lab notebooks/</code> on your machine.</p></div>")
        drawn.insert(0, _html_output(note))
    return drawn


def _html_output(markup: str) -> dict:
    return {"output_type": "display_data", "metadata": {}, "data": {"text/html": markup}}


def _flush_html(drawn: list[dict], pending_html: list[str]) -> None:
    if pending_html:
        drawn.append(_html_output('<div class="widget-snapshot">' + "".join(pending_html) + "</div>"))
        pending_html.clear()


def _children(state: dict) -> list[str]:
    return [child.removeprefix("IPY_MODEL_") for child in state.get("children", [])]


def _has_controls(model_id: str, states: dict[str, dict]) -> bool:
    model = states.get(model_id, {})
    return bool(_CONTROL_MODELS.search(model.get("model_name", ""))) or any(
        _has_controls(child, states) for child in _children(model.get("state", {})))


def _draw_widget(model_id: str, states: dict[str, dict], drawn: list[dict], pending_html: list[str]) -> None:
    """Append the static drawing of one widget (and its children) to ``drawn`` / ``pending_html``."""
    model = states.get(model_id)
    if model is None:
        return
    name, state = model["model_name"], model["state"]
    description = html.escape(str(state.get("description", "")))
    if name in ("VBoxModel", "BoxModel", "GridBoxModel", "HBoxModel"):
        inline = name == "HBoxModel"
        pending_html.append(f'<div style="display:{"flex" if inline else "block"};gap:0.5em;align-items:center">')
        for child in _children(state):
            _draw_widget(child, states, drawn, pending_html)
        pending_html.append("</div>")
    elif name in ("HTMLModel", "HTMLMathModel"):
        pending_html.append(f"<span>{state.get('value', '')}</span>")
    elif name == "LabelModel":
        pending_html.append(f"<span>{html.escape(str(state.get('value', '')))}</span>")
    elif name in ("FloatProgressModel", "IntProgressModel"):
        pending_html.append(f'<progress value="{state.get("value", 0)}" max="{state.get("max", 100)}"></progress>')
    elif name.endswith("SliderModel"):
        value = state.get("value")
        readout = f"{value:.4g}" if isinstance(value, float) else html.escape(str(value))
        pending_html.append(
            f'<label class="widget-snapshot-slider">{description} '
            f'<input type="range" disabled min="{state.get("min")}" max="{state.get("max")}" '
            f'step="any" value="{value}"> <output>{readout}</output></label>')
    elif name == "DropdownModel":
        options = state.get("_options_labels", [])
        index = state.get("index")
        chosen = options[index] if isinstance(index, int) and 0 <= index < len(options) else ""
        pending_html.append(f"<label>{description} <select disabled><option>{html.escape(str(chosen))}"
                            "</option></select></label>")
    elif name == "OutputModel":
        _flush_html(drawn, pending_html)
        drawn.extend(out for out in state.get("outputs", []) if out.get("output_type") != "stream" or out.get("text"))


# ============================================================================ 4. Sphinx
def stage_pages(executions: Sequence[Execution], settings: SiteSettings, src: Path) -> None:
    """Write every page of the site into ``src`` (a fresh folder)."""
    (src / "notebooks").mkdir(parents=True, exist_ok=True)
    site_pages = site_page_map(execution.notebook for execution in executions)
    for execution in executions:
        notebook = site_notebook(json.loads(execution.executed.read_bytes()), execution.notebook.name, settings,
                                 site_pages)
        atomic_write_bytes(src / "notebooks" / execution.notebook.name, notebook_bytes(notebook))
    for repository_path, page in DOCUMENT_PAGES.items():
        text = (REPO_ROOT / repository_path).read_text(encoding="utf-8")
        atomic_write_bytes(src / page, rewrite_links(text, repository_path, page, settings, site_pages).encode("utf-8"))
    atomic_write_bytes(src / "index.md", index_page(settings, site_pages).encode("utf-8"))


def run_sphinx(src: Path, html_dir: Path, doctrees: Path, mode: str) -> None:
    """Sphinx with warnings as errors; raise SiteBuildError with its output when it fails."""
    command = [sys.executable, "-m", "sphinx", "-b", "html", "-W", "--keep-going", "-q", "-j", "1",
               "-c", str(Path(__file__).resolve().parent), "-d", str(doctrees), str(src), str(html_dir)]
    env = {**os.environ, "COURSE_SITE_MODE": mode}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")]))
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SiteBuildError(f"Sphinx failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr}")


def build_site(mode: str, out: Path = DEFAULT_OUT, *, jobs: int = 2, timeout: int = 3600,
               notebooks: Iterable[Path] | None = None, log: Any = print) -> Path:
    """Build the site into ``out/html``; return the path of its ``index.html``.

    Args:
        mode: ``"fast"`` (bundled sample, tiny models: checks the build, banner on every
            page) or ``"release"`` (full mode, full datasets, the checkpoint cache).
        out: build folder (git-ignored ``build/site`` by default).
        jobs: notebooks executed at the same time (each in its own kernel).
        timeout: seconds one cell may run.
        notebooks: default every ``notebooks/NN_*.ipynb``.

    Raises:
        SiteBuildError: a dataset is missing (release), a notebook fails, a release notebook
            fell back to the sample, or Sphinx reports a warning.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    settings = site_settings()
    out = Path(out).resolve()
    notebooks = list(notebooks) if notebooks is not None else course_notebooks()
    if not notebooks:
        raise SiteBuildError(f"no notebooks (NN_name.ipynb) in {REPO_ROOT / 'notebooks'}")
    start = time.perf_counter()
    if mode == "release":
        log("checking the full datasets ...")
        check_full_datasets()
    log(f"executing {len(notebooks)} notebooks in {mode} mode ({jobs} at a time) ...")
    executions = execute_notebooks(notebooks, mode, out, jobs=jobs, timeout=timeout, log=log)
    if mode == "release":
        fell_back = [e.notebook.name for e in executions
                     if SAMPLE_FALLBACK_TEXT in outputs_text(json.loads(e.executed.read_bytes()))]
        if fell_back:
            raise SiteBuildError(f"{', '.join(fell_back)} used the bundled sample in a release build; "
                                 "fetch the full data with `python -m data_download NAME` and build again")
    src = out / "src"
    if src.exists():
        shutil.rmtree(src)  # pages of a previous build (a renamed notebook must not linger)
    stage_pages(executions, settings, src)
    log("running Sphinx ...")
    run_sphinx(src, out / "html", out / "doctrees", mode)
    log(f"site built in {time.perf_counter() - start:.0f} s: {out / 'html' / 'index.html'}")
    return out / "html" / "index.html"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m docs.site.build", description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=MODES, required=True,
                        help="fast: bundled sample (CI; banner on every page); release: full data and checkpoints")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="build folder (default: build/site)")
    parser.add_argument("--jobs", type=int, default=2, help="notebooks executed at the same time (default 2)")
    parser.add_argument("--timeout", type=int, default=None,
                        help="seconds one cell may run (default: 300 in fast mode, where every cell takes seconds, "
                             "3600 in release mode)")
    args = parser.parse_args(argv)
    try:
        timeout = args.timeout or (FAST_CELL_TIMEOUT_S if args.mode == "fast" else 3600)
        build_site(args.mode, args.out, jobs=args.jobs, timeout=timeout)
    except SiteBuildError as error:
        print(f"site build failed: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
