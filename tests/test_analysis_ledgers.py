"""Named ledger mappings (tt-sim, litellm-spendlogs, litellm-costlog) on sample files shaped like the real formats;
a ledger URL with a billing API's auth that is never written down; one-line errors for bad input."""

from __future__ import annotations

import csv
import io
import json
import os
import threading
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from analysis.report import analyze

from .runs import ttbench
from .test_billing_joins import CALL_COST, charge, kinds, make_run, rec

pytestmark = pytest.mark.timeout(120)

LITELLM_IDS = {"x-litellm-call-id": "9f1c-A", "llm_provider-x-tt-request-id": "req_A"}


def spendlog(request_id: str, spend: float, status: str | None = "success", prompt: int = 100,
             completion: int = 50) -> dict:
    """A row of LiteLLM_SpendLogs as GET /spend/logs returns it."""
    row = {"request_id": request_id, "call_type": "acompletion", "api_key": "88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b",
           "spend": spend, "total_tokens": prompt + completion, "prompt_tokens": prompt,
           "completion_tokens": completion, "startTime": "2025-06-01T10:00:00.123000Z",
           "endTime": "2025-06-01T10:00:01.456000Z", "completionStartTime": None, "model": "gpt-4o-mini",
           "model_id": "a1b2", "model_group": "gpt-4o-mini", "custom_llm_provider": "openai",
           "api_base": "http://127.0.0.1:9000/v1", "user": "", "metadata": {"user_api_key_alias": None},
           "cache_hit": "False", "cache_key": "Cache OFF", "request_tags": [], "team_id": None, "end_user": "",
           "requester_ip_address": "", "messages": {}, "response": {}, "session_id": None}
    if status is not None:
        row["status"] = status
    return row


SPENDLOG_RECORDS = [rec("A", rid="9f1c-A", ids=LITELLM_IDS), rec("B", rid="9f1c-B"),
                    rec("C", 1, ok=False, rid="9f1c-C", kind="http_5xx", status=500)]


def test_litellm_spendlogs_json_list(tmp_path):
    rows = [spendlog("9f1c-A", 4.5e-05), spendlog("9f1c-B", 9e-05),  # B: twice the price: amount_mismatch
            spendlog("9f1c-C", 0.0, status="failure", prompt=0, completion=0)]  # a logged failure, no charge
    run = make_run(tmp_path / "run", SPENDLOG_RECORDS, ledger_text=json.dumps(rows, indent=1),
                   ledger_name="spend-logs.json",
                   scenario={"name": "s", "ledger": {"file": "spend-logs.json", "mapping": "litellm-spendlogs"}})
    summary, _ = analyze(run)
    b = summary["billing"]
    assert kinds(summary) == [("amount_mismatch", "9f1c-B")]
    assert Decimal(b["findings"][0]["expected"]) == CALL_COST and b["charges"] == 2
    assert b["ledger"]["mapping"] == "litellm-spendlogs"


def test_litellm_spendlogs_csv_export_and_a_billed_failure(tmp_path):
    rows = [spendlog("9f1c-A", 4.5e-05), spendlog("9f1c-B", 4.5e-05),
            spendlog("9f1c-C", 1.5e-05, status="failure", prompt=100, completion=0)]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    for r in rows:
        w.writerow({k: json.dumps(v) if isinstance(v, dict | list) else ("" if v is None else v)
                    for k, v in r.items()})
    run = make_run(tmp_path / "run", SPENDLOG_RECORDS, ledger_text=buf.getvalue(), ledger_name="spendlogs.csv")
    res = ttbench("report", str(run), "--ledger", str(run / "spendlogs.csv"), "--ledger-mapping",
                  "litellm-spendlogs")
    assert res.returncode == 0, res.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert kinds(summary) == [("failed_billed", "9f1c-C")]  # a failure with a non-zero spend is a charge


def test_litellm_spendlogs_v2_page_and_rows_without_status(tmp_path):
    rows = [spendlog("9f1c-A", 4.5e-05, status=None), spendlog("9f1c-B", 4.5e-05, status=None)]
    page = {"data": rows, "total": 2, "page": 1, "page_size": 50, "total_pages": 1}
    run = make_run(tmp_path / "run", SPENDLOG_RECORDS[:2], ledger_text=json.dumps(page), ledger_name="page.json")
    summary, _ = analyze(run, ledger=str(run / "page.json"), ledger_mapping="litellm-spendlogs")
    assert summary["billing"]["findings"] == [] and summary["billing"]["charges"] == 2


