"""Billing joins without X-TT headers: by any id of a response, by client attempt id, by Idempotency-Key; each
charge counted exactly once. Hand-built run folders; expected amounts hand-computed from the price sheet."""

from __future__ import annotations

import csv
import io
import json
import shutil
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from analysis.report import analyze

from .runs import ROOT, ttbench

pytestmark = pytest.mark.timeout(120)

PRICES = ROOT / "gatewaysim" / "defaults" / "prices.yaml"
# gpt-4o-mini: input 0.15, output 0.60, cached input 0.075 per 1M tokens
# 100 input + 50 output = 100 * 0.15e-6 + 50 * 0.60e-6 = 0.000015 + 0.00003
CALL_COST = Decimal("0.000045")
# 200 input (80 of them cached) + 10 output = 120 * 0.15e-6 + 80 * 0.075e-6 + 10 * 0.60e-6
CACHED_COST = Decimal("0.000018") + Decimal("0.000006") + Decimal("0.000006")


def rec(call: str, attempt: int = 1, ok: bool = True, rid: str | None = "auto", ids: dict | None = None,
        kind: str | None = None, status: int | None = None, v: int = 2, inp: int = 100, out: int = 50,
        cached: int = 0, **kw: Any) -> dict[str, Any]:
    """One attempt record (version 2 unless v=1, which drops the version-2 fields)."""
    rid = f"lit-{call}-{attempt}" if rid == "auto" else rid
    r: dict[str, Any] = {
        "v": v, "run_id": "run", "worker": 0, "attempt_id": f"{call}-a{attempt}", "call_id": call,
        "attempt": attempt, "final": ok, "idempotency_key": call, "request_id": rid, "original_request_id": None,
        "replayed": False, "endpoint": "chat", "model": "gpt-4o-mini", "stream": False, "stream_format": None,
        "dry_run": False, "pair_id": None, "session_id": None, "turn": None, "name": "chat",
        "t_start": 100.0 + attempt, "scheduled": None, "schedule_lag_ms": None, "stage": None,
        "headers_ms": 5.0 if (status or ok) else None, "first_event_ms": None, "first_content_ms": None,
        "first_text_ms": None, "first_tool_ms": None, "first_reasoning_ms": None, "end_ms": 100.0, "chunks": None,
        "status": status if status is not None else (200 if ok else None), "ok": ok, "error_kind": kind,
        "error": None, "retry_after_s": None, "finish_reason": "stop" if ok else None,
        "images_requested": None, "images_returned": None, "image_size": None, "image_quality": None,
        "prompt_tokens_target": None, "max_tokens": None,
        "usage": {"input": inp, "output": out, "cached_input": cached, "cache_write": 0, "reasoning": 0}
        if ok else None,
        "estimate": None,
    }
    if v >= 2:
        r.update({"request_id_header": "x-litellm-call-id" if rid else None, "ids": ids, "sent": True,
                  "dry_run_ignored": False, "framing_mismatch": False, "retry_after_header": None,
                  "ratelimit_reset_s": None})
    r.update(kw)
    return r


def charge(rid: str | None, key: str | None, amount: Decimal | str, attempt: str | None = None,
           inp: int | None = 100, out: int | None = 50, cached: int | None = 0, kind: str = "charge") -> dict:
    """A row of the simulator's ledger (tt-sim)."""
    return {"time": 1.0, "type": kind, "request_id": rid, "idempotency_key": key, "client_attempt_id": attempt,
            "endpoint": "chat", "model": "gpt-4o-mini", "input_tokens": inp, "output_tokens": out,
            "cached_input_tokens": cached, "cache_write_tokens": 0, "images": 0, "amount": str(amount),
            "currency": "USD"}


