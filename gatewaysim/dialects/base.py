"""What every dialect provides, and helpers they share.

A dialect is one unit: it declares its routes (`routes`), the endpoint name the truth, the ledger and the
config's `routes:` use (`endpoint`), the kind of model it serves (`model_kind`), and its wire format (parse,
render, frames, errors). The application builds its routes from the registry in `dialects/__init__.py`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from aiohttp import web

from ttformats.jsonline import compact

from ..calls import BadRequest, Call, Frame, Plan
from ..exchange import Exchange

if TYPE_CHECKING:
    from ..limits import Refusal
    from ..state import Gateway

#: Error categories the pipeline raises; each dialect maps them to its own shape.
CATEGORIES = (
    "invalid_request",
    "auth_missing",
    "auth_invalid",
    "not_found",
    "unknown_url",
    "rate_limit",
    "server_error",
    "overloaded",
    "in_flight",
    "key_reused",
)


def bearer(request: web.Request) -> str | None:
    """The token of an `Authorization: Bearer` header, if any."""
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return None


def content_key(body: dict[str, Any], model: str) -> str:
    """A digest of the request minus its streaming switches: same request, same answer."""
    trimmed = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
    blob = json.dumps([model, trimmed], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def texts_of(content: Any) -> list[str]:
    """Text pieces of a message content: a string, or a list of parts with text."""
    if isinstance(content, str):
        return [content]
    out: list[str] = []
    if isinstance(content, list):
        for part in content:
            if isinstance(part, str):
                out.append(part)
            elif isinstance(part, dict):
                for key in ("text", "content", "thinking"):
                    value = part.get(key)
                    if isinstance(value, str):
                        out.append(value)
                    elif isinstance(value, list):
                        out.extend(texts_of(value))
    return out


def want_int(body: dict[str, Any], key: str, low: int = 1, high: int | None = None) -> int | None:
    """An optional integer field within bounds, else BadRequest naming it."""
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise BadRequest(f"'{key}' must be an integer {bound}", param=key)
    return value


def want_bool(body: dict[str, Any], key: str) -> bool:
    """An optional boolean field, else BadRequest naming it."""
    value = body.get(key, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise BadRequest(f"'{key}' must be a boolean", param=key)
    return value


def sse(data: Any, event: str | None = None) -> bytes:
    """One SSE event: optional `event:` line and one `data:` line."""
    payload = data if isinstance(data, str) else compact(data)
    if event is not None:
        return f"event: {event}\ndata: {payload}\n\n".encode()
    return f"data: {payload}\n\n".encode()


@dataclass(frozen=True)
class Route:
    """One built-in HTTP route of a dialect.

    `path` uses aiohttp's syntax (`{name}` or `{name:regex}` for a variable part); `model_in_path` names the
    path variable that carries the model (None: the model is the body's `model`).
    """

    method: str
    path: str
    model_in_path: str | None = None

    @property
    def exact(self) -> bool:
        """Whether the path has no variable part."""
        return "{" not in self.path

    @property
    def prefix(self) -> str:
        """The fixed part of the path before its first variable part."""
        return self.path.split("{", 1)[0]


class Dialect:
    """The interface of an API dialect; subclasses override what applies to them."""

    #: The wire family (openai, anthropic, gemini): for people reading the code, not for branching on.
    name = "base"
    #: The endpoint name in the truth, the ledger, /_sim/stats and the config's `routes:`.
    endpoint = "base"
    #: The built-in routes this dialect serves.
    routes: tuple[Route, ...] = ()
    #: Whether `routes.<endpoint>` in the config may add exact paths served like the built-in routes.
    configurable = False
    #: The `kind` a model must have in the config to be served here: chat, embedding, image (None: no model).
    model_kind: str | None = "chat"
    #: Whether the prefix cache reports cache writes (billed at `cache_write`) besides cached reads.
    cache_writes = False
    #: How a limited tenant's rate-limit state goes on the wire: "openai" (x-ratelimit-*), "anthropic"
    #: (anthropic-ratelimit-*), or None (no headers: only a refusal's body tells).
    ratelimit_style: str | None = None

    async def handle(self, gw: Gateway, request: web.Request) -> web.StreamResponse:
        """Serve one request on a route of this dialect."""
        return await Exchange(gw, self, request).run()

    def owns_path(self, path: str) -> bool:
        """Whether an unknown URL under this path gets this dialect's error shape (else OpenAI's)."""
        return False

    def path_model(self, request: web.Request) -> str | None:
        """The model named by the matched route's path, if the route carries it."""
        route: Route | None = request.get("route")
        if route is None or route.model_in_path is None:
            return None
        return unquote(request.match_info[route.model_in_path])

    def api_key(self, request: web.Request) -> str | None:
        """The API key the request presents, or None."""
        return bearer(request)

    def auth_failure(self, missing: bool) -> tuple[int, str]:
        """The (status, message) of a missing (missing=True) or wrong API key."""
        if missing:
            return 401, "You didn't provide an API key."
        return 401, "Incorrect API key provided."

    def server_error_status(self, status: int) -> int:
        """The status a planted `server_error` of this status is sent with."""
        return status

    def stream_content_type(self, call: Call) -> str:
        """The content type of a streamed answer."""
        return "text/event-stream"

    def completed(self, gw: Gateway, call: Call, plan: Plan, ctx: dict[str, Any]) -> None:
        """Called once an answer was produced and billed (kept server-side state goes here)."""

    def error(self, status: int, category: str, message: str, param: str | None = None,
              code: str | None = None) -> dict[str, Any]:
        """An error body in the dialect's shape."""
        raise NotImplementedError

    def rate_limited(self, refusal: Refusal) -> tuple[int, dict[str, Any], dict[str, str]]:
        """The (status, body, extra headers) of a call its tenant's rate or concurrency limit refused."""
        message = f"Rate limit reached for {refusal.model} on {refusal.dimension}."
        return 429, self.error(429, "rate_limit", message), {"retry-after": str(refusal.retry_after_s)}

    def quota_exceeded(self) -> tuple[int, dict[str, Any]]:
        """The (status, body) of a call refused because its tenant's budget is spent."""
        return 429, self.error(429, "rate_limit", "You exceeded your current quota.")

    def unknown_model(self, model: str) -> tuple[str, str | None, str | None]:
        """The (message, param, code) of the 404 for a model that is not configured."""
        return f"The model `{model}` does not exist or you do not have access to it.", "model", None

    def parse(self, body: Any, request: web.Request) -> Call:
        """Validate a request body and turn it into a Call."""
        raise NotImplementedError

    def render(self, call: Call, plan: Plan, ctx: dict[str, Any]) -> dict[str, Any]:
        """The non-streamed response body."""
        raise NotImplementedError

    def frames(self, call: Call, plan: Plan, ctx: dict[str, Any]) -> list[Frame]:
        """The streamed response, frame by frame."""
        raise NotImplementedError

    def inband_error(self, call: Call, ctx: dict[str, Any], sent: int) -> bytes:
        """An error event sent inside a 200 stream after `sent` frames."""
        raise NotImplementedError

    def malformed(self, call: Call) -> bytes:
        """A stream frame that does not parse."""
        return b'data: {"choices": [{"delta": {"content": "\xff\n\n'

    def stream_tail(self, call: Call) -> bytes:
        """Bytes that close a stream after an in-band error (if the format needs any)."""
        return b""
