"""CI gates: thresholds from the scenario checked against the summary, each only over enough samples.

A gate is `name: threshold`, or `name: {max|min: threshold, min_samples: N, fail_on_insufficient: BOOL}` (the
sense is the gate's own); `fail_on_insufficient: BOOL` next to the gates sets the default for all of them. A gate
whose figure stands on fewer samples than its minimum reports "not enough data" and holds, unless it is told to
fail then.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .load import InputError

_CALLS = ("metrics", "overall", "calls")
#: the isolation gate: its figure is the lower bound of the interval of the steady tenant's TTFT p95 ratio (during
#: the burst tenant's bursts / outside them), so it fails only on a significant slow-down
ISOLATION_GATE = "isolation_ttft_p95_ratio"

#: gate name -> (path into the summary, "max" or "min"); a number in a path indexes a list
GATES: dict[str, tuple[tuple[str | int, ...], str]] = {
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
    ISOLATION_GATE: (("isolation", "ci", 0), "max"),
}

#: gate name -> (path to the count of samples behind its figure, the default minimum); a percentile needs a few
#: samples beyond its tail (p50: 10, p95: 20, p99: 100), a rate or share 20 calls. The billing gates audit every
#: call (one double charge is a finding, not noise) and the capacity gate every stage: no default minimum.
SAMPLES: dict[str, tuple[tuple[str | int, ...], int]] = {
    "ttft_p50_ms": (("metrics", "overall", "ttft_ms", "n"), 10),
    "ttft_p95_ms": (("metrics", "overall", "ttft_ms", "n"), 20),
    "ttft_p99_ms": (("metrics", "overall", "ttft_ms", "n"), 100),
    "e2e_p95_ms": (("metrics", "overall", "e2e_ms", "n"), 20),
    "e2e_p99_ms": (("metrics", "overall", "e2e_ms", "n"), 100),
    "itl_p95_ms": (("metrics", "overall", "itl_per_request_mean_ms", "n"), 20),  # streamed calls, not gaps
    "tpot_p95_ms": (("metrics", "overall", "tpot_ms", "n"), 20),
    "error_rate": (_CALLS, 20),
    "goodput_share": (_CALLS, 20),
    "requests_per_s": (_CALLS, 20),
    "output_tokens_per_s": (_CALLS, 20),
    "billing_accuracy": (("billing", "calls"), 0),
    "double_charges": (("billing", "calls"), 0),
    "missing_charges": (("billing", "calls"), 0),
    "billing_findings": (("billing", "calls"), 0),
    "max_sustainable_rps": (("capacity", "measured_stages"), 0),
    ISOLATION_GATE: (("isolation", "n"), 20),  # calls on the smaller side (during or outside the bursts)
}

GATE_KEYS = ("max", "min", "min_samples", "fail_on_insufficient")
FAIL_ON_INSUFFICIENT = "fail_on_insufficient"
#: gates on the billing audit: they fail whenever the audit cannot be trusted (billing.trusted false)
BILLING_GATES = ("billing_accuracy", "double_charges", "missing_charges", "billing_findings")


@dataclass
class Gate:
    """One gate as configured."""

    name: str
    threshold: float
    sense: str
    min_samples: int
    fail_on_insufficient: bool


def _is_number(v: Any) -> bool:
    return not isinstance(v, bool) and isinstance(v, int | float) and v == v


def parse(gates: dict[str, Any] | None, where: str) -> list[Gate]:
    """The gates of a scenario's `gates:` section, or a one-line InputError naming the bad key or value."""
    if gates is None:
        return []
    if not isinstance(gates, dict):
        raise InputError(f"{where}: gates: expected a mapping of gate: threshold")
    default_fail = gates.get(FAIL_ON_INSUFFICIENT, False)
    if not isinstance(default_fail, bool):
        raise InputError(f"{where}: gates.{FAIL_ON_INSUFFICIENT}: expected true or false, got {default_fail!r}")
    out = []
    for name, value in gates.items():
        if name == FAIL_ON_INSUFFICIENT:
            continue
        if name not in GATES:
            raise InputError(f"{where}: gates.{name}: unknown gate (known: {', '.join(GATES)}, "
                             f"{FAIL_ON_INSUFFICIENT})")
        sense = GATES[name][1]
        minimum, fail = SAMPLES[name][1], default_fail
        if isinstance(value, dict):
            for k in value:
                if k not in GATE_KEYS:
                    raise InputError(f"{where}: gates.{name}.{k}: unknown key (known: {sense}, min_samples, "
                                     f"{FAIL_ON_INSUFFICIENT})")
            other = "min" if sense == "max" else "max"
            if other in value:
                raise InputError(f"{where}: gates.{name}.{other}: this gate is a {sense}imum: use {sense}")
            if sense not in value:
                raise InputError(f"{where}: gates.{name}: no threshold (expected {sense}: NUMBER)")
            threshold = value[sense]
            if "min_samples" in value:
                minimum = value["min_samples"]
                if isinstance(minimum, bool) or not isinstance(minimum, int) or minimum < 0:
                    raise InputError(f"{where}: gates.{name}.min_samples: expected a whole number >= 0, "
                                     f"got {minimum!r}")
            if FAIL_ON_INSUFFICIENT in value:
                fail = value[FAIL_ON_INSUFFICIENT]
                if not isinstance(fail, bool):
                    raise InputError(f"{where}: gates.{name}.{FAIL_ON_INSUFFICIENT}: expected true or false, "
                                     f"got {fail!r}")
            at = f"gates.{name}.{sense}"
        else:
            threshold, at = value, f"gates.{name}"
        if not _is_number(threshold):
            raise InputError(f"{where}: {at}: expected a number, got {threshold!r}")
        out.append(Gate(name, threshold, sense, minimum, fail))
    return out


