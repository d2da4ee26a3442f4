"""The shipped `noisy-neighbour` scenario: one tenant's bursts raise the other's TTFT when the model's slots are
shared, and do not when each tenant has its own. Two real runs against the simulator at once, under a minute."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from .runs import ROOT, records, ttbench_together

pytestmark = [pytest.mark.timeout(120), pytest.mark.serial]  # timing under load: runs alone (make test)

SCENARIO = ROOT / "scenarios" / "noisy-neighbour.yaml"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[dict, object, Path]]:
    """The shipped scenario as it is (shared slots) and with partitioned slots, both at once."""
    tmp = tmp_path_factory.mktemp("noisy")
    data = yaml.safe_load(SCENARIO.read_text())
    assert data["sim"]["config"]["limits"]["slots"] == "shared"  # the shipped default
    args = []
    for slots in ("shared", "partitioned"):
        data["sim"]["config"]["limits"]["slots"] = slots
        path = tmp / f"nn-{slots}.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        args.append(("run", str(path), "--out", str(tmp / slots)))
    results = ttbench_together(*args, timeout=110)
    return {slots: (json.loads((tmp / slots / "summary.json").read_text()), res, tmp / slots)
            for slots, res in zip(("shared", "partitioned"), results, strict=True)}


def test_shared_slots_let_the_burst_slow_the_steady_tenant(runs):
    summary, res, out = runs["shared"]
    iso = summary["isolation"]
    assert iso["during"]["n"] >= 20 and iso["outside"]["n"] >= 20
    assert iso["ci"][0] >= 1.5, iso
    gate = next(g for g in summary["gates"] if g["gate"] == "isolation_ttft_p95_ratio")
    assert not gate["ok"] and res.returncode == 1, res.stderr[-2000:]
    assert {r["tenant"] for r in records(out)} == {"steady", "burst"}
    assert set(summary["tenants"]) == {"steady", "burst"}


def test_partitioned_slots_keep_the_steady_tenant_isolated(runs):
    summary, res, _out = runs["partitioned"]
    iso = summary["isolation"]
    assert iso["during"]["n"] >= 20 and iso["outside"]["n"] >= 20
    # Isolation is the absence of a slowdown: the interval's lower end stays at or below 1 (the gate's own test).
    # Its upper end is not asked to reach 1: with partitioned slots the steady tenant is as often a little faster
    # during a burst as slower, so a 95% interval misses 1 from below in a few runs of a hundred (CI saw 0.999).
    assert iso["ci"][0] <= 1.0, iso
    assert 0.5 <= iso["ratio"] <= 1.3, iso
    gate = next(g for g in summary["gates"] if g["gate"] == "isolation_ttft_p95_ratio")
    assert gate["ok"], gate
    assert res.returncode == 0, res.stderr[-2000:]
