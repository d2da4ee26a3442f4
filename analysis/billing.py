"""Billing accuracy: the gateway's charges per request id reconciled against responses and the price sheet."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

import pandas as pd

from ttformats.prices import PriceSheet, Usage

from .load import InputError

FINDING_KINDS = ("double_charge", "missing_charge", "dry_run_billed", "failed_billed", "amount_mismatch",
                 "token_mismatch", "image_count_mismatch", "unknown_request", "cache_discount_missing")


@dataclass
class Policy:
    """What the gateway is expected to bill beyond successful calls (all free by default)."""

    bill_failed: bool = False
    bill_dry_runs: bool = False
    bill_replays: bool = False
    abs_tolerance: Decimal = Decimal("0.000000001")
    rel_tolerance: Decimal = Decimal("0.000001")

    @classmethod
    def from_mapping(cls, m: dict[str, Any] | None) -> Policy:
        """From the scenario's `analysis.billing` (flags must be true or false: "no" is an error, not true)."""
        m = m or {}
        for k in ("bill_failed", "bill_dry_runs", "bill_replays"):
            if k in m and not isinstance(m[k], bool):
                raise InputError(f"analysis.billing.{k}: expected true or false, got {m[k]!r}")
        p = cls(bill_failed=m.get("bill_failed", False), bill_dry_runs=m.get("bill_dry_runs", False),
                bill_replays=m.get("bill_replays", False))
        if "abs_tolerance" in m:
            p.abs_tolerance = Decimal(str(m["abs_tolerance"]))
        if "rel_tolerance" in m:
            p.rel_tolerance = Decimal(str(m["rel_tolerance"]))
        return p

    def same(self, a: Decimal, b: Decimal) -> bool:
        """Equal within the stated tolerance."""
        return abs(a - b) <= max(self.abs_tolerance, self.rel_tolerance * max(abs(a), abs(b)))


def _int(v: Any) -> int:
    try:
        return 0 if v is None or v != v else int(v)
    except (TypeError, ValueError):
        return 0


def expected_usage(row: Any) -> Usage:
    """What the successful response says should be billed."""
    images = _int(row.images_returned)
    if row.endpoint == "images":
        return Usage(images=images, image_size=row.image_size or "auto", image_quality=row.image_quality or "auto")
    return Usage(input_tokens=_int(row.u_input), output_tokens=_int(row.u_output),
                 cached_input_tokens=_int(row.u_cached), cache_write_tokens=_int(row.u_write))


def _lost_worker(key: Any, run_id: str | None, lost: set[int]) -> int | None:
    """The lost worker an idempotency key (`<run id>-w<index>-<seq>`) belongs to, if any."""
    if not isinstance(key, str) or run_id is None or not key.startswith(run_id + "-w"):
        return None
    head = key[len(run_id) + 2:].split("-", 1)[0]
    return int(head) if head.isdigit() and int(head) in lost else None


def _produced_then_lost(row: Any) -> bool:
    """An answer complete when it was lost: a stream cut after its final usage and finish reason arrived, or a
    plain (not streamed) answer cut after its 200 status line (a gateway sends that once the answer is whole)."""
    if row.error_kind not in ("truncated", "reset"):
        return False
    if not row.stream:
        return _int(getattr(row, "status", None)) == 200
    return (row.finish_reason is not None and row.finish_reason == row.finish_reason and row.u_output == row.u_output
            and row.u_output is not None)


def _usage_known(row: Any) -> bool:
    """Whether an attempt's record holds what it should be billed for (a lost plain answer's body never arrived)."""
    if row.endpoint == "images":
        return row.images_returned == row.images_returned and row.images_returned is not None
    return row.u_input == row.u_input and row.u_input is not None


def _ids(row: Any) -> list[str]:
    """Every join id an attempt's response carried: its request_id and the other ids of `ids`."""
    out = [row.request_id] if isinstance(row.request_id, str) else []
    extra = getattr(row, "ids", None)
    if isinstance(extra, dict):
        out += [v for v in extra.values() if isinstance(v, str) and v not in out]
    return out


