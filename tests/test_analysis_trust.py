"""Loud when the billing audit cannot be trusted: each issue in the report's header, on stderr, in
summary.warnings and billing.trust_issues, and a billing gate then fails (exit 1) even at accuracy 1.0."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from analysis.report import analyze

from .runs import ttbench
from .test_billing_joins import CALL_COST, PRICES, charge, make_run, rec

pytestmark = pytest.mark.timeout(120)

GATES = {"name": "trust", "gates": {"billing_accuracy": 1.0}}
URL = {"run_id": "run", "target": "http://gateway.example:4000"}
TT = {"name": "tt", "request_id_headers": ["x-tt-request-id"],
      "idempotency": {"header": "Idempotency-Key", "honoured": True},
      "dry_run": {"header": "X-TT-Dry-Run", "supported": True}}
LITELLM = {**TT, "name": "litellm", "request_id_headers": ["x-litellm-call-id"],
           "idempotency": {"header": "Idempotency-Key", "honoured": False}}
# a price sheet of the gateway's own: the default's gpt-4o-mini prices, nothing else
OWN_PRICES = "version: 1\ncurrency: USD\nmodels:\n  gpt-4o-mini: {input: '0.15', output: '0.60', cached_input: '0.075'}\n"


def untrusted(run: Path, fragment: str) -> dict:
    """Report the run; the audit is 100% accurate, yet untrusted for `fragment`, and its gate fails."""
    res = ttbench("report", str(run))
    summary = json.loads((run / "summary.json").read_text())
    b = summary["billing"]
    assert b["accuracy"] == 1.0 and not b["trusted"]
    assert len(b["trust_issues"]) == 1 and fragment in b["trust_issues"][0], b["trust_issues"]
    assert any(fragment in w for w in summary["warnings"])
    assert res.returncode == 1, res.stderr
    assert f"ttbench: warning: the billing audit cannot be trusted: {b['trust_issues'][0]}" in res.stderr
    assert "gate breached: billing_accuracy = 1.0 (min 1.0): the billing audit cannot be trusted: " in res.stderr
    gate = summary["gates"][0]
    assert gate["value"] == 1.0 and not gate["ok"] and fragment in gate["reason"]
    md = (run / "report.md").read_text()
    head = md.split("## ")[0]
    assert "THE BILLING AUDIT CANNOT BE TRUSTED" in head and fragment in head
    page = (run / "report.html").read_text()
    assert "id='billing-untrusted'" in page and page.index("billing-untrusted") < page.index("<h2>")
    return summary


def trusted(run: Path) -> dict:
    res = ttbench("report", str(run))
    assert res.returncode == 0, res.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["billing"]["trusted"] and summary["billing"]["trust_issues"] == []
    assert "cannot be trusted" not in res.stderr and "CANNOT BE TRUSTED" not in (run / "report.md").read_text()
    return summary


def test_a_request_ids_missing_from_responses(tmp_path):
    # 19 of 20 answered attempts have an id: 95%, trusted; 18 of 20: not
    calls = [f"c{i}" for i in range(20)]
    ledger = [charge(None, None, CALL_COST, attempt=f"{c}-a1") for c in calls]
    # model listings, which a gateway may answer itself with no id, are never billed: they do not count
    listings = [rec(f"m{i}", rid=None, endpoint="models", model="-", usage=None) for i in range(5)]
    ok = make_run(tmp_path / "ok", [rec(c, rid=None if i == 0 else "auto") for i, c in enumerate(calls)] + listings,
                  ledger, scenario=GATES)
    trusted(ok)
    bad = make_run(tmp_path / "bad", [rec(c, rid=None if i < 2 else "auto") for i, c in enumerate(calls)], ledger,
                   scenario=GATES, gateway=TT)
    s = untrusted(bad, "only 18 of 20 attempts that got response headers carry a request id")
    assert "(looked for: x-tt-request-id)" in s["billing"]["trust_issues"][0]
    assert "`--gateway NAME`" in s["billing"]["trust_issues"][0]


def test_b_charges_that_join_no_call(tmp_path):
    records = [rec("A"), rec("B")]
    ledger = [charge("lit-A-1", "A", CALL_COST), charge("lit-B-1", "B", CALL_COST), charge("up-zz", "zz", CALL_COST)]
    s = untrusted(make_run(tmp_path / "run", records, ledger, scenario=GATES), "only 2 of 3 charges join a call")
    assert s["billing"]["counts"]["unknown_request"] == 1


def test_c_an_ignored_idempotency_key(tmp_path):
    # a stream truncated after it was sent, retried; no retry anywhere was a replay; the profile claims the key
    # is honoured: that call may have been billed twice (here the gateway billed only the retry)
    records = [rec("A", 1, ok=False, kind="truncated", status=200, final=False), rec("A", 2),
               rec("B", 1, ok=False, kind="http_5xx", status=503, final=False), rec("B", 2),  # refused: not billed
               rec("C", 1, ok=False, rid=None, kind="connect", sent=False, final=False), rec("C", 2),  # never sent
               rec("D")]
    ledger = [charge(f"lit-{c}-{n}", c, CALL_COST) for c, n in (("A", 2), ("B", 2), ("C", 2), ("D", 1))]
    untrusted(make_run(tmp_path / "tt", records, ledger, scenario=GATES, run=URL, gateway=TT, prices=OWN_PRICES),
              "this gateway does not seem to honour Idempotency-Key: 1 calls may be billed more than once")
    # no gateway.json (an older run): the tt profile, which claims it
    untrusted(make_run(tmp_path / "old", records, ledger, scenario=GATES, run=URL, prices=OWN_PRICES),
              "does not seem to honour Idempotency-Key: 1 calls")
    # a profile that does not claim it, or a replay somewhere in the run: no issue
    trusted(make_run(tmp_path / "litellm", records, ledger, scenario=GATES, run=URL, gateway=LITELLM,
                     prices=OWN_PRICES))
    replayed = records + [rec("E", 1, ok=False, kind="reset", status=None, rid=None, final=False),
                          rec("E", 2, replayed=True, original_request_id="lit-E-1")]
    trusted(make_run(tmp_path / "replay", replayed, ledger + [charge("lit-E-1", "E", CALL_COST, attempt="E-a1")],
                     scenario=GATES, run=URL, gateway=TT, prices=OWN_PRICES))


def test_d_the_simulators_price_sheet_against_a_real_gateway(tmp_path):
    records, ledger = [rec("A")], [charge("lit-A-1", "A", CALL_COST)]
    # the default sheet, re-serialised (same content, different text): still the default
    reserialised = yaml.safe_dump(yaml.safe_load(PRICES.read_text()), sort_keys=True)
    untrusted(make_run(tmp_path / "url", records, ledger, scenario=GATES, run=URL, prices=reserialised),
              "the price sheet is the simulator's default: its prices are not your gateway's; pass --prices")
    trusted(make_run(tmp_path / "sim", records, ledger, scenario=GATES))  # against the simulator it is right
    own = make_run(tmp_path / "own", records, ledger, scenario=GATES, run=URL, prices=OWN_PRICES)
    trusted(own)
    # --prices pointing at the default sheet is no better
    res = ttbench("report", str(own), "--prices", str(PRICES))
    assert res.returncode == 1 and "the price sheet is the simulator's default" in res.stderr


def test_untrusted_fails_every_billing_gate_but_no_other(tmp_path):
    scenario = {"name": "g", "gates": {"billing_accuracy": 0.5, "double_charges": 0, "missing_charges": 0,
                                       "billing_findings": 10, "error_rate": {"max": 0.5, "min_samples": 1}}}
    run = make_run(tmp_path / "run", [rec("A")], [charge("lit-A-1", "A", CALL_COST)], scenario=scenario, run=URL)
    summary, code = analyze(run)
    assert code == 1
    assert {g["gate"]: g["ok"] for g in summary["gates"]} == {
        "billing_accuracy": False, "double_charges": False, "missing_charges": False, "billing_findings": False,
        "error_rate": True}
    assert all(g["reason"] is None for g in summary["gates"] if g["gate"] == "error_rate")
