"""Billing accuracy: the gateway's charges per request id reconciled against responses and the price sheet."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

import pandas as pd

from ttbench.prices import PriceSheet, Usage

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
        """From the scenario's `analysis.billing`."""
        m = m or {}
        p = cls(bill_failed=bool(m.get("bill_failed", False)), bill_dry_runs=bool(m.get("bill_dry_runs", False)),
                bill_replays=bool(m.get("bill_replays", False)))
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
    """A stream cut after its final usage and finish reason arrived: the answer was complete when it was lost."""
    return (row.error_kind in ("truncated", "reset") and bool(row.stream) and row.finish_reason is not None
            and row.finish_reason == row.finish_reason and row.u_output == row.u_output and row.u_output is not None
            and row.endpoint in ("chat", "messages"))


def audit(att: pd.DataFrame, charges: pd.DataFrame, prices: PriceSheet, policy: Policy | None = None,
          lost_workers: set[int] | None = None) -> dict[str, Any]:
    """Findings, one per (kind, request id), with the precedence documented in README ("Billing accuracy")."""
    policy = policy or Policy()
    findings: list[dict[str, Any]] = []
    lost = lost_workers or set()
    run_id = str(att["run_id"].iloc[0]) if len(att) and "run_id" in att else None
    lost_charges: dict[int, dict[str, Any]] = {}
    if att.empty:
        return {"calls": 0, "accuracy": None, "findings": [], "counts": dict.fromkeys(FINDING_KINDS, 0)}
    att = att.sort_values(["call_id", "attempt"])
    rid_att: dict[str, Any] = {}
    calls: dict[str, list[Any]] = defaultdict(list)
    for row in att.itertuples(index=False):
        calls[row.call_id].append(row)
        if isinstance(row.request_id, str):
            rid_att[row.request_id] = row
    by_key = {k for k in calls}
    per_call: dict[str, list[Any]] = defaultdict(list)
    for ch in charges.itertuples(index=False):
        hit = rid_att.get(ch.request_id) if isinstance(ch.request_id, str) else None
        if hit is not None:
            per_call[hit.call_id].append(ch)
        elif isinstance(ch.idempotency_key, str) and ch.idempotency_key in by_key:
            per_call[ch.idempotency_key].append(ch)
        elif (w := _lost_worker(ch.idempotency_key, run_id, lost)) is not None:
            slot = lost_charges.setdefault(w, {"charges": 0, "amount": Decimal(0)})
            slot["charges"] += 1
            slot["amount"] += ch.amount
        else:
            findings.append({"kind": "unknown_request", "request_id": ch.request_id, "call_id": None,
                             "idempotency_key": ch.idempotency_key, "charged": ch.amount, "expected": Decimal(0)})
    bad_calls: set[str] = set()
    over = Decimal(0)
    under = Decimal(0)
    pair_est: dict[str, Decimal] = {}
    pair_charge: dict[str, Decimal] = {}

    def add(kind: str, rid: Any, call_id: str, key: Any, charged: Decimal, expected: Decimal) -> None:
        nonlocal over, under
        findings.append({"kind": kind, "request_id": rid, "call_id": call_id, "idempotency_key": key,
                         "charged": charged, "expected": expected})
        bad_calls.add(call_id)
        if charged > expected:
            over += charged - expected
        else:
            under += expected - charged

    free_calls = 0
    for call_id, atts in calls.items():
        final = atts[-1]
        mine = per_call.get(call_id, [])
        if final.endpoint == "models":  # listing models is free: any charge is wrong by its amount
            free_calls += 1
            for ch in mine:
                add("amount_mismatch", ch.request_id, call_id, ch.idempotency_key, ch.amount, Decimal(0))
            continue
        if final.dry_run:
            if final.pair_id and final.est_amount:
                try:
                    pair_est[final.pair_id] = Decimal(str(final.est_amount))
                except ArithmeticError:
                    pass
            if not policy.bill_dry_runs:
                for ch in mine:
                    add("dry_run_billed", ch.request_id, call_id, ch.idempotency_key, ch.amount, Decimal(0))
            continue
        if not final.ok:
            if not policy.bill_failed:
                for ch in mine:
                    lost = rid_att.get(ch.request_id)
                    if lost is not None and _produced_then_lost(lost):
                        # produced and billed, then lost in transit (no retry got the replay): billed once
                        # for the usage the client saw before the cut
                        exp = prices.cost(lost.model, expected_usage(lost))
                        if not policy.same(ch.amount, exp):
                            add("amount_mismatch", ch.request_id, call_id, ch.idempotency_key, ch.amount, exp)
                        continue
                    add("failed_billed", ch.request_id, call_id, ch.idempotency_key, ch.amount, Decimal(0))
            continue
        billing_rid = final.original_request_id if final.replayed else final.request_id
        usage = expected_usage(final)
        expected = prices.cost(final.model, usage)
        primary = next((ch for ch in mine if ch.request_id == billing_rid), None)
        if primary is None:
            add("missing_charge", billing_rid, call_id, call_id, Decimal(0), expected)
        else:
            if final.pair_id:
                pair_charge[final.pair_id] = primary.amount
            kind = None
            if final.endpoint == "images":
                if primary.images is not None and primary.images != usage.images:
                    kind = "image_count_mismatch"
            elif (primary.input_tokens is not None and primary.input_tokens != usage.input_tokens) or \
                    (primary.output_tokens is not None and primary.output_tokens != usage.output_tokens) or \
                    (primary.cached_input_tokens is not None and primary.cached_input_tokens != usage.cached_input_tokens):
                kind = "token_mismatch"
            if kind is None and not policy.same(primary.amount, expected):
                full = prices.cost(final.model, replace(usage, cached_input_tokens=0))
                discounted = usage.cached_input_tokens > 0 and full != expected
                kind = "cache_discount_missing" if discounted and policy.same(primary.amount, full) else \
                    "amount_mismatch"
            if kind is not None:
                add(kind, primary.request_id, call_id, primary.idempotency_key, primary.amount, expected)
        ok_rids = {a.request_id for a in atts if a.ok}
        failed_rids = {a.request_id for a in atts if not a.ok and isinstance(a.request_id, str)}
        headerless = any(not a.ok and not isinstance(a.request_id, str) for a in atts)
        for ch in mine:
            if ch is primary:
                continue
            if ch.request_id in ok_rids:
                if not policy.bill_replays:
                    add("double_charge", ch.request_id, call_id, ch.idempotency_key, ch.amount, Decimal(0))
            elif ch.request_id in failed_rids or headerless:
                if not policy.bill_failed:
                    add("failed_billed", ch.request_id, call_id, ch.idempotency_key, ch.amount, Decimal(0))
            else:
                add("double_charge", ch.request_id, call_id, ch.idempotency_key, ch.amount, Decimal(0))
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
