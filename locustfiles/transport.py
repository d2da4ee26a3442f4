"""One HTTP attempt on geventhttpclient: timeouts per phase, bytes read as they arrive, errors classified."""

from __future__ import annotations

import json
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import gevent
import gevent.ssl
from geventhttpclient.connectionpool import ConnectionPool, SSLConnectionPool
from geventhttpclient.response import HTTPConnectionClosed, HTTPParseError, HTTPSocketPoolResponse

from .calls import WireRequest
from .dialects.base import Reader, loads
from .streams import BodyReader, JsonArrayFramer, ProtocolError, SSEFramer

MAX_BODY_BYTES = 32 * 1024 * 1024
#: An error body is read this far for its code and type, then the connection is dropped.
MAX_ERROR_BODY_BYTES = 64 * 1024
#: What reading a body of the wrong shape can raise: bad JSON or UTF-8 (ValueError), a list or a
#: number where an object belongs (AttributeError, TypeError, KeyError, IndexError), absurd numbers or
#: nesting (OverflowError, RecursionError). Each makes the attempt a `protocol` failure.
SHAPE_ERRORS = (ValueError, AttributeError, TypeError, KeyError, IndexError, OverflowError, RecursionError)


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


def client_tls_context(insecure: bool, ca_file: str | None, module: Any = ssl) -> ssl.SSLContext:
    """Verification on (the system's CAs, plus `ca_file` when given) unless `insecure`."""
    ctx = module.create_default_context()
    if insecure:
        ctx.check_hostname = False
        ctx.verify_mode = module.CERT_NONE
    elif ca_file:
        ctx.load_verify_locations(cafile=ca_file)
    return ctx


def _parse_error(exc: Exception, phase: str) -> tuple[str, str]:
    """An HTTP parse error: a cut (the connection closed early) or a protocol violation."""
    text = " ".join(str(a) for a in exc.args)
    if isinstance(exc, HTTPConnectionClosed) or any(w in text for w in ("EOF", "closed", "Incomplete")):
        if phase == "body":
            return "truncated", "the connection closed before the end of the body"
        return "reset", f"the connection closed before the {'headers' if phase == 'headers' else 'answer'}"
    where = "the status line or headers" if phase == "headers" else "the body's framing"
    return "protocol", f"not valid HTTP in {where} ({text[:60]})"


SECRET_HEADERS = ("authorization", "x-api-key", "x-goog-api-key", "api-key")


