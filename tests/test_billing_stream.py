"""The billing audit at scale (analysis.billing_stream): audit_batches gives exactly audit()'s result, whatever the
batch sizes and partitions; LedgerStream reads load_ledger's rows and one-line errors, a batch at a time."""

from __future__ import annotations

import csv
import io
import json
import random
import threading
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

import analysis.billing_stream as bs
from analysis import helper, settings
from analysis.billing import Policy, audit
from analysis.billing_stream import AUDIT_COLUMNS, LedgerStream, audit_batches, read_ledger_stream
from analysis.ledger import load_ledger
from analysis.load import InputError
from analysis.records import load_records
from ttformats.prices import Usage, load_price_sheet

from .test_analysis_ledgers import LITELLM_IDS, SPENDLOG_RECORDS, costlog, spendlog
from .test_billing_joins import CACHED_COST, CALL_COST, PRICES, charge, make_run, rec

pytestmark = pytest.mark.timeout(60)

SIZES = (1, 7, 1000)
PARTS = (1, 3, 16)


@pytest.fixture(autouse=True)
def small_pieces(monkeypatch):
    """Batches as given (no joining up), and a ledger read a few bytes and rows at a time."""
    monkeypatch.setattr(bs, "MIN_BLOCK", 1)
    monkeypatch.setattr(bs, "CHUNK_BYTES", 97)
    monkeypatch.setattr(bs, "BATCH_ROWS", 5)


