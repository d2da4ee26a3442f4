"""Helper processes: a function of this package run by a second Python on the second CPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parent.parent)


def cpus() -> int:
    """The CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def start(module: str, function: str, *args: str) -> subprocess.Popen[bytes] | None:
    """`analysis.<module>.<function>(list(args))` in a new process (no stdin/stdout/stderr), with this process's
    environment (Arrow's pool among it: see analysis/__init__.py); None if none starts.

    The helper imports this very package: its folder goes first on the helper's path (`python -c` would put the
    working folder there, and another `analysis` package in it would be imported instead)."""
    if not sys.executable:
        return None
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, (ROOT, os.environ.get("PYTHONPATH")))))
    code = (f"import sys; sys.path.insert(0, {ROOT!r}); from analysis.{module} import {function}; "
            f"{function}(sys.argv[1:])")
    try:
        return subprocess.Popen([sys.executable, "-c", code, *args], env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except OSError:
        return None


def claim(folder: str, part: int) -> bool:
    """Take a part of shared work for this process; False when another process took it first."""
    try:
        os.close(os.open(os.path.join(folder, f"claim-{part}"), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def finish(proc: subprocess.Popen[bytes] | None, timeout_s: float) -> None:
    """Wait for a helper up to timeout_s; one that takes longer is killed (its parts are then done here)."""
    if proc is None:
        return
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
