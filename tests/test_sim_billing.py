"""Planted billing errors: ledger and truth agree on each kind; dry runs; the export hides the plan."""

from __future__ import annotations

from decimal import Decimal

import httpx
import pytest

from .helpers import CHAT, auth, charges, chat, truth_by_id

pytestmark = pytest.mark.timeout(60)


def plant(kind: str, count: int = 3, faults: dict | None = None):
    cfg = {"billing_errors": {"quota": {kind: count}, "quota_rate": 1.0}}
    if faults:
        cfg["faults"] = faults
    return cfg


def planted(sim):
    return {e["request_id"]: e["billing_error"] for e in sim.truth() if e["billing_error"]}


def test_missing_charge(make_sim):
    sim = make_sim(plant("missing_charge", 2))
    rids = [chat(sim, attempt=f"m{i}").headers["X-TT-Request-ID"] for i in range(4)]
    charged = {r["request_id"] for r in charges(sim)}
    assert planted(sim) == {rids[0]: "missing_charge", rids[1]: "missing_charge"}
    assert charged == set(rids[2:])


def test_amount_mismatch(make_sim):
    sim = make_sim(plant("amount_mismatch", 1))
    r = chat(sim, attempt="am1")
    (row,) = charges(sim)
    usage = r.json()["usage"]
    fair = (Decimal(usage["prompt_tokens"]) * Decimal("0.15") + Decimal(usage["completion_tokens"]) * Decimal("0.60")) / 10**6
    assert Decimal(row["amount"]) == fair * Decimal("1.5")
    assert truth_by_id(sim)[r.headers["X-TT-Request-ID"]]["fair_amount"] == str(fair.normalize())
    assert planted(sim) == {r.headers["X-TT-Request-ID"]: "amount_mismatch"}


def test_token_mismatch(make_sim):
    sim = make_sim(plant("token_mismatch", 1))
    r = chat(sim, attempt="tm1")
    (row,) = charges(sim)
    assert row["output_tokens"] == r.json()["usage"]["completion_tokens"] + 7
    assert row["input_tokens"] == r.json()["usage"]["prompt_tokens"]


def test_dry_run_is_free_unless_dry_run_billed(make_sim):
    sim = make_sim(plant("dry_run_billed", 1))
    billed = chat(sim, attempt="d1", **{"X-TT-Dry-Run": "true"})
    free = chat(sim, attempt="d2", **{"X-TT-Dry-Run": "true"})
    est = free.json()
    assert est["object"] == "billing.estimate" and est["dry_run"] is True
    assert est["estimate"]["basis"] == {"input_tokens": 3, "max_output_tokens": 12, "images": 0,
                                        "image_size": None, "image_quality": None}
    expected = (Decimal(3) * Decimal("0.15") + Decimal(12) * Decimal("0.60")) / 10**6
    assert Decimal(est["estimate"]["amount"]) == expected and est["currency"] == "USD"
    rows = sim.ledger()
    assert [r["type"] for r in rows if r["request_id"] == free.headers["X-TT-Request-ID"]] == ["hold", "release"]
    assert [r["request_id"] for r in charges(sim)] == [billed.headers["X-TT-Request-ID"]]
    assert planted(sim) == {billed.headers["X-TT-Request-ID"]: "dry_run_billed"}
    # no model call: the truth has no usage for a dry run
    assert truth_by_id(sim)[free.headers["X-TT-Request-ID"]]["usage"] is None


def test_failed_billed(make_sim):
    sim = make_sim(plant("failed_billed", 1, faults={"quota": {"server_error": 2}, "quota_rate": 1.0}))
    a = chat(sim, attempt="f1")
    b = chat(sim, attempt="f2")
    assert a.status_code >= 500 and b.status_code >= 500
    assert [r["request_id"] for r in charges(sim)] == [a.headers["X-TT-Request-ID"]]
    assert planted(sim) == {a.headers["X-TT-Request-ID"]: "failed_billed"}


