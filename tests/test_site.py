"""The course website, the launch links (Colab cell, README badges) and Binder's environment."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import yaml

from docs.site import build, launch
from docs.site.build import SiteBuildError, build_site, rewrite_links, static_outputs
from docs.site.launch import COLAB_CELL_ID, colab_cell_source, course_notebooks, site_settings

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = site_settings()


# ----------------------------------------------------------------------------- launch links
def test_colab_cells_and_readme_badges_agree_with_the_configured_repository():
    stale = launch.stale_files(SETTINGS, write=False)
    assert not stale, f"out of date: {[str(p.relative_to(ROOT)) for p in stale]}; run `python -m docs.site.launch`"


@pytest.mark.parametrize("path", course_notebooks(), ids=lambda p: p.name)
def test_every_notebook_starts_with_its_title_then_the_colab_cell(path):
    cells = json.loads(path.read_text())["cells"]
    colab = [i for i, cell in enumerate(cells) if cell.get("id") == COLAB_CELL_ID]
    assert colab == [1], f"{path.name}: the Colab cell must be cell 1 (after the title), once; found at {colab}"
    assert "".join(cells[1]["source"]) == colab_cell_source(SETTINGS)
    assert SETTINGS.repository + ".git" in "".join(cells[1]["source"])


def test_readme_has_a_colab_and_a_binder_badge_per_notebook():
    readme = (ROOT / "README.md").read_text()
    for path in course_notebooks():
        relative = f"notebooks/{path.name}"
        assert SETTINGS.colab_url(relative) in readme and SETTINGS.binder_url(relative) in readme, path.name


def _run_colab_cell(namespace: dict) -> None:
    exec(compile(colab_cell_source(SETTINGS), "<colab cell>", "exec"), namespace)


def test_colab_cell_changes_nothing_outside_colab(monkeypatch, tmp_path):
    def refuse(*args, **kwargs):
        raise AssertionError(f"the Colab cell ran {args!r} outside Colab")

    monkeypatch.setattr(subprocess, "run", refuse)
    monkeypatch.setattr(os, "chdir", refuse)
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    cwd, path, modules, environ = os.getcwd(), list(sys.path), set(sys.modules), dict(os.environ)
    namespace: dict = {}
    _run_colab_cell(namespace)
    assert os.getcwd() == cwd and sys.path == path and dict(os.environ) == environ
    assert set(sys.modules) == modules, f"imported {set(sys.modules) - modules}"
    assert set(namespace) - {"__builtins__"} == {"sys"}, "it only binds `sys`, which every setup cell has anyway"


def test_colab_cell_on_colab_clones_the_configured_repository_and_installs_it(monkeypatch):
    calls, moves = [], []
    monkeypatch.setitem(sys.modules, "google.colab", type(sys)("google.colab"))
    monkeypatch.setattr(subprocess, "run", lambda command, **kwargs: calls.append((command, kwargs)))
    monkeypatch.setattr(os, "chdir", moves.append)
    monkeypatch.setattr(os.path, "isdir", lambda path: False)
    monkeypatch.setattr(sys, "path", list(sys.path))
    _run_colab_cell({})
    (clone, clone_kwargs), (pip, pip_kwargs) = calls
    assert clone[:2] == ["git", "clone"] and f"{SETTINGS.repository}.git" in clone
    assert clone[clone.index("--branch") + 1] == SETTINGS.branch
    assert pip[:3] == [sys.executable, "-m", "pip"] and pip[-2:] == ["-e", launch.COLAB_CLONE_DIR]
    assert clone_kwargs == pip_kwargs == {"check": True}, "a failed clone or install must stop the notebook"
    assert sys.path[0] == launch.COLAB_CLONE_DIR and moves == [f"{launch.COLAB_CLONE_DIR}/notebooks"]


def test_with_colab_cell_is_idempotent_and_keeps_every_other_cell():
    notebook = json.loads(course_notebooks()[0].read_text())
    once = launch.with_colab_cell(notebook, SETTINGS)
    assert launch.with_colab_cell(once, SETTINGS) == once
    others = [c for c in notebook["cells"] if c.get("id") != COLAB_CELL_ID]
    assert [c for c in once["cells"] if c.get("id") != COLAB_CELL_ID] == others


@pytest.mark.parametrize("url", ["", "http://github.com/a/b", "https://gitlab.com/a/b", "https://github.com/a"])
def test_a_repository_that_colab_cannot_open_is_refused_naming_the_file(tmp_path, url):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(f'[project]\nname = "x"\n[project.urls]\nRepository = "{url}"\n'
                         '[tool.course-site]\nbranch = "main"\n')
    with pytest.raises(ValueError, match=r"pyproject\.toml.*Repository"):
        site_settings(pyproject)


def test_launch_urls():
    assert SETTINGS.colab_url("notebooks/a b.ipynb").endswith(
        f"/github/{SETTINGS.owner}/{SETTINGS.name}/blob/{SETTINGS.branch}/notebooks/a b.ipynb")
    assert SETTINGS.binder_url("notebooks/x.ipynb") == (
        f"https://mybinder.org/v2/gh/{SETTINGS.owner}/{SETTINGS.name}/{SETTINGS.branch}?labpath=notebooks%2Fx.ipynb")


# ----------------------------------------------------------------------------- binder
def _yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def test_binder_environment_agrees_with_environment_yml():
    user, binder = _yaml(ROOT / "environment.yml"), _yaml(ROOT / "binder" / "environment.yml")

    def without_course_install(dependencies: list) -> list:
        return [{"pip": [e for e in item["pip"] if not e.startswith("-e")]} if isinstance(item, dict) else item
                for item in dependencies]

    assert binder["channels"] == user["channels"]
    assert without_course_install(binder["dependencies"]) == without_course_install(user["dependencies"]), (
        "binder/environment.yml must list the packages and ranges of environment.yml (copy them over)")
    post_build = (ROOT / "binder" / "postBuild").read_text()
    assert "pip install --no-deps -e ." in post_build, "binder/postBuild installs the course itself"
    assert os.access(ROOT / "binder" / "postBuild", os.X_OK), "binder/postBuild must be executable"


# ----------------------------------------------------------------------------- site pieces
def test_rewrite_links():
    pages = build.site_page_map(course_notebooks())
    text = ("[map](../README.md#course-map) [nb](../notebooks/00_anomaly_detection_basics.ipynb) "
            "[code](../course_utils/data.py) ![fig](../docs/x.png) [web](https://example.org) [here](#top)")
    out = rewrite_links(text, "docs/teaching.md", "teaching.md", SETTINGS, pages)
    assert "[map](index.md#course-map)" in out
    assert "[nb](notebooks/00_anomaly_detection_basics.ipynb)" in out
    assert f"[code]({SETTINGS.blob_url('course_utils/data.py')})" in out
    assert f"![fig]({SETTINGS.blob_url('docs/x.png')})" in out
    assert "[web](https://example.org)" in out and "[here](#top)" in out
    from_notebook = rewrite_links("[next](01_ssim_autoencoder.ipynb) [t](../docs/teaching.md)",
                                  "notebooks/00_a.ipynb", "notebooks/00_a.ipynb", SETTINGS, pages)
    assert from_notebook == "[next](01_ssim_autoencoder.ipynb) [t](../teaching.md)"
    only_00 = build.site_page_map(course_notebooks()[:1])
    assert rewrite_links("[n](notebooks/01_ssim_autoencoder.ipynb)", "README.md", "index.md", SETTINGS, only_00) == (
        f"[n]({SETTINGS.blob_url('notebooks/01_ssim_autoencoder.ipynb')})"), "a notebook not on the site: its file"
    assert rewrite_links("[q](#quick-start)", "README.md", "index.md", SETTINGS, pages, anchors_to_repository=True) == (
        f"[q]({SETTINGS.blob_url('README.md')}#quick-start)")


PNG = base64.b64encode(b"\x89PNG fake").decode()


def _state(model: str, **state) -> dict:
    return {"model_name": model, "model_module": "@jupyter-widgets/controls", "state": state}


def test_a_widget_becomes_a_static_snapshot_with_a_note_to_run_it_live():
    states = {
        "box": _state("VBoxModel", children=["IPY_MODEL_slider", "IPY_MODEL_html", "IPY_MODEL_out"]),
        "slider": _state("FloatSliderModel", value=1.25, min=0.0, max=3.0, description="threshold"),
        "html": _state("HTMLModel", value="<b>F1 = 0.5</b>"),
        "out": {"model_name": "OutputModel", "model_module": "@jupyter-widgets/output",
                "state": {"outputs": [{"output_type": "display_data", "metadata": {},
                                       "data": {"image/png": PNG, "text/plain": "<Figure>"}}]}},
    }
    view = {"output_type": "execute_result", "execution_count": 1, "metadata": {},
            "data": {build.WIDGET_VIEW: {"model_id": "box"}, "text/plain": "VBox(children=(...))"}}
    outputs = static_outputs(view, states)
    html = "".join(o["data"].get("text/html", "") for o in outputs)
    assert "Interactive widget" in html and "run the notebook live" in html
    assert "threshold" in html and "1.25" in html and "<b>F1 = 0.5</b>" in html
    assert [o["data"]["image/png"] for o in outputs if "image/png" in o["data"]] == [PNG]
    assert not any("VBox(" in str(o["data"].get("text/plain", "")) for o in outputs)
    progress = {"bar": _state("HBoxModel", children=["IPY_MODEL_label", "IPY_MODEL_p"]),
                "label": _state("HTMLModel", value="epoch 1"), "p": _state("FloatProgressModel", value=1, max=2)}
    bar = static_outputs({"output_type": "display_data", "metadata": {},
                          "data": {build.WIDGET_VIEW: {"model_id": "bar"}}}, progress)
    assert len(bar) == 1 and "Interactive widget" not in bar[0]["data"]["text/html"], "a progress bar needs no note"
    plain = {"output_type": "stream", "name": "stdout", "text": "hi"}
    assert static_outputs(plain, {}) == [plain]
    with pytest.raises(SiteBuildError, match="no stored state"):
        static_outputs(view, {})


def test_a_fast_build_keeps_its_checkpoints_out_of_the_course_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_CACHE_DIR", "/somewhere/the/students/cache")
    env = build.kernel_environment("fast", tmp_path)
    assert env["COURSE_FAST"] == "1" and env["COURSE_CACHE_DIR"] == str(tmp_path / "fast-cache")
    release = build.kernel_environment("release", tmp_path)
    assert release["COURSE_FAST"] == "0" and release["COURSE_CACHE_DIR"] == "/somewhere/the/students/cache"


def test_a_recorded_execution_is_reused_until_its_notebook_changes(tmp_path):
    """The notebook re-run test hands its first pass to the fast site (record_execution): the build
    shows it instead of executing again, but not once the notebook has changed, nor one with an error."""
    import nbformat

    path = tmp_path / "99_tiny.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(6 * 7)")]), path)
    executed = nbformat.read(path, as_version=4)
    executed.cells[0].outputs = [nbformat.v4.new_output("stream", name="stdout", text="recorded elsewhere\n")]
    out = tmp_path / "site"
    assert build.record_execution(path, executed, "fast", out) == out / "executed" / "fast" / path.name

    def execute() -> build.Execution:
        [execution] = build.execute_notebooks([path], "fast", out, jobs=1, timeout=120, log=lambda _: None)
        return execution

    reused = execute()
    assert reused.reused and "recorded elsewhere" in build.outputs_text(json.loads(reused.executed.read_bytes()))
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(6 * 9)")]), path)
    fresh = execute()
    text = build.outputs_text(json.loads(fresh.executed.read_bytes()))
    assert not fresh.reused and "54" in text and "recorded elsewhere" not in text
    executed.cells[0].outputs = [nbformat.v4.new_output("error", ename="ZeroDivisionError", evalue="", traceback=[])]
    with pytest.raises(SiteBuildError, match="error output"):
        build.record_execution(path, executed, "fast", out)
    with pytest.raises(ValueError, match="mode"):
        build.record_execution(path, executed, "slow", out)


def test_a_release_build_stops_before_executing_when_a_dataset_is_missing(data_home, offline, tmp_path, monkeypatch):
    monkeypatch.setattr(build, "execute_notebooks", lambda *a, **k: pytest.fail("executed without the data"))
    with pytest.raises(SiteBuildError, match=r"(?s)never on the bundled sample.*mnist.*python -m data_download"):
        build_site("release", tmp_path / "site", log=lambda _: None)


def test_a_release_build_refuses_outputs_from_the_sample_fallback(tmp_path, monkeypatch):
    notebook = course_notebooks()[0]
    executed = tmp_path / "executed.ipynb"
    data = json.loads(notebook.read_text())
    data["cells"][2]["outputs"] = [{"output_type": "stream", "name": "stdout",
                                    "text": f"! {build.SAMPLE_FALLBACK_TEXT}: results are NOT comparable"}]
    executed.write_text(json.dumps(data))
    monkeypatch.setattr(build, "check_full_datasets", lambda: None)
    monkeypatch.setattr(build, "execute_notebooks",
                        lambda *a, **k: [build.Execution(notebook, executed, 1.0, False)])
    with pytest.raises(SiteBuildError, match=f"{notebook.name} used the bundled sample"):
        build_site("release", tmp_path / "site", notebooks=[notebook], log=lambda _: None)


# ----------------------------------------------------------------------------- the built site
class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.targets: list[str] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("href", "src") and value:
                self.targets.append(value)


def test_fast_site_has_every_page_a_banner_everywhere_and_no_broken_local_link(fast_site):
    pages = {p.relative_to(fast_site).as_posix() for p in fast_site.rglob("*.html") if "_static" not in p.parts}
    expected = {"index.html", "results.html", "teaching.html", "design.html",
                *(f"notebooks/{p.stem}.html" for p in course_notebooks())}
    assert expected <= pages, f"missing pages: {expected - pages}"
    broken = []
    for page in sorted(pages):
        text = (fast_site / page).read_text()
        assert "fast-build-banner" in text and "bundled sample" in text, f"{page} has no fast-build banner"
        parser = _Links()
        parser.feed(text)
        for target in parser.targets:
            parts = urlsplit(target)
            if parts.scheme or target.startswith(("#", "//", "data:", "mailto:")) or not parts.path:
                continue
            if not ((fast_site / page).parent / unquote(parts.path)).resolve().exists():
                broken.append(f"{page} -> {target}")
    assert not broken, f"broken local links: {broken[:10]}"


def test_fast_site_notebook_pages_have_outputs_launch_links_and_no_widget_text(fast_site):
    for path in course_notebooks():
        page = (fast_site / "notebooks" / f"{path.stem}.html").read_text()
        relative = f"notebooks/{path.name}"
        assert SETTINGS.colab_url(relative).replace("&", "&amp;") in page, f"{path.name}: no Colab link"
        assert SETTINGS.binder_url(relative).replace("&", "&amp;") in page, f"{path.name}: no Binder link"
        assert page.count("<img") >= 3, f"{path.name}: its figures are missing"
        assert "VBox(" not in page and "HBox(" not in page, f"{path.name}: a widget is shown as text"
        assert "google.colab" not in page, f"{path.name}: the Colab setup cell should be hidden on the site"
        widgets = "ScoreExplorer(" in path.read_text()
        assert ("Interactive widget" in page) == widgets, f"{path.name}: widget note"


def test_fast_site_results_page_is_rendered_from_the_benchmark_results(fast_site):
    page = (fast_site / "results.html").read_text()
    methods = {json.loads(p.read_text()).get("method") for p in (ROOT / "benchmarks" / "results").glob("*__*.json")}
    methods.discard(None)
    assert methods, "no benchmark results with a method"
    missing = sorted(m for m in methods if m not in page)
    assert not missing, f"results page lacks {missing}"
    assert page.count("<table") >= 2


def test_fast_site_home_page_is_the_course_map(fast_site):
    page = (fast_site / "index.html").read_text()
    for path in course_notebooks():
        assert re.search(rf'href="notebooks/{re.escape(path.stem)}\.html"', page), f"course map lacks {path.name}"