def make_run(folder: Path, records: list[dict], ledger: list[dict] | None = None, *, ledger_text: str | None = None,
             ledger_name: str = "ledger.jsonl", scenario: dict | None = None, run: dict | None = None,
             gateway: dict | None = None, prices: Path | str | None = PRICES) -> Path:
    """A run folder by hand: records.jsonl, a ledger, prices.yaml, run.json, gateway.json, scenario.yaml."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if ledger is not None:
        (folder / ledger_name).write_text("".join(json.dumps(r) + "\n" for r in ledger))
    if ledger_text is not None:
        (folder / ledger_name).write_text(ledger_text)
    if isinstance(prices, Path):
        shutil.copy(prices, folder / "prices.yaml")
    elif isinstance(prices, str):
        (folder / "prices.yaml").write_text(prices)
    (folder / "run.json").write_text(json.dumps(run if run is not None else {"run_id": "run", "target": "sim"}))
    if gateway is not None:
        (folder / "gateway.json").write_text(json.dumps(gateway))
    (folder / "scenario.yaml").write_text(yaml.safe_dump(scenario if scenario is not None else {"name": "joins"}))
    return folder


def kinds(summary: dict) -> list[tuple[str, Any]]:
    return sorted((f["kind"], f["request_id"]) for f in summary["billing"]["findings"])


def test_a_charge_joins_by_any_id_of_the_response(tmp_path):
    ids = {"x-litellm-call-id": "lit-A-1", "llm_provider-x-tt-request-id": "req_up_A"}
    run = make_run(tmp_path / "run", [rec("A", ids=ids)], [charge("req_up_A", None, CALL_COST)])
    summary, code = analyze(run)
    b = summary["billing"]
    assert code == 0 and b["findings"] == [] and b["accuracy"] == 1.0
    assert b["joins"]["request_id"] == 1 and b["charges_joined"] == 1 and b["trusted"]


def test_a_charge_joins_by_attempt_id_with_no_request_id_column(tmp_path):
    # the record's response had no id at all; the ledger has no request id column, only the attempt id
    text = "time,type,client_attempt_id,input_tokens,output_tokens,amount\n" \
           f"1.0,hold,B-a1,,,0.0001\n1.5,charge,B-a1,100,50,{CALL_COST}\n"
    run = make_run(tmp_path / "run", [rec("B", rid=None)], ledger_text=text, ledger_name="billing.csv",
                   scenario={"name": "j", "ledger": {"file": "billing.csv"}})
    summary, code = analyze(run)
    b = summary["billing"]
    assert b["findings"] == [] and b["accuracy"] == 1.0 and b["charges"] == 1
    assert b["joins"] == {"request_id": 0, "attempt_id": 1, "idempotency_key": 0, "lost_worker": 0}


def test_the_scenarios_ledger_file_is_the_run_folders_not_a_same_named_file_in_the_working_folder(tmp_path,
                                                                                                     monkeypatch):
    text = "time,type,client_attempt_id,input_tokens,output_tokens,amount\n" \
           f"1.5,charge,B-a1,100,50,{CALL_COST}\n"
    run = make_run(tmp_path / "run", [rec("B", rid=None)], ledger_text=text, ledger_name="billing.csv",
                   scenario={"name": "j", "ledger": {"file": "billing.csv"}})
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    (elsewhere / "billing.csv").write_text(text.replace(str(CALL_COST), "9.99"))  # a stray file of the same name
    monkeypatch.chdir(elsewhere)
    b = analyze(run)[0]["billing"]
    assert b["findings"] == [] and b["charges"] == 1  # the stray file would be an amount_mismatch


def test_a_charge_joined_by_key_is_the_calls_charge_not_missing_plus_double(tmp_path):
    # the gateway's ledger holds the upstream's id, which the client never saw: the key is the only join
    run = make_run(tmp_path / "run", [rec("C")], [charge("req_upstream_C", "C", CALL_COST)])
    summary, _ = analyze(run)
    b = summary["billing"]
    assert b["findings"] == [], b["findings"]
    assert b["accuracy"] == 1.0 and b["counts"]["missing_charge"] == 0 and b["counts"]["double_charge"] == 0
    assert b["joins"]["idempotency_key"] == 1


def test_a_wrong_amount_joined_by_key_is_one_amount_mismatch(tmp_path):
    run = make_run(tmp_path / "run", [rec("C")], [charge("req_upstream_C", "C", CALL_COST * 2)])
    summary, _ = analyze(run)
    assert kinds(summary) == [("amount_mismatch", "req_upstream_C")]
    f = summary["billing"]["findings"][0]
    assert Decimal(f["expected"]) == CALL_COST and Decimal(f["charged"]) == CALL_COST * 2


def test_two_upstream_charges_under_one_attempt_id_are_one_double_charge(tmp_path):
    # a gateway's hidden upstream retry: both upstream requests carried the client's attempt id
    run = make_run(tmp_path / "run", [rec("D", rid=None)],
                   [charge("req_u1", None, CALL_COST, attempt="D-a1"), charge("req_u2", None, CALL_COST,
                                                                              attempt="D-a1")])
    summary, _ = analyze(run)
    b = summary["billing"]
    assert kinds(summary) == [("double_charge", "req_u2")]
    assert b["accuracy"] == 0.0 and Decimal(b["overcharged"]) == CALL_COST


def test_a_hidden_retry_next_to_the_charge_under_the_responses_id_is_one_double_charge(tmp_path):
    ids = {"x-litellm-call-id": "lit-D-1", "llm_provider-x-tt-request-id": "req_u2"}
    run = make_run(tmp_path / "run", [rec("D", ids=ids)],
                   [charge("req_u1", "D", CALL_COST, attempt="D-a1"), charge("req_u2", "D", CALL_COST,
                                                                             attempt="D-a1")])
    summary, _ = analyze(run)
    assert kinds(summary) == [("double_charge", "req_u1")]  # req_u2 is the charge under the response's id


def test_a_failed_attempts_charge_by_attempt_id_is_failed_billed(tmp_path):
    records = [rec("E", 1, ok=False, rid=None, kind="reset", final=False), rec("E", 2)]
    ledger = [charge("req_sim_1", "E", CALL_COST, attempt="E-a1"), charge("lit-E-2", "E", CALL_COST, attempt="E-a2")]
    summary, _ = analyze(make_run(tmp_path / "run", records, ledger))
    assert kinds(summary) == [("failed_billed", "req_sim_1")]
    # a call that failed for good: its one charge, joined by attempt id only, is failed_billed too
    records = [rec("F", 1, ok=False, rid=None, kind="http_5xx", status=500)]
    summary, _ = analyze(make_run(tmp_path / "run2", records, [charge("req_sim_2", None, CALL_COST,
                                                                       attempt="F-a1")]))
    assert kinds(summary) == [("failed_billed", "req_sim_2")]
    assert summary["billing"]["joins"]["attempt_id"] == 1


def test_a_plain_answer_lost_after_its_200_may_be_billed_once(tmp_path):
    """The gateway sends a plain answer's status once the answer is whole: cut after it, the work was done."""
    def lost(call: str) -> list[dict]:
        return [rec(call, 1, ok=False, rid=f"req_{call}1", kind="truncated", status=200, final=False),
                rec(call, 2, ok=False, rid=f"req_{call}2", kind="http_5xx", status=500)]
    records = lost("G") + lost("H") + [rec("J", 1, ok=False, rid="req_J1", kind="truncated", status=None)]
    ledger = [charge("req_G1", "G", "0.000123", inp=None, out=None),  # its usage was lost: any amount stands
              charge("req_H1", "H", CALL_COST), charge("req_H1", "H", CALL_COST),
              charge("req_J1", "J", CALL_COST)]  # no status line came: nothing was known to be produced
    summary, _ = analyze(make_run(tmp_path / "run", records, ledger))
    assert sorted(kinds(summary)) == [("double_charge", "req_H1"), ("failed_billed", "req_J1")]


