"""The simulator's own `/metrics`: its counters and gauges in the Prometheus text format (0.0.4), by hand."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .appkeys import GW_KEY

if TYPE_CHECKING:
    from .state import Gateway

#: The path of the exposition (no admin token, as Prometheus exporters: it holds no key and no prompt).
METRICS_PATH = "/metrics"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Labels = tuple[tuple[str, str], ...]


class SimCounters:
    """Counters of finished requests that no other part of the state keeps: by endpoint and status, tokens."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str], int] = {}
        self.tokens: dict[tuple[str, str], int] = {}

    def observe(self, entry: dict[str, Any]) -> None:
        """Count one finished request from its truth entry (tokens: its usage, unless a replay)."""
        key = (entry.get("endpoint") or "other", str(entry["status"]) if entry.get("status") is not None else "none")
        self.requests[key] = self.requests.get(key, 0) + 1
        usage = entry.get("usage")
        model = entry.get("model")
        if not usage or model is None or entry.get("replay_of") is not None:
            return
        for kind, field in (("input", "input_tokens"), ("output", "output_tokens")):
            n = int(usage.get(field) or 0)
            self.tokens[(model, kind)] = self.tokens.get((model, kind), 0) + n


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


class Exposition:
    """Families of samples written as Prometheus text: HELP and TYPE once, then every sample."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str, samples: Iterable[tuple[Labels, float]]) -> None:
        """One metric family: its HELP and TYPE lines and its samples (none: the family is still announced)."""
        self.lines.append(f"# HELP {name} {_escape_help(help_text)}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
            self.lines.append(f"{name}{{{text}}} {_number(value)}" if text else f"{name} {_number(value)}")

    def text(self) -> str:
        """The whole exposition, newline-terminated."""
        return "\n".join(self.lines) + "\n"


def _pools(gw: Gateway) -> list[tuple[str, str, Any]]:
    """(model, pool label, pool): the shared pool of each model, then each tenant's partition of it."""
    out = [(model, "shared", pool) for model, pool in gw.pools.items()]
    out += [(model, label, pool) for (model, label), pool in gw.tenant_pools.items()]
    return out


def render(gw: Gateway) -> str:
    """The simulator's state as Prometheus text."""
    ex = Exposition()
    c = gw.counters
    ex.family("gatewaysim_requests_total", "counter",
              "API requests finished, by endpoint and HTTP status sent (none: no status, e.g. a reset).",
              [((("endpoint", e), ("status", s)), n) for (e, s), n in sorted(c.requests.items())])
    pools = _pools(gw)
    ex.family("gatewaysim_queue_depth", "gauge", "Requests waiting for a generation slot, by model and pool.",
              [((("model", m), ("pool", p)), len(pool.waiting)) for m, p, pool in pools])
    ex.family("gatewaysim_slots_busy", "gauge", "Generation slots in use, by model and pool.",
              [((("model", m), ("pool", p)), pool.active) for m, p, pool in pools])
    ex.family("gatewaysim_slots", "gauge", "Generation slots, by model and pool.",
              [((("model", m), ("pool", p)), pool.slots) for m, p, pool in pools])
    ex.family("gatewaysim_queue_rejected_total", "counter",
              "Requests refused with 429 because the model's queue was full, by model and pool.",
              [((("model", m), ("pool", p)), pool.refused) for m, p, pool in pools])
    ex.family("gatewaysim_tokens_total", "counter",
              "Tokens of the answers produced (replays excluded), by model and type (input, output).",
              [((("model", m), ("type", t)), n) for (m, t), n in sorted(c.tokens.items())])
    ex.family("gatewaysim_prefix_cache_hits_total", "counter",
              "Prefix-cache lookups that served a cached prefix, by model.",
              [((("model", m),), cache.hits) for m, cache in gw.caches.items()])
    ex.family("gatewaysim_prefix_cache_lookups_total", "counter", "Prefix-cache lookups, by model.",
              [((("model", m),), cache.lookups) for m, cache in gw.caches.items()])
    ex.family("gatewaysim_charged_total", "counter",
              "Money charged in the ledger (planted billing errors included), in the price sheet's currency.",
              [((("currency", gw.biller.currency),), float(gw.ledger.charged))])
    ex.family("gatewaysim_rate_limited_total", "counter",
              "Calls refused by a tenant's limits, by tenant and dimension (budget, concurrency, requests, tokens).",
              [((("tenant", label), ("dimension", dim)), n)
               for label, tenant in gw.limits.tenants.items() for dim, n in tenant.refused.items()])
    return ex.text()


async def metrics_route(request: web.Request) -> web.Response:
    """The Prometheus exposition: no token (it holds no key, no prompt), never a truth entry nor a request count."""
    body = render(request.app[GW_KEY])
    return web.Response(body=body.encode(), headers={"Content-Type": CONTENT_TYPE})
