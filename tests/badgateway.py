"""A misbehaving gateway for tests: an aiohttp app, in its own process, whose answers go wrong on purpose.

Each case is one way a gateway (or something in front of it) can answer badly. The case
is picked by the first segment of the path, so a base URL with a path prefix selects it:
the target `http://127.0.0.1:P/html/` makes the load generator call
`/html/v1/chat/completions`. The prefix `mix` rotates, per dialect and stream mode,
through every case that applies to the request (`ok` included), and the log
(`GET /_bad/log`) says which case met which attempt (by `X-Client-Attempt-ID`) and how
many body bytes went out.

    python tests/badgateway.py --port 0     # prints "badgateway listening on http://127.0.0.1:PORT"
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import itertools
import json
import socket
import struct
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from ttbench.simproc import ServerProcess

PLAIN, SSE, ARRAY = "plain", "sse", "json_array"
STREAMS = frozenset({SSE, ARRAY})
ALL = frozenset({PLAIN, SSE, ARRAY})
HUGE_BYTES = 100 * 1024 * 1024


class Dropped(Exception):
    """The connection was written to by hand (or dropped); nothing more is sent."""


# --- valid answers, per dialect and mode --------------------------------------------------------------

def _j(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def plain_body(dialect: str) -> bytes:
    """A valid non-streamed answer."""
    if dialect == "messages":
        return _j({"id": "msg_bad", "type": "message", "role": "assistant", "model": "claude-3-5-sonnet",
                   "content": [{"type": "text", "text": "Hello there"}], "stop_reason": "end_turn",
                   "usage": {"input_tokens": 5, "output_tokens": 2}})
    if dialect == "gemini":
        return _j({"candidates": [{"content": {"role": "model", "parts": [{"text": "Hello there"}]},
                                   "finishReason": "STOP"}],
                   "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 2, "totalTokenCount": 7}})
    return _j({"id": "chatcmpl-bad", "object": "chat.completion", "model": "gpt-4o-mini",
               "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there"},
                            "finish_reason": "stop"}],
               "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}})


def _chat_chunk(delta: dict[str, Any], finish: str | None = None, usage: Any = None) -> dict[str, Any]:
    return {"id": "chatcmpl-bad", "object": "chat.completion.chunk", "model": "gpt-4o-mini",
            "choices": [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish}],
            **({"usage": usage} if usage else {})}


def _gemini_chunk(text: str, n: int, finish: bool) -> dict[str, Any]:
    cand: dict[str, Any] = {"content": {"role": "model", "parts": [{"text": text}]}}
    if finish:
        cand["finishReason"] = "STOP"
    return {"candidates": [cand], "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": n}}


def stream_frames(dialect: str, mode: str, terminator: bool = True) -> list[bytes]:
    """A valid stream as its frames (for json_array: the elements, without brackets or commas)."""
    if dialect == "gemini":
        chunks = [_gemini_chunk("Hello", 1, False), _gemini_chunk(" there", 2, terminator)]
        if mode == ARRAY:
            return [_j(c) for c in chunks]
        return [b"data: " + _j(c) + b"\r\n\r\n" for c in chunks]
    if dialect == "messages":
        events = [
            ("message_start", {"type": "message_start", "message": {
                "id": "msg_bad", "type": "message", "role": "assistant", "content": [],
                "usage": {"input_tokens": 5, "output_tokens": 1}}}),
            ("content_block_start", {"type": "content_block_start", "index": 0,
                                     "content_block": {"type": "text", "text": ""}}),
            ("ping", {"type": "ping"}),
            ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                     "delta": {"type": "text_delta", "text": "Hello"}}),
            ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                     "delta": {"type": "text_delta", "text": " there"}}),
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                               "usage": {"output_tokens": 2}}),
        ]
        if terminator:
            events.append(("message_stop", {"type": "message_stop"}))
        return [f"event: {name}\n".encode() + b"data: " + _j(obj) + b"\n\n" for name, obj in events]
    chunks = [_chat_chunk({"role": "assistant", "content": ""}), _chat_chunk({"content": "Hello"}),
              _chat_chunk({"content": " there"}), _chat_chunk({}, "stop"),
              _chat_chunk({}, usage={"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7})]
    frames = [b"data: " + _j(c) + b"\n\n" for c in chunks]
    if terminator:
        frames.append(b"data: [DONE]\n\n")
    return frames


def stream_body(dialect: str, mode: str, terminator: bool = True) -> bytes:
    """A valid stream as one body."""
    frames = stream_frames(dialect, mode, terminator)
    if mode == ARRAY:
        return b"[" + b",\r\n".join(frames) + (b"]" if terminator else b"")
    return b"".join(frames)


def valid_body(dialect: str, mode: str) -> bytes:
    """The valid body of any mode."""
    return plain_body(dialect) if mode == PLAIN else stream_body(dialect, mode)


def content_type(mode: str) -> str:
    """The right content type of a mode."""
    return "text/event-stream" if mode == SSE else "application/json"


# --- the connection by hand -----------------------------------------------------------------------------

def _raw(request: web.Request, data: bytes, how: str = "close") -> None:
    transport = request.transport
    if transport is None:
        raise Dropped
    if data:
        transport.write(data)
    if how == "reset":
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        transport.abort()
    else:
        transport.close()  # flushes what was written, then FIN
    raise Dropped


def _head(status: str, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _respond(request: web.Request, body: bytes, ctype: str, status: int = 200,
                   headers: dict[str, str] | None = None, log: dict[str, Any] | None = None) -> web.StreamResponse:
    resp = web.Response(status=status, body=body, headers={"Content-Type": ctype, **(headers or {})})
    if log is not None:
        log["bytes"] = len(body)
    return resp


# --- the cases --------------------------------------------------------------------------------------------

Handler = Callable[[web.Request, str, str, dict[str, Any]], Awaitable[web.StreamResponse]]


async def ok(request: web.Request, dialect: str, mode: str, log: dict[str, Any]) -> web.StreamResponse:
    """A valid answer (the control)."""
    return await _respond(request, valid_body(dialect, mode), content_type(mode), log=log)


async def html(request: web.Request, dialect: str, mode: str, log: dict[str, Any]) -> web.StreamResponse:
    """A 200 HTML page (a captive portal, a proxy's welcome page)."""
    return await _respond(request, b"<!DOCTYPE html><html><body><h1>Welcome to nginx!</h1></body></html>",
                          "text/html; charset=utf-8", log=log)


async def octet_stream(request: web.Request, dialect: str, mode: str, log: dict[str, Any]) -> web.StreamResponse:
    """A valid stream under the wrong content type."""
    return await _respond(request, stream_body(dialect, mode), "application/octet-stream", log=log)


async def gzip_encoded(request: web.Request, dialect: str, mode: str, log: dict[str, Any]) -> web.StreamResponse:
    """The valid answer gzip-encoded although the client asked for identity."""
    body = gzip.compress(valid_body(dialect, mode))
    return await _respond(request, body, content_type(mode), headers={"Content-Encoding": "gzip"}, log=log)


async def huge(request: web.Request, dialect: str, mode: str, log: dict[str, Any]) -> web.StreamResponse:
    """100 MB, chunked, written lazily (as fast as the client reads) until the client leaves."""
    resp = web.StreamResponse(status=200, headers={"Content-Type": content_type(mode)})
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    filler = "x" * 65536
    if mode == SSE:
        head, piece = b"", b"data: " + _j(_chat_chunk({"content": filler})) + b"\n\n"
    elif mode == ARRAY:
        head, piece = b"[", _j(_gemini_chunk(filler, 1, False)) + b",\n"
    else:
        head, piece = b'{"choices":[{"index":0,"message":{"role":"assistant","content":"', filler.encode()
    sent = 0
    log["bytes"] = 0
    try:
        await resp.write(head)
        while sent < HUGE_BYTES:
            await resp.write(piece)
            sent += len(piece)
            log["bytes"] = sent
        await resp.write_eof()
    except (ConnectionError, RuntimeError):
        raise Dropped from None
    return resp


async def cut_mid_event(request: web.Request, dialect: str, mode: str, log: dict[str, Any]) -> web.StreamResponse:
    """Every event but the last, half of the last, then the connection closes (chunked, so the cut shows)."""
    frames = stream_frames(dialect, mode)
    body = (b"[" + b",".join(frames[:-1]) + b"," if mode == ARRAY else b"".join(frames[:-1]))
    body += frames[-1][: len(frames[-1]) // 2]
    head = _head("200 OK", {"Content-Type": content_type(mode), "Transfer-Encoding": "chunked"})
    log["bytes"] = len(body)
    _raw(request, head + f"{len(body):x}\r\n".encode() + body + b"\r\n")
    raise AssertionError("unreachable")


async def bad_utf8(request: web.Request, dialect: str, mode: str, log: dict[str, Any]) -> web.StreamResponse:
    """Invalid UTF-8 inside a data line (or an array element)."""
    frames = [f.replace(b" there", b" th\xff\xfe\xc3ere") for f in stream_frames(dialect, mode)]
    body = b"[" + b",".join(frames) + b"]" if mode == ARRAY else b"".join(frames)
    return await _respond(request, body, content_type(mode), log=log)


async def array_never_closes(request: web.Request, dialect: str, mode: str,
                             log: dict[str, Any]) -> web.StreamResponse:
    """A Gemini JSON array whose `]` never comes; the body ends cleanly."""
    return await _respond(request, b"[" + b",\r\n".join(stream_frames(dialect, mode)), content_type(mode), log=log)


async def empty_body(request: web.Request, dialect: str, mode: str, log: dict[str, Any]) -> web.StreamResponse:
    """A 200 with the right content type and no body at all."""
    return await _respond(request, b"", content_type(mode), log=log)


async def no_terminator(request: web.Request, dialect: str, mode: str, log: dict[str, Any]) -> web.StreamResponse:
    """A stream without its terminator ([DONE], message_stop, finishReason), closed cleanly."""
    return await _respond(request, stream_body(dialect, mode, terminator=False), content_type(mode), log=log)


async def keepalive_only(request: web.Request, dialect: str, mode: str, log: dict[str, Any]) -> web.StreamResponse:
    """`: keep-alive` comments every 0.2 s for a minute, and nothing else."""
    resp = web.StreamResponse(status=200, headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    log["bytes"] = 0
    try:
        for _ in range(300):
            await resp.write(b": keep-alive\n\n")
            log["bytes"] += 14
            await asyncio.sleep(0.2)
        await resp.write_eof()
    except (ConnectionError, RuntimeError):
        raise Dropped from None
    return resp


async def error_502_text(request: web.Request, dialect: str, mode: str, log: dict[str, Any]) -> web.StreamResponse:
    """A proxy's 502 page: not JSON, not the dialect's error shape."""
    return await _respond(request, b"<html><body>502 Bad Gateway</body></html>", "text/html", status=502, log=log)


async def error_echoes_key(request: web.Request, dialect: str, mode: str,
                           log: dict[str, Any]) -> web.StreamResponse:
    """A 500 whose error object echoes the caller's API key in its code and type."""
    h = request.headers
    key = h.get("x-api-key") or h.get("x-goog-api-key") or h.get("Authorization", "").removeprefix("Bearer ")
    body = _j({"error": {"type": f"bad_key_{key}", "code": key, "message": f"key {key} is cursed"}})
    return await _respond(request, body, "application/json", status=500, log=log)


async def chunked_violation(request: web.Request, dialect: str, mode: str,
                            log: dict[str, Any]) -> web.StreamResponse:
    """Chunked transfer encoding: one good chunk, then (in a later packet) a chunk size that is not hex."""
    transport = request.transport
    if transport is None:
        raise Dropped
    body = valid_body(dialect, mode)
    half = body[: len(body) // 2]
    head = _head("200 OK", {"Content-Type": content_type(mode), "Transfer-Encoding": "chunked"})
    transport.write(head + f"{len(half):x}\r\n".encode() + half + b"\r\n")
    await asyncio.sleep(0.05)
    log["bytes"] = len(body)
    _raw(request, b"zz\r\n" + body[len(half):] + b"\r\n0\r\n\r\n")
    raise AssertionError("unreachable")


async def garbage(request: web.Request, dialect: str, mode: str, log: dict[str, Any]) -> web.StreamResponse:
    """Bytes that are not an HTTP response at all."""
    _raw(request, b"SSH-2.0-OpenSSH_9.6\r\n\x00\x01\x02 definitely not HTTP\r\n\r\n")
    raise AssertionError("unreachable")


async def short_content_length(request: web.Request, dialect: str, mode: str,
                               log: dict[str, Any]) -> web.StreamResponse:
    """Content-Length says more than the body the server sends before it closes."""
    body = valid_body(dialect, mode)
    part = body[: len(body) // 2]
    log["bytes"] = len(part)
    _raw(request, _head("200 OK", {"Content-Type": content_type(mode), "Content-Length": str(len(body) + 4096)})
         + part)
    raise AssertionError("unreachable")


async def not_an_object(request: web.Request, dialect: str, mode: str, log: dict[str, Any]) -> web.StreamResponse:
    """Well-formed JSON of the wrong shape: a list or a number where an object belongs."""
    if mode == PLAIN:
        body = b"[1, 2, 3]"
    elif mode == ARRAY:
        body = b"[42, [1], \"x\"]"
    else:
        body = b"data: 42\n\ndata: [1, 2]\n\ndata: {\"choices\": \"abc\", \"delta\": 1}\n\n" + \
            b"".join(stream_frames(dialect, mode))
    return await _respond(request, body, content_type(mode), log=log)


async def reset_before_headers(request: web.Request, dialect: str, mode: str,
                               log: dict[str, Any]) -> web.StreamResponse:
    """A TCP reset instead of an answer."""
    _raw(request, b"", how="reset")
    raise AssertionError("unreachable")


async def no_answer(request: web.Request, dialect: str, mode: str, log: dict[str, Any]) -> web.StreamResponse:
    """Reads the request and says nothing for 30 s."""
    await asyncio.sleep(30)
    return await _respond(request, valid_body(dialect, mode), content_type(mode), log=log)


#: case name -> (the modes it applies to, the handler)
CASES: dict[str, tuple[frozenset[str], Handler]] = {
    "ok": (ALL, ok),
    "html": (ALL, html),
    "octet_stream": (STREAMS, octet_stream),
    "gzip": (ALL, gzip_encoded),
    "huge": (ALL, huge),
    "cut_mid_event": (STREAMS, cut_mid_event),
    "bad_utf8": (STREAMS, bad_utf8),
    "array_never_closes": (frozenset({ARRAY}), array_never_closes),
    "empty_body": (ALL, empty_body),
    "no_terminator": (frozenset({SSE}), no_terminator),
    "keepalive_only": (frozenset({SSE}), keepalive_only),
    "error_502_text": (ALL, error_502_text),
    "error_echoes_key": (ALL, error_echoes_key),
    "chunked_violation": (ALL, chunked_violation),
    "garbage": (ALL, garbage),
    "short_content_length": (ALL, short_content_length),
    "not_an_object": (ALL, not_an_object),
    "reset_before_headers": (ALL, reset_before_headers),
    "no_answer": (ALL, no_answer),
}


# --- the app ----------------------------------------------------------------------------------------------

LOG: web.AppKey[list[dict[str, Any]]] = web.AppKey("log", list)
ROTATION: web.AppKey[dict[tuple[str, str], Any]] = web.AppKey("rotation", dict)


def _mode(request: web.Request, dialect: str, body: Any) -> str:
    if dialect == "gemini":
        if request.match_info.get("spec", "").endswith(":streamGenerateContent"):
            return SSE if request.query.get("alt") == "sse" else ARRAY
        return PLAIN
    return SSE if isinstance(body, dict) and body.get("stream") else PLAIN


def _handler(dialect: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        case = request.match_info["case"]
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        mode = _mode(request, dialect, body)
        if case == "mix":
            key = (dialect, mode)
            rot = request.app[ROTATION]
            if key not in rot:
                rot[key] = itertools.cycle([n for n, (modes, _h) in CASES.items() if mode in modes])
            case = next(rot[key])
        elif case not in CASES or mode not in CASES[case][0]:
            raise web.HTTPNotFound(text=f"no case {case!r} for {mode}")
        log = {"attempt_id": request.headers.get("X-Client-Attempt-ID"), "case": case, "dialect": dialect,
               "mode": mode, "bytes": None, "t": time.time()}
        request.app[LOG].append(log)
        try:
            return await CASES[case][1](request, dialect, mode, log)
        except Dropped:
            return web.Response(status=499)
        except asyncio.CancelledError:
            log["cancelled"] = True
            raise

    return handle


async def models(request: web.Request) -> web.StreamResponse:
    """The pre-run check's GET /v1/models (under any prefix): always 200."""
    return web.json_response({"object": "list", "data": [{"id": "gpt-4o-mini", "object": "model"}]})


async def show_log(request: web.Request) -> web.StreamResponse:
    """Which case met which attempt."""
    return web.json_response(request.app[LOG])


def make_app() -> web.Application:
    """The misbehaving gateway."""
    app = web.Application()
    app[LOG] = []
    app[ROTATION] = {}
    app.router.add_get("/_bad/log", show_log)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/{case}/v1/models", models)
    app.router.add_post("/{case}/v1/chat/completions", _handler("chat"))
    app.router.add_post("/{case}/v1/messages", _handler("messages"))
    app.router.add_post("/{case}/v1beta/models/{spec}", _handler("gemini"))
    return app


async def _serve(port: int) -> None:
    runner = web.AppRunner(make_app(), access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    assert site._server is not None
    bound = site._server.sockets[0].getsockname()[1]
    print(f"badgateway listening on http://127.0.0.1:{bound}", flush=True)
    await asyncio.Event().wait()


# --- the process, for tests ---------------------------------------------------------------------------------

class BadGateway(ServerProcess):
    """The misbehaving gateway running in its own process."""

    what = "the bad gateway"

    def __init__(self, startup_timeout: float = 20.0) -> None:
        super().__init__([sys.executable, __file__, "--port", "0"], startup_timeout=startup_timeout)

    def log(self) -> list[dict[str, Any]]:
        """Every POST it answered: attempt id, case, dialect, mode, body bytes sent."""
        import httpx

        return httpx.get(self.url + "/_bad/log", timeout=10).json()



if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    try:
        asyncio.run(_serve(args.port))
    except KeyboardInterrupt:
        pass