def norm(x: Any) -> Any:
    """A result with NaN made comparable (and every type kept)."""
    if isinstance(x, dict):
        return {k: norm(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [norm(v) for v in x]
    if isinstance(x, float) and x != x:
        return ("NaN",)
    return (type(x).__name__, x)


def pieces(att: pd.DataFrame, size: int):
    cols = [c for c in AUDIT_COLUMNS if c in att.columns]

    def gen():
        for i in range(0, len(att), size):
            yield att.iloc[i:i + size][cols]
    return gen


def run_inputs(run: Path, ledger: str | None = None, mapping: str | None = None):
    """What analyze() hands audit(): the records, the ledger frame (and a stream of it), the sheet, the policy."""
    scenario = yaml.safe_load((run / "scenario.yaml").read_text()) or {}
    cfg = settings.resolve(scenario.get("ledger") or {}, ledger, mapping, None, None, base=run)
    df, _ = settings.read_ledger(run, cfg, None, [])
    stream, _ = read_ledger_stream(run, cfg, None, [])
    policy = Policy.from_mapping((scenario.get("analysis") or {}).get("billing"))
    return load_records(run / "records.jsonl"), df, stream, load_price_sheet(run / "prices.yaml"), policy


def same_as_audit(att, df, stream, sheet, policy, lost=None, sizes=SIZES, parts=PARTS) -> dict:
    ref = audit(att, df, sheet, policy, lost)
    for size in sizes:
        for k in parts:
            stats: dict[str, Any] = {}
            got = audit_batches(pieces(att, size), stream, sheet, policy, lost, partitions=k, stats=stats)
            assert norm(got) == norm(ref), (size, k, stats)
            assert json.dumps(got, default=str) == json.dumps(ref, default=str)
            assert stats["mode"] == "partitioned", stats
    return ref


# ---------------------------------------------------------------------------------------------------------------
# (a) the cases of the billing tests

IDS = {"x-litellm-call-id": "lit-A-1", "llm_provider-x-tt-request-id": "req_up_A"}
IDS_D = {"x-litellm-call-id": "lit-D-1", "llm_provider-x-tt-request-id": "req_u2"}


def _csv_text(rows: list[dict], fieldnames: list[str] | None = None) -> str:
    """A CSV export, with plain newlines (the fast path reads those; tests make their CRLF variants)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fieldnames or list(rows[0]), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: json.dumps(v) if isinstance(v, dict | list) else ("" if v is None else v) for k, v in r.items()})
    return buf.getvalue()


def _sim_csv() -> str:
    rows = [charge("lit-A-1", "A", CALL_COST), charge(None, None, CALL_COST, attempt="B-a1"),
            charge("lit-A-1", "A", "0.0002", kind="hold")]
    return _csv_text(rows)


def _spend_csv() -> str:
    return _csv_text([spendlog("9f1c-A", 4.5e-05), spendlog("9f1c-B", 4.5e-05),
                      spendlog("9f1c-C", 1.5e-05, status="failure", prompt=100, completion=0)])


JOIN_CASES: dict[str, dict[str, Any]] = {
    "any id of the response": dict(records=[rec("A", ids=IDS)], ledger=[charge("req_up_A", None, CALL_COST)]),
    "attempt id, no request id column": dict(
        records=[rec("B", rid=None)], ledger_name="billing.csv",
        ledger_text="time,type,client_attempt_id,input_tokens,output_tokens,amount\n"
                    f"1.0,hold,B-a1,,,0.0001\n1.5,charge,B-a1,100,50,{CALL_COST}\n",
        scenario={"name": "j", "ledger": {"file": "billing.csv"}}),
    "by key": dict(records=[rec("C")], ledger=[charge("req_upstream_C", "C", CALL_COST)]),
    "wrong amount by key": dict(records=[rec("C")], ledger=[charge("req_upstream_C", "C", CALL_COST * 2)]),
    "two charges under one attempt id": dict(
        records=[rec("D", rid=None)], ledger=[charge("req_u1", None, CALL_COST, attempt="D-a1"),
                                              charge("req_u2", None, CALL_COST, attempt="D-a1")]),
    "hidden retry next to the response's id": dict(
        records=[rec("D", ids=IDS_D)], ledger=[charge("req_u1", "D", CALL_COST, attempt="D-a1"),
                                               charge("req_u2", "D", CALL_COST, attempt="D-a1")]),
    "a failed attempt's charge": dict(
        records=[rec("E", 1, ok=False, rid=None, kind="reset", final=False), rec("E", 2)],
        ledger=[charge("req_sim_1", "E", CALL_COST, attempt="E-a1"), charge("lit-E-2", "E", CALL_COST, attempt="E-a2")]),
    "a call failed for good": dict(records=[rec("F", 1, ok=False, rid=None, kind="http_5xx", status=500)],
                                   ledger=[charge("req_sim_2", None, CALL_COST, attempt="F-a1")]),
    "mixed ledger": dict(
        records=[rec("A", ids={"x-litellm-call-id": "lit-A-1", "llm_provider-x-tt-request-id": "req_A"}),
                 rec("B", rid=None), rec("C"), rec("G", 1, ok=False, rid=None, kind="reset", final=False),
                 rec("G", 2, rid=None), rec("H")],
        ledger=[charge("req_A", "A", CALL_COST), charge(None, None, CALL_COST, attempt="B-a1"),
                charge("up_C", "C", CALL_COST), charge("up_G1", "G", CALL_COST, attempt="G-a1"),
                charge("up_G2", "G", CALL_COST, attempt="G-a2"), charge("nobody", "somebody-else", CALL_COST)]),
    "dry runs the gateway ignored": dict(
        records=[rec("P", dry_run=True, dry_run_ignored=True), rec("Q", dry_run=True, dry_run_ignored=True),
                 rec("S", stream=True, stream_format="sse", framing_mismatch=True)],
        ledger=[charge("lit-P-1", "P", CALL_COST), charge("lit-S-1", "S", CALL_COST)]),
    "cached tokens": dict(
        records=[rec("K", rid=None, inp=200, out=10, cached=80), rec("L", rid=None, inp=200, out=10, cached=80)],
        ledger=[charge(None, "K", CACHED_COST, attempt="K-a1", inp=200, out=10, cached=80),
                charge(None, "L", CACHED_COST, attempt="L-a1", inp=200, out=17, cached=80)]),
    "version 1 records": dict(
        records=[rec("A", v=1), rec("B", 1, ok=False, kind="http_5xx", status=500, v=1, final=False),
                 rec("B", 2, v=1), rec("C", 1, ok=False, rid=None, kind="connect", v=1)],
        ledger=[charge("lit-A-1", "A", CALL_COST), charge("lit-B-1", "B", CALL_COST), charge("lit-B-2", "B", CALL_COST)]),
    "the simulator's CSV export": dict(records=[rec("A"), rec("B", rid=None)], ledger_text=_sim_csv(),
                                       ledger_name="export.csv", ledger_arg="export.csv"),
    "spend logs, a JSON list": dict(
        records=SPENDLOG_RECORDS, ledger_name="spend-logs.json",
        ledger_text=json.dumps([spendlog("9f1c-A", 4.5e-05), spendlog("9f1c-B", 9e-05),
                                spendlog("9f1c-C", 0.0, status="failure", prompt=0, completion=0)], indent=1),
        scenario={"name": "s", "ledger": {"file": "spend-logs.json", "mapping": "litellm-spendlogs"}}),
    "spend logs, a CSV export": dict(records=SPENDLOG_RECORDS, ledger_text=_spend_csv(), ledger_name="spendlogs.csv",
                                     ledger_arg="spendlogs.csv", mapping="litellm-spendlogs"),
    "spend logs, a v2 page": dict(
        records=SPENDLOG_RECORDS[:2], ledger_name="page.json", ledger_arg="page.json", mapping="litellm-spendlogs",
        ledger_text=json.dumps({"data": [spendlog("9f1c-A", 4.5e-05, status=None),
                                         spendlog("9f1c-B", 4.5e-05, status=None)], "total": 2})),
    "the LiteLLM cost log": dict(
        records=[rec("A", rid="9f1c-A", ids=LITELLM_IDS), rec("B", rid=None),
                 rec("E", 1, ok=False, rid="9f1c-E1", kind="http_5xx", status=502, final=False),
                 rec("E", 2, rid="9f1c-E2"), rec("G", 1, ok=False, rid="9f1c-G", kind="http_5xx", status=500)],
        ledger_name="cost-log.jsonl",
        ledger_text="".join(json.dumps(x) + "\n" for x in [
            costlog("9f1c-A", "success", str(CALL_COST), "A-a1", "A", "req_A"),
            costlog("9f1c-B", "success", str(CALL_COST), "B-a1", "B", "req_B"),
            costlog("9f1c-E1", "failure", "0", "E-a1", "E", None, None, None, None),
            costlog("9f1c-E2", "success", str(CALL_COST), "E-a2", "E", "req_E2", out=57),
            costlog("9f1c-G", "failure", "0.000015", "G-a1", "G", "req_G", out=0)]),
        scenario={"name": "c", "ledger": {"file": "cost-log.jsonl", "mapping": "litellm-costlog"}}),
    "scenario columns over a mapping": dict(
        records=[rec("A", rid="9f1c-A")], ledger_name="c.jsonl",
        ledger_text=json.dumps({**costlog("9f1c-A", "success", "0", "A-a1", "A", None), "cost_usd": str(CALL_COST)}) + "\n",
        scenario={"name": "c", "ledger": {"file": "c.jsonl", "mapping": "litellm-costlog",
                                          "columns": {"amount": "cost_usd"}}}),
    "the run's own ledger.jsonl": dict(records=[rec("A", rid=None)],
                                       ledger=[charge("req_x", None, CALL_COST, attempt="A-a1")]),
    "micro-dollars": dict(records=[rec("A", rid=None)], ledger_text="Attempt,Micro USD\nA-a1,45\n",
                          ledger_name="mine.csv",
                          scenario={"name": "m", "ledger": {"file": "mine.csv", "format": "csv",
                                                            "columns": {"attempt_id": "Attempt", "amount": "Micro USD"},
                                                            "amount_scale": "0.000001"}}),
}


@pytest.mark.parametrize("case", list(JOIN_CASES))
def test_the_billing_tests_cases_audit_the_same(tmp_path, case):
    spec = dict(JOIN_CASES[case])
    ledger_arg, mapping = spec.pop("ledger_arg", None), spec.pop("mapping", None)
    run = make_run(tmp_path / "run", **spec)
    att, df, stream, sheet, policy = run_inputs(run, str(run / ledger_arg) if ledger_arg else None, mapping)
    same_as_audit(att, df, stream, sheet, policy)


# ---------------------------------------------------------------------------------------------------------------
# (b) generated runs with planted errors of every kind

MODELS = ("gpt-4o-mini", "gpt-4o", "claude-sonnet-4-5", "text-embedding-3-small", "not-on-the-sheet")
IMAGE_SIZES = ("1024x1024", "1536x1024", None, "huge")
LEDGER_HEADER = ("time", "type", "request_id", "idempotency_key", "client_attempt_id", "upstream_request_id",
                 "endpoint", "model", "input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens",
                 "images", "amount", "currency")
PLANTS = ("none", "double", "missing", "amount", "near", "over", "token", "image", "cache", "by_aid", "by_key",
          "by_up", "hidden", "failed", "key_reuse", "edge", "by_cid")


def planted_run(folder: Path, seed: int, calls: int = 160, fmt: str = "csv") -> tuple[Path, set[int]]:
    """A run folder whose records have every shape the audit tells apart (retries, replays sharing the original's
    request id, headerless failures, dry runs and pairs, model listings, images, cached input, unpriced models,
    other ids of a response) and whose ledger has planted errors of every kind (and joins of every kind)."""
    rng = random.Random(seed)
    sheet = load_price_sheet(PRICES)
    records: list[dict] = []
    rows: list[dict] = []
    lost = {1, 3}

    def row(rid, key, aid, amount, r=None, up=None, inp=None, out=None, cached=None, images=None, kind="charge"):
        rows.append({"time": rng.random(), "type": kind, "request_id": rid, "idempotency_key": key,
                     "client_attempt_id": aid, "upstream_request_id": up, "endpoint": (r or {}).get("endpoint"),
                     "model": (r or {}).get("model"), "input_tokens": inp, "output_tokens": out,
                     "cached_input_tokens": cached, "cache_write_tokens": 0 if inp is not None else None,
                     "images": images, "amount": str(amount), "currency": "USD"})

    order = list(range(calls))
    rng.shuffle(order)  # call ids sort in another order than the file's
    for c in range(calls):
        call = f"run-w{c % 4}-{order[c]:05d}"
        endpoint = rng.choices(("chat", "images", "models", "embeddings"), (70, 12, 6, 12))[0]
        model = {"images": "gpt-image-1", "models": "-", "embeddings": "text-embedding-3-small"}.get(
            endpoint, rng.choice(MODELS))
        inp, out = rng.randint(1, 3000), rng.randint(0, 400) if endpoint != "embeddings" else 0
        cached = (inp // 2) // 128 * 128 if endpoint == "chat" and inp >= 256 and rng.random() < 0.3 else 0
        extra: dict[str, Any] = {"endpoint": endpoint, "model": model}
        if endpoint == "images":
            extra.update(images_returned=rng.choice((1, 2, None)), image_size=rng.choice(IMAGE_SIZES),
                         image_quality=rng.choice(("medium", "low", None)))
        dry = endpoint == "chat" and rng.random() < 0.08
        if dry:
            extra.update(dry_run=True, dry_run_ignored=rng.random() < 0.3,
                         estimate={"estimate": {"amount": rng.choice(("0.0001", "0.00001", "x"))}})
            if rng.random() < 0.7:
                extra["pair_id"] = f"pair-{c // 3}"
        elif rng.random() < 0.1:
            extra["pair_id"] = f"pair-{c // 3}"
        shape = rng.choices(("ok", "retried", "replay", "failed", "headerless"), (70, 10, 8, 7, 5))[0]
        atts = []
        if shape in ("retried", "replay"):
            kind = rng.choice(("http_5xx", "reset", "truncated"))
            first = rec(call, 1, ok=False, rid=None if kind == "reset" else "auto", kind=kind, final=False,
                        stream=kind == "truncated", **extra)
            if kind == "truncated":
                first.update(finish_reason="stop", usage={"input": inp, "output": out, "cached_input": 0,
                                                          "cache_write": 0, "reasoning": 0})
            atts.append(first)
            final = rec(call, 2, inp=inp, out=out, cached=cached, **extra)
            if shape == "replay" and first["request_id"]:
                final.update(replayed=True, original_request_id=first["request_id"])
                if rng.random() < 0.4:
                    final["request_id"] = first["request_id"]  # the same id twice in the records
            atts.append(final)
        elif shape == "failed":
            kind = rng.choice(("http_5xx", "connect", "truncated"))
            f = rec(call, 1, ok=False, rid=None if kind == "connect" else "auto", kind=kind, sent=kind != "connect",
                    stream=kind == "truncated", **extra)
            if kind == "truncated" and rng.random() < 0.5:
                f.update(finish_reason="stop", usage={"input": inp, "output": out, "cached_input": 0,
                                                      "cache_write": 0, "reasoning": 0})
            atts.append(f)
        else:
            atts.append(rec(call, 1, rid=None if shape == "headerless" else "auto", inp=inp, out=out, cached=cached,
                            **extra))
        final = atts[-1]
        if final["ok"] and rng.random() < 0.15:
            final["ids"] = {"x-litellm-call-id": final["request_id"], "llm_provider-x-tt-request-id": f"up-{call}"}
        if rng.random() < 0.03:
            for a in atts:
                a["idempotency_key"] = "shared-key"  # a key two calls used
        elif rng.random() < 0.1:
            other = records[rng.randrange(len(records))]["call_id"] if records and rng.random() < 0.5 else \
                f"key-{call}"  # another call's id, or a key of its own
            for a in atts:
                a["idempotency_key"] = other
        records.extend(atts)
        billable = final["ok"] and endpoint != "models" and not (final.get("dry_run") and
                                                                 not final.get("dry_run_ignored"))
        plant = rng.choices(PLANTS, (40, 5, 4, 4, 3, 3, 4, 3, 3, 5, 5, 4, 3, 4, 2, 4, 4))[0]
        billing_rid = final["original_request_id"] if final.get("replayed") else final["request_id"]
        aid_of_billing = next((a["attempt_id"] for a in atts if a["request_id"] == billing_rid), final["attempt_id"])
        usage = Usage(images=final.get("images_returned") or 0, image_size=final.get("image_size") or "auto",
                      image_quality=final.get("image_quality") or "auto") if endpoint == "images" else \
            Usage(input_tokens=inp, output_tokens=out, cached_input_tokens=cached)
        price = sheet.cost(model, usage)
        tok = dict(inp=inp if endpoint != "images" else None, out=out if endpoint != "images" else None,
                   cached=cached if endpoint != "images" else None,
                   images=final.get("images_returned") if endpoint == "images" else None)
        if billable and plant != "missing":
            amount = {"amount": price * Decimal("1.1") + Decimal("0.001"), "near": price + Decimal("0.0000000005"),
                      "over": price * Decimal("1.0000011") + Decimal("0.0000000011"),
                      "edge": price + Decimal("1E-9")}.get(plant, price)  # exactly at the tolerance
            if plant == "cache" and cached:
                amount = sheet.cost(model, Usage(input_tokens=inp, output_tokens=out))
            if plant == "token" and tok["out"] is not None:
                tok["out"] += 1
            if plant == "image" and endpoint == "images":
                tok["images"] = (tok["images"] or 0) + 1
            rid, aid, key, up = billing_rid, aid_of_billing, call, None
            if plant == "by_aid":
                rid = None
            elif plant == "by_key":
                rid, aid, key = f"gw-{call}", None, final["idempotency_key"]
            elif plant == "by_cid":
                rid, aid = f"gw-{call}", None  # the call id: a key only when no row has it as its key
            elif plant == "by_up":
                rid, up = f"gw-{call}", (final.get("ids") or {}).get("llm_provider-x-tt-request-id", billing_rid)
            elif plant == "key_reuse":
                rid, aid, key = f"gw2-{call}", None, "shared-key"
            row(rid, key, aid, amount, final, up, **tok)
            if plant == "double":
                row(billing_rid, call, None, amount, final, **tok)
            if plant == "hidden":
                row(f"gw-hidden-{call}", None, aid_of_billing, amount, final, **tok)
        elif not billable and rng.random() < 0.5:  # a dry run, a failure or a model listing billed anyway
            a = rng.choice(atts)
            row(a["request_id"], call, a["attempt_id"], price or Decimal("0.0001"), a, **tok)
        if plant == "failed" and len(atts) > 1:
            a = atts[0]
            row(a["request_id"], call, a["attempt_id"], price, a, **tok)
        if rng.random() < 0.05:
            row(None, call, None, "0.5", kind="hold")
    for u in range(max(3, calls // 30)):  # charges no call explains, some under a lost worker's keys
        key = rng.choice((f"zz-{u}", f"run-w1-9{u}", f"run-w2-9{u}", None, f"run-w3-x{u}")) if u else "zz-0"
        row(rng.choice((f"req_unknown_{u}", None, "")) if u else "req_unknown_0", key,
            rng.choice((None, f"nobody-a{u}")), rng.choice(("0.001", "1E-7", "0")))
    rng.shuffle(rows)
    folder.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        text = _csv_text(rows, list(LEDGER_HEADER))
        name = "ledger.csv"
    else:
        text = "".join(json.dumps({k: (None if v == "" else v) for k, v in r.items()}) + "\n" for r in rows)
        name = "ledger.jsonl"
    make_run(folder, records, ledger_text=text, ledger_name=name,
             scenario={"name": "planted", "ledger": {"file": name}})
    return folder, lost


POLICIES = {
    "default": {},
    "bills everything": {"bill_failed": True, "bill_dry_runs": True, "bill_replays": True},
    "no tolerance": {"abs_tolerance": "0", "rel_tolerance": "0"},
}


@pytest.mark.parametrize("policy", list(POLICIES))
@pytest.mark.parametrize("seed", [1, 2])
def test_planted_errors_audit_the_same_in_any_pieces(tmp_path, seed, policy):
    run, lost = planted_run(tmp_path / "run", seed, fmt="csv" if seed % 2 else "jsonl")
    att, df, stream, sheet, _ = run_inputs(run)
    grid = {} if policy == "default" else {"sizes": (7,), "parts": (1, 16)}  # every size and K once per seed
    ref = same_as_audit(att, df, stream, sheet, Policy.from_mapping(POLICIES[policy]), lost, **grid)
    if policy == "default":  # the generator did plant what it says
        counts = ref["counts"]
        assert all(counts[k] for k in ("double_charge", "missing_charge", "dry_run_billed", "failed_billed",
                                       "amount_mismatch", "token_mismatch", "unknown_request")), counts
        assert all(ref["joins"].values()), ref["joins"]
        assert ref["lost_worker_charges"]


def test_a_big_planted_run_with_the_numpy_paths(tmp_path, monkeypatch):
    """Batches of the usual sizes: the vectorised common case and the CSV fast path carry the load."""
    monkeypatch.setattr(bs, "MIN_BLOCK", 32_768)
    monkeypatch.setattr(bs, "CHUNK_BYTES", 8 << 10)
    monkeypatch.setattr(bs, "BATCH_ROWS", 1 << 16)
    run, lost = planted_run(tmp_path / "run", 7, calls=3000)
    att, df, stream, sheet, policy = run_inputs(run)
    same_as_audit(att, df, stream, sheet, policy, lost, sizes=(500, 5000), parts=(1, 4))
    stats: dict[str, Any] = {}
    audit_batches(pieces(att, 5000), stream, sheet, policy, lost, stats=stats)
    assert stats["exact_calls"] < 0.5 * stats["records"], stats  # most calls took the numpy path


def test_weak_hashes_still_give_the_exact_result(tmp_path, monkeypatch):
    """Every id hashed into 8 values: ambiguous request ids, colliding call ids, collisions found and redone."""
    run, lost = planted_run(tmp_path / "run", 3)
    att, df, stream, sheet, policy = run_inputs(run)
    real = bs._hash_s
    monkeypatch.setattr(bs, "_hash_s", lambda a, salt: real(a, salt) & np.uint64(7))
    same_as_audit(att, df, stream, sheet, policy, lost, sizes=(7,), parts=(1, 3))


def test_a_collision_is_found_and_the_audit_redone(tmp_path, monkeypatch):
    """An unknown charge's request id hashes like a record's (with the first salt only): the check against the
    record's own id finds it, and the audit is redone with another salt."""
    run, lost = planted_run(tmp_path / "run", 4)
    att, df, stream, sheet, policy = run_inputs(run)
    victim = np.array([att["request_id"].dropna().iloc[0].encode()], dtype="S")
    real = bs._hash_s

    def weak(a: np.ndarray, salt: int) -> np.ndarray:
        h = real(a, salt)
        if salt == bs._SALT and len(a):
            h[np.char.startswith(a, b"req_unknown_0")] = real(victim, salt)[0]
        return h

    monkeypatch.setattr(bs, "_hash_s", weak)
    ref = audit(att, df, sheet, policy, lost)
    stats: dict[str, Any] = {}
    got = audit_batches(pieces(att, 50), stream, sheet, policy, lost, partitions=3, stats=stats)
    assert norm(got) == norm(ref)
    assert stats["salt_retries"] >= 1, stats


def test_input_it_cannot_take_runs_audit_whole(tmp_path):
    run, lost = planted_run(tmp_path / "run", 5, calls=40)
    att, df, stream, sheet, policy = run_inputs(run)
    att.loc[3, "request_id"] = "lit-odd\x00"  # byte strings cannot end with a NUL
    ref = audit(att, df, sheet, policy, lost)
    stats: dict[str, Any] = {}
    got = audit_batches(pieces(att, 7), stream, sheet, policy, lost, partitions=3, stats=stats)
    assert norm(got) == norm(ref) and stats["mode"] == "whole"
    for frame in (att.astype({"call_id": object}), att):  # a record without a call id (None, or NaN)
        frame.loc[5, "call_id"] = None
        assert outcome(audit, frame, df, sheet, policy, lost) == \
            outcome(lambda f, *a: audit_batches(pieces(f, 7), *a, partitions=3), frame, stream, sheet, policy, lost)


def outcome(fn, *args):
    """A result, or the exception it raised (audit() fails on some inputs: so must audit_batches)."""
    try:
        return "result", norm(fn(*args))
    except Exception as exc:  # noqa: BLE001
        return "error", type(exc).__name__, str(exc)


def test_no_records_and_frames_as_the_ledger(tmp_path):
    run, lost = planted_run(tmp_path / "run", 6, calls=30)
    att, df, stream, sheet, policy = run_inputs(run)
    empty = att.iloc[:0]
    assert norm(audit_batches(pieces(empty, 5), stream, sheet, policy, lost)) == norm(audit(empty, df, sheet, policy))
    ref = audit(att, df, sheet, policy, lost)
    for ledger in (df, lambda: (df.iloc[i:i + 4] for i in range(0, len(df), 4)), [df.iloc[:9], df.iloc[9:]]):
        assert norm(audit_batches(pieces(att, 9), ledger, sheet, policy, lost, partitions=3)) == norm(ref)


# ---------------------------------------------------------------------------------------------------------------
# (c) the ledger reader: load_ledger's rows and errors

def frames_of(stream: LedgerStream) -> pd.DataFrame:
    parts = list(stream.frames())
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=list(bs.LEDGER_COLUMNS))


def cell(v: Any) -> Any:
    """A frame's value as load_ledger's row held it (a missing one is None or NaN, a count int or float, as the
    frame's column type makes them: the same here)."""
    if v is None or (isinstance(v, float) and v != v):
        return ("missing",)
    if isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool):
        return ("number", float(v))
    return norm(v)


