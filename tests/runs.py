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
