"""Running a submission: a sandboxed Jupyter kernel, cell by cell, with probes after answer cells.

The grader's process drives the kernel (nbclient) and never runs student code itself.
After an exercise's answer cell, :func:`execute` asks the kernel to run
``course_grader.probe.run`` on freshly written cases (through ``user_expressions``, which
IPython evaluates without input or AST transformers) and reads the probe's JSON answer
before any later cell runs. Limits enforced here, out of the kernel's reach: wall time per
cell (interrupt, then shut down), wall time per notebook, and the size of the cell outputs
kept. The kernel's own limits and isolation come from ``course_grader.sandbox``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .sandbox import KERNEL_NAME, Limits, kernel_spec_dir

__all__ = ["CellRun", "Execution", "Probe", "execute", "run_coroutine", "kernel_env", "error_message"]

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_MAX_MESSAGE = 2000
_MAX_PROBE_BYTES = 50 * 2**20


@dataclass
class CellRun:
    """How one cell ran."""

    ok: bool
    message: str = ""


@dataclass
class Probe:
    """Evaluate exercise ``grade_id`` right after cell ``after_cell``: cases in, records out."""

    grade_id: str
    after_cell: int
    cases: Callable[[], str]  # JSON text of the cases, made when the probe runs
    n_cases: int
    records: list[dict] | None = None  # the probe's records, or None when it could not run
    problem: str = ""  # why some records are missing


@dataclass
class Execution:
    """The run of one notebook: per-cell results, probes, and whether it stopped early."""

    runs: dict[int, CellRun] = field(default_factory=dict)
    status: str = "graded"
    stopped: str = ""  # why the remaining cells were not run
    output_truncated: bool = False


def error_message(ename: Any, evalue: Any, traceback: Any) -> str:
    """The error name and the last line of the traceback (ANSI colours removed, length bounded)."""
    ename = str(ename or "Error")
    evalue = _ANSI.sub("", str(evalue or "")).strip()
    text = _ANSI.sub("", "\n".join(map(str, traceback or [])))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    message = lines[-1] if lines else (f"{ename}: {evalue}" if evalue else ename)
    if not message.startswith(ename):
        message = f"{ename}: {message}"
    message = message.rstrip(":")  # `raise NotImplementedError()` has an empty message
    return message if len(message) <= _MAX_MESSAGE else message[:_MAX_MESSAGE] + " [...]"


def _cell_run(cell: Any, reply: dict | None) -> CellRun:
    content = (reply or {}).get("content", {})
    errors = [output for output in cell.get("outputs", []) if output.get("output_type") == "error"]
    if content.get("status", "ok") == "ok" and not errors:
        return CellRun(True)
    error = content if content.get("status") == "error" and content.get("ename") else (errors[-1] if errors else {})
    if not error:
        return CellRun(False, f"the cell did not finish normally (status {content.get('status')!r})")
    return CellRun(False, error_message(error.get("ename"), error.get("evalue"), error.get("traceback")))


def _client_class() -> type:
    from nbclient import NotebookClient

    class BoundedClient(NotebookClient):
        """A NotebookClient that keeps at most ``output_limit`` bytes of cell output per notebook."""

        output_limit = 2 * 2**20
        output_bytes = 0
        truncated = False

        def output(self, outs: list, msg: dict, display_id: str | None, cell_index: int) -> Any:
            size = len(json.dumps(msg.get("content", {}), default=str))
            self.output_bytes += size
            if self.output_bytes > self.output_limit:
                if not self.truncated:
                    self.truncated = True
                    import nbformat

                    outs.append(nbformat.v4.new_output("stream", name="stderr", text=(
                        f"[grader: output beyond {self.output_limit // 1024} kB per notebook is not kept]\n")))
                return None
            return super().output(outs, msg, display_id, cell_index)

    return BoundedClient


async def _reply(client: Any, msg_id: str, seconds: float) -> dict | None:
    """The shell reply to ``msg_id`` within ``seconds``, else None."""
    from queue import Empty

    from nbclient.util import ensure_async

    deadline = time.monotonic() + seconds
    try:
        while (remaining := deadline - time.monotonic()) > 0:
            msg = await ensure_async(client.kc.shell_channel.get_msg(timeout=remaining))
            if msg.get("parent_header", {}).get("msg_id") == msg_id:
                return msg
    except (Empty, RuntimeError, OSError):
        pass
    return None


async def _kernel_responds(client: Any, grace: float) -> bool:
    """After an interrupt: does the kernel answer a trivial request within ``grace`` seconds?"""
    try:
        msg_id = client.kc.execute("pass", silent=True, store_history=False, stop_on_error=False)
    except (RuntimeError, OSError):
        return False
    return await _reply(client, msg_id, grace) is not None


async def _interrupt_or_kill(client: Any, grace: float) -> bool:
    """Interrupt the kernel; True when it answers again, else it is shut down (False)."""
    from nbclient.util import ensure_async

    await ensure_async(client.km.interrupt_kernel())
    if await _kernel_responds(client, grace):
        return True
    await ensure_async(client.km.shutdown_kernel(now=True))
    return False


async def _run_cell(client: Any, cell: Any, index: int, timeout: int, replies: dict[int, dict]
                    ) -> tuple[CellRun, tuple[str, str] | None]:
    """Run one cell. Returns how it went and, when the notebook cannot go on, (status, why)."""
    import nbformat
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from nbclient.util import ensure_async

    try:
        await client.async_execute_cell(cell, index, execution_count=client.code_cells_executed + 1)
    except DeadKernelError:
        if await ensure_async(client.km.is_alive()):  # nbclient reports a cancelled wait (Ctrl-C) this way
            raise asyncio.CancelledError() from None
        return (CellRun(False, "DeadKernelError: the kernel died while running this cell (the Python process "
                               "exited or crashed: os._exit(), a segfault, or a resource limit)"),
                ("kernel died", "the kernel died"))
    except CellTimeoutError:
        message = f"TimeoutError: the cell was still running after {timeout} s"
        cell.outputs.append(nbformat.v4.new_output("error", ename="TimeoutError", evalue=message, traceback=[message]))
        if await _interrupt_or_kill(client, grace=max(2.0, min(float(timeout), 10.0))):
            return CellRun(False, message + " and was interrupted"), None
        return (CellRun(False, message + "; it ignored the interrupt, so the kernel was shut down"),
                ("timeout: kernel killed", "a cell never finished and the kernel was shut down"))
    return _cell_run(cell, replies.get(index)), None


def _read_records(path: Path) -> list[dict]:
    from .contract import decode

    if not path.is_file():
        return []
    if path.stat().st_size > _MAX_PROBE_BYTES:
        raise ValueError(f"the probe's answer is larger than {_MAX_PROBE_BYTES // 2**20} MB")
    records = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise ValueError("the probe's answer is not a list of records")
    return [{**r, "output": decode(r["output"])} if "output" in r else r for r in records]


async def _run_probe(client: Any, probe: Probe, folder: Path, timeout: int) -> tuple[str, str] | None:
    """Run one probe in the kernel; fill ``probe.records``. Returns (status, why) if the kernel is gone."""
    folder.mkdir(exist_ok=True)
    cases_path, out_path = folder / f"{probe.grade_id}.cases.json", folder / f"{probe.grade_id}.out.json"
    out_path.unlink(missing_ok=True)
    cases_path.write_text(probe.cases(), encoding="utf-8")
    if os.geteuid() == 0:  # a kernel running as 'nobody' must be able to write its answer
        os.chmod(folder, 0o777)
        os.chmod(cases_path, 0o644)
    expression = (f"__import__('course_grader.probe', fromlist=['run']).run(globals(), {probe.grade_id!r}, "
                  f"{str(cases_path)!r}, {str(out_path)!r}, {float(timeout)!r})")
    stop = None
    try:
        msg_id = client.kc.execute("", silent=True, store_history=False, stop_on_error=False,
                                   user_expressions={"probe": expression})
        reply = await _reply(client, msg_id, timeout * probe.n_cases + 10.0)
    except (RuntimeError, OSError) as error:
        reply, probe.problem = None, f"the kernel could not be asked ({type(error).__name__})"
    if reply is None:
        probe.problem = probe.problem or "the evaluation of your answer did not finish"
        if not await _interrupt_or_kill(client, grace=10.0):
            stop = ("timeout: kernel killed", "the evaluation of an answer never finished")
    else:
        result = reply.get("content", {}).get("user_expressions", {}).get("probe", {})
        if result.get("status") != "ok":
            probe.problem = f"the evaluation failed: {result.get('ename', 'no result')}: {result.get('evalue', '')}"
    try:
        probe.records = _read_records(out_path)
    except (ValueError, OSError) as error:
        probe.records, probe.problem = [], f"the evaluation's answer could not be read ({error})"
    return stop


async def execute(notebook: Any, cwd: Path, *, limits: Limits, env: dict, mode: str, hide: list[Path],
                  probes: list[Probe], kernel_name: str | None = None) -> Execution:
    """Run every code cell in a new sandboxed kernel (cwd ``cwd``), going on after errors.

    A cell that runs past ``limits.cell_seconds`` is interrupted (KeyboardInterrupt in the
    kernel) and recorded as failed; the next cells then run in the same kernel. A kernel
    that ignores the interrupt is shut down and, like a kernel that died or a notebook past
    ``limits.notebook_seconds``, leaves the remaining cells unrun. ``kernel_name`` replaces
    the sandbox kernel by an installed one (tests of the grader's error handling only).
    The kernel process's own output goes to ``cwd/kernel.log``.
    """
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager

    replies: dict[int, dict] = {}

    def on_cell_executed(cell: Any, cell_index: int, execute_reply: dict) -> None:
        replies[cell_index] = execute_reply

    client = _client_class()(notebook, timeout=limits.cell_seconds, kernel_name=kernel_name or KERNEL_NAME,
                             allow_errors=True, interrupt_on_timeout=False, record_timing=False,
                             shutdown_kernel="immediate", resources={"metadata": {"path": str(cwd)}},
                             on_cell_executed=on_cell_executed)
    client.output_limit = limits.output_kb * 1024
    result = Execution()
    by_cell = {probe.after_cell: probe for probe in probes}
    started = time.monotonic()
    with open(cwd / "kernel.log", "wb") as log:
        if kernel_name is None:
            specs = KernelSpecManager(kernel_dirs=[str(kernel_spec_dir(cwd, mode=mode, limits=limits, hide=hide))])
            client.km = AsyncKernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=specs)
        else:
            client.km = client.create_kernel_manager()
        try:
            await client.async_start_new_kernel(env=env, stdout=log, stderr=log, cwd=str(cwd))
            await client.async_start_new_kernel_client()
        except Exception as error:
            await _shutdown(client)
            result.status = "grader error"
            result.stopped = f"the grader could not start a kernel ({type(error).__name__}: {error})"
            return result
        try:
            for index, cell in enumerate(notebook.cells):
                if time.monotonic() - started > limits.notebook_seconds:
                    await _shutdown(client)
                    result.status = "timeout: notebook"
                    result.stopped = f"the notebook ran longer than {limits.notebook_seconds} s"
                    break
                if cell.cell_type != "code":
                    continue
                result.runs[index], stop = await _run_cell(client, cell, index, limits.cell_seconds, replies)
                if stop is None and index in by_cell:
                    stop = await _run_probe(client, by_cell[index], cwd / ".grading", limits.cell_seconds)
                if stop:
                    result.status, result.stopped = stop
                    break
        except Exception as error:  # anything else that broke the connection to the kernel
            result.status = "kernel died"
            result.stopped = f"the kernel failed ({type(error).__name__}: {error})"
        finally:
            result.output_truncated = client.truncated
            await _shutdown(client)
    return result


async def _shutdown(client: Any) -> None:
    """Stop the kernel now and release its ports and files; never raises."""
    from nbclient.util import ensure_async

    try:
        if client.kc is not None:
            await ensure_async(client.kc.stop_channels())
        if client.km is not None and client.km.has_kernel:
            await ensure_async(client.km.shutdown_kernel(now=True))
    except Exception:  # already gone
        pass
    finally:
        client.kc = None


def run_coroutine(factory: Any) -> Any:
    """Run a coroutine to completion, also when called from a running event loop (a notebook)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


def kernel_env(work_dir: Path, *, fast: bool = True) -> dict[str, str]:
    """The environment of a grading kernel: the grader's own, in fast mode by default, with a
    checkpoint cache of its own (no submission loads a model another one trained), one thread."""
    env = dict(os.environ)
    if fast:
        env["COURSE_FAST"] = "1"
    else:
        env.pop("COURSE_FAST", None)
    env["COURSE_CACHE_DIR"] = str(Path(work_dir) / ".course-cache")
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env
