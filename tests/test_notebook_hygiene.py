"""Notebook hygiene: every `notebooks/NN_*.ipynb` keeps its imports in the setup cell, gives each
global name one meaning, leaves shared functions to `course_utils`, and can be re-run cell by cell.

Static checks (``ast`` on every code cell; IPython magics and shell lines are first turned into
plain Python by IPython's own input transformer, so they never break the parse):

* **Imports only in the setup cell.** The setup cell is the first code cell after the read-only
  Colab cell (cell id ``colab-setup``, see ``docs/site/launch.py``), which is skipped. An exercise's
  answer cell (nbgrader ``solution: true``, see ``course_grader/markers.py``) may import too: it is
  the student's own unit, and ``tests/test_notebooks.py`` runs it right after the setup cell alone.
  Any other ``import`` or ``from ... import`` fails, at any depth (inside a function as well).
* **One meaning per global name.** A section is the run of cells from one ``##`` heading to the
  next (``###`` headings do not start one; cells before the first ``##`` are their own section).
  A global name is one bound at the top level of a cell (assignment, augmented / annotated
  assignment, ``with ... as``, ``:=``, ``def``, ``class``, ``global`` in a function; also under
  ``if`` / ``try`` / ``with`` / ``while`` and in the body of a ``for``). The target of a ``for``
  loop itself does not count, and comprehension variables are local anyway. A name bound in two
  or more sections fails, unless listed in
  :data:`REBINDING_ALLOWED` (per notebook) or :data:`COURSE_WIDE_REBINDING_ALLOWED`, each entry with
  its reason. Allow only what is genuinely harmless: scratch names that every cell binds before it
  reads them (a timer, a table under construction), never a name that a cell of one section reads
  and another section binds to something else.
* **Shared functions belong in course_utils.** A function defined (``def``) in a notebook and used
  (read) in more than one section fails, unless listed in :data:`FUNCTION_SHARING_ALLOWED`.
* **Opt-outs say why.** A cell tagged ``rerun-changes`` must contain a comment line
  ``# rerun-changes: <why>``.

Dynamic check (one test per notebook, marker ``notebook_rerun``, fast mode): the notebook runs top
to bottom in one kernel (nbclient, in the environment ``course_grader.execution.kernel_env`` gives a
grading kernel: fast mode, its own checkpoint cache; but PyTorch's own thread count, as a student
has); every code cell's text output is recorded. Then every code cell is run again, from the last to the first, so each cell runs again in
the state the cells below it left (what a student has who scrolls back up and re-runs a cell), and
its output must equal the first run's. Finally the last :data:`FINAL_CELLS` code cells run once more,
in the state every re-run left, and their output must again be unchanged. The same kernel then runs
the notebook's student version (``course_grader.markers.release``: stubs in every answer cell) top to
bottom after ``%reset -f``, and it must run to the end with every exercise "not solved yet"; the
kernel start, the imports and the trained checkpoints are shared with the solution's run (the
released pass of the six notebooks took 41 s; in a fresh process each they took 78 s), and
``tests/test_released_notebooks.py`` still runs notebook 00's student version in a fresh process. Text output is stdout,
``text/markdown`` (else ``text/plain``) of results and displays, and errors; stderr is not compared
(warnings are shown once per place, progress bars redraw). :func:`normalise` removes volatile parts.
A cell tagged ``rerun-changes`` is re-run but its output is not compared.

Updating after a notebook is renamed, split or rewritten: the allowances are keyed by the notebook's
file stem; ``test_allowances_are_current`` fails on an entry whose notebook or name no longer needs
it, and says which entry to delete.
"""

from __future__ import annotations

import ast
import copy
import functools
import json
import re
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import pytest

from course_grader import markers
from docs.site.launch import is_colab_cell

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))

