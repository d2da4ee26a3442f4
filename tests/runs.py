"""Helpers for tests that run `ttbench run` and read its run folder."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent


def ttbench(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    """Run the ttbench command line in a subprocess."""
    return subprocess.run([sys.executable, "-m", "ttbench", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)


def ttbench_together(*runs: Any, timeout: float = 180,
                     envs: list[dict[str, str] | None] | None = None) -> list[subprocess.CompletedProcess]:
    """Several `ttbench` command lines at once (light runs whose figures do not depend on a quiet machine), each
    with its own environment if given."""
    envs = envs or [None] * len(runs)
    procs = [subprocess.Popen([sys.executable, "-m", "ttbench", *args], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
             for args, env in zip(runs, envs, strict=True)]
    out = []
    for args, p in zip(runs, procs, strict=True):
        stdout, stderr = p.communicate(timeout=timeout)
        out.append(subprocess.CompletedProcess([sys.executable, "-m", "ttbench", *args], p.returncode, stdout, stderr))
    return out


def write_scenario(path: Path, data: dict[str, Any]) -> Path:
    """Write a scenario YAML."""
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def records(run_dir: Path) -> list[dict[str, Any]]:
    """The run's attempt records."""
    return [json.loads(line) for line in (run_dir / "records.jsonl").read_text().splitlines() if line]


def jsonl(path: Path) -> list[dict[str, Any]]:
    """A JSON Lines file."""
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def locust_rows(run_dir: Path) -> list[dict[str, str]]:
    """Locust's final stats CSV rows."""
    with open(run_dir / "locust_stats.csv", newline="") as f:
        return list(csv.DictReader(f))


GATEWAY = ROOT / "locustfiles" / "gateway.py"


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_master_and_workers(scenario: Path, out: Path, target: str, key: str, users: int, run_id: str,
                             workers: int = 2) -> tuple[subprocess.Popen, list[subprocess.Popen]]:
    """A headless Locust master and its workers as separate processes on 127.0.0.1, as on separate hosts."""
    import os

    port = free_port()
    env = dict(os.environ, TT_API_KEY=key)
    common = ["-f", str(GATEWAY), "--scenario", str(scenario)]
    master = subprocess.Popen([sys.executable, "-m", "locust", *common, "--master", "--master-bind-host",
                               "127.0.0.1", "--master-bind-port", str(port), "--headless", "--expect-workers",
                               str(workers), "--enable-rebalancing", "-u", str(users), "-r", str(users), "-H",
                               target, "--ttbench-out",
                               str(out), "--run-id", run_id, "--only-summary"], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    procs = [subprocess.Popen([sys.executable, "-m", "locust", *common, "--worker", "--master-host", "127.0.0.1",
                               "--master-port", str(port)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(workers)]
    master.master_port = port  # type: ignore[attr-defined]  # for a worker that joins later
    return master, procs
