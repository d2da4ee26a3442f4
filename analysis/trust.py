"""When the billing audit cannot be trusted: ids the ledger cannot join, an ignored Idempotency-Key, a price sheet
that is not the gateway's. Each issue is one sentence for the report, stderr and summary.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ttformats.prices import PriceError, load_price_sheet

from .attempt_facts import AttemptFacts

#: the simulator's shipped price sheet, read as a file (the analysis never imports the simulator)
SIM_DEFAULT_PRICES = Path(__file__).resolve().parent.parent / "gatewaysim" / "defaults" / "prices.yaml"
MIN_SHARE = 0.95

def request_id_issue(facts: AttemptFacts, gateway: dict[str, Any]) -> str | None:
    """(a) Attempts that got response headers but no join id (model listings aside: they are never billed, and a
    gateway may answer them itself)."""
    n, with_id = facts.answered, facts.answered_with_id
    if not n or with_id >= MIN_SHARE * n:
        return None
    headers = ", ".join(gateway.get("request_id_headers") or []) or "x-tt-request-id"
    return (f"only {with_id} of {n} attempts that got response headers carry a request id (looked for: {headers}): "
            "the gateway's charges cannot be joined to them; run with the gateway's profile (`--gateway NAME`) "
            "or set its request-id headers")


def join_issue(billing: dict[str, Any]) -> str | None:
    """(b) Charges that join no call."""
    n = billing.get("charges") or 0
    joined = billing.get("charges_joined") or 0
    if not n or joined >= MIN_SHARE * n:
        return None
    return (f"only {joined} of {n} charges join a call (by request id, attempt id or Idempotency-Key): the ledger's "
            "ids are not the ones the client saw; check the ledger mapping (`--ledger-mapping`) and the gateway "
            "profile")


def idempotency_issue(facts: AttemptFacts, gateway: dict[str, Any] | None, target: Any) -> str | None:
    """(c) Retries that should have been replayed, none was, and the profile claims Idempotency-Key is honoured."""
    if target == "sim" or not facts.rows or facts.replayed_any:
        return None  # the simulator honours Idempotency-Key (its own tests say so)
    honoured = ((gateway or {}).get("idempotency") or {}).get("honoured", True) if gateway is not None else True
    if honoured is not True:
        return None
    n = facts.maybe_billed_retried_calls
    if not n:
        return None
    return (f"this gateway does not seem to honour Idempotency-Key: {n} calls may be billed more than once (each "
            "was retried after a failure that may have been billed, and no retry was ever answered as a replay)")


def price_issue(sheet_path: Path | None, target: Any) -> str | None:
    """(d) Against a real gateway, the simulator's default price sheet."""
    if target in (None, "sim") or sheet_path is None or not sheet_path.exists() or not SIM_DEFAULT_PRICES.exists():
        return None
    try:
        mine, default = load_price_sheet(sheet_path), load_price_sheet(SIM_DEFAULT_PRICES)
    except (PriceError, OSError):
        return None
    if mine.currency != default.currency or mine.models != default.models:
        return None
    return ("the price sheet is the simulator's default: its prices are not your gateway's; pass --prices "
            "(`ttbench report RUN --prices FILE`)")


def issues(facts: AttemptFacts, billing: dict[str, Any], run: dict[str, Any], gateway: dict[str, Any] | None,
           sheet_path: Path | None) -> list[str]:
    """Every reason the billing audit cannot be trusted (empty: it can)."""
    target = run.get("target")
    found = [request_id_issue(facts, gateway or {}), join_issue(billing), idempotency_issue(facts, gateway, target),
             price_issue(sheet_path, target)]
    return [f for f in found if f]