def test_double_charge_on_a_replay(make_sim):
    sim = make_sim(plant("double_charge", 1))
    first = chat(sim, attempt="dc1", key="k-dc")
    replay = chat(sim, attempt="dc2", key="k-dc")
    assert replay.headers["Idempotent-Replayed"] == "true"
    rows = charges(sim)
    assert [r["request_id"] for r in rows] == [first.headers["X-TT-Request-ID"], replay.headers["X-TT-Request-ID"]]
    assert rows[0]["amount"] == rows[1]["amount"]
    assert planted(sim) == {replay.headers["X-TT-Request-ID"]: "double_charge"}


def test_image_count_mismatch(make_sim):
    sim = make_sim(plant("image_count_mismatch", 1, faults={"quota": {"fewer_images": 5}, "quota_rate": 1.0}))
    body = {"model": "gpt-image-1", "prompt": "otters", "n": 3, "quality": "high", "size": "1024x1536"}
    r = httpx.post(sim.url + "/v1/images/generations", json=body, headers={**auth(sim), "X-Client-Attempt-ID": "i1"})
    (row,) = charges(sim)
    assert len(r.json()["data"]) < 3 and row["images"] == 3
    assert Decimal(row["amount"]) == 3 * Decimal("0.25")
    assert planted(sim) == {r.headers["X-TT-Request-ID"]: "image_count_mismatch"}


def test_unknown_request(make_sim):
    sim = make_sim(plant("unknown_request", 2))
    sent = {chat(sim, attempt=f"u{i}").headers["X-TT-Request-ID"] for i in range(3)}
    rows = charges(sim)
    ghosts = {r["request_id"] for r in rows} - sent
    assert len(rows) == 5 and len(ghosts) == 2
    assert planted(sim) == dict.fromkeys(ghosts, "unknown_request")
    assert all(truth_by_id(sim)[g]["client_attempt_id"] is None for g in ghosts)


def test_same_seed_same_plan_and_one_kind_per_request(make_sim):
    weights = {"missing_charge": 1, "amount_mismatch": 1, "token_mismatch": 1, "unknown_request": 1}
    over = {"billing_errors": {"rate": 0.5, "weights": weights}}
    a, b = make_sim(over, seed=3), make_sim(over, seed=3)
    ids = [f"b{i}" for i in range(30)]
    for i in ids:
        chat(a, attempt=i)
    for i in reversed(ids):
        chat(b, attempt=i)

    def kinds(sim):
        out = {}
        entries = truth_by_id(sim)
        for e in entries.values():
            if e["billing_error"] == "unknown_request":
                out[entries[e["planted_by"]]["client_attempt_id"]] = "unknown_request"
            elif e["client_attempt_id"]:
                out.setdefault(e["client_attempt_id"], e["billing_error"])
        return out

    assert kinds(a) == kinds(b)
    assert 5 <= sum(1 for k in kinds(a).values() if k) <= 25


def test_ledger_export_holds_only_billing_columns(sim):
    chat(sim, CHAT)
    csv_text = sim.admin("/_sim/ledger", format="csv").text
    header = csv_text.splitlines()[0].split(",")
    assert header == ["time", "type", "request_id", "idempotency_key", "client_attempt_id", "endpoint", "model", "input_tokens",
                      "output_tokens", "cached_input_tokens", "cache_write_tokens", "images", "amount", "currency"]
    rows = sim.ledger()
    assert rows and set(rows[0]) == set(header)
    times = [r["time"] for r in rows]
    assert times == sorted(times)


def test_admin_routes_need_the_token(sim):
    for path in ("/_sim/ledger", "/_sim/truth", "/_sim/capacity", "/_sim/stats", "/_sim/config"):
        assert httpx.get(sim.url + path).status_code == 401
        assert httpx.get(sim.url + path, headers={"X-Admin-Token": "wrong"}).status_code == 401
    assert httpx.get(sim.url + "/_sim/health").status_code == 200
