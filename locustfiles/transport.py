"""One HTTP attempt on geventhttpclient: timeouts per phase, bytes read as they arrive, errors classified."""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import gevent
import gevent.ssl
from geventhttpclient.connectionpool import ConnectionPool, SSLConnectionPool
from geventhttpclient.response import HTTPConnectionClosed, HTTPParseError, HTTPSocketPoolResponse

from .calls import WireRequest
from .dialects.base import Reader
from .streams import BodyReader, JsonArrayFramer, SSEFramer

MAX_BODY_BYTES = 32 * 1024 * 1024


@dataclass(slots=True)
class Timeouts:
    """Per-phase limits in seconds."""

    connect_s: float = 5.0
    first_byte_s: float = 60.0
    idle_s: float = 30.0
    total_s: float = 300.0


@dataclass(slots=True)
class Outcome:
    """What the transport saw of one attempt (times are perf_counter seconds)."""

    status: int | None = None
    request_id: str | None = None
    original_request_id: str | None = None
    replayed: bool = False
    retry_after_s: float | None = None
    t_headers: float | None = None
    t_end: float = 0.0
    error_kind: str | None = None
    error: str | None = None
    body: Any = None


class AttemptCancelled(Exception):
    """The harness ended the attempt itself (the run stopped, a spend cap, a stop from the UI)."""


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _short(body: bytes) -> str:
    """A short, key-free description of an error body: its code, type and status fields only."""
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return "non-JSON error body"
    err = obj.get("error") if isinstance(obj, dict) else None
    if isinstance(obj, list) and obj and isinstance(obj[0], dict):
        err = obj[0].get("error")
    if isinstance(err, dict):
        parts = [str(err[k]) for k in ("status", "type", "code") if err.get(k) is not None]
        return " ".join(parts)[:80] or "error"
    return "error"