def _scrub(text: str, req: WireRequest) -> str:
    """An error text without any credential the request carried (defence in depth: errors are built from
    status fields and exception names, but a gateway could echo a key into an error code)."""
    for name, value in req.headers.items():
        if name.lower() in SECRET_HEADERS and value:
            for secret in {value, value.split(" ", 1)[-1]}:
                if len(secret) >= 4 and secret in text:
                    text = text.replace(secret, "[redacted]")
    return text


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
            ctx = client_tls_context(insecure, ca_file, gevent.ssl)

            def factory(cafile: str | None = None) -> gevent.ssl.SSLContext:
                return ctx

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
        """Run one attempt; `reader` collects the answer.

        Never raises for anything the target does: every way an answer can go wrong ends in
        an Outcome with an error kind (only the harness's own stop, GreenletExit, propagates).
        """
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
            out.status = resp.status_code
            get = resp.get
            out.request_id = get("x-tt-request-id")
            out.original_request_id = get("x-tt-original-request-id")
            out.replayed = (get("idempotent-replayed") or "").lower() == "true"
            out.retry_after_s = _retry_after(get("retry-after"))
            if resp._sock is not None:
                resp._sock.settimeout(to.idle_s)
            self._read_body(resp, reader, stream, expect_json_body, out)
        except gevent.Timeout as exc:
            if exc is not timer:
                raise
            out.error_kind, out.error = "timeout", f"total timeout {to.total_s:g}s in {phase}"
        except TimeoutError:
            out.error_kind = "connect" if phase == "connect" else "timeout"
            limit = {"connect": to.connect_s, "body": to.idle_s}.get(phase, to.first_byte_s)
            out.error = f"{phase} timeout {limit:g}s"
        except ssl.SSLCertVerificationError as exc:
            out.error_kind = "connect"
            out.error = f"TLS certificate verification failed: {exc.verify_message or exc.reason}"[:120]
        except (ConnectionRefusedError, socket.gaierror) as exc:
            out.error_kind, out.error = "connect", f"{type(exc).__name__}: {exc.strerror or exc}"[:120]
        except HTTPParseError as exc:
            out.error_kind, out.error = _parse_error(exc, phase)
        except (ConnectionError, OSError) as exc:
            name = type(exc).__name__
            if phase == "connect":
                out.error_kind, out.error = "connect", f"{name} while connecting"
            elif phase == "body":
                out.error_kind, out.error = "truncated", f"the connection broke before the end of the body ({name})"
            else:
                out.error_kind, out.error = "reset", f"the connection broke before the headers ({name} in {phase})"
        except ProtocolError as exc:
            out.error_kind, out.error = "protocol", str(exc)[:120]
        except SHAPE_ERRORS as exc:
            out.error_kind, out.error = "protocol", f"{type(exc).__name__}: unparseable response"
        except gevent.GreenletExit:
            out.error_kind, out.error = "cancelled", "the harness stopped the attempt"
            raise
        except Exception as exc:  # noqa: BLE001 - whatever the answer was, the attempt is recorded, not lost
            if phase == "connect":
                out.error_kind, out.error = "connect", f"{type(exc).__name__} while connecting"
            else:
                out.error_kind, out.error = "protocol", f"{type(exc).__name__} while reading the response"
        finally:
            timer.cancel()
            out.t_end = time.perf_counter()
            self._settle_socket(sock, resp, phase, out.error_kind is not None)
            if out.error:
                out.error = _scrub(out.error, req)
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
        elif failed:  # back in the pool with a complete message, yet the attempt failed (trailing bytes, a bad
            try:      # body): the pool drops a closed socket, so the next attempt starts on a fresh connection
                sock.close()
            except OSError:
                pass

    def _read_body(self, resp: Any, reader: Reader, stream: bool, expect_json_body: bool, out: Outcome) -> None:
        status = out.status or 0
        get = resp.get
        ctype = (get("content-type") or "").lower()
        if status >= 400:
            body = self._read_error_body(resp)
            out.error_kind = "http_429" if status == 429 else ("http_5xx" if status >= 500 else "http_4xx")
            out.error = f"HTTP {status}: {_short(body)}"
            return
        if not 200 <= status < 300:
            raise ProtocolError(f"unexpected HTTP {status}")
        encoding = (get("content-encoding") or "").strip().lower()
        if encoding not in ("", "identity"):
            raise ProtocolError(f"content encoding {encoding[:20]!r}, though the request asked for identity")
        length = resp.content_length
        if length is not None and length > MAX_BODY_BYTES:
            raise ProtocolError(f"response body of {length} bytes is over the {MAX_BODY_BYTES}-byte limit")
        if stream and not expect_json_body:
            self._read_stream(resp, reader, ctype, out)
            return
        body = self._read_all(resp)
        if not body.strip():
            out.error_kind, out.error = "empty", "an empty body"
            return
        if "json" not in ctype:
            raise ProtocolError(f"unexpected content type {ctype[:40] or 'none'!r}")
        obj = loads(body.decode("utf-8"))
        out.body = obj
        if not expect_json_body:
            reader.body(obj)
            if not reader.has_content:
                out.error_kind, out.error = "empty", "no content of any kind"

    def _read_all(self, resp: Any) -> bytes:
        return b"".join(data for data, _t in BodyReader(resp, limit=MAX_BODY_BYTES))

    def _read_error_body(self, resp: Any) -> bytes:
        """Enough of an error body for its code and type; a cut or a huge body still leaves the status."""
        parts: list[bytes] = []
        size = 0
        try:
            for data, _t in BodyReader(resp):
                parts.append(data)
                size += len(data)
                if size >= MAX_ERROR_BODY_BYTES:
                    break
        except (OSError, HTTPParseError):
            pass
        return b"".join(parts)[:MAX_ERROR_BODY_BYTES]

    def _read_stream(self, resp: Any, reader: Reader, ctype: str, out: Outcome) -> None:
        array = reader.stream_format == "json_array"
        if ("json" not in ctype) if array else ("text/event-stream" not in ctype):
            if resp.content_length == 0:
                out.error_kind, out.error = "empty", "an empty body"
                return
            raise ProtocolError(f"unexpected content type {ctype[:40] or 'none'!r}")
        body = BodyReader(resp, limit=MAX_BODY_BYTES)
        event = reader.event
        try:
            if array:
                framer = JsonArrayFramer()
                for data, t in body:
                    for element in framer.feed(data):
                        event(None, element.decode("utf-8"), t)
                    if framer.garbage:
                        raise ProtocolError("not a JSON array of objects")
                reader.done = framer.closed and not framer.pending
            else:
                sse = SSEFramer()
                for data, t in body:
                    for name, payload in sse.feed(data):
                        event(name, payload, t)
                cut = sse.partial_line  # the body ended inside a line
                for name, payload in sse.finish():
                    try:
                        event(name, payload, time.perf_counter())
                    except SHAPE_ERRORS:
                        if not cut:
                            raise  # whole lines that do not parse: protocol
                        # a line cut by the end of the body: the stream is judged by its terminator (truncated)
        except ProtocolError:
            raise
        except SHAPE_ERRORS as exc:
            raise ProtocolError(f"unparseable event ({type(exc).__name__})") from None
        if body.nbytes == 0:
            out.error_kind, out.error = "empty", "an empty body"
        elif reader.error is not None:
            out.error_kind, out.error = "stream_error", f"in-band error: {reader.error}"[:120]
        elif not reader.stream_complete():
            out.error_kind, out.error = "truncated", "the stream ended without its terminator"
        elif not reader.has_content:
            out.error_kind, out.error = "empty", "no content of any kind"
