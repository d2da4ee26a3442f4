"""One HTTP attempt on geventhttpclient: timeouts per phase, bytes read as they arrive, errors classified."""

from __future__ import annotations

import json
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import gevent
import gevent.ssl
from geventhttpclient.connectionpool import ConnectionPool, SSLConnectionPool
from geventhttpclient.response import HTTPConnectionClosed, HTTPParseError, HTTPSocketPoolResponse

from .calls import WireRequest
from .dialects.base import Reader, loads
from .profile import (
    RATELIMIT_NAMES,
    Profile,
    error_details,
    parse_wait,
    read_ratelimit,
    retry_info_delay,
)
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
    request_id_header: str | None = None
    ids: dict[str, str] | None = None
    original_request_id: str | None = None
    replayed: bool = False
    retry_after_s: float | None = None
    retry_after_header: str | None = None
    ratelimit_reset_s: dict[str, float] | None = None
    ratelimit: dict[str, dict[str, Any]] | None = None  # {dimension: {limit, remaining, reset_s}}
    refusal: str | None = None            # quota | rate_limit, as the profile classifies an error answer
    should_retry: bool | None = None      # x-should-retry, when the gateway said
    t_headers: float | None = None
    t_end: float = 0.0
    error_kind: str | None = None
    error: str | None = None
    error_type: str | None = None
    error_code: str | None = None
    error_reason: str | None = None
    body: Any = None
    sent: bool = False                    # the request's bytes were all written
    complete: bool = False                # the whole HTTP message arrived (body or stream to its end)
    content_began: bool = False
    dry_run_ignored: bool = False         # a dry run answered with a real completion
    framing: str | None = None            # the stream framing that arrived, when not the one asked for


def header_map(resp: Any) -> dict[str, Any]:
    """A response's headers by lower-case name, looked up without an exception per miss: a gateway profile asks
    for dozens of headers an answer mostly does not have."""
    headers: dict[str, Any] = {}
    for name, value in resp.items():  # one item per header line: a repeated header reads as the list of its values
        key = name.lower()
        if key in headers:
            prev = headers[key]
            headers[key] = [*prev, value] if isinstance(prev, list) else [prev, value]
        else:
            headers[key] = value
    return headers


class AttemptCancelled(Exception):
    """The harness ended the attempt itself (the run stopped, a spend cap, a stop from the UI)."""


def client_tls_context(insecure: bool, ca_file: str | None, module: Any = ssl, client_cert: str | None = None,
                       client_key: str | None = None) -> ssl.SSLContext:
    """Verification on (the system's CAs, plus `ca_file` when given) unless `insecure`; a client certificate
    (mutual TLS) when `client_cert` is given."""
    ctx = module.create_default_context()
    if insecure:
        ctx.check_hostname = False
        ctx.verify_mode = module.CERT_NONE
    elif ca_file:
        ctx.load_verify_locations(cafile=ca_file)
    if client_cert:
        ctx.load_cert_chain(client_cert, client_key)
    return ctx


def proxy_for(scheme: str, host: str) -> tuple[str, int, str | None, str | None] | None:
    """The proxy the standard environment (HTTPS_PROXY, HTTP_PROXY, NO_PROXY) names for a target, if any."""
    import urllib.request

    proxies = urllib.request.getproxies_environment()
    url = proxies.get(scheme)
    if not url or urllib.request.proxy_bypass_environment(host, proxies):
        return None
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if not parts.hostname:
        return None
    return parts.hostname, parts.port or 80, parts.username, parts.password


def _parse_error(exc: Exception, phase: str) -> tuple[str, str]:
    """An HTTP parse error: a cut (the connection closed early) or a protocol violation."""
    text = " ".join(str(a) for a in exc.args)
    if isinstance(exc, HTTPConnectionClosed) or any(w in text for w in ("EOF", "closed", "Incomplete")):
        if phase == "body":
            return "truncated", "the connection closed before the end of the body"
        return "reset", f"the connection closed before the {'headers' if phase == 'headers' else 'answer'}"
    where = "the status line or headers" if phase == "headers" else "the body's framing"
    return "protocol", f"not valid HTTP in {where} ({text[:60]})"