def check_names(gates: dict[str, Any] | None, where: str) -> None:
    """One-line error for an unknown gate or key, or a value of the wrong kind."""
    parse(gates, where)


def _get(summary: dict[str, Any], path: tuple[str | int, ...]) -> Any:
    value: Any = summary
    for key in path:
        if isinstance(key, int):
            value = value[key] if isinstance(value, list) and -len(value) <= key < len(value) else None
        else:
            value = value.get(key) if isinstance(value, dict) else None
    return value


def evaluate(gates: dict[str, Any] | None, summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Each gate with its value, sample count and whether it held and why not: a missing value or an untrusted
    audit fails it; too few samples hold it as "not enough data" unless it is to fail then."""
    out = []
    billing = summary.get("billing") or {}
    for g in parse(gates, "scenario"):
        value = _get(summary, GATES[g.name][0])
        n = _get(summary, SAMPLES[g.name][0])
        n = int(n) if _is_number(n) else 0
        reason = None
        insufficient = False
        iso = summary.get("isolation") if g.name == ISOLATION_GATE else None
        if value is None and not (iso and n < g.min_samples):
            ok = False
            reason = "no value (no ledger?)" if g.name in BILLING_GATES and not billing else "no value"
            if g.name == "itl_p95_ms" and _get(summary, ("metrics", "overall", "itl_ms_missing")):
                reason = "no value: " + str(_get(summary, ("metrics", "overall", "itl_ms_missing")))
            if g.name == ISOLATION_GATE:
                reason = ("no data: " + (iso.get("reason") or "no interval") if iso else
                          "no data (no isolation figures: set analysis.isolation: {steady, burst})")
        elif n < g.min_samples:
            insufficient = True
            ok = not g.fail_on_insufficient
            reason = (f"not enough data: {n} samples, the gate needs {g.min_samples}"
                      + (" (fail_on_insufficient)" if g.fail_on_insufficient else ": not judged"))
        else:
            ok = value <= g.threshold if g.sense == "max" else value >= g.threshold
            if iso and not ok:
                reason = (f"the steady tenant's TTFT p95 is {iso.get('ratio'):.3g}x as long during the bursts, "
                          f"{100 * iso.get('confidence', 0):g}% interval {iso['ci'][0]:.3g}-{iso['ci'][1]:.3g}: "
                          f"its lower bound is above {g.threshold}")
        if g.name in BILLING_GATES and billing and billing.get("trusted") is False:
            ok = False
            reason = "the billing audit cannot be trusted: " + "; ".join(billing.get("trust_issues") or [])
        out.append({"gate": g.name, "threshold": g.threshold, "sense": g.sense, "value": value, "ok": bool(ok),
                    "reason": reason, "n": n, "min_samples": g.min_samples, "insufficient": insufficient})
    return out