def _str(v: Any) -> str | None:
    return v if isinstance(v, str) and v else None


@dataclass
class _Charge:
    """One ledger charge and what it joined: the attempt (by request id or attempt id) or only the call (by key)."""

    row: Any
    call_id: str | None = None
    attempt: Any = None
    via: str | None = None  # request_id, attempt_id, idempotency_key, lost_worker or None (joins nothing)


JOINS = ("request_id", "attempt_id", "idempotency_key", "lost_worker")


def audit(att: pd.DataFrame, charges: pd.DataFrame, prices: PriceSheet, policy: Policy | None = None,
          lost_workers: set[int] | None = None) -> dict[str, Any]:
    """Findings, one per charge (and one per call missing its charge), with the precedence documented in README
    ("Billing accuracy"): every charge is either a call's one correct charge, accepted by the policy, or gets
    exactly one finding kind."""
    policy = policy or Policy()
    findings: list[dict[str, Any]] = []
    lost = lost_workers or set()
    run_id = str(att["run_id"].iloc[0]) if len(att) and "run_id" in att else None
    lost_charges: dict[int, dict[str, Any]] = {}
    joined = dict.fromkeys(JOINS, 0)
    if att.empty:
        return {"calls": 0, "accuracy": None, "findings": [], "counts": dict.fromkeys(FINDING_KINDS, 0),
                "charges": int(len(charges)), "charges_joined": 0, "joins": joined}
    att = att.sort_values(["call_id", "attempt"])
    rid_att: dict[str, Any] = {}
    aid_att: dict[str, Any] = {}
    key_call: dict[str, str] = {}
    calls: dict[str, list[Any]] = defaultdict(list)
    rows = list(att.itertuples(index=False))
    for row in rows:
        calls[row.call_id].append(row)
        if isinstance(row.request_id, str):
            rid_att.setdefault(row.request_id, row)
        if isinstance(row.attempt_id, str):
            aid_att.setdefault(row.attempt_id, row)
        if isinstance(row.idempotency_key, str):
            key_call.setdefault(row.idempotency_key, row.call_id)
    for row in rows:  # the other ids of each response (a gateway's own id and the upstream's)
        extra = getattr(row, "ids", None)
        if isinstance(extra, dict):
            for v in extra.values():
                if isinstance(v, str):
                    rid_att.setdefault(v, row)
    for cid in calls:
        key_call.setdefault(cid, cid)
    per_call: dict[str, list[_Charge]] = defaultdict(list)
    for ch in charges.itertuples(index=False):
        c = _Charge(ch)
        rid, upstream = _str(ch.request_id), _str(getattr(ch, "upstream_request_id", None))
        aid = _str(getattr(ch, "attempt_id", None))
        hit = rid_att.get(rid) if rid else None
        if hit is None and upstream:
            hit = rid_att.get(upstream)
        if hit is not None:
            c.attempt, c.via = hit, "request_id"
        elif aid and aid in aid_att:
            c.attempt, c.via = aid_att[aid], "attempt_id"
        elif _str(ch.idempotency_key) in key_call:
            c.call_id, c.via = key_call[ch.idempotency_key], "idempotency_key"
        elif (w := _lost_worker(ch.idempotency_key, run_id, lost)) is not None:
            c.via = "lost_worker"
            slot = lost_charges.setdefault(w, {"charges": 0, "amount": Decimal(0)})
            slot["charges"] += 1
            slot["amount"] += ch.amount
        if c.attempt is not None:
            c.call_id = c.attempt.call_id
        if c.via is not None:
            joined[c.via] += 1
        if c.call_id is not None:
            per_call[c.call_id].append(c)
        elif c.via is None:
            findings.append({"kind": "unknown_request", "request_id": ch.request_id, "call_id": None,
                             "idempotency_key": ch.idempotency_key, "attempt_id": aid, "charged": ch.amount,
                             "expected": Decimal(0)})
    bad_calls: set[str] = set()
    over = Decimal(0)
    under = Decimal(0)
    pair_est: dict[str, Decimal] = {}
    pair_charge: dict[str, Decimal] = {}
    free_calls = 0
    for call_id, atts in calls.items():
        found, est, charge, is_models = audit_call(call_id, atts, per_call.get(call_id, []), prices, policy)
        free_calls += is_models
        if est is not None:
            pair_est[est[0]] = est[1]
        if charge is not None:
            pair_charge[charge[0]] = charge[1]
        for f in found:
            findings.append(f)
            bad_calls.add(call_id)
            if f["charged"] > f["expected"]:
                over += f["charged"] - f["expected"]
            else:
                under += f["expected"] - f["charged"]
    n_calls = len(calls) - free_calls + len({c for c in bad_calls if calls[c][-1].endpoint == "models"})
    counts = dict.fromkeys(FINDING_KINDS, 0)
    for f in findings:
        counts[f["kind"]] += 1
    ratios = [float(pair_est[p] / pair_charge[p]) for p in pair_est if p in pair_charge and pair_charge[p] > 0]
    return {
        "calls": n_calls,
        "correct_calls": n_calls - len(bad_calls),
        "accuracy": (n_calls - len(bad_calls)) / n_calls if n_calls else None,
        "charges": int(len(charges)),
        "charges_joined": sum(joined.values()),
        "joins": joined,
        "charged_total": str(sum((c for c in charges["amount"]), Decimal(0))) if len(charges) else "0",
        "overcharged": str(over + sum((f["charged"] for f in findings if f["kind"] == "unknown_request"), Decimal(0))),
        "undercharged": str(under),
        "currency": prices.currency,
        "counts": counts,
        "findings": [{**f, "charged": str(f["charged"]), "expected": str(f["expected"])} for f in findings],
        "dry_run_pairs": {"pairs": len(ratios), "hold_covers_share": (sum(1 for r in ratios if r >= 1) / len(ratios))
                          if ratios else None, "estimate_to_charge_ratio": ratios},
        "lost_worker_charges": {str(w): {"charges": v["charges"], "amount": str(v["amount"])}
                                for w, v in sorted(lost_charges.items())},
        "policy": {"bill_failed": policy.bill_failed, "bill_dry_runs": policy.bill_dry_runs,
                   "bill_replays": policy.bill_replays, "abs_tolerance": str(policy.abs_tolerance),
                   "rel_tolerance": str(policy.rel_tolerance)},
    }


