"""What the benchmark scripts share: argument checks, CPU pinning and sampling, child servers, the sampled run.

The servers (the simulator, a script's own canned server) run as `ttbench.simproc.ServerProcess` children, pinned
to SERVER_CPU; Locust runs pinned to LOCUST_CPU. psutil and ttbench.simproc are imported by the functions that use
them, so a script that takes only the argument checks (analysis_speed.py's timed child) loads nothing more.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import psutil

    from ttbench.simproc import ServerProcess, SimProcess

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SERVER_CPU = 0  # the server under load (simulator or canned server)
LOCUST_CPU = 1  # the load generator
QUIET_PCT = 15.0  # a core under this busy counts as idle before a run

S = TypeVar("S", bound="ServerProcess")


# ---------------------------------------------------------------------------------------------------------------
# argument checks


def _number(kind: type, ok: Callable[[Any], bool], words: str) -> Callable[[str], Any]:
    """An argparse type: `kind` of the text, when `ok`; else a one-line error naming what was expected."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or not ok(value):
            raise argparse.ArgumentTypeError(f"expected {words}, got {text!r}")
        return value

    return parse


positive_int = _number(int, lambda v: v >= 1, "a whole number of at least 1")
non_negative_int = _number(int, lambda v: v >= 0, "a whole number of at least 0")
positive_float = _number(float, lambda v: v > 0, "a number above 0")
non_negative_float = _number(float, lambda v: v >= 0, "a number of at least 0")


def check_run_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The checks of a timed Locust run: --duration leaves a steady window after --warmup; with fewer than
    2 CPUs there is no pinning (sets args.no_pin)."""
    if args.duration < args.warmup + 3:
        parser.error("--duration must be at least --warmup + 3")
    if not args.no_pin and (os.cpu_count() or 1) < 2:
        print("fewer than 2 CPUs: not pinning", file=sys.stderr)
        args.no_pin = True


# ---------------------------------------------------------------------------------------------------------------
# CPU: pinning and sampling


def pin(pid: int, cpu: int) -> bool:
    """Pin every thread of a running process to one CPU (os.sched_setaffinity); True when it worked."""
    if not hasattr(os, "sched_setaffinity"):
        return False
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return False
    pinned = False
    for tid in tids:
        try:
            os.sched_setaffinity(int(tid), {cpu})
        except ProcessLookupError:  # a thread that ended meanwhile
            continue
        except OSError:
            return False
        pinned = True
    return pinned


def pinning(cpu: int | None) -> Callable[[], None] | None:
    """A Popen preexec_fn that pins the child to `cpu` before it starts (None: no pinning)."""
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


def cpu_seconds(proc: psutil.Process) -> float:
    """User plus system CPU seconds of a process (all its threads)."""
    t = proc.cpu_times()
    return t.user + t.system


def busy_seconds(cpu: int | None = None) -> float:
    """Seconds one CPU (None: all of them together) has not been idle since boot (every process, interrupts and
    steal included)."""
    import psutil

    t = psutil.cpu_times() if cpu is None else psutil.cpu_times(percpu=True)[cpu]
    return sum(t) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)


def wait_for_quiet(cpus: tuple[int, ...], limit_s: float) -> float:
    """Wait up to limit_s for a second in which every given CPU is under QUIET_PCT busy; return the busiest % seen
    last."""
    deadline = time.monotonic() + limit_s
    while True:
        before = [busy_seconds(c) for c in cpus]
        time.sleep(1.0)
        busiest = max(100 * (busy_seconds(c) - b) for c, b in zip(cpus, before, strict=True))
        if busiest < QUIET_PCT or time.monotonic() >= deadline:
            return busiest


def settle(cpus: tuple[int, ...], limit_s: float) -> None:
    """Before a run: wait up to limit_s (0: not at all) for idle cores, and say so when they stay busy."""
    if limit_s > 0:
        busiest = wait_for_quiet(cpus, limit_s)
        if busiest >= QUIET_PCT:
            print(f"the machine is busy ({busiest:.0f}% on a core): measuring anyway", file=sys.stderr)


def sleep_to_next_second() -> int:
    """Sleep until just after the next whole wall-clock second; return that second."""
    now = time.time()
    target = math.floor(now) + 1
    time.sleep(target - now + 0.002)
    return target


# ---------------------------------------------------------------------------------------------------------------
# child servers and the sampled Locust run


def pinned(server: S, cpu: int | None, notes: list[str]) -> S:
    """A child server just started (a ttbench.simproc.ServerProcess), pinned to `cpu` (None: left alone); a note
    when pinning failed."""
    if cpu is not None and not pin(server.proc.pid, cpu):
        notes.append(f"could not pin {server.what}")
    return server


def start_sim(config: Path, cpu: int | None, notes: list[str]) -> SimProcess:
    """A fresh simulator (seed 0) on a config file, pinned to `cpu` (None: left alone)."""
    from ttbench.simproc import SimProcess

    return pinned(SimProcess(config=config, seed=0), cpu, notes)


def run_sampled(cmd: list[str], env: dict[str, str], cwd: Path, cpu: int | None, log_path: Path, timeout_s: float,
                sample: Callable[[int, psutil.Process], Any]) -> tuple[list[Any], str, bool]:
    """Run Locust (pinned to `cpu`, None: not pinned), calling `sample(second, process)` at every whole second
    until it exits.

    Returns the samples, its output, and whether it had to be killed after `timeout_s`.
    """
    import psutil

    samples: list[Any] = []
    killed = False
    with open(log_path, "wb") as log:
        locust = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                  preexec_fn=pinning(cpu))
        try:
            proc = psutil.Process(locust.pid)
            deadline = time.monotonic() + timeout_s
            while locust.poll() is None and time.monotonic() < deadline:
                second = sleep_to_next_second()
                try:
                    samples.append(sample(second, proc))
                except psutil.NoSuchProcess:
                    break
            killed = locust.poll() is None
        finally:
            if locust.poll() is None:
                locust.kill()
            locust.wait()
    return samples, log_path.read_text(errors="replace"), killed