def rows_of(df: pd.DataFrame) -> list[tuple]:
    return [tuple(cell(v) for v in r) for r in df.astype(object).itertuples(index=False)]


def same_rows(tmp_path: Path, name: str, text: str | bytes, **kw: Any) -> pd.DataFrame | str:
    """load_ledger and LedgerStream on the same file: the same rows, or the same error."""
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    fmt = kw.pop("fmt", None)
    try:
        want: pd.DataFrame | str = load_ledger(path, fmt, **kw)
    except InputError as exc:
        want = str(exc)
    try:
        got: pd.DataFrame | str = frames_of(LedgerStream(path, fmt, **kw))
    except InputError as exc:
        got = str(exc)
    if isinstance(want, str):
        assert got == want
    else:
        assert not isinstance(got, str), got
        assert list(got.columns) == list(want.columns)
        assert rows_of(got) == rows_of(want)
        assert [type(a) for a in want["amount"]] == [type(a) for a in got["amount"]]
    return want


TT_SIM = {"default_columns": {"attempt_id": "client_attempt_id"}}


def test_csv_rows_as_load_ledger_reads_them(tmp_path):
    rows = [charge(f"r{i}", f"k{i % 7}", 10 ** -i if i % 5 == 0 else f"0.{i:05d}", attempt=f"a{i}" if i % 3 else None,
                   kind="hold" if i % 11 == 0 else "charge") for i in range(40)]
    text = _csv_text(rows)
    same_rows(tmp_path, "a.csv", text, **TT_SIM)
    same_rows(tmp_path, "b.csv", text.replace("\n", "\r\n"), **TT_SIM)  # CRLF
    same_rows(tmp_path, "c.csv", text.replace("\n", "\n\n", 5), **TT_SIM)  # blank lines
    lines = text.splitlines(keepends=True)
    nf = lines[0].count(",") + 1  # blank lines as many as the fields: the separators still come in whole rows
    for at in (1, 4, len(lines)):
        same_rows(tmp_path, f"c{at}.csv", "".join(lines[:at] + ["\n"] * nf + lines[at:]), **TT_SIM)
    quoted = lines[:3] + ['1.0,charge,"r,q","k\nnew",,chat,gpt-4o-mini,1,2,0,0,0,0.5,USD\n'] + lines[3:]
    same_rows(tmp_path, "d.csv", "".join(quoted), **TT_SIM)  # a quoted comma and newline
    same_rows(tmp_path, "e.csv", "".join(lines[:4] + ["1.0,charge,short\n"] + lines[4:]), **TT_SIM)  # ragged
    same_rows(tmp_path, "f.csv", "".join(lines[:4] + ["1.0,charge,r,k,a,chat,m,1,2,0,0,0,0.5,USD,extra\n"]
                                         + lines[4:]), **TT_SIM)
    same_rows(tmp_path, "g.csv", text.replace("r1,", "r\u00e9,"), **TT_SIM)  # non-ASCII
    same_rows(tmp_path, "h.csv", text, charge_type=None, charge_if_amount=True, amount_scale=Decimal("0.001"))
    same_rows(tmp_path, "i.csv", text, charge_type=["hold"], charge_if_amount=True)
    same_rows(tmp_path, "j.csv", "request_id,amount,amount\nx,1,2\ny,3\n")  # a name twice, a short row
    same_rows(tmp_path, "k.csv", "")
    same_rows(tmp_path, "l.csv", "request_id,amount\n")
    same_rows(tmp_path, "m.csv", "\nrequest_id,amount\nx,1\n")  # an empty first line: no field names
    same_rows(tmp_path, "n.csv", "request_id,amount,input_tokens\nx, 1.5 ,1e2\ny,+2,3.0\nz,1_0,\n")
    same_rows(tmp_path, "o.csv", "Attempt,Micro USD\nA-a1,45\n", columns={"attempt_id": "Attempt",
                                                                         "amount": "Micro USD"},
              amount_scale=Decimal("0.000001"))


