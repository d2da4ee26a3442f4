"""Shared fixtures: the simulator as a real HTTP server in its own process on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ttbench.simproc import SimProcess

#: Fast timings so that tests spend little time waiting on the model clock.
FAST: dict[str, Any] = {
    "defaults": {
        "chat": {"base_ms": 5, "ttft_jitter_ms": 2, "decode_tokens_per_s": 2000,
                 "output_tokens": {"min": 8, "max": 24}},
        "embedding": {"base_ms": 2, "ttft_jitter_ms": 1},
        "image": {"base_ms": 5, "per_image_ms": 5, "ttft_jitter_ms": 1},
    },
}


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Merge two nested mappings; `over` wins."""
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def write_config(path: Path, over: dict[str, Any] | None = None, fast: bool = True) -> Path:
    """Write a simulator config (fast timings merged with `over`) and return its path."""
    data = deep_merge(FAST if fast else {}, over or {})
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="session")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProcess]:
    """One fast simulator shared by the tests that plant nothing."""
    cfg = write_config(tmp_path_factory.mktemp("sim") / "fast.yaml")
    with SimProcess(config=cfg, seed=7) as proc:
        yield proc


@pytest.fixture
def make_sim(tmp_path: Path) -> Iterator[Callable[..., SimProcess]]:
    """Start a simulator with a config of the test's own; stopped at teardown."""
    started: list[SimProcess] = []

    def start(over: dict[str, Any] | None = None, fast: bool = True, seed: int = 0, **kw: Any) -> SimProcess:
        cfg = write_config(tmp_path / f"sim{len(started)}.yaml", over, fast)
        proc = SimProcess(config=cfg, seed=seed, **kw)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()
