"""The aiohttp application: routes from the dialect registry, request ids, truth entries, error shapes."""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web

from .admin import add_routes
from .appkeys import GW_KEY
from .billing import new_request_id
from .dialects import DIALECTS, configurable
from .dialects.base import Dialect, Route
from .exchange import Aborted, send_error
from .metrics import METRICS_PATH, metrics_route
from .state import Gateway
from .truth import client_headers, redacted_query

log = logging.getLogger("gatewaysim")

FLUSHER: web.AppKey[asyncio.Task[None]] = web.AppKey("flusher", asyncio.Task)
#: The extra paths of the config's `routes:`, each with the dialect whose error shape it answers in.
EXTRA_PATHS: web.AppKey[dict[str, Dialect]] = web.AppKey("extra_paths", dict)


def dialect_for(path: str, extra: dict[str, Dialect] | None = None) -> Dialect:
    """The dialect whose error shape fits a path (extra: the configured extra paths)."""
    if extra and path in extra:
        return extra[path]
    for dialect in DIALECTS:
        if dialect.owns_path(path):
            return dialect
    return DIALECTS[0]


def _handler(dialect: Dialect, route: Route):  # noqa: ANN202
    async def handler(request: web.Request) -> web.StreamResponse:
        request["route"] = route
        return await dialect.handle(request.app[GW_KEY], request)

    return handler


@web.middleware
async def gateway_middleware(request: web.Request, handler) -> web.StreamResponse:  # noqa: ANN001
    """Give every API request a fresh id and a truth entry, and keep errors in the dialect's shape."""
    if request.path.startswith("/_sim/") or request.path == METRICS_PATH:  # admin and metrics: no truth entry
        return await handler(request)
    gw = request.app[GW_KEY]
    rid = new_request_id()
    attempt = request.headers.get("X-Client-Attempt-ID")
    headers = client_headers(request.headers)
    entry = gw.truth.open(rid, client_attempt_id=attempt, received=time.time(), method=request.method,
                          path=request.path, query=redacted_query(request.rel_url.raw_query_string),
                          client_headers=headers, traceparent=headers.get("traceparent"))
    ctx = {"request_id": rid, "created": int(time.time()), "entry": entry, "attempt_key": attempt or rid,
           "client_attempt_id": attempt}
    request["ctx"] = ctx
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        category = "unknown_url" if exc.status == 404 else "invalid_request"
        message = "Unknown request URL: " + request.method + " " + request.path if exc.status in (404, 405) else exc.reason
        response = await send_error(request, ctx, dialect_for(request.path, request.app[EXTRA_PATHS]), exc.status,
                                    category, message)
    except Aborted:
        response = web.Response(status=499)
    except ConnectionError:
        if entry["outcome"] in ("open", "ok"):
            entry["outcome"] = "cancelled"
        response = web.Response(status=499)
    except asyncio.CancelledError:
        if entry["outcome"] in ("open", "ok"):
            entry["outcome"] = "cancelled"
        gw.counters.observe(entry)
        gw.truth.close(entry)
        raise
    except Exception:
        log.exception("internal error on %s", request.path)
        entry["outcome"] = "error"
        response = await send_error(request, ctx, dialect_for(request.path, request.app[EXTRA_PATHS]), 500,
                                    "server_error",
                                    "The server had an error while processing your request.")
    endpoint = entry.get("endpoint") or "other"
    gw.served[endpoint] = gw.served.get(endpoint, 0) + 1
    gw.counters.observe(entry)
    gw.truth.close(entry)
    return response


def make_app(gw: Gateway) -> web.Application:
    """Build the application for a gateway state."""
    app = web.Application(middlewares=[gateway_middleware], client_max_size=64 * 1024 * 1024)
    app[GW_KEY] = gw
    add_routes(app)
    app.router.add_get(METRICS_PATH, metrics_route)

    def serve(dialect: Dialect, route: Route) -> None:
        if route.method == "GET":
            app.router.add_get(route.path, _handler(dialect, route))  # HEAD too, as aiohttp's GET routes do
        else:
            app.router.add_route(route.method, route.path, _handler(dialect, route))

    for dialect in DIALECTS:
        for route in dialect.routes:
            serve(dialect, route)
    by_endpoint = configurable()
    extra: dict[str, Dialect] = {}
    for endpoint, paths in gw.config.section("routes").items():
        dialect = by_endpoint[endpoint]
        for path in paths:  # served exactly like the dialect's first built-in route
            extra[path] = dialect
            serve(dialect, Route(dialect.routes[0].method, path))
    app[EXTRA_PATHS] = extra

    async def flush_ledger() -> None:
        while True:
            await asyncio.sleep(0.5)
            gw.ledger.flush()

    async def start_flusher(app: web.Application) -> None:
        app[FLUSHER] = asyncio.create_task(flush_ledger())

    async def stop_flusher(app: web.Application) -> None:
        app[FLUSHER].cancel()
        gw.ledger.flush()

    app.on_startup.append(start_flusher)
    app.on_cleanup.append(stop_flusher)
    return app