def test_csv_errors_as_load_ledger_gives_them(tmp_path):
    rows = [charge(f"r{i}", "k", "0.5") for i in range(30)]
    lines = _csv_text(rows).splitlines(keepends=True)
    bad_amount = lines[:5] + [lines[5].replace(",0.5,", ",lots,")] + lines[6:]
    bad_count = lines[:7] + [lines[7].replace(",100,", ",1.5,")] + lines[8:]
    late_csv_error = bad_amount[:20] + ['1.0,charge,"unclosed\n'] + bad_amount[20:]  # csv error after a bad amount
    for name, text in (("amount", bad_amount), ("count", bad_count), ("csv", late_csv_error)):
        msg = same_rows(tmp_path, f"{name}.csv", "".join(text), **TT_SIM)
        assert isinstance(msg, str) and msg.startswith(str(tmp_path)), msg
    blank_then_bad = lines[:5] + ["\n", "\n"] + [lines[5].replace(",0.5,", ",NaN,")] + lines[6:]
    assert "line 8:" in same_rows(tmp_path, "blank.csv", "".join(blank_then_bad), **TT_SIM)
    huge = "1.0,charge," + "x" * 140_000 + ",k,,,,,,,,,0.5,USD\n"
    blank_then_csv_error = lines[:5] + ["\n", "\n"] + [huge] + lines[5:]
    assert "line 6: not CSV: field larger than field limit" in \
        same_rows(tmp_path, "blank2.csv", "".join(blank_then_csv_error), **TT_SIM)
    text = "".join(lines[:4]) + "1.0,charge,a\rb,k,,,,,,,,,0.5,USD\n" + "".join(lines[4:])  # a URL's text: no newline
    try:  # translation, so a carriage return inside a field is an error
        want = str(load_ledger("ledger-url", None, text=text, **TT_SIM))
    except InputError as exc:
        want = str(exc)
    with pytest.raises(InputError) as exc:
        list(LedgerStream("ledger-url", None, text=text, **TT_SIM).frames())
    assert str(exc.value) == want and "not CSV" in want
    late_bytes = "".join(bad_amount).encode() + b"x,charge,\xff\xfe,k,,,,,,,,,1,USD\n"
    assert "cannot read the ledger" in same_rows(tmp_path, "bytes.csv", late_bytes, **TT_SIM)
    same_rows(tmp_path, "nul.csv", "".join(lines[:3]) + "x,charge,a\x00b,k,,,,,,,,,1,USD\n", **TT_SIM)
    same_rows(tmp_path, "noamount.csv", "request_id,Something\nreq_1,2\n")
    same_rows(tmp_path, "nojoin.csv", "when,amount\n1,0.5\n")
    same_rows(tmp_path, "mapped.csv", "request_id,amount\nx,1\n", columns={"input_tokens": "Prompt Tokens"})
    same_rows(tmp_path, "fmt.csv", "request_id,amount\nx,1\n", fmt="xml")
    same_rows(tmp_path, "unknown.csv", "request_id,amount\nx,1\n", columns={"nonsense": "x"})
    same_rows(tmp_path, "q.csv", 'request_id,amount\n"x"y,1\n"a\n')
    with pytest.raises(InputError) as exc:
        list(LedgerStream(tmp_path / "nope.csv").frames())
    assert str(exc.value) == f"{tmp_path / 'nope.csv'}: cannot read the ledger: No such file or directory"


