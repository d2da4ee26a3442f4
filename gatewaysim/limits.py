"""Keys and tenants: admission through each tenant's buckets and spend budget, the rate-limit headers a
dialect sends, planted header errors, and the truth record and admin view of it all.

The buckets are `ttformats.buckets`, the very model the analysis replays. A tenant is a label; its keys share
one limiter (made, buckets full, at the tenant's first call), one spend and, with partitioned slots, one pool
per model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from ttformats.buckets import DIMENSIONS, Limits, TenantLimiter

from .config import LIMIT_ERROR_KINDS, SimConfig, resolve_tenants
from .draws import Planter
from .ledger import format_amount

#: A planted `remaining_stuck` only where it is material: the true remaining at most this share of the limit.
STUCK_MATERIAL = 0.7
#: The wait announced on a concurrency refusal (calls in flight end at no known time).
CONCURRENCY_WAIT_S = 1.0
#: The per-minute dimensions that have buckets and headers.
RATES = ("requests", "tokens")
#: Header styles: how the rate-limit state goes on the wire (None: not at all, as Gemini).
STYLES = ("openai", "anthropic")


def go_duration(seconds: float) -> str:
    """A duration as Go's time.Duration prints it, to the millisecond: 0s, 17ms, 1.5s, 6m0s, 1m30.5s, 1h0m0s."""
    ms = round(max(0.0, seconds) * 1000)
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    whole, frac = divmod(rest, 1000)
    sec = f"{whole}.{frac:03d}".rstrip("0") if frac else str(whole)
    if hours:
        return f"{hours}h{minutes}m{sec}s"
    if minutes:
        return f"{minutes}m{sec}s"
    return f"{sec}s"