def costlog(request_id: str, status: str, amount: str, attempt: str | None, key: str | None,
            upstream: str | None, inp: int | None = 100, out: int | None = 50, cached: int | None = 0) -> dict:
    """A line of the LiteLLM callback's cost log: exactly its keys."""
    return {"time": 1717236000.5, "request_id": request_id, "status": status, "model": "gpt-4o-mini",
            "amount": amount, "input_tokens": inp, "output_tokens": out, "cached_input_tokens": cached,
            "client_attempt_id": attempt, "idempotency_key": key, "upstream_request_id": upstream,
            "endpoint": "acompletion"}


def test_litellm_costlog(tmp_path):
    records = [rec("A", rid="9f1c-A", ids=LITELLM_IDS),
               rec("B", rid=None),  # no id reached the client: joined by the attempt id
               rec("E", 1, ok=False, rid="9f1c-E1", kind="http_5xx", status=502, final=False),
               rec("E", 2, rid="9f1c-E2"),
               rec("G", 1, ok=False, rid="9f1c-G", kind="http_5xx", status=500)]
    lines = [costlog("9f1c-A", "success", str(CALL_COST), "A-a1", "A", "req_A"),
             costlog("9f1c-B", "success", str(CALL_COST), "B-a1", "B", "req_B"),
             costlog("9f1c-E1", "failure", "0", "E-a1", "E", None, None, None, None),  # a failure, not charged
             costlog("9f1c-E2", "success", str(CALL_COST), "E-a2", "E", "req_E2", out=57),
             costlog("9f1c-G", "failure", "0.000015", "G-a1", "G", "req_G", out=0)]  # billed: a charge
    run = make_run(tmp_path / "run", records, ledger_text="".join(json.dumps(x) + "\n" for x in lines),
                   ledger_name="cost-log.jsonl",
                   scenario={"name": "c", "ledger": {"file": "cost-log.jsonl", "mapping": "litellm-costlog"}})
    summary, _ = analyze(run)
    b = summary["billing"]
    assert kinds(summary) == [("failed_billed", "9f1c-G"), ("token_mismatch", "9f1c-E2")]
    assert b["charges"] == 4 and b["joins"] == {"request_id": 3, "attempt_id": 1, "idempotency_key": 0,
                                                "lost_worker": 0}


def test_tt_sim_is_the_default_and_scenario_columns_override_a_mapping(tmp_path):
    # the cost log's shape, but its amount column renamed: the scenario's columns win over the mapping's
    lines = [{**costlog("9f1c-A", "success", "0", "A-a1", "A", None), "cost_usd": str(CALL_COST)}]
    run = make_run(tmp_path / "run", [rec("A", rid="9f1c-A")],
                   ledger_text="".join(json.dumps(x) + "\n" for x in lines), ledger_name="c.jsonl",
                   scenario={"name": "c", "ledger": {"file": "c.jsonl", "mapping": "litellm-costlog",
                                                     "columns": {"amount": "cost_usd"}}})
    summary, _ = analyze(run)
    assert summary["billing"]["findings"] == [] and summary["billing"]["charges"] == 1
    # no ledger settings at all: the run folder's ledger.jsonl, read as the simulator's
    run2 = make_run(tmp_path / "run2", [rec("A", rid=None)], [charge("req_x", None, CALL_COST, attempt="A-a1")])
    summary, _ = analyze(run2)
    assert summary["billing"]["findings"] == [] and summary["billing"]["ledger"]["mapping"] == "tt-sim"


class _Billing(BaseHTTPRequestHandler):
    """A billing API that wants `Authorization: Bearer s3cret-billing`."""

    body = b""

    def do_GET(self) -> None:  # noqa: N802
        if self.headers.get("Authorization") != "Bearer s3cret-billing":
            self.send_response(401)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def billing_api():
    _Billing.body = json.dumps([spendlog("9f1c-A", 4.5e-05)]).encode()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Billing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/spend/logs"
    server.shutdown()