SECRET_HEADERS = ("authorization", "x-api-key", "x-goog-api-key", "api-key", "ocp-apim-subscription-key",
                  "proxy-authorization")


def _scrub(text: str, req: WireRequest, secrets: tuple[str, ...] = ()) -> str:
    """An error text without any credential the request carried (defence in depth: errors are built from
    status fields and exception names, but a gateway could echo a key into an error code)."""
    found = list(secrets)
    for name, value in req.headers.items():
        if name.lower() in SECRET_HEADERS and value:
            found += [value, value.split(" ", 1)[-1]]
    for secret in found:
        if len(secret) < 4:
            continue
        for form in (secret, quote(secret, safe="")):  # a Gemini ?key= goes URL-encoded
            if form in text:
                text = text.replace(form, "[redacted]")
    return text


def error_fields(body: bytes) -> tuple[dict[str, str], Any]:
    """An error body's `status`, `type`, `code`, `message` and (Gemini's details) `reason` fields, and the parsed
    body."""
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return {}, None
    err = obj.get("error") if isinstance(obj, dict) else None
    if isinstance(obj, list) and obj and isinstance(obj[0], dict):
        err = obj[0].get("error")
    out: dict[str, str] = {}
    if isinstance(err, dict):
        for k in ("status", "type", "code"):
            if err.get(k) is not None and not isinstance(err[k], dict | list):
                out[k] = str(err[k])[:64]
        if isinstance(err.get("message"), str):
            out["message"] = err["message"][:200]
        for d in err.get("details") or ():
            if isinstance(d, dict) and isinstance(d.get("reason"), str):
                out["reason"] = d["reason"][:64]
                break
    elif isinstance(obj, dict) and isinstance(obj.get("type"), str) and obj.get("type") == "error":
        out["type"] = "error"
    return out, obj


def _short(fields: dict[str, str], parsed: bool) -> str:
    """A short, key-free description of an error body: its code, type and status fields only."""
    if not parsed:
        return "non-JSON error body"
    parts = [fields[k] for k in ("status", "type", "code") if k in fields]
    return " ".join(parts)[:80] or "error"


def quota_failure(body: Any) -> dict[str, dict[str, Any]] | None:
    """Gemini's `QuotaFailure` details as rate-limit figures: the violated quota's limit, nothing remaining."""
    details = error_details(body)
    if details is None:
        return None
    out: dict[str, dict[str, Any]] | None = None
    for d in details:
        if not (isinstance(d, dict) and str(d.get("@type", "")).endswith("QuotaFailure")):
            continue
        for v in d.get("violations") or ():
            if not isinstance(v, dict):
                continue
            metric = f"{v.get('quotaMetric', '')} {v.get('quotaId', '')}".lower()
            dim = "tokens" if "token" in metric else "requests" if "request" in metric else None
            if dim is None:
                continue
            try:
                limit: int | None = int(float(v.get("quotaValue")))
            except (TypeError, ValueError):
                limit = None
            out = out or {}
            out[dim] = {"limit": limit, "remaining": 0, "reset_s": retry_info_delay(body)}
    return out