def test_json_lines_and_json_as_load_ledger_reads_them(tmp_path):
    rows = [charge(f"r{i}", f"k{i}", f"0.{i:03d}", attempt=f"a{i}") for i in range(25)]
    jsonl = "".join(json.dumps(r) + "\n" for r in rows)
    same_rows(tmp_path, "a.jsonl", jsonl, **TT_SIM)
    same_rows(tmp_path, "b.jsonl", "\n\n" + jsonl.replace("\n", "\n \n", 3), **TT_SIM)
    same_rows(tmp_path, "c.jsonl", jsonl.replace("\n", "\r\n"), **TT_SIM)
    same_rows(tmp_path, "d.jsonl", json.dumps(rows[0]) + "\n", **TT_SIM)  # one line: a whole JSON document
    same_rows(tmp_path, "e.json", json.dumps(rows, indent=2), **TT_SIM)
    same_rows(tmp_path, "f.json", json.dumps({"data": rows}, indent=2), **TT_SIM)
    same_rows(tmp_path, "g.jsonl", json.dumps({"data": rows}), **TT_SIM)
    floats = [{**r, "amount": float(r["amount"]) * 3, "input_tokens": 7.0} for r in rows]
    same_rows(tmp_path, "h.jsonl", "".join(json.dumps(r) + "\n" for r in floats), **TT_SIM)
    # the attempt id column: the mapping's client_attempt_id only when some row has it (here: the last one)
    plain = [{k: v for k, v in r.items() if k != "client_attempt_id"} | {"attempt_id": f"x{i}"}
             for i, r in enumerate(rows)]
    plain[-1]["client_attempt_id"] = "late"
    same_rows(tmp_path, "i.jsonl", "".join(json.dumps(r) + "\n" for r in plain), **TT_SIM)
    same_rows(tmp_path, "j.jsonl", "".join(json.dumps(r) + "\n" for r in plain[:-1]), **TT_SIM)
    same_rows(tmp_path, "k.jsonl", jsonl.replace(json.dumps(rows[3]), json.dumps(rows[3]) + "\u2028" + "{}"),
              **TT_SIM)  # a line separator inside a line: load_ledger's splitlines
    same_rows(tmp_path, "l.jsonl", jsonl.replace('"0.004"', "NaN"), **TT_SIM)
    same_rows(tmp_path, "m.jsonl", jsonl + "[1]\n", **TT_SIM)
    same_rows(tmp_path, "n.jsonl", jsonl.replace('"0.004"', '"x"') + "{broken\n", **TT_SIM)  # the parse error wins
    same_rows(tmp_path, "o.jsonl", "".join(json.dumps({k: v for k, v in r.items() if k != "amount"}) + "\n"
                                           for r in rows), **TT_SIM)  # no amount anywhere
    for k, (col, value) in enumerate((("input_tokens", -1), ("output_tokens", True), ("images", 2.5),
                                      ("cached_input_tokens", "7"), ("type", 5), ("request_id", 17),
                                      ("amount", 1e400), ("amount", False), ("idempotency_key", ""))):
        odd = [dict(r) for r in rows]
        odd[k + 3][col] = value
        same_rows(tmp_path, f"odd{k}.jsonl", "".join(json.dumps(r) + "\n" for r in odd), **TT_SIM)
    same_rows(tmp_path, "p.json", "[1, 2]")
    same_rows(tmp_path, "q.json", "{not json")


