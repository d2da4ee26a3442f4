"""CI gates: thresholds from the scenario checked against the summary."""

from __future__ import annotations

from typing import Any

from .load import InputError

#: gate name -> (path into the summary, "max" or "min")
GATES: dict[str, tuple[tuple[str, ...], str]] = {
    "ttft_p50_ms": (("metrics", "overall", "ttft_ms", "p50"), "max"),
    "ttft_p95_ms": (("metrics", "overall", "ttft_ms", "p95"), "max"),
    "ttft_p99_ms": (("metrics", "overall", "ttft_ms", "p99"), "max"),
    "e2e_p95_ms": (("metrics", "overall", "e2e_ms", "p95"), "max"),
    "e2e_p99_ms": (("metrics", "overall", "e2e_ms", "p99"), "max"),
    "itl_p95_ms": (("metrics", "overall", "itl_ms", "p95"), "max"),
    "tpot_p95_ms": (("metrics", "overall", "tpot_ms", "p95"), "max"),
    "error_rate": (("metrics", "overall", "error_rate"), "max"),
    "goodput_share": (("metrics", "overall", "goodput_share"), "min"),
    "requests_per_s": (("metrics", "overall", "requests_per_s"), "min"),
    "output_tokens_per_s": (("metrics", "overall", "output_tokens_per_s"), "min"),
    "billing_accuracy": (("billing", "accuracy"), "min"),
    "double_charges": (("billing", "counts", "double_charge"), "max"),
    "missing_charges": (("billing", "counts", "missing_charge"), "max"),
    "billing_findings": (("billing", "findings_total"), "max"),
    "max_sustainable_rps": (("capacity", "max_sustainable_rps"), "min"),
}


def check_names(gates: dict[str, Any], where: str) -> None:
    """One-line error for an unknown gate or a non-numeric threshold."""
    for name, value in gates.items():
        if name not in GATES:
            raise InputError(f"{where}: gates.{name}: unknown gate (known: {', '.join(GATES)})")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InputError(f"{where}: gates.{name}: expected a number, got {value!r}")


#: gates on the billing audit: they fail whenever the audit cannot be trusted (billing.trusted false)
BILLING_GATES = ("billing_accuracy", "double_charges", "missing_charges", "billing_findings")


def evaluate(gates: dict[str, Any], summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Each gate with its value, whether it held and why not; a missing value or an untrusted audit fails it."""
    out = []
    billing = summary.get("billing") or {}
    for name, threshold in gates.items():
        path, sense = GATES[name]
        value: Any = summary
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        reason = None
        if value is None:
            ok = False
            reason = "no value (no ledger?)" if name in BILLING_GATES and not billing else "no value"
        else:
            ok = value <= threshold if sense == "max" else value >= threshold
        if name in BILLING_GATES and billing and billing.get("trusted") is False:
            ok = False
            reason = "the billing audit cannot be trusted: " + "; ".join(billing.get("trust_issues") or [])
        out.append({"gate": name, "threshold": threshold, "sense": sense, "value": value, "ok": bool(ok),
                    "reason": reason})
    return out
