"""Admin routes under /_sim/: ledger, truth, capacity, stats, limits, health. They take the admin token."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from .appkeys import GW_KEY
from .capacity import capacity
from .ledger import csv_header, csv_rows, jsonl


def _denied(request: web.Request) -> web.Response | None:
    gw = request.app[GW_KEY]
    token = request.headers.get("X-Admin-Token")
    auth = request.headers.get("Authorization", "")
    if token is None and auth[:7].lower() == "bearer ":
        token = auth[7:].strip()
    if token != gw.admin_token:
        return web.json_response({"error": "admin token required (X-Admin-Token or Authorization: Bearer)"},
                                 status=401)
    return None


async def health(request: web.Request) -> web.Response:
    """Liveness: no token needed."""
    return web.json_response({"ok": True})


async def ledger(request: web.Request) -> web.StreamResponse:
    """The billing ledger as JSON Lines, or CSV with ?format=csv, streamed from its database."""
    denied = _denied(request)
    if denied is not None:
        return denied
    gw = request.app[GW_KEY]
    as_csv = request.query.get("format") == "csv"
    resp = web.StreamResponse()
    resp.content_type, resp.charset = ("text/csv" if as_csv else "application/x-ndjson"), "utf-8"
    rows = gw.ledger.batches()
    await resp.prepare(request)
    if as_csv:
        await resp.write(csv_header().encode())
    while (batch := await asyncio.to_thread(next, rows, None)) is not None:
        await resp.write((csv_rows(batch) if as_csv else jsonl(batch)).encode())
    await resp.write_eof()
    return resp


async def truth(request: web.Request) -> web.StreamResponse:
    """What really happened, per request id, as JSON Lines, streamed from the truth file."""
    denied = _denied(request)
    if denied is not None:
        return denied
    resp = web.StreamResponse()
    resp.content_type, resp.charset = "application/x-ndjson", "utf-8"
    chunks = request.app[GW_KEY].truth.chunks()
    first = next(chunks, b"")  # the snapshot is taken here, before anything waits
    await resp.prepare(request)
    if first:
        await resp.write(first)
        for data in chunks:
            await resp.write(data)
    await resp.write_eof()
    return resp


def _int_arg(request: web.Request, name: str, default: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise web.HTTPBadRequest(text=json.dumps({"error": f"{name} must be an integer"}),
                                 content_type="application/json") from None
    if value < 0:
        raise web.HTTPBadRequest(text=json.dumps({"error": f"{name} must not be negative"}),
                                 content_type="application/json")
    return value


async def capacity_route(request: web.Request) -> web.Response:
    """Maximum sustainable throughput (req/s) for a fixed workload on one model."""
    denied = _denied(request)
    if denied is not None:
        return denied
    gw = request.app[GW_KEY]
    model = request.query.get("model")
    if model not in gw.config.models:
        return web.json_response({"error": f"unknown model {model!r}"}, status=404)
    spec = gw.config.models[model]
    inp = _int_arg(request, "input_tokens", 100)
    out = max(1, _int_arg(request, "output_tokens", 64))
    images = max(1, _int_arg(request, "images", 1))
    result: dict[str, Any] = {"model": model, "input_tokens": inp, "output_tokens": out, "slots": spec["slots"],
                              "queue": spec["queue"], **capacity(spec, inp, out, images)}
    return web.json_response(result)


async def stats(request: web.Request) -> web.Response:
    """Counters: requests per route, pool occupancy, planted faults and billing errors, tenants."""
    denied = _denied(request)
    if denied is not None:
        return denied
    gw = request.app[GW_KEY]
    tenant_pools: dict[str, dict[str, Any]] = {}
    for (model, label), pool in gw.tenant_pools.items():
        tenant_pools.setdefault(model, {})[label] = pool.snapshot()
    return web.json_response({
        "served": gw.served,
        "pools": {name: pool.snapshot() for name, pool in gw.pools.items()},
        "tenant_pools": tenant_pools,
        "tenants": gw.limits.snapshot()["tenants"],
        "limit_errors_planted": gw.limits.planter.planted,
        "caches": {name: cache.snapshot() for name, cache in gw.caches.items() if cache.hits or cache.snapshot()["entries"]},
        "faults_planted": gw.faults.planted,
        "billing_errors_planted": gw.biller.planter.planted,
        "idempotency_keys": len(gw.idempotency),
        "event_loop": type(asyncio.get_running_loop()).__module__.split(".")[0],  # uvloop or asyncio
    })


async def limits(request: web.Request) -> web.Response:
    """Per tenant: limits, advertised limits, accepted and refused calls, overshoot, spend, header errors."""
    denied = _denied(request)
    if denied is not None:
        return denied
    return web.json_response(request.app[GW_KEY].limits.snapshot())


async def config_route(request: web.Request) -> web.Response:
    """The resolved configuration and price sheet."""
    denied = _denied(request)
    if denied is not None:
        return denied
    gw = request.app[GW_KEY]
    return web.json_response({"config": gw.config.raw, "prices": gw.config.prices.to_mapping(),
                              "seed": gw.config.seed})


def add_routes(app: web.Application) -> None:
    """Mount the admin routes."""
    app.router.add_get("/_sim/health", health)
    app.router.add_get("/_sim/ledger", ledger)
    app.router.add_get("/_sim/truth", truth)
    app.router.add_get("/_sim/capacity", capacity_route)
    app.router.add_get("/_sim/stats", stats)
    app.router.add_get("/_sim/limits", limits)
    app.router.add_get("/_sim/config", config_route)