def test_each_charge_is_counted_once_in_a_mixed_ledger(tmp_path):
    records = [rec("A", ids={"x-litellm-call-id": "lit-A-1", "llm_provider-x-tt-request-id": "req_A"}),
               rec("B", rid=None),
               rec("C"),
               rec("G", 1, ok=False, rid=None, kind="reset", final=False), rec("G", 2, rid=None),
               rec("H")]  # H is never charged
    ledger = [charge("req_A", "A", CALL_COST),  # by ids: correct
              charge(None, None, CALL_COST, attempt="B-a1"),  # by attempt id: correct
              charge("up_C", "C", CALL_COST),  # by key: correct
              charge("up_G1", "G", CALL_COST, attempt="G-a1"),  # the failed attempt's: failed_billed
              charge("up_G2", "G", CALL_COST, attempt="G-a2"),  # the successful attempt's: correct
              charge("nobody", "somebody-else", CALL_COST)]  # unknown_request
    summary, _ = analyze(make_run(tmp_path / "run", records, ledger))
    b = summary["billing"]
    assert kinds(summary) == sorted([("failed_billed", "up_G1"), ("unknown_request", "nobody"),
                                     ("missing_charge", "lit-H-1")])
    assert b["calls"] == 5 and b["correct_calls"] == 3  # A, B, C; G (failed_billed) and H (missing) are wrong
    assert b["charges"] == 6 and b["charges_joined"] == 5
    assert b["joins"] == {"request_id": 1, "attempt_id": 3, "idempotency_key": 1, "lost_worker": 0}