def _nowhere(run, secret: str, *outputs: str) -> None:
    for text in outputs:
        assert secret not in text
    for p in (p for p in run.rglob("*") if p.is_file()):
        assert secret not in p.read_text(errors="replace"), p.name


def test_a_ledger_url_with_a_billing_apis_auth_never_written_down(tmp_path, billing_api):
    run = make_run(tmp_path / "run", [rec("A", rid="9f1c-A")])
    env = dict(os.environ, BILLING_AUTH="Authorization: Bearer s3cret-billing", BILLING_TOKEN="Bearer s3cret-billing")
    res = ttbench("report", str(run), "--ledger", billing_api + "?api_key=q-s3cret", "--ledger-mapping",
                  "litellm-spendlogs", "--ledger-header-env", "BILLING_AUTH", env=env)
    assert res.returncode == 0, res.stderr
    b = json.loads((run / "summary.json").read_text())["billing"]
    assert b["findings"] == [] and b["charges"] == 1 and b["ledger"]["headers"] == ["Authorization"]
    assert b["ledger"]["source"] == billing_api  # the query is dropped (it may hold a key)
    _nowhere(run, "s3cret", res.stdout, res.stderr)
    res = ttbench("report", str(run), "--ledger", billing_api, "--ledger-mapping", "litellm-spendlogs",
                  "--ledger-header", "Authorization: Bearer s3cret-billing")
    assert res.returncode == 0, res.stderr
    res = ttbench("report", str(run), "--ledger", billing_api, "--ledger-mapping", "litellm-spendlogs",
                  "--ledger-header-env", "Authorization=BILLING_TOKEN", env=env)
    assert res.returncode == 0, res.stderr
    # from the scenario: the header's value from the environment
    (run / "scenario.yaml").write_text(yaml.safe_dump({"name": "u", "ledger": {
        "file": billing_api, "mapping": "litellm-spendlogs", "headers": {"Authorization": {"env": "BILLING_TOKEN"}}}}))
    res = ttbench("report", str(run), env=env)
    assert res.returncode == 0, res.stderr
    assert json.loads((run / "summary.json").read_text())["billing"]["charges"] == 1
    _nowhere(run, "s3cret", res.stdout, res.stderr)
    # wrong or missing credentials: one line, no secret in it
    (run / "scenario.yaml").write_text(yaml.safe_dump({"name": "u"}))
    res = ttbench("report", str(run), "--ledger", billing_api, "--ledger-header", "Authorization: Bearer wr0ng")
    assert res.returncode == 2 and res.stderr.strip() == (
        f"ttbench: error: {billing_api}: cannot fetch the ledger: HTTP 401 (check --ledger-header / --ledger-token)")
    env.pop("BILLING_TOKEN")
    (run / "scenario.yaml").write_text(yaml.safe_dump({"name": "u", "ledger": {
        "file": billing_api, "mapping": "litellm-spendlogs", "headers": {"Authorization": {"env": "BILLING_TOKEN"}}}}))
    res = ttbench("report", str(run), env=env)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1
    assert "ledger.headers.Authorization: environment variable BILLING_TOKEN is not set" in res.stderr


def _one_line_exit_2(res, expected: str) -> None:
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip() == f"ttbench: error: {expected}", res.stderr


def test_bad_analysis_and_ledger_settings_are_one_line_errors(tmp_path):
    run = make_run(tmp_path / "run", [rec("A")], [charge("lit-A-1", "A", CALL_COST)])
    scen = run / "scenario.yaml"
    bad = {
        "analysis.slo.ttf": ({"analysis": {"slo": {"ttf": 100}}},
                             "analysis.slo.ttf: unknown key (known: ttft_ms, e2e_ms, tpot_ms, itl_ms)"),
        "analysis.bogus": ({"analysis": {"warmup": 5}},
                           "analysis.warmup: unknown key (known: warmup_s, settle_s, slo, slo_share, billing, early_stop, limits, "
                           "isolation)"),
        "bill_failed no": ({"analysis": {"billing": {"bill_failed": "no"}}},
                           "analysis.billing.bill_failed: expected true or false, got 'no'"),
        "ledger key": ({"ledger": {"file": "x.csv", "colums": {}}},
                       "ledger.colums: unknown key (known: file, mapping, format, columns, charge_type, "
                       "charge_if_amount, amount_scale, headers)"),
        "literal header": ({"ledger": {"headers": {"Authorization": "Bearer abc"}}},
                           "ledger.headers.Authorization: expected {env: VARIABLE} (a value written here would be "
                           "kept in the run folder's scenario.yaml)"),
    }
    for name, (data, message) in bad.items():
        scen.write_text(yaml.safe_dump({"name": "bad", **data}))
        _one_line_exit_2(ttbench("report", str(run)), f"{scen}: {message}")
        del name
    scen.write_text(yaml.safe_dump({"name": "ok", "ledger": {"mapping": "nope"}}))
    _one_line_exit_2(ttbench("report", str(run)), "ledger mapping 'nope': unknown (known: litellm-costlog, "
                                                  "litellm-spendlogs, tt-sim; or a mapping file ending .yaml)")
    scen.write_text(yaml.safe_dump({"name": "ok"}))
    _one_line_exit_2(ttbench("report", str(run), "--ledger-mapping", "litelm"),
                     "ledger mapping 'litelm': unknown (known: litellm-costlog, litellm-spendlogs, tt-sim; or a "
                     "mapping file ending .yaml)")