class Transport:
    """A keep-alive connection pool to one base URL, used by one Locust user."""

    def __init__(self, base_url: str, timeouts: Timeouts, insecure: bool = False, ca_file: str | None = None,
                 concurrency: int = 1) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.prefix = parts.path.rstrip("/")
        self.timeouts = timeouts
        self.host_header = self.host if parts.port is None else f"{self.host}:{self.port}"
        common = dict(size=concurrency, connection_timeout=timeouts.connect_s, network_timeout=timeouts.first_byte_s)
        if self.scheme == "https":
            def factory(cafile: str | None = None) -> gevent.ssl.SSLContext:
                if insecure:
                    ctx = gevent.ssl.create_default_context()
                    ctx.check_hostname = False
                    ctx.verify_mode = gevent.ssl.CERT_NONE
                    return ctx
                return gevent.ssl.create_default_context(cafile=ca_file)

            self.pool: ConnectionPool = SSLConnectionPool(self.host, self.port, self.host, self.port,
                                                          insecure=insecure, ssl_context_factory=factory, **common)
        else:
            self.pool = ConnectionPool(self.host, self.port, self.host, self.port, **common)

    def close(self) -> None:
        """Close every pooled connection."""
        self.pool.close()

    def _encode(self, req: WireRequest) -> bytes:
        lines = [f"{req.method} {self.prefix}{req.path} HTTP/1.1", f"Host: {self.host_header}",
                 "Accept-Encoding: identity", "User-Agent: ttbench/0.1"]
        lines += [f"{k}: {v}" for k, v in req.headers.items()]
        if req.body or req.method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(req.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + req.body

    def send(self, req: WireRequest, reader: Reader, stream: bool, expect_json_body: bool) -> Outcome:
        """Run one attempt; `reader` collects the answer. Never raises for network or protocol trouble."""
        out = Outcome()
        to = self.timeouts
        timer = gevent.Timeout(to.total_s)
        timer.start()
        phase = "connect"
        sock = None
        resp = None
        try:
            sock = self.pool.get_socket()
            phase = "send"
            sock.settimeout(to.first_byte_s)
            sock.sendall(self._encode(req))
            phase = "headers"
            resp = HTTPSocketPoolResponse(sock, self.pool, block_size=65536, method=req.method)
            out.t_headers = time.perf_counter()
            phase = "body"
            out.status = status = resp.status_code
            get = resp.get
            out.request_id = get("x-tt-request-id")
            out.original_request_id = get("x-tt-original-request-id")
            out.replayed = (get("idempotent-replayed") or "").lower() == "true"
            out.retry_after_s = _retry_after(get("retry-after"))
            if resp._sock is not None:
                resp._sock.settimeout(to.idle_s)
            ctype = (get("content-type") or "").lower()
            if status >= 400:
                body = self._read_all(resp)
                out.error_kind = "http_429" if status == 429 else ("http_5xx" if status >= 500 else "http_4xx")
                out.error = f"HTTP {status}: {_short(body)}"
            elif stream and not expect_json_body:
                self._read_stream(resp, reader, ctype, out)
            else:
                body = self._read_all(resp)
                if "json" not in ctype:
                    out.error_kind, out.error = "protocol", f"unexpected content type {ctype or 'none'!r}"
                else:
                    obj = json.loads(body)
                    out.body = obj
                    if not expect_json_body:
                        reader.body(obj)
                        if not reader.has_content:
                            out.error_kind, out.error = "empty", "no content of any kind"
        except gevent.Timeout as exc:
            if exc is not timer:
                raise
            out.error_kind, out.error = "timeout", f"total timeout {to.total_s:g}s in {phase}"
        except TimeoutError:
            out.error_kind = "connect" if phase == "connect" else "timeout"
            limit = {"connect": to.connect_s, "body": to.idle_s}.get(phase, to.first_byte_s)
            out.error = f"{phase} timeout {limit:g}s"
        except (ConnectionRefusedError, socket.gaierror) as exc:
            out.error_kind, out.error = "connect", f"{type(exc).__name__}: {exc.strerror or exc}"[:120]
        except (HTTPConnectionClosed, ConnectionError, HTTPParseError, OSError) as exc:
            if phase == "connect":
                out.error_kind = "connect"
            elif phase == "body":
                out.error_kind = "truncated"
            elif isinstance(exc, HTTPParseError) and not isinstance(exc, HTTPConnectionClosed) and \
                    "closed" not in str(exc):
                out.error_kind = "protocol"
            else:
                out.error_kind = "reset"
            out.error = f"{type(exc).__name__} in {phase}"
        except (ValueError, UnicodeDecodeError) as exc:
            out.error_kind, out.error = "protocol", f"{type(exc).__name__}: unparseable response"
        except gevent.GreenletExit:
            out.error_kind, out.error = "cancelled", "the harness stopped the attempt"
            raise
        finally:
            timer.cancel()
            out.t_end = time.perf_counter()
            self._settle_socket(sock, resp, phase, out.error_kind is not None)
        return out

    def _settle_socket(self, sock: Any, resp: Any, phase: str, failed: bool) -> None:
        if sock is None:
            return
        if resp is None:
            if phase == "send":
                self.pool.release_socket(sock)
            else:  # the response constructor already released it; make sure it is not reused
                try:
                    sock.close()
                except OSError:
                    pass
            return
        if resp._sock is not None:
            if failed or not resp.message_complete:
                self.pool.release_socket(resp._sock)
                resp._sock = None
                resp._pool = None
            else:
                resp.release()

    def _read_all(self, resp: Any) -> bytes:
        parts = []
        size = 0
        for data, _t in BodyReader(resp):
            parts.append(data)
            size += len(data)
            if size > MAX_BODY_BYTES:
                raise ValueError(f"response larger than {MAX_BODY_BYTES} bytes")
        return b"".join(parts)

    def _read_stream(self, resp: Any, reader: Reader, ctype: str, out: Outcome) -> None:
        if reader.stream_format == "json_array":
            if "json" not in ctype:
                out.error_kind, out.error = "protocol", f"unexpected content type {ctype or 'none'!r}"
                self._read_all(resp)
                return
            framer = JsonArrayFramer()
            size = 0
            for data, t in BodyReader(resp):
                size += len(data)
                if size > MAX_BODY_BYTES:
                    raise ValueError("stream larger than the limit")
                for element in framer.feed(data):
                    reader.event(None, element.decode("utf-8"), t)
                if framer.garbage:
                    raise ValueError("not a JSON array")
            reader.done = framer.closed and not framer.pending
        else:
            if "text/event-stream" not in ctype:
                out.error_kind, out.error = "protocol", f"unexpected content type {ctype or 'none'!r}"
                self._read_all(resp)
                return
            sse = SSEFramer()
            size = 0
            for data, t in BodyReader(resp):
                size += len(data)
                if size > MAX_BODY_BYTES:
                    raise ValueError("stream larger than the limit")
                for name, payload in sse.feed(data):
                    reader.event(name, payload, t)
            for name, payload in sse.finish():
                reader.event(name, payload, time.perf_counter())
        if reader.error is not None:
            out.error_kind, out.error = "stream_error", f"in-band error: {reader.error}"[:120]
        elif not reader.stream_complete():
            out.error_kind, out.error = "truncated", "the stream ended without its terminator"
        elif not reader.has_content:
            out.error_kind, out.error = "empty", "no content of any kind"