# ======================================================================================= allowances
# A name rebound in several sections, allowed everywhere: matplotlib's figure handles, which every
# plotting cell binds before it uses them, and the throwaway name.
COURSE_WIDE_REBINDING_ALLOWED: dict[str, str] = {
    "fig": "the current figure: every plotting cell binds it before use",
    "ax": "the current axes: every plotting cell binds it before use",
    "axes": "the current axes: every plotting cell binds them before use",
    "_": "the throwaway name",
}

# Per notebook (file stem): name -> why rebinding it in several sections is harmless.
REBINDING_ALLOWED: dict[str, dict[str, str]] = {
    "01_ssim_autoencoder": {
        "x_hat": "the reconstruction of the cell's own batch; each cell binds it before use",
        "start": "a timer, read only in the cell that starts it",
    },
    "02_f_anogan": {
        "start": "a timer, read only in the cell that starts it",
        "det": "a loop's detector, bound and read in the same cell",
        "lines": "a markdown table under construction, bound and read in the same cell",
        "batch": "the cell's own batch, bound and read in the same cell",
        "course": "the course's value that the cell compares with, bound and read in the same cell",
    },
    "05_ae_flow_medical": {
        "rows": "a markdown table under construction, bound and read in the same cell",
    },
}

# Per notebook (file stem): function name -> why a notebook function may serve several sections.
FUNCTION_SHARING_ALLOWED: dict[str, dict[str, str]] = {}

# TEMPORARY, for the merging engineer: notebook (file stem) -> {check: branch that fixes it}.
# The check fails today and is marked xfail(strict=False) with "being fixed on branch X". Delete an
# entry once that branch is merged (an entry whose notebook no longer exists fails
# test_allowances_are_current). Checks: "imports", "rebinding", "functions", "rerun".
# Example: {"05_ae_flow_medical": {"imports": "h-nb04"}}. Empty: every notebook on main passes.
XFAIL_BEING_FIXED_ON_BRANCH: dict[str, dict[str, str]] = {}

RERUN_TAG = "rerun-changes"
FINAL_CELLS = 3  # the last code cells, run once more after every cell was re-run
CELL_TIMEOUT_S = 900


# ======================================================================================= static model
@dataclass
class Binding:
    cell: int
    section: str
    kind: str  # "assign", "def", "class", "for"


@dataclass
class NotebookModel:
    """What the static checks need to know about one notebook."""

    name: str
    setup_cell: int
    sections: dict[int, str] = field(default_factory=dict)  # code cell index -> section heading
    imports: list[tuple[int, str]] = field(default_factory=list)  # (cell, statement) outside the setup cell
    bindings: dict[str, list[Binding]] = field(default_factory=lambda: defaultdict(list))
    reads: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))  # name -> cells that read it
    functions: dict[str, int] = field(default_factory=dict)  # def name -> cell
    untagged_opt_outs: list[int] = field(default_factory=list)  # rerun-changes cells without the reason line


_TRANSFORMER = None


def python_source(cell_source: str) -> str:
    """The cell as plain Python: IPython rewrites magics (``%x``, ``%%x``) and shell lines (``!x``)
    into ``get_ipython()`` calls, exactly as the kernel does before running the cell."""
    global _TRANSFORMER
    if _TRANSFORMER is None:
        from IPython.core.inputtransformer2 import TransformerManager

        _TRANSFORMER = TransformerManager()
    return _TRANSFORMER.transform_cell(cell_source)


def _heading(line: str) -> bool:
    return re.match(r"^##\s", line) is not None  # level 2 exactly: "### ..." does not start a section


def _store_names(target: ast.AST) -> list[str]:
    return [n.id for n in ast.walk(target) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)]


