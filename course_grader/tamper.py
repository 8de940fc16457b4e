"""Static scan of a submission's own cells for code that changes the grading environment.

Run in the grader's process on the cell *texts* (``ast``; nothing is executed). Only cells
that the student wrote or changed are scanned: a cell identical to the released or solution
version is the course's own code. What counts as tampering (each finding names the cell):

- IPython's machinery: ``get_ipython()`` (except the magics in :data:`ALLOWED_MAGICS`),
  input / AST transformers, ``set_custom_exc``, events, ``sys.excepthook`` / display hooks,
  shell commands (``!cmd``);
- ending or signalling the process: ``sys.exit``, ``os._exit``, ``exit()``, ``quit()``,
  ``os.kill``, ``os.abort``, ``signal``, ``atexit``;
- code this scan cannot see: ``exec``, ``eval``, ``compile``, ``__import__``, ``importlib``,
  ``ctypes``, ``sys.modules``, frames (``sys._getframe``, ``inspect``), ``builtins``;
- rebinding or deleting a name the check cells use (``checks``, ...), assigning to an
  attribute of ``course_utils`` / ``course_grader`` / ``checks``, ``setattr`` / ``delattr``
  on them, writing ``globals()`` / ``vars()`` by key, importing ``course_grader``.

An exercise whose answer is evaluated at or after a tampering cell gets 0 points
(``course_grader.verdict``). Printing text, endless loops and exceptions are not tampering:
they cannot change a verdict that is computed outside the kernel.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Iterable

__all__ = ["Finding", "scan_cell", "names_used", "ALLOWED_MAGICS"]

ALLOWED_MAGICS = frozenset({"matplotlib", "time", "timeit", "who", "whos"})
_IPYTHON_ATTRIBUTES = frozenset({
    "input_transformers_cleanup", "input_transformers_post", "input_transformer_manager", "ast_transformers",
    "set_custom_exc", "custom_exceptions", "showtraceback", "_showtraceback", "showsyntaxerror", "events",
    "register_magic_function", "run_cell", "run_cell_async", "user_expressions", "ev", "ex", "excepthook",
    "displayhook", "display_pub", "kernel", "shell", "InteractiveShell", "settrace", "setprofile",
    "_getframe", "meta_path", "path_hooks", "run_line_magic", "run_cell_magic", "f_globals", "f_locals",
    "f_back", "__globals__", "__code__", "__subclasses__",
})
_SYS_ATTRIBUTES = frozenset({"exit", "modules", "settrace", "setprofile", "excepthook", "displayhook",
                             "_getframe", "meta_path", "path_hooks", "addaudithook"})
_OS_ATTRIBUTES = frozenset({"_exit", "kill", "killpg", "abort", "fork", "forkpty", "system", "popen",
                            "execv", "execve", "execvp", "execvpe", "execl", "execle", "execlp", "execlpe",
                            "spawnv", "spawnve", "spawnvp", "spawnl", "setuid", "chroot", "chdir"})
_FORBIDDEN_CALLS = frozenset({"exec", "eval", "compile", "__import__", "exit", "quit", "setattr", "delattr",
                              "get_ipython", "breakpoint"})
_FORBIDDEN_MODULES = frozenset({"IPython", "ipykernel", "course_grader", "builtins", "ctypes", "importlib",
                                "inspect", "signal", "atexit", "subprocess", "gc", "sys.monitoring", "pty",
                                "multiprocessing", "threading", "_thread", "code", "codeop", "runpy"})
_ALLOWED_MODULES = frozenset({"IPython.display"})
_GRADER_ROOTS = frozenset({"course_utils", "course_grader", "checks"})


@dataclass(frozen=True)
class Finding:
    """One piece of tampering: the notebook cell (0-based index) and what it does."""

    cell: int
    what: str

    def describe(self) -> str:
        return f"cell {self.cell + 1} {self.what}"


def _python_source(source: str) -> str:
    """The cell as plain Python: IPython's magics (``%x``, ``!x``) become ``get_ipython()`` calls."""
    from IPython.core.inputtransformer2 import TransformerManager

    return TransformerManager().transform_cell(source)