def rfc3339_ceil(epoch: float) -> str:
    """An epoch time as RFC 3339 UTC to the second, rounded up: 2026-12-02T01:02:03Z."""
    return datetime.fromtimestamp(math.ceil(epoch), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rate_headers(style: str | None, state: dict[str, dict[str, Any] | None], now: float) -> dict[str, str]:
    """The rate-limit headers of a style for the state {dimension: {limit, remaining, reset_s}} at `now`."""
    dims = [(d, state[d]) for d in RATES if state.get(d) is not None]
    out: dict[str, str] = {}
    if style == "openai":
        for field in ("limit", "remaining", "reset"):
            for dim, s in dims:
                assert s is not None
                value = go_duration(s["reset_s"]) if field == "reset" else str(s[field])
                out[f"x-ratelimit-{field}-{dim}"] = value
    elif style == "anthropic":
        for dim, s in dims:
            assert s is not None
            out[f"anthropic-ratelimit-{dim}-limit"] = str(s["limit"])
            out[f"anthropic-ratelimit-{dim}-remaining"] = str(s["remaining"])
            out[f"anthropic-ratelimit-{dim}-reset"] = rfc3339_ceil(now + s["reset_s"])
    return out


@dataclass(frozen=True)
class Refusal:
    """A call refused on a rate or concurrency limit, as the dialect's 429 tells it."""

    dimension: str  # concurrency | requests | tokens
    model: str
    tenant: str
    limit: int  # the advertised limit of that dimension
    used: int
    requested: int
    wait_s: float  # seconds until enough is available
    too_large: bool = False  # a token estimate above the whole limit: waiting never helps

    @property
    def retry_after_s(self) -> int:
        """Whole seconds until enough is available, at least 1."""
        return max(1, math.ceil(self.wait_s))

    @property
    def wait_text(self) -> str:
        """The wait as OpenAI's messages write it (a Go duration, at least 1ms)."""
        return go_duration(max(self.wait_s, 0.001))


class Tenant:
    """One tenant: its limits, its limiter, its spend and counters."""

    def __init__(self, spec: dict[str, Any], accounting: str) -> None:
        self.label: str = spec["label"]
        self.keys: int = spec["keys"]
        self.accounting = accounting
        self.rpm: int | None = spec["rpm"]
        self.tpm: int | None = spec["tpm"]
        self.concurrency: int | None = spec["concurrency"]
        self.budget = None if spec["budget"] is None else Decimal(spec["budget"])
        self.slot_share: float | None = spec["slot_share"]
        self.enforced: dict[str, int | None] = {"requests": self.rpm, "tokens": self.tpm}
        self.advertised: dict[str, int | None] = {"requests": spec["advertise.rpm"] or self.rpm,
                                                  "tokens": spec["advertise.tpm"] or self.tpm}
        self.limiter: TenantLimiter | None = None
        self.spent = Decimal(0)
        self.accepted_requests = 0
        self.accepted_tokens = 0
        self.refused = {d: 0 for d in DIMENSIONS}
        self.header_errors = {k: 0 for k in LIMIT_ERROR_KINDS}

    @property
    def limited(self) -> bool:
        """Whether any limit applies (else its calls get no limit record and no headers)."""
        return any(v is not None for v in (self.rpm, self.tpm, self.concurrency, self.budget))

    def limiter_at(self, t: float) -> TenantLimiter:
        """The tenant's limiter, made with full buckets at its first call."""
        if self.limiter is None:
            self.limiter = TenantLimiter(Limits(self.rpm, self.tpm, self.concurrency), self.accounting, t)
        return self.limiter

    def state(self, now: float) -> dict[str, dict[str, Any] | None]:
        """What honest headers say at `now`: per dimension {limit, remaining, reset_s} (None: no such limit)."""
        limiter = self.limiter_at(now)
        out: dict[str, dict[str, Any] | None] = {}
        for dim, bucket in (("requests", limiter.requests), ("tokens", limiter.tokens)):
            if bucket is None:
                out[dim] = None
                continue
            level = bucket.advance(now)
            out[dim] = {"limit": self.advertised[dim], "remaining": math.floor(max(level, 0.0)),
                        "reset_s": round(bucket.reset_s(now), 3)}
        return out

    def snapshot(self) -> dict[str, Any]:
        """Limits and counters for the admin API."""
        limiter = self.limiter
        return {
            "keys": self.keys,
            "limits": {"rpm": self.rpm, "tpm": self.tpm, "concurrency": self.concurrency,
                       "budget": None if self.budget is None else format_amount(self.budget)},
            "advertised": {"rpm": self.advertised["requests"], "tpm": self.advertised["tokens"]},
            "accepted_requests": self.accepted_requests,
            "accepted_tokens": self.accepted_tokens,
            "refused": dict(self.refused),
            "overshoot_tokens": 0.0 if limiter is None else limiter.overshoot_tokens,
            "in_flight": 0 if limiter is None else limiter.in_flight,
            "spent": format_amount(self.spent),
            "header_errors": dict(self.header_errors),
        }


class Admission:
    """One call's pass through its tenant's limits: refused or admitted, the headers it carries, its truth
    record (`limit`, None when the tenant has no limits), and the settlement of its tokens when it ends."""

    def __init__(self, tenant: Tenant, estimate: int, counted: bool, refused: str | None = None,
                 refusal: Refusal | None = None, headers: dict[str, str] | None = None,
                 record: dict[str, Any] | None = None) -> None:
        self.tenant = tenant
        self.estimate = estimate
        self.counted = counted  # admitted and counted (not a dry run, not refused)
        self.refused = refused
        self.refusal = refusal
        self.headers = headers or {}
        self.record = record
        self.finished = False

    def sent(self, extra: dict[str, str]) -> None:
        """Note rate-limit headers the refusal added (retry-after) in the truth record."""
        if self.record is not None:
            self.record["headers"].update(extra)

    def finish(self, t: float, actual: int) -> None:
        """Settle an admitted call's tokens at its end (once, whatever ended it)."""
        if not self.counted or self.finished:
            return
        self.finished = True
        tenant = self.tenant
        limiter = tenant.limiter_at(t)
        over = limiter.finish(t, self.estimate, actual)
        tenant.accepted_tokens += actual
        if self.record is not None:
            self.record["finished_at"] = t
            self.record["actual_tokens"] = actual
            self.record["overshoot_tokens"] += over


class TenantLimits:
    """The gateway's keys, their tenants, and admission through the tenants' limits."""

    def __init__(self, config: SimConfig, api_key: str) -> None:
        section = config.section("limits")
        self.accounting: str = section["accounting"]
        self.slots: str = section["slots"]
        self.api_key = api_key
        self.labels, specs = resolve_tenants(config.source, config.section("keys"), api_key)
        self.tenants = {label: Tenant(spec, self.accounting) for label, spec in specs.items()}
        errors = config.section("limit_errors")
        self.planter = Planter(config.seed, "limit", errors, LIMIT_ERROR_KINDS)
        self.reset_offset_s = float(errors["reset_offset_s"])

    def valid(self, key: str) -> bool:
        """Whether a presented API key is accepted."""
        return key == self.api_key or key in self.labels

    def tenant_of(self, key: str) -> Tenant | None:
        """The tenant of a valid key (None without `keys:`, where the gateway's key has no tenant)."""
        label = self.labels.get(key)
        return None if label is None else self.tenants[label]

    @property
    def partitioned(self) -> bool:
        """Whether each tenant gets its own slot pool per model."""
        return self.slots == "partitioned" and bool(self.tenants)

    def shares(self) -> dict[str, float]:
        """Each tenant's share of every model's slots (default: an equal split over the tenants)."""
        n = len(self.tenants)
        return {label: t.slot_share if t.slot_share is not None else 1.0 / n for label, t in self.tenants.items()}

    def admit(self, tenant: Tenant, style: str | None, attempt_key: str, model: str, estimate: int, now: float,
              dry: bool) -> Admission:
        """Check a call against its tenant's budget and buckets at `now`; count it if admitted (not if dry)."""
        limiter = tenant.limiter_at(now)
        if dry:  # a dry run passes through: neither refused nor counted; its headers show the state as it is
            return self._admission(tenant, style, now, estimate, counted=False)
        spent = tenant.budget is not None and tenant.spent >= tenant.budget
        refused = "budget" if spent else limiter.refusal(now, estimate)
        if refused is not None:
            tenant.refused[refused] += 1
            refusal = None if refused == "budget" else self._refusal(tenant, refused, model, estimate, now)
            return self._admission(tenant, style, now, estimate, counted=False, refused=refused, refusal=refusal)
        before = limiter.overshoot_tokens
        limiter.admit(now, estimate)
        tenant.accepted_requests += 1
        return self._admission(tenant, style, now, estimate, counted=True, attempt_key=attempt_key,
                               overshoot=limiter.overshoot_tokens - before)

    def spend(self, tenant: Tenant | None, amount: Decimal) -> None:
        """Add a charged call's fair amount to its tenant's spend."""
        if tenant is not None:
            tenant.spent += amount

    def _refusal(self, tenant: Tenant, dim: str, model: str, estimate: int, now: float) -> Refusal:
        limiter = tenant.limiter_at(now)
        if dim == "concurrency":
            assert tenant.concurrency is not None
            return Refusal(dim, model, tenant.label, tenant.concurrency, limiter.in_flight, 1, CONCURRENCY_WAIT_S)
        bucket = limiter.requests if dim == "requests" else limiter.tokens
        limit = tenant.advertised[dim]
        assert bucket is not None and limit is not None
        level = bucket.advance(now)
        used = max(0, limit - math.floor(max(level, 0.0)))
        if dim == "requests":
            return Refusal(dim, model, tenant.label, limit, used, 1, bucket.wait_s(1.0, now))
        too_large = self.accounting == "admission" and estimate > bucket.limit
        if too_large:
            wait = bucket.reset_s(now)
        elif self.accounting == "admission":
            wait = bucket.wait_s(float(estimate), now)
        else:  # after_call admits once the bucket is above zero again
            wait = bucket.wait_s(0.0, now) + 0.001
        return Refusal(dim, model, tenant.label, limit, used, estimate, wait, too_large)

    def _admission(self, tenant: Tenant, style: str | None, now: float, estimate: int, counted: bool,
                   refused: str | None = None, refusal: Refusal | None = None, attempt_key: str | None = None,
                   overshoot: float = 0.0) -> Admission:
        if not tenant.limited:
            return Admission(tenant, estimate, counted, refused, refusal)
        honest = tenant.state(now)
        shown = {dim: None if s is None else dict(s) for dim, s in honest.items()}
        planted = None
        requests = honest["requests"]
        if counted and style in STYLES and requests is not None and attempt_key is not None:
            kinds = ["reset_wrong"]
            if requests["remaining"] <= STUCK_MATERIAL * requests["limit"]:
                kinds.append("remaining_stuck")
            planted = self.planter.choose(attempt_key, kinds)
            shown_requests = shown["requests"]
            assert shown_requests is not None
            if planted == "remaining_stuck":
                shown_requests["remaining"] = requests["limit"]
            elif planted == "reset_wrong":
                shown_requests["reset_s"] = requests["reset_s"] + self.reset_offset_s
            if planted is not None:
                tenant.header_errors[planted] += 1
        headers = rate_headers(style, shown, now)
        limiter = tenant.limiter_at(now)
        record = {
            "refused": refused,
            "estimate": estimate,
            "levels": {k: None if v is None else round(v, 6) for k, v in limiter.levels(now).items()},
            "in_flight": limiter.in_flight,
            "advertised": dict(tenant.advertised),
            "enforced": dict(tenant.enforced),
            "honest": honest,
            "headers": dict(headers),
            "header_error": planted,
            "wait_s": None if refusal is None else round(refusal.wait_s, 3),
            "admitted_at": now if counted else None,
            "finished_at": None,
            "actual_tokens": None,
            "overshoot_tokens": overshoot,
        }
        return Admission(tenant, estimate, counted, refused, refusal, headers, record)

    def snapshot(self) -> dict[str, Any]:
        """The limits, per tenant, for the admin API."""
        return {"accounting": self.accounting, "slots": self.slots,
                "tenants": {label: t.snapshot() for label, t in self.tenants.items()}}
