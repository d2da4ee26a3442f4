"""Billing accuracy end to end: every planted kind found exactly, with and without the truth, JSONL or CSV."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from .runs import ROOT, jsonl, ttbench, ttbench_together

pytestmark = pytest.mark.timeout(240)

CSV_COLUMNS = {"time": "Timestamp", "type": "Entry Kind", "request_id": "Request ID", "idempotency_key": "Idem Key",
               "client_attempt_id": "Attempt ID", "endpoint": "API", "model": "Model Name", "input_tokens": "Prompt Tokens",
               "output_tokens": "Completion Tokens", "cached_input_tokens": "Cached Tokens",
               "cache_write_tokens": "Cache Writes", "images": "Images", "amount": "Cost (USD)",
               "currency": "Currency"}


def planted(run: Path) -> set[tuple[str, str]]:
    return {(e["billing_error"], e["request_id"]) for e in jsonl(run / "truth.jsonl") if e["billing_error"]}


def found(summary: dict) -> set[tuple[str, str]]:
    return {(f["kind"], f["request_id"]) for f in summary["billing"]["findings"]}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    """The billing-audit scenario, and at the same time a run with every fault kind and nothing planted."""
    work = tmp_path_factory.mktemp("audit")
    scenario = yaml.safe_load((ROOT / "scenarios" / "retries-under-faults.yaml").read_text())
    scenario["sim"]["config"]["defaults"] = {"chat": {"base_ms": 5, "decode_tokens_per_s": 400}}
    scenario["sim"]["config"]["faults"]["stall_ms"] = 2500
    weights = scenario["sim"]["config"]["faults"]["weights"]
    weights["fewer_images"] = 4  # images are a small part of the mix
    for kind in ("disconnect_midstream", "stream_error", "malformed_chunk"):
        weights[kind] = 3  # only streams meet these: a slow machine's few calls must still meet each
    for line in scenario["mix"]:
        if line["endpoint"] == "images":
            line["weight"] = 3
    path = work / "faults.yaml"
    path.write_text(yaml.safe_dump(scenario))
    res, faults = ttbench_together(("run", "scenarios/billing-audit.yaml", "--out", str(work / "run"), "-t", "25s"),
                                   ("run", str(path), "--out", str(work / "faults"), "-t", "15s"), timeout=200)
    assert res.returncode == 0, res.stderr[-3000:]
    assert faults.returncode == 0, faults.stderr[-3000:]
    return work / "run", work / "faults"


@pytest.fixture(scope="module")
def audit_run(runs) -> Path:
    return runs[0]


def test_every_planted_kind_is_found_exactly(audit_run):
    truth = planted(audit_run)
    kinds = {k for k, _ in truth}
    assert kinds == {"double_charge", "missing_charge", "dry_run_billed", "failed_billed", "amount_mismatch",
                     "token_mismatch", "image_count_mismatch", "unknown_request"}
    for kind in kinds:
        assert sum(1 for k, _ in truth if k == kind) == 20, kind  # the exact quotas were met
    summary = json.loads((audit_run / "summary.json").read_text())
    assert found(summary) == truth  # precision = recall = 1
    b = summary["billing"]
    assert b["accuracy"] < 1 and b["counts"]["double_charge"] == 20
    assert float(b["overcharged"]) > 0 and float(b["undercharged"]) > 0
    assert b["dry_run_pairs"]["pairs"] > 0


def test_same_findings_without_truth_and_from_a_mapped_csv(audit_run, tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("records.jsonl", "prices.yaml", "run.json", "harness.json"):
        (copy / name).write_bytes((audit_run / name).read_bytes())
    rows = jsonl(audit_run / "ledger.jsonl")
    with open(copy / "gateway-billing.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(CSV_COLUMNS.values()))
        w.writeheader()
        for r in rows:
            w.writerow({CSV_COLUMNS[k]: ("debit" if k == "type" and v == "charge" else v) for k, v in r.items()})
    scenario = yaml.safe_load((audit_run / "scenario.yaml").read_text())
    scenario["ledger"] = {"file": "gateway-billing.csv", "format": "csv", "columns": CSV_COLUMNS,
                          "charge_type": "debit"}
    (copy / "scenario.yaml").write_text(yaml.safe_dump(scenario))
    assert not (copy / "truth.jsonl").exists() and not (copy / "ledger.jsonl").exists()
    res = ttbench("report", str(copy))
    assert res.returncode == 0, res.stderr
    summary = json.loads((copy / "summary.json").read_text())
    assert found(summary) == planted(audit_run)


def test_a_ledger_with_a_missing_column_is_one_line_exit_2(audit_run, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("request_id,Something\nreq_1,2\n")
    res = ttbench("report", str(audit_run), "--ledger", str(bad))
    assert res.returncode == 2
    assert res.stderr.strip() == f"ttbench: error: {bad}: the ledger has no column 'amount' (for amount)"


def test_nothing_planted_under_every_fault_kind_is_100_percent(runs):
    out = runs[1]
    truth = jsonl(out / "truth.jsonl")
    faults = {e["fault"] for e in truth if e["fault"]}
    assert faults >= {"server_error", "rate_limited", "reset", "disconnect_midstream", "stream_error",
                      "malformed_chunk", "stall", "fewer_images", "disconnect_after_billing"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["billing"]["findings"] == []
    assert summary["billing"]["accuracy"] == 1.0