@pytest.mark.parametrize("mapping", ["tt-sim", "litellm-spendlogs", "litellm-costlog"])
def test_the_named_mappings_read_the_same(tmp_path, mapping):
    m = settings.load_mapping(mapping)
    kw = {"default_columns": m.get("columns") or {}, "charge_type": m.get("charge_type", "charge"),
          "charge_if_amount": m.get("charge_if_amount", False)}
    spend = [spendlog(f"s{i}", 4.5e-05 * i, status=("success", "failure", None)[i % 3]) for i in range(12)]
    cost = [costlog(f"c{i}", ("success", "failure")[i % 2], f"0.{i:04d}", f"a{i}", f"k{i}", f"u{i}")
            for i in range(12)]
    sim = [charge(f"r{i}", f"k{i}", "0.0001", attempt=f"a{i}", kind=("charge", "hold")[i % 2]) for i in range(12)]
    for name, text in (("spend.csv", _csv_text(spend)), ("spend.json", json.dumps(spend)),
                       ("cost.jsonl", "".join(json.dumps(r) + "\n" for r in cost)), ("sim.csv", _csv_text(sim)),
                       ("sim.jsonl", "".join(json.dumps(r) + "\n" for r in sim))):
        same_rows(tmp_path, name, text, **kw)


class _Ledger(BaseHTTPRequestHandler):
    body = b""
    ctype = "text/csv"

    def do_GET(self) -> None:  # noqa: N802
        if self.headers.get("X-Admin-Token") != "tok":
            self.send_response(401)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", self.ctype)
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_ledger_url_is_downloaded_then_read_in_batches(tmp_path):
    run, lost = planted_run(tmp_path / "run", 8, calls=60)
    _Ledger.body = (run / "ledger.csv").read_bytes().replace(b"\n", b"\r\n")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ledger)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/_sim/ledger?format=csv"
    try:
        cfg = settings.resolve({}, url, None, None, None, base=run)
        df, _ = settings.read_ledger(run, cfg, "tok", [])
        stream, _ = read_ledger_stream(run, cfg, "tok", [])
        assert stream is not None and stream.name == url.split("?")[0]
        assert rows_of(frames_of(stream)) == rows_of(df)
        att, _, _, sheet, policy = run_inputs(run)
        same_as_audit(att, df, stream, sheet, policy, lost, sizes=(7,), parts=(1, 3))
        folder = stream.folder
        stream.close()
        assert folder is not None and not Path(folder).exists()  # the downloaded copy is gone
        with pytest.raises(InputError) as exc:
            read_ledger_stream(run, cfg, "wrong", [])
        assert str(exc.value) == f"{url.split('?')[0]}: cannot fetch the ledger: HTTP 401 (check --ledger-header / " \
                                  "--ledger-token)"
    finally:
        server.shutdown()


