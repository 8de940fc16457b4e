"""Limits and isolation for the kernel that runs a submission.

Every grading kernel is started through this module's launcher (``python -m
course_grader.sandbox ... -- <kernel command>``), named in a kernel spec that
:func:`kernel_spec_dir` writes into the submission's grading folder. The launcher

1. sets resource limits on itself, inherited by the kernel (``resource.setrlimit``):
   address space (memory), CPU seconds, number of processes of the user, size of any file
   written, no core dumps (:class:`Limits`);
2. starts the kernel in one of three isolation modes (docs/teaching.md, "Sandbox modes"):

   - ``bwrap``: a bubblewrap namespace sandbox. The file system is read-only except the
     submission's own grading folder and a private ``/tmp``; the source notebooks, the
     submissions folder, the other submissions' grading folders and the grader's outputs
     are hidden (empty or ``/dev/null``);
   - ``user``: (when the grader runs as root) the kernel runs as the unprivileged user
     ``nobody``, which owns only the grading folder; the process limit then applies;
   - ``none``: limits only. The grader warns once.

``auto`` picks ``bwrap`` when ``bwrap`` works here, else ``user`` when running as root,
else ``none``. Wall time (per cell and per notebook) and output size are enforced by the
grader process (``course_grader.execution``), which the kernel cannot reach.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import warnings
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

__all__ = ["Limits", "MODES", "choose_mode", "bwrap_works", "interpreter_reachable_by_others", "kernel_spec_dir", "KERNEL_NAME", "main"]

MODES = ("auto", "bwrap", "user", "none")
KERNEL_NAME = "course-grading"
NOBODY = 65534


@dataclass(frozen=True)
class Limits:
    """Resource limits of one grading kernel (``None``: no limit)."""

    memory_mb: int | None = 6144      # address space; torch alone maps about 2 GB
    cpu_seconds: int | None = 1800    # CPU time of the kernel process (SIGXCPU, then killed)
    processes: int | None = 512       # processes and threads of the kernel's user (not enforced for root)
    file_mb: int | None = 1024        # largest file the kernel may write
    cell_seconds: int = 60            # wall time of one cell (enforced by the grader)
    notebook_seconds: int = 1800      # wall time of the whole notebook (enforced by the grader)
    output_kb: int = 2048             # cell output kept per notebook (enforced by the grader)


def _apply_limits(limits: Limits) -> None:
    import resource

    def set_limit(kind: int, value: int | None) -> None:
        if value is None:
            return
        soft, hard = resource.getrlimit(kind)
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(kind, (value, value if kind != resource.RLIMIT_CPU else value + 5))

    set_limit(resource.RLIMIT_CORE, 0)
    set_limit(resource.RLIMIT_AS, None if limits.memory_mb is None else limits.memory_mb * 2**20)
    set_limit(resource.RLIMIT_CPU, limits.cpu_seconds)
    set_limit(resource.RLIMIT_NPROC, limits.processes)
    set_limit(resource.RLIMIT_FSIZE, None if limits.file_mb is None else limits.file_mb * 2**20)


def interpreter_reachable_by_others() -> bool:
    """Whether another user ('nobody') can run this Python: every folder above it is passable."""
    path = Path(os.path.realpath(sys.executable))
    return all(p.stat().st_mode & 0o001 for p in path.parents) and bool(path.stat().st_mode & 0o001)


@lru_cache(maxsize=None)
def bwrap_works() -> bool:
    """Whether ``bwrap`` is installed and can build a sandbox here (namespaces allowed)."""
    if shutil.which("bwrap") is None:
        return False
    try:
        run = subprocess.run(["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "true"],
                             capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return run.returncode == 0


_warned: set[str] = set()


def choose_mode(requested: str) -> str:
    """The isolation mode to use for ``requested`` (one of :data:`MODES`).

    ``none`` (asked for, or chosen by ``auto`` because nothing else works here) warns once.

    Raises:
        ValueError: an unknown mode, or one that cannot work on this machine.
    """
    if requested not in MODES:
        raise ValueError(f"unknown sandbox mode {requested!r}; choose one of {', '.join(MODES)}")
    mode = requested
    if requested == "auto":
        mode = ("bwrap" if bwrap_works() else
                "user" if os.geteuid() == 0 and interpreter_reachable_by_others() else "none")
    if mode == "bwrap" and not bwrap_works():
        raise ValueError("--sandbox bwrap: bubblewrap is missing or cannot create namespaces here "
                         "(apt-get install bubblewrap; in a container, allow user namespaces)")
    if mode == "user" and os.geteuid() != 0:
        raise ValueError("--sandbox user needs the grader to run as root (it switches the kernel to 'nobody')")
    if mode == "user" and not interpreter_reachable_by_others():
        raise ValueError(f"--sandbox user: 'nobody' cannot run {os.path.realpath(sys.executable)} (a folder above "
                         "it is private, e.g. /root); install the course's Python where every user can read it")
    if mode == "none" and "none" not in _warned:
        _warned.add("none")
        message = ("grading without isolation: submissions run as your user and can read and write your files "
                   "(install bubblewrap, run as root for --sandbox user, or grade in a container; "
                   "docs/teaching.md, 'Sandbox modes')")
        warnings.warn(message, stacklevel=2)
        print(f"warning: {message}", file=sys.stderr)
    return mode


def kernel_spec_dir(work_dir: Path, *, mode: str, limits: Limits, hide: Sequence[Path]) -> Path:
    """Write a kernel spec :data:`KERNEL_NAME` that starts the kernel through the launcher.

    Returns the folder to give a ``KernelSpecManager`` as ``kernel_dirs``.
    ``work_dir`` is the submission's grading folder (the only writable place in ``bwrap``
    mode); ``hide`` lists files and folders the kernel must not read.
    """
    spec_root = Path(work_dir).parent / f".{Path(work_dir).name}-kernels"
    folder = spec_root / KERNEL_NAME
    folder.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "course_grader.sandbox", "--mode", mode, "--work-dir", str(work_dir),
            "--limits", json.dumps(asdict(limits))]
    for path in hide:
        argv += ["--hide", str(path)]
    argv += ["--", sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    spec = {"argv": argv, "display_name": "course grading sandbox", "language": "python",
            "interrupt_mode": "signal", "metadata": {"debugger": False}}
    (folder / "kernel.json").write_text(json.dumps(spec, indent=1), encoding="utf-8")
    return spec_root


def _bwrap_command(work_dir: Path, hide: Sequence[Path], command: Sequence[str]) -> list[str]:
    """bwrap arguments: read-only root, private /tmp (with the environment and the course mounted
    again, read-only, when they live under /tmp), hidden paths, the grading folder writable, the
    connection file (often in /tmp) visible read-only. Later mounts cover earlier ones, so the
    hidden paths are hidden even inside a course checkout under /tmp."""
    args = ["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
            "--die-with-parent"]
    needed = [Path(sys.prefix).resolve(), Path(__file__).resolve().parents[1]]  # the environment, the course
    for path in needed:
        if Path("/tmp") in path.parents:  # a checkout or environment under /tmp: mount it again, read-only
            args += ["--ro-bind", str(path), str(path)]
    for path in hide:
        path = Path(path).resolve()
        if path == work_dir or any(path == n or path in n.parents for n in needed):
            continue  # hiding it would hide the kernel's own Python or the course package
        if path.is_dir():
            args += ["--tmpfs", str(path)]
        elif path.exists():
            args += ["--ro-bind", "/dev/null", str(path)]
    args += ["--bind", str(work_dir), str(work_dir), "--chdir", str(work_dir)]
    connection = _connection_file(command)
    if connection is not None:
        args += ["--ro-bind", str(connection.resolve()), str(connection.resolve())]
    return args + ["--", *command]


def _connection_file(command: Sequence[str]) -> Path | None:
    for flag, value in zip(command, command[1:]):
        if flag == "-f":
            return Path(value)
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """The launcher: apply limits, then exec the kernel command in the chosen isolation."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        print("usage: python -m course_grader.sandbox [options] -- KERNEL COMMAND", file=sys.stderr)
        return 2
    split = argv.index("--")
    parser = argparse.ArgumentParser(prog="python -m course_grader.sandbox")
    parser.add_argument("--mode", choices=[m for m in MODES if m != "auto"], required=True)
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument("--limits", required=True)
    parser.add_argument("--hide", type=Path, action="append", default=[])
    args = parser.parse_args(argv[:split])
    command = argv[split + 1:]
    limits = Limits(**json.loads(args.limits))
    work_dir = args.work_dir.resolve()
    os.environ["HOME"] = str(work_dir)  # caches (matplotlib, torch) go to the grading folder
    os.environ["MPLCONFIGDIR"] = str(work_dir / ".matplotlib")
    if args.mode == "user":
        connection = _connection_file(command)
        for path in [work_dir, *work_dir.rglob("*")]:
            os.chown(path, NOBODY, NOBODY, follow_symlinks=False)
        for parent in work_dir.parents:  # 'nobody' may pass through (not list) the folders above its own
            mode = parent.stat().st_mode
            if not mode & 0o001:
                os.chmod(parent, mode | 0o001)
        if connection is not None:
            os.chown(connection, NOBODY, NOBODY)
        _apply_limits(limits)
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
    else:
        _apply_limits(limits)
    if args.mode == "bwrap":
        command = _bwrap_command(work_dir, args.hide, command)
        # an interrupt goes to the whole process group: bwrap must survive it (ipykernel installs
        # its own SIGINT handler while it runs a cell, so the kernel still gets KeyboardInterrupt)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.chdir(work_dir)
    os.execvp(command[0], command)
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main())
