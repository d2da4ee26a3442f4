"""The import graph: rooms side by side, no upward arrows, no private names across packages, no circles."""

from __future__ import annotations

from pathlib import Path

from tests.importgraph import check

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = Path(__file__).resolve().parent / "data" / "importgraph"

#: exactly one violation per rule in the fixture tree (the upward-arrow rule: one room, one ground floor)
EXPECTED = {
    "gatewaysim/bad.py:3: the simulator imports the load generator (locustfiles.x)",
    "analysis/bad.py:8: the analysis imports the simulator (gatewaysim.state)",
    "locustfiles/up.py:6: the load generator imports the command line (ttbench.cli): upward arrow, floor 1 -> 2",
    "ttformats/low.py:3: the ground floor imports the analysis (analysis): upward arrow, floor 0 -> 1",
    "ttbench/priv.py:3: private name _V of locustfiles.scenario",
    "circle: ttbench.a -> ttbench.b -> ttbench.a (ttbench/a.py:3, ttbench/b.py:6)",
}


def test_fixture_tree_flags_each_rule_once():
    found = check(FIXTURE)
    assert len(found) == len(set(found)), found
    assert set(found) == EXPECTED


def test_type_checking_only_circle_is_not_a_circle():
    assert not [line for line in check(FIXTURE) if "gatewaysim.state" in line and line.startswith("circle")]


def test_real_tree_has_no_violations():
    found = check(ROOT)
    assert not found, "import graph violations:\n" + "\n".join(found)