def _known_count(v: Any) -> bool:
    return v is not None and v == v


def _primary(final: Any, atts: list[Any], mine: list[_Charge], expected: Decimal, policy: Policy) -> _Charge | None:
    """A successful call's one charge: the one under its billing request id (the successful attempt's ids, or for
    a replay the original request's); else the first joined to the successful attempt by attempt id (for a replay
    whose original id is unknown: to a failed attempt, one of which was replayed); else, of the charges joined
    only by the key, the first whose amount is the expected one, else the first."""
    if final.replayed:
        billing = {final.original_request_id} if isinstance(final.original_request_id, str) else set()
    else:
        billing = set(_ids(final))
    for c in mine:
        if _str(c.row.request_id) in billing or _str(getattr(c.row, "upstream_request_id", None)) in billing:
            return c
    for c in mine:
        if c.via == "attempt_id" and c.attempt is final:
            return c
    if final.replayed and not billing:
        for c in mine:
            if c.attempt is not None and not c.attempt.ok:
                return c
    by_key = [c for c in mine if c.via == "idempotency_key"]
    return next((c for c in by_key if policy.same(c.row.amount, expected)), by_key[0] if by_key else None)


def audit_call(call_id: Any, atts: list[Any], mine: list[_Charge], prices: PriceSheet,
                policy: Policy) -> tuple[list[dict[str, Any]], Any, Any, bool]:
    """One call's findings against its charges: (findings, (pair id, estimate) or None, (pair id, charge) or None,
    whether it lists models)."""
    findings: list[dict[str, Any]] = []
    pair_est = pair_charge = None

    def add(kind: str, c: _Charge | None, charged: Decimal, expected: Decimal, rid: Any = None) -> None:
        ch = c.row if c is not None else None
        findings.append({"kind": kind, "request_id": ch.request_id if ch is not None else rid, "call_id": call_id,
                         "idempotency_key": ch.idempotency_key if ch is not None else call_id,
                         "attempt_id": _str(getattr(ch, "attempt_id", None)) if ch is not None else None,
                         "charged": charged, "expected": expected})

    final = atts[-1]
    if final.endpoint == "models":  # listing models is free: any charge is wrong by its amount
        for c in mine:
            add("amount_mismatch", c, c.row.amount, Decimal(0))
        return findings, None, None, True
    if final.dry_run and not getattr(final, "dry_run_ignored", False):
        if final.pair_id and final.est_amount:
            try:
                pair_est = (final.pair_id, Decimal(str(final.est_amount)))
            except ArithmeticError:
                pass
        if not policy.bill_dry_runs:
            for c in mine:
                add("dry_run_billed", c, c.row.amount, Decimal(0))
        return findings, pair_est, None, False
    if not final.ok:
        if not policy.bill_failed:
            billed_once: set[str] = set()
            for c in mine:
                a = c.attempt
                if a is not None and _produced_then_lost(a) and a.attempt_id not in billed_once:
                    billed_once.add(a.attempt_id)
                    if _usage_known(a):  # else its amount cannot be checked: the usage was lost with the body
                        exp = prices.cost(a.model, expected_usage(a))
                        if not policy.same(c.row.amount, exp):
                            add("amount_mismatch", c, c.row.amount, exp)
                    continue
                add("double_charge" if a is not None and a.attempt_id in billed_once else "failed_billed",
                    c, c.row.amount, Decimal(0))
        return findings, None, None, False
    usage = expected_usage(final)
    expected = prices.cost(final.model, usage)
    primary = _primary(final, atts, mine, expected, policy)
    if primary is None:
        billing_rid = final.original_request_id if final.replayed else final.request_id
        add("missing_charge", None, Decimal(0), expected, rid=billing_rid)
    else:
        ch = primary.row
        if final.pair_id:
            pair_charge = (final.pair_id, ch.amount)
        kind = None
        if final.endpoint == "images":
            if _known_count(ch.images) and ch.images != usage.images:
                kind = "image_count_mismatch"
        elif (_known_count(ch.input_tokens) and ch.input_tokens != usage.input_tokens) or \
                (_known_count(ch.output_tokens) and ch.output_tokens != usage.output_tokens) or \
                (_known_count(ch.cached_input_tokens) and ch.cached_input_tokens != usage.cached_input_tokens):
            kind = "token_mismatch"
        if kind is None and not policy.same(ch.amount, expected):
            full = prices.cost(final.model, replace(usage, cached_input_tokens=0))
            discounted = usage.cached_input_tokens > 0 and full != expected
            kind = "cache_discount_missing" if discounted and policy.same(ch.amount, full) else "amount_mismatch"
        if kind is not None:
            add(kind, primary, ch.amount, expected)
    headerless = any(not a.ok and getattr(a, "sent", True) and not _ids(a) for a in atts)
    for c in mine:
        if c is primary:
            continue
        a = c.attempt
        if a is not None and a.ok:
            if not (a.replayed and policy.bill_replays):
                add("double_charge", c, c.row.amount, Decimal(0))
        elif a is not None or headerless:
            if not policy.bill_failed:
                add("failed_billed", c, c.row.amount, Decimal(0))
        else:
            add("double_charge", c, c.row.amount, Decimal(0))
    return findings, None, pair_charge, False