def _top_level_bindings(statements: list[ast.stmt]) -> list[tuple[str, str]]:
    """(name, kind) of every global bound by ``statements``, not entering function or class bodies."""
    found: list[tuple[str, str]] = []
    for stmt in statements:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
            found.append((stmt.name, "def"))
            # a `global x` inside binds x at the top level whenever the function runs
            found += [(name, "assign") for node in ast.walk(stmt) if isinstance(node, ast.Global)
                      for name in node.names]
            continue
        if isinstance(stmt, ast.ClassDef):
            found.append((stmt.name, "class"))
            continue
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            found += [((alias.asname or alias.name).split(".")[0], "import") for alias in stmt.names]
            continue
        if isinstance(stmt, (ast.For, ast.AsyncFor)):
            found += [(name, "for") for name in _store_names(stmt.target)]
        elif isinstance(stmt, ast.Assign):
            found += [(name, "assign") for target in stmt.targets for name in _store_names(target)]
        elif isinstance(stmt, (ast.AugAssign, ast.AnnAssign)) and (not isinstance(stmt, ast.AnnAssign) or stmt.value):
            found += [(name, "assign") for name in _store_names(stmt.target)]
        elif isinstance(stmt, (ast.With, ast.AsyncWith)):
            found += [(name, "assign") for item in stmt.items if item.optional_vars
                      for name in _store_names(item.optional_vars)]
        # walrus in this statement's own expressions (not in nested bodies, handled below)
        for child in ast.iter_child_nodes(stmt):
            if isinstance(child, ast.expr):
                found += [(n.target.id, "assign") for n in ast.walk(child) if isinstance(n, ast.NamedExpr)]
        for body in ("body", "orelse", "finalbody"):
            if isinstance(getattr(stmt, body, None), list):
                found += _top_level_bindings(getattr(stmt, body))
        for handler in getattr(stmt, "handlers", []):
            found += _top_level_bindings(handler.body)
        for case in getattr(stmt, "cases", []):
            found += _top_level_bindings(case.body)
    return found