def test_a_dry_run_the_gateway_ignored_is_billed_as_a_call(tmp_path):
    records = [rec("P", dry_run=True, dry_run_ignored=True), rec("Q", dry_run=True, dry_run_ignored=True),
               rec("S", stream=True, stream_format="sse", framing_mismatch=True)]
    ledger = [charge("lit-P-1", "P", CALL_COST), charge("lit-S-1", "S", CALL_COST)]
    run = make_run(tmp_path / "run", records, ledger)
    summary, _ = analyze(run)
    assert kinds(summary) == [("missing_charge", "lit-Q-1")]  # expected exactly as a normal call
    assert summary["billing"]["counts"]["dry_run_billed"] == 0
    o = summary["metrics"]["overall"]
    assert o["dry_runs_ignored"] == 2 and o["framing_mismatches"] == 1
    assert any("2 dry runs were answered with a real completion" in w for w in summary["warnings"])
    md = (run / "report.md").read_text()
    assert "dry runs answered for real (dry-run header ignored) | 2" in md
    assert "streams answered in another framing | 1" in md


def test_cached_tokens_and_token_mismatch_through_a_joined_charge(tmp_path):
    records = [rec("K", rid=None, inp=200, out=10, cached=80), rec("L", rid=None, inp=200, out=10, cached=80)]
    ledger = [charge(None, "K", CACHED_COST, attempt="K-a1", inp=200, out=10, cached=80),
              charge(None, "L", CACHED_COST, attempt="L-a1", inp=200, out=17, cached=80)]
    summary, _ = analyze(make_run(tmp_path / "run", records, ledger))
    assert [(f["kind"], f["attempt_id"]) for f in summary["billing"]["findings"]] == [("token_mismatch", "L-a1")]


def test_version_1_records_still_read_and_audit(tmp_path):
    records = [rec("A", v=1), rec("B", 1, ok=False, kind="http_5xx", status=500, v=1, final=False),
               rec("B", 2, v=1), rec("C", 1, ok=False, rid=None, kind="connect", v=1)]
    ledger = [charge("lit-A-1", "A", CALL_COST), charge("lit-B-1", "B", CALL_COST), charge("lit-B-2", "B", CALL_COST)]
    run = make_run(tmp_path / "run", records, ledger)
    res = ttbench("report", str(run))
    assert res.returncode == 0, res.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert kinds(summary) == [("failed_billed", "lit-B-1")]
    assert summary["metrics"]["overall"]["calls"] == 3 and summary["metrics"]["overall"]["dry_runs_ignored"] == 0
    assert summary["billing"]["trusted"] and "skipped" not in res.stderr


def test_sim_ledger_csv_export_reads_like_its_jsonl(tmp_path):
    rows = [charge("lit-A-1", "A", CALL_COST), charge(None, None, CALL_COST, attempt="B-a1"),
            charge("lit-A-1", "A", "0.0002", kind="hold")]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    for r in rows:
        w.writerow({k: "" if v is None else v for k, v in r.items()})
    run = make_run(tmp_path / "run", [rec("A"), rec("B", rid=None)], ledger_text=buf.getvalue(),
                   ledger_name="export.csv")
    res = ttbench("report", str(run), "--ledger", str(run / "export.csv"))
    assert res.returncode == 0, res.stderr
    b = json.loads((run / "summary.json").read_text())["billing"]
    assert b["findings"] == [] and b["charges"] == 2 and b["ledger"]["mapping"] == "tt-sim"