def test_bad_ledger_cells_are_one_line_errors(tmp_path):
    run = make_run(tmp_path / "run", [rec("A")])
    jsonl = run / "l.jsonl"
    jsonl.write_text(json.dumps(charge("lit-A-1", "A", CALL_COST)) + "\n"
                     + json.dumps({**charge("lit-A-1", "A", CALL_COST), "output_tokens": "fifty"}) + "\n")
    _one_line_exit_2(ttbench("report", str(run), "--ledger", str(jsonl)),
                     f"{jsonl}: line 2: output_tokens: not a token count: 'fifty'")
    csv_path = run / "l.csv"
    csv_path.write_text("request_id,amount,Prompt Tokens\nlit-A-1,0.000045,1e\n")
    (run / "scenario.yaml").write_text(yaml.safe_dump({"name": "c", "ledger": {
        "file": "l.csv", "columns": {"input_tokens": "Prompt Tokens"}}}))
    _one_line_exit_2(ttbench("report", str(run)), f"{csv_path}: line 2: Prompt Tokens: not a token count: '1e'")
    (run / "scenario.yaml").write_text(yaml.safe_dump({"name": "c"}))
    no_join = run / "nojoin.csv"
    no_join.write_text("when,amount\n1,0.5\n")
    _one_line_exit_2(ttbench("report", str(run), "--ledger", str(no_join)),
                     f"{no_join}: the ledger has none of the columns 'request_id' (for request_id), "
                     "'client_attempt_id' (for attempt_id), 'idempotency_key' (for idempotency_key): a charge "
                     "needs one to join a call")
    amounts = run / "nan.jsonl"
    amounts.write_text(json.dumps(charge("lit-A-1", "A", "NaN")) + "\n")
    _one_line_exit_2(ttbench("report", str(run), "--ledger", str(amounts)),
                     f"{amounts}: line 1: amount: not an amount: 'NaN'")


def test_a_mapping_file_of_your_own(tmp_path):
    mapping = tmp_path / "my-billing.yaml"
    mapping.write_text(yaml.safe_dump({"kind": "ledger-mapping", "name": "mine", "format": "csv",
                                       "columns": {"attempt_id": "Attempt", "amount": "Micro USD"},
                                       "amount_scale": "0.000001"}))
    run = make_run(tmp_path / "run", [rec("A", rid=None)], ledger_text="Attempt,Micro USD\nA-a1,45\n",
                   ledger_name="mine.csv")
    res = ttbench("report", str(run), "--ledger", str(run / "mine.csv"), "--ledger-mapping", str(mapping))
    assert res.returncode == 0, res.stderr
    b = json.loads((run / "summary.json").read_text())["billing"]
    assert b["findings"] == [] and Decimal(b["charged_total"]) == CALL_COST  # 45 micro-dollars
    mapping.write_text(yaml.safe_dump({"kind": "ledger-mapping", "columns": {"amount": "x"}, "scale": 2}))
    _one_line_exit_2(ttbench("report", str(run), "--ledger", str(run / "mine.csv"), "--ledger-mapping",
                             str(mapping)),
                     f"{mapping}.scale: unknown key (known: kind, name, description, format, columns, "
                     "charge_type, charge_if_amount, amount_scale)")
