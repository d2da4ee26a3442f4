"""The aiohttp application: routes per dialect, request ids, truth entries, error shapes."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from urllib.parse import unquote

from aiohttp import web

from .admin import GW_KEY, add_routes
from .billing import new_request_id
from .dialects.anthropic import AnthropicMessages
from .dialects.azure import API_VERSION_MISSING, AzureChat, AzureEmbeddings, AzureImages
from .dialects.base import Dialect
from .dialects.embeddings import Embeddings
from .dialects.gemini import Gemini
from .dialects.images import Images
from .dialects.models import ModelList
from .dialects.openai import OpenAIChat
from .exchange import Aborted, Exchange, send_bytes, send_error
from .state import Gateway
from .truth import client_headers, redacted_query

log = logging.getLogger("gatewaysim")

CHAT = OpenAIChat()
MESSAGES = AnthropicMessages()
GEMINI = Gemini()
EMBEDDINGS = Embeddings()
IMAGES = Images()
MODELS = ModelList()
AZURE_CHAT = AzureChat()
AZURE_EMBEDDINGS = AzureEmbeddings()
AZURE_IMAGES = AzureImages()
GEMINI_METHODS = ("generateContent", "streamGenerateContent")
FLUSHER: web.AppKey[asyncio.Task[None]] = web.AppKey("flusher", asyncio.Task)
#: The extra paths of the config's `routes:`, each with the dialect whose error shape it answers in.
EXTRA_PATHS: web.AppKey[dict[str, Dialect]] = web.AppKey("extra_paths", dict)
#: Built-in routes by endpoint name, as `routes:` in the config names them.
ENDPOINT_DIALECTS: dict[str, Dialect] = {"chat": CHAT, "messages": MESSAGES, "embeddings": EMBEDDINGS,
                                         "images": IMAGES, "models": MODELS}


def dialect_for(path: str, extra: dict[str, Dialect] | None = None) -> Dialect:
    """The dialect whose error shape fits a path (extra: the configured extra paths)."""
    if extra and path in extra:
        return extra[path]
    if path.startswith("/v1/messages"):
        return MESSAGES
    if path.startswith("/openai/"):
        return CHAT
    if path.startswith("/v1beta/") or ":" in path or "%3A" in path.upper():
        return GEMINI
    return CHAT


def _route(dialect: Dialect):  # noqa: ANN202
    async def handler(request: web.Request) -> web.StreamResponse:
        return await Exchange(request.app[GW_KEY], dialect, request).run()

    return handler


def _azure_route(dialect: Dialect):  # noqa: ANN202
    """An Azure OpenAI deployment route: `api-version` is required before anything else."""
    async def handler(request: web.Request) -> web.StreamResponse:
        if not request.query.get("api-version"):
            return await send_error(request, request["ctx"], dialect, 400, "invalid_request", API_VERSION_MISSING,
                                    "api-version", code="MissingApiVersionParameter")
        return await Exchange(request.app[GW_KEY], dialect, request).run()

    return handler


async def gemini_route(request: web.Request) -> web.StreamResponse:
    """POST /v1beta/models/{model}:{method} (and /v1/...): split on the last colon."""
    spec = unquote(request.match_info["spec"])
    while spec.startswith("models/"):
        spec = spec[len("models/"):]
    model, _, method = spec.rpartition(":")
    if not model or method not in GEMINI_METHODS:
        raise web.HTTPNotFound()
    request["gemini"] = (model, method)
    return await Exchange(request.app[GW_KEY], GEMINI, request).run()


async def list_models(request: web.Request) -> web.StreamResponse:
    """GET /v1/models and /v1beta/models."""
    gw = request.app[GW_KEY]
    ctx = request["ctx"]
    ctx["entry"].update(endpoint="models")
    exchange = Exchange(gw, GEMINI if MODELS.shape(request) == "gemini" else MODELS, request)
    key = MODELS.api_key(request)
    if not key:
        return await exchange.error(401 if exchange.dialect is MODELS else 403, "auth_missing",
                                    "You didn't provide an API key.")
    if key != gw.api_key:
        return await exchange.error(401 if exchange.dialect is MODELS else 400, "auth_invalid",
                                    "Incorrect API key provided.")
    body = json.dumps(MODELS.listing(request, gw.config.models)).encode()
    ctx["entry"]["outcome"] = "ok"
    return await send_bytes(request, ctx, 200, body)


@web.middleware
async def gateway_middleware(request: web.Request, handler) -> web.StreamResponse:  # noqa: ANN001
    """Give every API request a fresh id and a truth entry, and keep errors in the dialect's shape."""
    if request.path.startswith("/_sim/"):
        return await handler(request)
    gw = request.app[GW_KEY]
    rid = new_request_id()
    attempt = request.headers.get("X-Client-Attempt-ID")
    entry = gw.truth.open(rid, client_attempt_id=attempt, received=time.time(), method=request.method,
                          path=request.path, query=redacted_query(request.rel_url.raw_query_string),
                          client_headers=client_headers(request.headers))
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
    gw.truth.close(entry)
    return response


def make_app(gw: Gateway) -> web.Application:
    """Build the application for a gateway state."""
    app = web.Application(middlewares=[gateway_middleware], client_max_size=64 * 1024 * 1024)
    app[GW_KEY] = gw
    add_routes(app)
    app.router.add_post("/v1/chat/completions", _route(CHAT))
    app.router.add_post("/v1/messages", _route(MESSAGES))
    app.router.add_post("/v1/embeddings", _route(EMBEDDINGS))
    app.router.add_post("/v1/images/generations", _route(IMAGES))
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1beta/models", list_models)
    app.router.add_post("/v1beta/models/{spec:.+}", gemini_route)
    app.router.add_post("/v1/models/{spec:.+}", gemini_route)
    for tail, dialect in (("chat/completions", AZURE_CHAT), ("embeddings", AZURE_EMBEDDINGS),
                          ("images/generations", AZURE_IMAGES)):
        app.router.add_post("/openai/deployments/{deployment}/" + tail, _azure_route(dialect))
    extra: dict[str, Dialect] = {}
    for endpoint, paths in gw.config.section("routes").items():
        dialect = ENDPOINT_DIALECTS[endpoint]
        for path in paths:
            extra[path] = dialect
            if endpoint == "models":
                app.router.add_get(path, list_models)
            else:
                app.router.add_post(path, _route(dialect))
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
