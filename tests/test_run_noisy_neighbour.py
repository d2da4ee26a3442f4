"""The shipped `noisy-neighbour` scenario: one tenant's bursts raise the other's TTFT when the model's slots are
shared, and do not when each tenant has its own. Two real runs against the simulator, each under a minute."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from .runs import ROOT, records, ttbench

pytestmark = pytest.mark.timeout(120)

SCENARIO = ROOT / "scenarios" / "noisy-neighbour.yaml"


def _run(tmp: Path, slots: str) -> tuple[dict, object, Path]:
    data = yaml.safe_load(SCENARIO.read_text())
    assert data["sim"]["config"]["limits"]["slots"] == "shared"  # the shipped default
    data["sim"]["config"]["limits"]["slots"] = slots
    path = tmp / f"nn-{slots}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    out = tmp / slots
    res = ttbench("run", str(path), "--out", str(out), timeout=110)
    return json.loads((out / "summary.json").read_text()), res, out


def test_shared_slots_let_the_burst_slow_the_steady_tenant(tmp_path):
    summary, res, out = _run(tmp_path, "shared")
    iso = summary["isolation"]
    assert iso["during"]["n"] >= 20 and iso["outside"]["n"] >= 20
    assert iso["ci"][0] >= 1.5, iso
    gate = next(g for g in summary["gates"] if g["gate"] == "isolation_ttft_p95_ratio")
    assert not gate["ok"] and res.returncode == 1, res.stderr[-2000:]
    assert {r["tenant"] for r in records(out)} == {"steady", "burst"}
    assert set(summary["tenants"]) == {"steady", "burst"}


def test_partitioned_slots_keep_the_steady_tenant_isolated(tmp_path):
    summary, res, _out = _run(tmp_path, "partitioned")
    iso = summary["isolation"]
    assert iso["during"]["n"] >= 20 and iso["outside"]["n"] >= 20
    assert iso["ci"][0] <= 1.0 <= iso["ci"][1], iso
    assert res.returncode == 0, res.stderr[-2000:]