def names_used(sources: Iterable[str]) -> set[str]:
    """Every name the given (locked) cells read or write: they must not be rebound elsewhere."""
    names: set[str] = set()
    for source in sources:
        try:
            tree = ast.parse(_python_source(source))
        except SyntaxError:
            continue
        names |= {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    return names


def _root(node: ast.AST) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def _dotted(node: ast.AST) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    elif parts:
        parts.append("(...)")  # a method of a computed object: `model.eval()` is not the builtin eval
    return ".".join(reversed(parts))


def _magic_name(call: ast.Call) -> str | None:
    """``get_ipython().run_line_magic('matplotlib', ...)`` -> ``matplotlib``."""
    func = call.func
    if (isinstance(func, ast.Attribute) and func.attr in ("run_line_magic", "run_cell_magic")
            and isinstance(func.value, ast.Call) and _dotted(func.value.func) == "get_ipython"
            and call.args and isinstance(call.args[0], ast.Constant) and isinstance(call.args[0].value, str)):
        return call.args[0].value
    return None


def scan_cell(index: int, source: str, protected: set[str]) -> list[Finding]:
    """Findings for one cell; ``protected`` are the names the locked cells use."""
    try:
        tree = ast.parse(_python_source(source))
    except SyntaxError:
        return []  # it will fail when run; a syntax error changes nothing
    findings: list[str] = []
    aliases: dict[str, str] = {}  # local name -> module it stands for
    allowed_calls: set[int] = set()

    def bind(name: str, how: str) -> None:
        if name in protected:
            findings.append(f"{how} `{name}`, a name the check cells use")
        elif name in _GRADER_ROOTS:
            findings.append(f"{how} `{name}`")

    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            magic = _magic_name(node)
            if magic is not None:
                if magic in ALLOWED_MAGICS:
                    allowed_calls |= {id(node.func.value), id(node.func)}
                else:
                    findings.append(f"runs the IPython magic or shell command `%{magic}`")
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for alias in node.names:
                target = alias.asname or alias.name.split(".")[0]
                module = alias.name if isinstance(node, ast.Import) else f"{node.module}.{alias.name}"
                aliases[target] = module
                if not (module.split(".")[0] == "course_utils" and module.rsplit(".", 1)[-1] == target.split(".")[0]
                        or module == target == "course_utils"):
                    bind(target, "rebinds (import)")  # re-importing the course's own module is harmless
            for module in modules:
                top = module.split(".")[0]
                if module not in _ALLOWED_MODULES and (module in _FORBIDDEN_MODULES or top in _FORBIDDEN_MODULES):
                    findings.append(f"imports `{module}`")
            if isinstance(node, ast.ImportFrom) and node.module in ("sys", "os"):
                for alias in node.names:
                    if alias.name in _SYS_ATTRIBUTES | _OS_ATTRIBUTES:
                        findings.append(f"imports `{node.module}.{alias.name}`")
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            last = name.rsplit(".", 1)[-1]
            if name in _FORBIDDEN_CALLS and id(node) not in allowed_calls:
                findings.append(f"calls `{name}()`")
            elif last in ("update", "__setitem__", "pop", "setdefault", "__delitem__") and \
                    isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Call) and \
                    _dotted(node.func.value.func) in ("globals", "vars", "locals"):
                findings.append(f"writes `{_dotted(node.func.value.func)}()` by key")
        elif isinstance(node, ast.Attribute):
            base = _dotted(node.value)
            module = aliases.get(base, base)
            store = isinstance(node.ctx, (ast.Store, ast.Del))
            if node.attr in _IPYTHON_ATTRIBUTES and id(node) not in allowed_calls:
                findings.append(f"uses `{base or '...'}.{node.attr}` (the kernel's machinery)")
            elif module == "sys" and (node.attr in _SYS_ATTRIBUTES or store):
                findings.append(f"uses `sys.{node.attr}`")
            elif module == "os" and node.attr in _OS_ATTRIBUTES:
                findings.append(f"uses `os.{node.attr}`")
            if store:
                root = _root(node) or ""
                if root in protected or root in _GRADER_ROOTS or \
                        aliases.get(root, "").split(".")[0] in ("course_utils", "course_grader", "builtins"):
                    findings.append(f"changes `{_dotted(node) or node.attr}`")
        elif isinstance(node, ast.Name):
            if node.id in ("__builtins__", "__IPYTHON__", "_ih", "In", "Out"):
                findings.append(f"uses `{node.id}`")
            if isinstance(node.ctx, (ast.Store, ast.Del)):
                bind(node.id, "deletes" if isinstance(node.ctx, ast.Del) else "rebinds")
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bind(node.name, "rebinds (def)")
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            for name in node.names:
                bind(name, "declares global")
        elif isinstance(node, ast.Subscript) and isinstance(node.ctx, (ast.Store, ast.Del)):
            if isinstance(node.value, ast.Call) and _dotted(node.value.func) in ("globals", "vars", "locals"):
                findings.append(f"writes `{_dotted(node.value.func)}()` by key")
    unique = list(dict.fromkeys(findings))
    return [Finding(index, what) for what in unique]