class Transport:
    """A keep-alive connection pool to one base URL, used by one Locust user."""

    def __init__(self, base_url: str, timeouts: Timeouts, insecure: bool = False, ca_file: str | None = None,
                 concurrency: int = 1, profile: Profile | None = None, client_cert: str | None = None,
                 client_key: str | None = None, secrets: tuple[str, ...] = ()) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.prefix = parts.path.rstrip("/")
        self.timeouts = timeouts
        self.profile = profile or Profile()
        self.secrets = secrets
        self.host_header = self.host if parts.port is None else f"{self.host}:{self.port}"
        common: dict[str, Any] = dict(size=concurrency, connection_timeout=timeouts.connect_s,
                                      network_timeout=timeouts.first_byte_s)
        proxy = proxy_for(self.scheme, self.host)
        conn_host, conn_port = (proxy[0], proxy[1]) if proxy else (self.host, self.port)
        # a plain-HTTP target through a proxy is asked for by its absolute URL; an https one through a CONNECT tunnel
        self.absolute = f"{self.scheme}://{self.host_header}" if proxy and self.scheme == "http" else ""
        self.proxy_auth = None
        if proxy and (proxy[2] or proxy[3]):
            import base64

            token = base64.b64encode(f"{proxy[2] or ''}:{proxy[3] or ''}".encode()).decode()
            self.proxy_auth = f"Basic {token}"
            if self.scheme == "https":
                common.update(proxy_user=proxy[2], proxy_password=proxy[3])
        if self.scheme == "https":
            ctx = client_tls_context(insecure, ca_file, gevent.ssl, client_cert, client_key)

            def factory(cafile: str | None = None) -> gevent.ssl.SSLContext:
                return ctx

            self.pool: ConnectionPool = SSLConnectionPool(conn_host, conn_port, self.host, self.port,
                                                          insecure=insecure, ssl_context_factory=factory,
                                                          use_proxy=proxy is not None, **common)
        else:
            self.pool = ConnectionPool(conn_host, conn_port, self.host, self.port, **common)

    def close(self) -> None:
        """Close every pooled connection."""
        self.pool.close()

    def _encode(self, req: WireRequest) -> bytes:
        lines = [f"{req.method} {self.absolute}{self.prefix}{req.path} HTTP/1.1", f"Host: {self.host_header}",
                 "Accept-Encoding: identity", "User-Agent: ttbench/0.1"]
        if self.absolute and self.proxy_auth:
            lines.append(f"Proxy-Authorization: {self.proxy_auth}")
        lines += [f"{k}: {v}" for k, v in req.headers.items()]
        if req.body or req.method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(req.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + req.body

    def send(self, req: WireRequest, reader: Reader, stream: bool, dry_run: bool,
             out: Outcome | None = None) -> Outcome:
        """Run one attempt; `reader` collects the answer (`out`, when given, is filled as the attempt goes, so a
        caller that stops the attempt keeps what arrived).

        Never raises for anything the target does: every way an answer can go wrong ends in
        an Outcome with an error kind (only the harness's own stop, GreenletExit, propagates).
        """
        out = out if out is not None else Outcome()
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
            out.sent = True
            phase = "headers"
            resp = HTTPSocketPoolResponse(sock, self.pool, block_size=65536, method=req.method)
            out.t_headers = time.perf_counter()
            phase = "body"
            out.status = resp.status_code
            self._read_headers(header_map(resp), out)
            if resp._sock is not None:
                resp._sock.settimeout(to.idle_s)
            self._read_body(resp, reader, stream, dry_run, out)
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
            # the whole answer arrived: the HTTP message, and a stream's own terminator
            out.complete = resp is not None and bool(getattr(resp, "message_complete", False)) and \
                (not stream or (dry_run and not out.dry_run_ignored) or reader.stream_complete())
            self._settle_socket(sock, resp, phase, out.error_kind is not None)
            if out.error:
                out.error = _scrub(out.error, req, self.secrets)
                for name in ("error_type", "error_code", "error_reason"):
                    if (v := getattr(out, name)) is not None:
                        setattr(out, name, _scrub(v, req, self.secrets))
            out.content_began = reader.first_content is not None
        return out

    def _read_headers(self, headers: dict[str, Any], out: Outcome) -> None:
        """Request ids (every known header, the profile's first), replay marks, retry waits, rate-limit resets."""
        p = self.profile

        def get(name: str) -> Any:
            return headers.get(name.lower())

        ids = None
        for name in p.id_headers:
            v = get(name)
            if v:
                if ids is None:
                    ids = {}
                    out.request_id, out.request_id_header = v, name
                ids[name] = v
        out.ids = ids
        for name in p.original_request_id_headers:
            v = get(name)
            if v:
                out.original_request_id = v
                break
        out.replayed = any((get(name) or "").lower() == "true" for name in p.replay_headers)
        for name in p.retry_after_headers:
            v = get(name)
            if v:
                wait = parse_wait(name, v)
                if wait is not None:
                    out.retry_after_s, out.retry_after_header = wait, name
                    break
        out.ratelimit = rl = None if RATELIMIT_NAMES.isdisjoint(headers) else read_ratelimit(get)
        # when each limit is full again: read once with the rest of the rate-limit headers
        out.ratelimit_reset_s = {d: v["reset_s"] for d, v in rl.items() if v["reset_s"] is not None} or None \
            if rl else None
        should = (headers.get("x-should-retry") or "").strip().lower()
        out.should_retry = True if should == "true" else False if should == "false" else None

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

    def _read_body(self, resp: Any, reader: Reader, stream: bool, dry_run: bool, out: Outcome) -> None:
        status = out.status or 0
        get = resp.get
        ctype = (get("content-type") or "").lower()
        if status >= 400:
            body = self._read_error_body(resp)
            out.error_kind = "http_429" if status == 429 else ("http_5xx" if status >= 500 else "http_4xx")
            fields, parsed = error_fields(body)
            out.error = f"HTTP {status}: {_short(fields, parsed is not None)}"
            out.error_type, out.error_code, out.error_reason = fields.get("type"), fields.get("code"), \
                fields.get("reason") or fields.get("status")
            if out.retry_after_s is None and (delay := retry_info_delay(parsed)) is not None:
                out.retry_after_s, out.retry_after_header = delay, "RetryInfo.retryDelay"
            out.refusal = self.profile.refusal(status, out.error_type, out.error_code, out.error_reason,
                                               fields.get("message"))
            if out.ratelimit is None and (quota := quota_failure(parsed)) is not None:
                out.ratelimit = quota
            return
        if not 200 <= status < 300:
            raise ProtocolError(f"unexpected HTTP {status}")
        encoding = (get("content-encoding") or "").strip().lower()
        if encoding not in ("", "identity"):
            raise ProtocolError(f"content encoding {encoding[:20]!r}, though the request asked for identity")
        length = resp.content_length
        if length is not None and length > MAX_BODY_BYTES:
            raise ProtocolError(f"response body of {length} bytes is over the {MAX_BODY_BYTES}-byte limit")
        if dry_run and "text/event-stream" in ctype:
            out.dry_run_ignored = True  # a stream, not an estimate: the gateway made the call
        if stream and not (dry_run and not out.dry_run_ignored and "json" in ctype):
            self._read_stream(resp, reader, ctype, out)
            return
        body = self._read_all(resp)
        if not body.strip():
            out.error_kind, out.error = "empty", "an empty body"
            return
        if "json" not in ctype:
            raise ProtocolError(f"unexpected content type {ctype[:40] or 'none'!r}")
        obj = loads(body.decode("utf-8"))
        if dry_run and isinstance(obj, dict) and (obj.get("dry_run") is True or obj.get("object") == "billing.estimate"):
            out.body = obj
            return
        if dry_run:
            out.dry_run_ignored = True  # a real answer, not an estimate: the gateway made the call
            if stream:
                if not (isinstance(obj, list) and reader.stream_format == "json_array"):
                    raise ProtocolError("a whole JSON answer to a streamed call")
                t = time.perf_counter()  # a streamed JSON array, read whole
                for element in obj:
                    reader.event(None, json.dumps(element), t)
                reader.done = True
                return
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
            other = "sse" if array and "text/event-stream" in ctype else \
                "json_array" if not array and "json" in ctype and "json_array" in reader.framings else None
            if other is None:
                raise ProtocolError(f"unexpected content type {ctype[:40] or 'none'!r}")
            # the same dialect in its other stream framing: read it as it came (a success if complete)
            out.framing = reader.stream_format = other
            array = other == "json_array"
        body = BodyReader(resp, limit=MAX_BODY_BYTES)
        event, events = reader.event, reader.events
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
                    events(sse.feed(data), t)
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


class Transports:
    """One user's connection pools: the target's, and one per other origin a gateway profile's paths name."""

    def __init__(self, base_url: str, make: Any) -> None:
        self._make = make
        self.default: Transport = make(base_url)
        self._others: dict[str, Transport] = {}

    def get(self, base: str | None) -> Transport:
        """The pool for an origin (None: the target)."""
        if base is None:
            return self.default
        t = self._others.get(base)
        if t is None:
            t = self._others[base] = self._make(base)
        return t

    def close(self) -> None:
        """Close every pool."""
        self.default.close()
        for t in self._others.values():
            t.close()