@functools.lru_cache(maxsize=None)
def analyse(path: Path) -> NotebookModel:
    nb = nbformat.read(path, as_version=4)
    colab = next((i for i, c in enumerate(nb.cells) if is_colab_cell(c)), -1)
    setup = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and i > colab)
    model = NotebookModel(path.stem, setup)
    section = "(before the first ## heading)"
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown":
            in_fence = False
            for line in cell.source.splitlines():
                in_fence ^= line.lstrip().startswith("```")
                if not in_fence and _heading(line):
                    section = line.lstrip("#").strip()
            continue
        if cell.cell_type != "code" or index == colab:
            continue
        model.sections[index] = section
        if RERUN_TAG in cell.metadata.get("tags", []) and not re.search(
                rf"^\s*# {RERUN_TAG}: \S", cell.source, re.M):
            model.untagged_opt_outs.append(index)
        tree = ast.parse(python_source(cell.source), filename=f"{path.name}, cell {index}")
        is_answer = bool(markers._nbgrader(cell).get("solution"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and index != setup and not is_answer:
                model.imports.append((index, ast.unparse(node)))
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
                model.reads[node.id].add(index)
        for name, kind in _top_level_bindings(tree.body):
            if kind == "import":
                continue
            model.bindings[name].append(Binding(index, section, kind))
            if kind == "def":
                model.functions[name] = index
    return model


def rebinding_problems(model: NotebookModel) -> dict[str, str]:
    """name -> description, for every global bound in more than one section (allowances not applied)."""
    problems = {}
    for name, bindings in model.bindings.items():
        counted = [b for b in bindings if b.kind != "for"]
        sections = list(dict.fromkeys(b.section for b in counted))
        if len(sections) < 2:
            continue
        parts = []
        for section in sections:
            cells = sorted({b.cell for b in counted if b.section == section})
            parts.append(f"section '{section}': cells {cells}")
        readers = sorted(c for c in model.reads.get(name, ()) if c not in {b.cell for b in bindings})
        where = "; ".join(parts)
        problems[name] = (f"`{name}` is bound in {len(sections)} sections ({where})"
                          + (f"; read in cells {readers}, which do not bind it" if readers else ""))
    return problems


def function_problems(model: NotebookModel) -> dict[str, str]:
    problems = {}
    for name, cell in model.functions.items():
        used = sorted({model.sections[c] for c in model.reads.get(name, ())})
        if len(used) > 1:
            problems[name] = (f"function `{name}` (cell {cell}, section '{model.sections[cell]}') is used in "
                              f"{len(used)} sections: {used}; move it to course_utils")
    return problems


def _params(check: str) -> list:
    params = []
    for path in NOTEBOOKS:
        branch = XFAIL_BEING_FIXED_ON_BRANCH.get(path.stem, {}).get(check)
        marks = [pytest.mark.xfail(reason=f"being fixed on branch {branch}", strict=False)] if branch else []
        params.append(pytest.param(path, id=path.stem, marks=marks))
    return params


# ======================================================================================= static tests
def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks/NN_*.ipynb found"


@pytest.mark.parametrize("path", _params("imports"))
def test_imports_only_in_the_setup_cell(path):
    model = analyse(path)
    if model.imports:
        pytest.fail(f"{path.name}: imports outside the setup cell (cell {model.setup_cell}); move them there:\n  "
                    + "\n  ".join(f"cell {cell}: {statement}" for cell, statement in model.imports), pytrace=False)


@pytest.mark.parametrize("path", _params("rebinding"))
def test_each_global_name_keeps_one_meaning(path):
    model = analyse(path)
    allowed = {**COURSE_WIDE_REBINDING_ALLOWED, **REBINDING_ALLOWED.get(path.stem, {})}
    problems = {name: text for name, text in rebinding_problems(model).items() if name not in allowed}
    if problems:
        pytest.fail(f"{path.name}: global names bound in more than one section (give each meaning its own name, or "
                    f"add an entry with its reason to REBINDING_ALLOWED[{path.stem!r}] if it is harmless scratch):\n  "
                    + "\n  ".join(problems.values()), pytrace=False)


@pytest.mark.parametrize("path", _params("functions"))
def test_functions_used_in_several_sections_live_in_course_utils(path):
    model = analyse(path)
    allowed = FUNCTION_SHARING_ALLOWED.get(path.stem, {})
    problems = {name: text for name, text in function_problems(model).items() if name not in allowed}
    if problems:
        pytest.fail(f"{path.name}: candidates for course_utils:\n  " + "\n  ".join(problems.values()), pytrace=False)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_rerun_opt_outs_say_why(path):
    model = analyse(path)
    assert not model.untagged_opt_outs, (
        f"{path.name}: cells {model.untagged_opt_outs} are tagged {RERUN_TAG!r} without a comment line "
        f"'# {RERUN_TAG}: <why its output changes when re-run>'")


def test_allowances_are_current():
    """Every allowance names an existing notebook and a name that still needs it."""
    stems = {path.stem for path in NOTEBOOKS}
    stale = []
    for table_name, table in (("REBINDING_ALLOWED", REBINDING_ALLOWED),
                              ("FUNCTION_SHARING_ALLOWED", FUNCTION_SHARING_ALLOWED),
                              ("XFAIL_BEING_FIXED_ON_BRANCH", XFAIL_BEING_FIXED_ON_BRANCH)):
        stale += [f"{table_name}[{stem!r}]: no notebook {stem}.ipynb (renamed? then rename the key)"
                  for stem in table if stem not in stems]
    for stem, names in REBINDING_ALLOWED.items():
        if stem in stems:
            needed = rebinding_problems(analyse(REPO / "notebooks" / f"{stem}.ipynb"))
            stale += [f"REBINDING_ALLOWED[{stem!r}][{name!r}]: no longer rebound" for name in names
                      if name not in needed]
    for stem, names in FUNCTION_SHARING_ALLOWED.items():
        if stem in stems:
            needed = function_problems(analyse(REPO / "notebooks" / f"{stem}.ipynb"))
            stale += [f"FUNCTION_SHARING_ALLOWED[{stem!r}][{name!r}]: no longer shared" for name in names
                      if name not in needed]
    assert not stale, "stale allowance entries; delete them:\n  " + "\n  ".join(stale)


def test_the_static_model_on_a_small_notebook(tmp_path):
    """The rules on a hand-made notebook: magics, sections, loops, imports, answer cells, functions."""
    nb = nbformat.v4.new_notebook()
    code = nbformat.v4.new_code_cell
    md = nbformat.v4.new_markdown_cell
    answer = code("import math\ndef answer(x):\n    ### BEGIN SOLUTION\n    return math.sqrt(x)\n    ### END SOLUTION")
    answer.metadata["nbgrader"] = {"solution": True, "grade_id": "ex"}
    opt_out = code("x = 1")
    opt_out.metadata["tags"] = [RERUN_TAG]
    nb.cells = [md("# T"), code("import sys"), md("## Setup"), code("%matplotlib inline\nimport numpy as np\nk = 1"),
                md("## A\n### sub"), code("def helper():\n    return 1\nfor i in range(2):\n    total = helper()\n!ls"),
                answer, md("## B"), code("for i in range(3):\n    pass\nif True:\n    total = 2\nhelper()\n"
                                         "def local():\n    import os\n    global k\n    return os"), opt_out]
    nb.cells[1].id = "colab-setup"
    path = tmp_path / "99_test.ipynb"
    nbformat.write(nb, path)
    model = analyse(path)
    assert model.setup_cell == 3
    assert model.imports == [(8, "import os")]
    assert set(rebinding_problems(model)) == {"total", "k"}  # `i` is only a loop variable; `global k` rebinds k
    assert set(function_problems(model)) == {"helper"}
    assert model.untagged_opt_outs == [9]


# ======================================================================================= dynamic check
_VOLATILE = [
    (re.compile(r"0x[0-9a-fA-F]{6,}"), "0x…"),                                        # memory addresses
    (re.compile(r"(?<![\w.])\d+(\.\d+)?\s?(ms|µs|us|ns|s|sec|seconds|min|minutes|h)\b"), "<time>"),  # timings
    (re.compile(r"\d+(\.\d+)?\s?(it/s|s/it)"), "<rate>"),                             # tqdm rates
    (re.compile(r"\b(saved checkpoint to|loaded cached checkpoint)\b"), "<checkpoint>"),           # checkpoints.py
    (re.compile(r"\s*\((loaded )?from the checkpoint cache\)"), ""),
    (re.compile(r"\b(loaded from (the )?cache|loaded|trained|cached)\b"), "<trained-or-cached>"),
]
_PROGRESS = re.compile(r"\d+%\|")  # a tqdm bar: "37%|███▋      | 37/100"
_ONCE_PER_PROCESS = re.compile(r"^\[course_utils\] using device: ")  # config.get_device announces it once
_TABLE_RULE = re.compile(r"^\|(\s*:?-+:?\s*\|)+$")  # the line under a markdown table's header
_TIME_HEADER = re.compile(r"(?i)\b(ms|s|sec|seconds|min|minutes|time)\b")  # "ms per image", "train s"


def _table_cells(line: str) -> list[str]:
    return line.strip().strip("|").split("|")


def normalise(text: str) -> str:
    """Output text with its volatile parts replaced: memory addresses (``0x7f…``), durations
    (``12.3 s``, ``450 ms``, ``2 min``), the numbers in a markdown table column whose header names a
    time unit (``ms per image``, ``train s``), tqdm rates and bars (a line with ``NN%|`` is dropped;
    so is everything before a carriage return on a line), the device announcement that
    ``config.get_device`` prints once per process, and whether a model was trained or loaded from
    the checkpoint cache (a first run trains and saves, a re-run loads)."""
    lines: list[str] = []
    time_columns: set[int] = set()
    for line in text.split("\n"):  # not splitlines(): a carriage return redraws its line
        line = line.rstrip("\r").rsplit("\r", 1)[-1]
        if _PROGRESS.search(line) or _ONCE_PER_PROCESS.match(line):
            continue
        if _TABLE_RULE.match(line.strip()) and lines and lines[-1].lstrip().startswith("|"):
            time_columns = {i for i, cell in enumerate(_table_cells(lines[-1])) if _TIME_HEADER.search(cell)}
        elif not line.lstrip().startswith("|"):
            time_columns = set()
        elif time_columns:
            cells = _table_cells(line)
            cells = [re.sub(r"\d[\d,.]*", "<time>", cell) if i in time_columns else cell
                     for i, cell in enumerate(cells)]
            line = "|" + "|".join(cells) + "|"
        for pattern, replacement in _VOLATILE:
            line = pattern.sub(replacement, line)
        if line.strip():  # blank lines depend on how a stream was cut into messages
            lines.append(line.rstrip())
    return "\n".join(lines)


def text_output(cell) -> str:
    """The cell's comparable text: stdout, results and displays (text/markdown, else text/plain),
    and errors (name and value). Widgets' and images' payloads are not text and are left out."""
    text = ""
    for out in cell.get("outputs", []):
        kind = out.get("output_type")
        if kind == "stream" and out.get("name") == "stdout":
            text += out.get("text", "")  # one stream, however its messages were cut
        elif kind in ("execute_result", "display_data"):
            data = out.get("data", {})
            text += "\n" + (data.get("text/markdown") or data.get("text/plain", "")) + "\n"
        elif kind == "error":
            text += f"\nERROR {out.get('ename')}: {out.get('evalue')}\n"
    return normalise(text)


def _first_difference(a: str, b: str) -> str:
    la, lb = a.splitlines(), b.splitlines()
    for i in range(max(len(la), len(lb))):
        x, y = (la[i] if i < len(la) else "<no line>"), (lb[i] if i < len(lb) else "<no line>")
        if x != y:
            return f"line {i + 1}: first run {x[:200]!r}, re-run {y[:200]!r}"
    return "identical"


async def _rerun_notebook(nb, cwd: Path, env: dict, log: Path, released=None) -> tuple[dict, dict]:
    """Run ``nb`` top to bottom, then every code cell again from the last to the first, then the last
    FINAL_CELLS code cells again; then, if ``released`` (the student version of ``nb``) is given, clear
    the kernel's namespace (``%reset -f``) and run the released notebook top to bottom. Returns the
    normalised texts of each pass and the timings (the released pass: its stdout and errors, raw),
    and the first pass as an executed notebook (outputs and widget state, as the site build's own
    execution has them). The kernel process's own output goes to ``log``, as in
    ``course_grader.execution``."""
    from nbclient import NotebookClient

    client = NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3", allow_errors=True,
                            record_timing=False, store_widget_state=True,
                            resources={"metadata": {"path": str(cwd)}})
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    result: dict = {"first": {}, "rerun": {}, "final": {}, "first_errors": {}, "seconds": {}}
    first_pass = copy.deepcopy(nb)

    async def run(index: int) -> str:
        cell = copy.deepcopy(nb.cells[index])
        await client.async_execute_cell(cell, index)
        if index not in result["first"]:
            first_pass.cells[index] = cell
            errors = [f"{o.get('ename')}: {o.get('evalue')}" for o in cell.outputs if o.get("output_type") == "error"]
            if errors:
                result["first_errors"][index] = errors[-1]
        return text_output(cell)

    with open(log, "wb") as output:
        async with client.async_setup_kernel(env=env, cwd=str(cwd), stdout=output, stderr=output):
            started = time.monotonic()
            for index in code:
                result["first"][index] = await run(index)
            result["seconds"]["first"] = time.monotonic() - started
            # the widget state as the first pass left it (nbclient writes it into the client's notebook)
            client.set_widgets_metadata()
            if "widgets" in nb.metadata:
                first_pass.metadata["widgets"] = copy.deepcopy(nb.metadata.pop("widgets"))
            started = time.monotonic()
            for index in reversed(code):
                result["rerun"][index] = await run(index)
            result["seconds"]["rerun"] = time.monotonic() - started
            for index in code[-FINAL_CELLS:]:
                result["final"][index] = await run(index)
            if released is not None:
                started = time.monotonic()
                result["released"] = await _run_released(client, released)
                result["seconds"]["released"] = time.monotonic() - started
    return result, first_pass


async def _run_released(client, released) -> dict:
    """The student version top to bottom in ``client``'s kernel, after ``%reset -f`` has deleted every
    name the solution's passes bound: a name that only a solution defines fails here as in a student's
    fresh kernel. The kernel keeps its imported modules (so the setup cell is quick) and the checkpoint
    cache the solution filled (the released notebook trains the same models). Returns its stdout and
    its errors."""
    solution = client.nb   # nbclient stores each executed cell in client.nb: let it store the released ones apart
    client.nb = copy.deepcopy(released)
    try:
        cells = list(enumerate(client.nb.cells))
        client.nb.cells.append(nbformat.v4.new_code_cell("%reset -f"))
        await client.async_execute_cell(client.nb.cells[-1], len(client.nb.cells) - 1)
        stdout, errors = "", []
        for index, cell in cells:
            if cell.cell_type != "code" or is_colab_cell(cell):
                continue
            cell = await client.async_execute_cell(cell, index)
            for out in cell.outputs:
                if out.get("output_type") == "stream" and out.get("name") == "stdout":
                    stdout += out.get("text", "")
                elif out.get("output_type") == "error":
                    errors.append(f"cell {index} (id {cell.get('id')}): {out.get('ename')}: {out.get('evalue')}")
    finally:
        client.nb = solution
    return {"stdout": stdout, "errors": errors}


@pytest.mark.notebook_rerun
@pytest.mark.timeout(1800)  # measured: at most 90 s per notebook on 2 loaded cores
@pytest.mark.parametrize("path", _params("rerun"))
def test_every_cell_can_be_run_again(path, tmp_path, fast_site_out):
    from course_grader.execution import kernel_env, run_coroutine
    from docs.site.build import record_execution

    nb = nbformat.read(path, as_version=4)
    released = nbformat.read(markers.release([path], tmp_path / "released")[0], as_version=4)
    # a student's kernel: PyTorch's own thread count, not the grading kernel's one thread (also 7 % quicker
    # for the six notebooks on 2 cores: 147 / 160 s against 164 / 168 s, runs alternated)
    env = {k: v for k, v in kernel_env(tmp_path, fast=True).items() if k != "OMP_NUM_THREADS"}
    result, first_pass = run_coroutine(lambda: _rerun_notebook(
        nb, REPO / "notebooks", env, tmp_path / "kernel.log", released))
    print(f"{path.name}: first run {result['seconds']['first']:.0f} s, re-runs {result['seconds']['rerun']:.0f} s, "
          f"released version {result['seconds']['released']:.0f} s")
    (tmp_path / "outputs.json").write_text(json.dumps(result, indent=1, ensure_ascii=False), encoding="utf-8")
    errors = [f"cell {index}: {error}" for index, error in result["first_errors"].items()]
    assert not errors, f"{path.name}: the first run failed:\n  " + "\n  ".join(errors)
    # the first pass is a complete fast-mode execution: the fast site (built after these tests, see
    # tests/conftest.py) shows it instead of executing the notebook a second time
    record_execution(path, first_pass, "fast", fast_site_out)
    # Run All never stops in the student version: each exercise says "not solved yet" and the cells
    # after it go on with the course's reference implementation
    assert not result["released"]["errors"], (f"{path.name}, released version with its stubs:\n  "
                                              + "\n  ".join(result["released"]["errors"]))
    exercises = markers.find_exercises(json.loads(path.read_text(encoding="utf-8")))
    for exercise in exercises:
        assert f"✗ {exercise.grade_id}: not solved yet, 0 points" in result["released"]["stdout"], exercise.grade_id
    fallbacks = result["released"]["stdout"].count("the next cells use the course's reference implementation")
    assert fallbacks == len(exercises)
    problems = rerun_problems(nb, result)
    assert not problems, (
        f"{path.name}: output changed when cells were run again (fix the cell, or tag it {RERUN_TAG!r} with a "
        f"'# {RERUN_TAG}: <why>' line; every pass's normalised output is in {tmp_path / 'outputs.json'}):\n  "
        + "\n  ".join(problems))


def rerun_problems(nb, result: dict) -> list[str]:
    """Every cell whose output on a re-run differs from its first run's (opted-out cells excepted)."""
    problems = []
    for stage, label in (("rerun", "re-run"), ("final", "run again after every re-run")):
        for index, text in result[stage].items():
            cell = nb.cells[index]
            if RERUN_TAG in cell.metadata.get("tags", []) or text == result["first"][index]:
                continue
            problems.append(f"cell {index} (id {cell.get('id')}), {label}: "
                            f"{_first_difference(result['first'][index], text)}")
    return problems


def test_the_rerun_harness_on_a_small_notebook(tmp_path):
    """Re-runs go from the last cell to the first: a cell reading a name that a later cell rebinds
    is caught; an opted-out cell is not compared; an error of the first run is reported."""
    from course_grader.execution import kernel_env, run_coroutine

    code = nbformat.v4.new_code_cell
    random_cell = code("# rerun-changes: draws a fresh number on purpose\nimport random\nprint(random.random())")
    random_cell.metadata["tags"] = [RERUN_TAG]
    nb = nbformat.v4.new_notebook(cells=[code("1 / 0"), code("x = 1"), code("print(x)"), code("x = 2"), random_cell])
    result, first_pass = run_coroutine(lambda: _rerun_notebook(nb, tmp_path, kernel_env(tmp_path, fast=True),
                                                               tmp_path / "log"))
    assert result["first_errors"] == {0: "ZeroDivisionError: division by zero"}
    # the executed notebook it hands to the site is the first pass, not a re-run (the random cell differs)
    assert [text_output(c) for c in first_pass.cells] == [result["first"][i] for i in range(5)]
    assert result["rerun"][4] != result["first"][4]
    assert list(result["rerun"]) == [4, 3, 2, 1, 0] and list(result["final"]) == [2, 3, 4]
    problems = rerun_problems(nb, result)
    assert len(problems) == 1 and problems[0].startswith("cell 2 ") and "first run '1', re-run '2'" in problems[0]


def test_normalise_removes_only_volatile_parts():
    first = ("ae-l2: trained in 3.2 s, 450 ms per epoch, model at 0x7f3a2b1c4d50\n"
             "[course_utils] using device: cpu\n 40%|████      | 4/10 [00:01<00:02,  3.10it/s]\n"
             "step 1\rstep 2\nAUROC 0.912 over 10 classes and 3 seeds")
    again = ("ae-l2: loaded from cache in 0.0 s, 12 ms per epoch, model at 0x7f00deadbeef\nstep 2\n"
             "AUROC 0.912 over 10 classes and 3 seeds")
    assert normalise(first) == normalise(again) == (
        "ae-l2: <trained-or-cached> in <time>, <time> per epoch, model at 0x…\nstep 2\n"
        "AUROC 0.912 over 10 classes and 3 seeds")
    assert normalise("AUROC 0.912") != normalise("AUROC 0.913")


def test_normalise_blanks_the_numbers_of_timing_columns_only():
    table = "| method | ms per image | AUROC |\n|---|---:|---|\n| a | {} | 0.91 |\nafter the table: 0.5"
    assert normalise(table.format("0.1")) == normalise(table.format("12.5")) == (
        "| method | ms per image | AUROC |\n|---|---:|---|\n| a | <time> | 0.91 |\nafter the table: 0.5")
    assert normalise(table.replace("0.91", "0.92").format("0.1")) != normalise(table.format("0.1"))


def test_normalise_equates_a_first_training_with_a_cache_load():
    first = "saved checkpoint to /c/m-1.pt\n\ntraining: 3.1 s for 2 epochs\n"
    again = "loaded cached checkpoint /c/m-1.pt\ntraining: 0.2 s for 2 epochs (loaded from the checkpoint cache)"
    assert normalise(first) == normalise(again) == "<checkpoint> /c/m-1.pt\ntraining: <time> for 2 epochs"