def test_more_records_than_memory_holds_go_to_partitions(tmp_path, monkeypatch):
    """Past RAW_ROWS records the audit moves to partitions on disk by itself, with the same result."""
    monkeypatch.setattr(bs, "MIN_BLOCK", 64)
    monkeypatch.setattr(bs, "RAW_ROWS", 500)
    monkeypatch.setattr(bs, "PART_ROWS", 300)
    run, lost = planted_run(tmp_path / "run", 9, calls=600)
    att, df, stream, sheet, policy = run_inputs(run)
    stats: dict[str, Any] = {}
    got = audit_batches(pieces(att, 100), stream, sheet, policy, lost, stats=stats)
    assert norm(got) == norm(audit(att, df, sheet, policy, lost))
    assert stats["partitions"] > 1 and stats["mode"] == "partitioned", stats


def test_helper_processes_give_the_same_result(tmp_path, monkeypatch):
    """The ledger read by a helper process, partitions audited by another: the same result; helpers that die at
    once leave all the work here, with the same result."""
    run, lost = planted_run(tmp_path / "run", 11, calls=300)
    att, df, stream, sheet, policy = run_inputs(run)
    ref = norm(audit(att, df, sheet, policy, lost))
    stats: dict[str, Any] = {}
    monkeypatch.setattr(bs, "_WAIT_FOR_HELPER", True)
    assert norm(audit_batches(pieces(att, 50), stream, sheet, policy, lost, partitions=4, workers=2,
                              stats=stats)) == ref
    assert stats["prefetch"] and stats["partition_helper"] and stats["helper_partitions"], stats
    monkeypatch.setattr(helper.sys, "executable", "/bin/false")
    assert norm(audit_batches(pieces(att, 50), stream, sheet, policy, lost, partitions=4, workers=2)) == ref


def test_a_ledger_error_found_by_the_helper_is_load_ledgers(tmp_path):
    run, lost = planted_run(tmp_path / "run", 12, calls=80)
    lines = (run / "ledger.csv").read_text().splitlines(keepends=True)
    lines[30] = lines[30].replace(",USD", ",USD,").replace("charge,", "charge,x,", 1)
    bad = run / "bad.csv"
    bad.write_bytes("".join(lines[:10] + [lines[10].replace(",0.", ",zero.")] + lines[11:]).encode()
                    + b"1,charge,\xff,k,,,,,,,,,,1,USD\n")
    att, _, _, sheet, policy = run_inputs(run)
    with pytest.raises(InputError) as want:
        load_ledger(bad, default_columns={"attempt_id": "client_attempt_id"})
    for workers in (1, 2):
        with pytest.raises(InputError) as got:
            audit_batches(pieces(att, 50), LedgerStream(bad, default_columns={"attempt_id": "client_attempt_id"}),
                          sheet, policy, lost, workers=workers)
        assert str(got.value) == str(want.value)
