"""One attempt from request to last byte: auth, parsing, idempotency, limits, faults, capacity, timing, billing."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .calls import BadRequest, Call, Plan
from .capacity import QueueFull
from .draws import rng
from .faults import FAULT_TABLE, REPLAY_FAULTS, applicable
from .generation import plan_chat, plan_embeddings, plan_images
from .idempotency import MAX_KEY_LENGTH, StoredResponse, fingerprint, normalize_key
from .ledger import format_amount
from .truth import find_marker

if TYPE_CHECKING:
    from ttformats.prices import Usage

    from .dialects.base import Dialect
    from .limits import Admission
    from .state import Gateway

REPLAY_HEADERS = ("Content-Type", "Cache-Control")


class Aborted(Exception):
    """The connection was dropped on purpose; nothing more is written."""


def id_headers(ctx: dict[str, Any]) -> dict[str, str]:
    """The request-id headers every response carries, and the rate-limit headers once the call met its limits."""
    rid = ctx["request_id"]
    return {"X-TT-Request-ID": rid, "x-request-id": rid, "request-id": rid, **ctx.get("limit_headers", {})}


def abort_connection(request: web.Request) -> None:
    """Drop the connection with a TCP reset."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    transport.abort()


async def send_bytes(request: web.Request, ctx: dict[str, Any], status: int, body: bytes,
                     headers: dict[str, str] | None = None, content_type: str = "application/json",
                     cut: bool = False) -> web.StreamResponse:
    """Send a whole body, recording when the headers and the last byte went out; cut drops it midway."""
    entry = ctx["entry"]
    resp = web.StreamResponse(status=status, headers={**id_headers(ctx), **(headers or {})})
    resp.content_type = content_type
    resp.content_length = len(body)
    entry["status"] = status
    await resp.prepare(request)
    entry["headers_sent"] = time.time()
    if cut:
        await resp.write(body[: max(1, len(body) // 2)])
        abort_connection(request)
        raise Aborted
    await resp.write(body)
    await resp.write_eof()
    entry["last_byte"] = time.time()
    return resp


async def send_error(request: web.Request, ctx: dict[str, Any], dialect: Dialect, status: int, category: str,
                     message: str, param: str | None = None, headers: dict[str, str] | None = None,
                     code: str | None = None) -> web.StreamResponse:
    """An error response in the dialect's own shape."""
    ctx["entry"]["outcome"] = "error"
    body = json.dumps(dialect.error(status, category, message, param, code)).encode()
    return await send_bytes(request, ctx, status, body, headers)


class Exchange:
    """Runs one attempt against the gateway's state."""

    def __init__(self, gw: Gateway, dialect: Dialect, request: web.Request) -> None:
        self.gw = gw
        self.dialect = dialect
        self.request = request
        self.ctx: dict[str, Any] = request["ctx"]
        self.entry: dict[str, Any] = self.ctx["entry"]

    async def error(self, status: int, category: str, message: str, param: str | None = None,
                    headers: dict[str, str] | None = None, code: str | None = None) -> web.StreamResponse:
        """Send an error in this dialect's shape."""
        return await send_error(self.request, self.ctx, self.dialect, status, category, message, param, headers, code)

    async def authenticate(self) -> web.StreamResponse | None:
        """An error response when the key is missing or wrong, else None."""
        key = self.dialect.api_key(self.request)
        if not key:
            status, message = self.dialect.auth_failure(missing=True)
            return await self.error(status, "auth_missing", message)
        if not self.gw.limits.valid(key):
            status, message = self.dialect.auth_failure(missing=False)
            return await self.error(status, "auth_invalid", message)
        self.ctx["api_key"] = key
        tenant = self.gw.limits.tenant_of(key)
        self.ctx["tenant"] = tenant
        self.entry["tenant"] = None if tenant is None else tenant.label
        return None

    async def run(self) -> web.StreamResponse:
        """Handle the request end to end."""
        denied = await self.authenticate()
        if denied is not None:
            return denied
        raw = await self.request.read()
        self.entry["marker"] = find_marker(raw)
        try:
            body = json.loads(raw) if raw else None
        except (ValueError, UnicodeDecodeError):
            return await self.error(400, "invalid_request", "We could not parse the JSON body of your request.")
        try:
            call = self.dialect.parse(body, self.request)
        except BadRequest as exc:
            return await self.error(exc.status, "invalid_request", exc.message, exc.param, code=exc.code)
        spec = self.gw.config.models.get(call.model)
        if spec is None or spec["kind"] != self.dialect.model_kind:
            message, param, code = self.dialect.unknown_model(call.model)
            return await self.error(404, "not_found", message, param, code=code)
        call.kind = spec["kind"]
        dry = self.request.headers.get("X-TT-Dry-Run", "").strip().lower() in ("true", "1", "yes")
        self.entry.update(endpoint=call.endpoint, model=call.model, stream=call.stream, dry_run=dry)
        if call.kind == "image":
            self.entry["images_requested"] = call.images_n
        raw_key = self.request.headers.get("Idempotency-Key")
        if raw_key is None:
            return await self.limited(call, spec, dry)
        key = normalize_key(raw_key)
        if not key or len(key) > MAX_KEY_LENGTH:
            return await self.error(400, "invalid_request", f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters.")
        self.ctx["idempotency_key"] = key
        self.entry["idempotency_key"] = key
        scope = (self.ctx["api_key"], self.request.method, self.request.path, key)
        verdict, stored = self.gw.idempotency.begin(scope, fingerprint(raw, dry))
        if verdict == "mismatch":
            return await self.error(422, "key_reused", "Keys for idempotent requests can only be used with the "
                                    f"same parameters they were first used with (key '{key}').",
                                    headers={"x-should-retry": "false"})
        if verdict == "in_flight":
            wait = str(self.gw.config.section("idempotency")["in_flight_retry_after_s"])
            return await self.error(409, "in_flight", "A request is outstanding for this Idempotency-Key.",
                                    headers={"Retry-After": wait})
        if verdict == "replay":
            assert stored is not None
            return await self.limited(call, spec, dry, stored)
        self.ctx["idem_scope"] = scope
        try:
            return await self.limited(call, spec, dry)
        finally:
            if "stored" not in self.ctx:
                self.gw.idempotency.abandon(scope)

    async def limited(self, call: Call, spec: dict[str, Any], dry: bool,
                      stored: StoredResponse | None = None) -> web.StreamResponse:
        """Admission through the tenant's limits, then the attempt or the replay; settled however it ends."""
        gw = self.gw
        tenant = self.ctx.get("tenant")
        if tenant is None:
            return await (self.execute(call, spec, dry) if stored is None else self.replay(call, stored))
        basis = gw.biller.estimate(call, spec)
        estimate = 0 if stored is not None else basis.input_tokens + basis.output_tokens  # a replay: no tokens
        gate = gw.limits.admit(tenant, self.dialect.ratelimit_style, self.ctx["attempt_key"], call.model, estimate,
                               time.time(), dry)
        self.ctx["limit_headers"] = gate.headers
        self.entry["limit"] = gate.record
        if gate.refused is not None:
            return await self.refuse(gate)
        try:
            return await (self.execute(call, spec, dry) if stored is None else self.replay(call, stored))
        finally:
            gate.finish(time.time(), self.ctx.get("limit_actual", 0))

    async def refuse(self, gate: Admission) -> web.StreamResponse:
        """The dialect's answer to a call its tenant's budget or rate limits refused."""
        extra: dict[str, str] = {}
        if gate.refusal is None:
            status, body = self.dialect.quota_exceeded()
        else:
            status, body, extra = self.dialect.rate_limited(gate.refusal)
        gate.sent(extra)
        self.entry["outcome"] = "error"
        return await send_bytes(self.request, self.ctx, status, json.dumps(body).encode(), extra)

    def _settle_success(self, call: Call, usage: Usage, requested_images: int | None) -> None:
        """Bill a completed call and add its fair amount to its tenant's spend."""
        self.gw.biller.settle_success(self.ctx, call, usage, requested_images)
        self.gw.limits.spend(self.ctx.get("tenant"), self.gw.biller.amount(call.model, usage))

    def _store(self, status: int, headers: dict[str, str], body: bytes | None, frames: list[bytes] | None,
               usage: Any) -> None:
        scope = self.ctx.get("idem_scope")
        if scope is None:
            return
        self.gw.idempotency.complete(scope, StoredResponse(status, headers, body, frames, self.ctx["request_id"], usage))
        self.ctx["stored"] = True

    def _plan(self, call: Call, spec: dict[str, Any], fault: str | None) -> Plan:
        seed = self.gw.config.seed
        if call.kind == "embedding":
            return plan_embeddings(spec, call, seed)
        if call.kind == "image":
            returned = call.images_n
            if fault == "fewer_images":
                returned = rng(seed, "fewer", self.ctx["attempt_key"]).randint(1, call.images_n - 1)
            self.entry["images_returned"] = returned
            return plan_images(spec, call, seed, returned)
        return plan_chat(spec, call, seed, float(self.gw.config.section("tools")["call_share"]))

    async def pre_faults(self, fault: str | None, on_fail: Any = None) -> web.StreamResponse | None:
        """Faults that strike before any answer: stall, 5xx, 429, reset."""
        cfg = self.gw.config.section("faults")
        if fault == "stall":
            self.entry["fault_detail"] = {"stall_ms": cfg["stall_ms"]}
            await asyncio.sleep(float(cfg["stall_ms"]) / 1000.0)
            return None
        if fault == "server_error":
            statuses = list(cfg["server_error_statuses"])
            status = statuses[rng(self.gw.config.seed, "status", self.ctx["attempt_key"]).randrange(len(statuses))]
            status = self.dialect.server_error_status(status)
            self.entry["fault_detail"] = {"status": status}
            if on_fail is not None:
                on_fail()
            category = "overloaded" if status == 529 else "server_error"
            headers = {"Retry-After": str(cfg["retry_after_s"])} if status in (503, 529) else None
            return await self.error(status, category, "The server had an error while processing your request.",
                                    headers=headers)
        if fault == "rate_limited":
            return await self.error(429, "rate_limit", "Rate limit reached for requests.",
                                    headers={"Retry-After": str(cfg["retry_after_s"])})
        if fault == "reset":
            if on_fail is not None:
                on_fail()
            self.entry["outcome"] = "failed"
            abort_connection(self.request)
            raise Aborted
        return None

    async def execute(self, call: Call, spec: dict[str, Any], dry: bool) -> web.StreamResponse:
        """A first (not replayed) attempt."""
        gw = self.gw
        fault = gw.faults.choose(self.ctx["attempt_key"],
                                 applicable(call.stream, dry, call.kind, call.images_n, replay=False))
        self.entry["fault"] = fault
        if fault is not None:
            self.entry["expected_error_kind"] = FAULT_TABLE[fault].client_error_kind
        plan = self._plan(call, spec, fault)

        def failed_bill() -> None:
            if not dry:  # a dry run never reaches the model: a charge on one is dry_run_billed
                gw.biller.settle_failure(self.ctx, call, gw.biller.usage(call, plan), fault)

        early = await self.pre_faults(fault, failed_bill)
        if early is not None:
            return early
        if dry:
            return await self.dry_run(call, spec)
        tenant = self.ctx.get("tenant")
        pool = gw.pool_for(call.model, None if tenant is None else tenant.label)
        try:
            queued = await pool.acquire()
        except QueueFull as full:
            self.entry["fault_detail"] = {"queue_full": True}
            return await self.error(429, "rate_limit", f"The model `{call.model}` is at capacity; retry later.",
                                    headers={"Retry-After": str(full.retry_after_s)})
        self.entry["queue_ms"] = round(queued * 1000, 3)
        produced = gw.biller.usage(call, plan)
        self.ctx["limit_actual"] = produced.input_tokens + produced.output_tokens  # the model runs from here
        if call.kind == "chat" and call.segments:
            self._apply_cache(call, plan, spec)
        gw.biller.hold(self.ctx, call, gw.biller.estimate(call, spec))
        try:
            if call.stream and call.kind == "chat":
                return await self.stream(call, plan, pool, fault)
            return await self.plain(call, plan, pool, fault)
        except (asyncio.CancelledError, ConnectionError):
            self.entry["outcome"] = "cancelled"
            gw.biller.release(self.ctx, call)
            raise
        finally:
            pool.release()

    def _apply_cache(self, call: Call, plan: Plan, spec: dict[str, Any]) -> None:
        """Serve the longest cached prefix: faster prefill, cached tokens in the usage (writes: Anthropic only)."""
        cache = self.gw.caches[call.model]
        hit = cache.lookup_and_store(call.model, call.segments, call.input_tokens)
        if not hit.cached_tokens and not hit.write_tokens:
            return
        plan.cached_input_tokens = hit.cached_tokens
        plan.cache_write_tokens = hit.write_tokens if self.dialect.cache_writes else 0
        saved = float(spec["prefill_ms_per_token"]) * hit.cached_tokens * (1 - cache.prefill_factor) / 1000.0
        plan.ttft_s = max(0.0, plan.ttft_s - saved)
        self.entry["cache"] = {"cached_tokens": hit.cached_tokens, "write_tokens": plan.cache_write_tokens}

    async def dry_run(self, call: Call, spec: dict[str, Any]) -> web.StreamResponse:
        """Auth and billing hold only: a JSON estimate, no model call, no charge."""
        gw = self.gw
        basis = gw.biller.estimate(call, spec)
        images = call.kind == "image"
        amount = gw.biller.hold(self.ctx, call, basis)
        gw.biller.settle_dry_run(self.ctx, call, basis, amount)
        body_obj = {
            "object": "billing.estimate",
            "dry_run": True,
            "request_id": self.ctx["request_id"],
            "endpoint": call.endpoint,
            "model": call.model,
            "currency": gw.biller.currency,
            "estimate": {
                "amount": format_amount(amount),
                "basis": {
                    "input_tokens": basis.input_tokens,
                    "max_output_tokens": basis.output_tokens,
                    "images": basis.images,
                    "image_size": call.image_size if images else None,
                    "image_quality": call.image_quality if images else None,
                },
            },
            "hold": {"hold_id": "hold_" + self.ctx["request_id"], "amount": format_amount(amount),
                     "status": "released"},
        }
        body = json.dumps(body_obj).encode()
        resp = await send_bytes(self.request, self.ctx, 200, body)
        self.entry["outcome"] = "ok"
        self.entry["fair_amount"] = "0"
        self._store(200, {"Content-Type": "application/json"}, body, None, None)
        return resp

    async def _decode_wait(self, pool: Any, tokens: int) -> None:
        left = float(tokens)
        while left > 0:
            rate = pool.decode_tokens_per_s()
            step = min(left, max(1.0, rate * 0.1))
            await asyncio.sleep(step / rate)
            left -= step

    async def plain(self, call: Call, plan: Plan, pool: Any, fault: str | None) -> web.StreamResponse:
        """A whole JSON answer after the model's full time."""
        gw = self.gw
        if call.kind != "chat":  # embeddings and images hold the slot for their work time
            await asyncio.sleep(plan.work_s)
        else:
            await asyncio.sleep(plan.ttft_s)
            await self._decode_wait(pool, max(0, plan.output_tokens - 1))
        body = json.dumps(self.dialect.render(call, plan, self.ctx)).encode()
        usage = gw.biller.usage(call, plan)
        self.entry["usage"] = plan.usage_dict()
        requested = self.entry["images_requested"]
        if fault == "disconnect_after_billing":
            self._settle_success(call, usage, requested)
            self._store(200, {"Content-Type": "application/json"}, body, None, usage)
            self.dialect.completed(gw, call, plan, self.ctx)
            self.entry["outcome"] = "failed"
            await send_bytes(self.request, self.ctx, 200, body, cut=True)
        resp = await send_bytes(self.request, self.ctx, 200, body)
        self.entry["outcome"] = "ok"
        self._settle_success(call, usage, requested)
        self._store(200, {"Content-Type": "application/json"}, body, None, usage)
        self.dialect.completed(gw, call, plan, self.ctx)
        return resp

    async def stream(self, call: Call, plan: Plan, pool: Any, fault: str | None) -> web.StreamResponse:
        """Frames written on the model's clock: preamble now, first token at TTFT, then the decode rate."""
        gw = self.gw
        entry = self.entry
        frames = self.dialect.frames(call, plan, self.ctx)
        ctype = self.dialect.stream_content_type(call)
        headers = {**id_headers(self.ctx), "Cache-Control": "no-cache"}
        resp = web.StreamResponse(status=200, headers=headers)
        resp.content_type = ctype
        entry["status"] = 200
        await resp.prepare(self.request)
        entry["headers_sent"] = time.time()
        token_frames = [i for i, f in enumerate(frames) if f.tokens]
        cut_at = token_frames[len(token_frames) // 2] if token_frames else len(frames) - 1
        t0 = time.monotonic()  # not loop.time(): uvloop's is cached once a loop pass, in whole milliseconds
        deadline = t0
        started = False
        times = entry["chunk_times"]
        counts = entry["chunk_tokens"]
        last = len(frames) - 1
        usage = gw.biller.usage(call, plan)
        entry["usage"] = plan.usage_dict()
        for i, frame in enumerate(frames):
            if frame.tokens:
                if not started:
                    deadline = t0 + plan.ttft_s + (frame.tokens - 1) / pool.decode_tokens_per_s()
                    started = True
                else:
                    deadline += frame.tokens / pool.decode_tokens_per_s()
                delay = deadline - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            if i == cut_at and fault in ("disconnect_midstream", "stream_error", "malformed_chunk"):
                return await self._stream_fault(call, plan, resp, fault, i)
            if i == last and fault == "disconnect_after_billing":
                self._settle_success(call, usage, None)
                self._store(200, {"Content-Type": ctype, "Cache-Control": "no-cache"}, None,
                            [f.data for f in frames], usage)
                self.dialect.completed(gw, call, plan, self.ctx)
                entry["outcome"] = "failed"
                abort_connection(self.request)
                raise Aborted
            times.append(time.time())  # stamped as the frame is handed to the socket
            counts.append(frame.tokens)
            await resp.write(frame.data)
        await resp.write_eof()
        entry["last_byte"] = time.time()
        entry["outcome"] = "ok"
        self._settle_success(call, usage, None)
        self._store(200, {"Content-Type": ctype, "Cache-Control": "no-cache"}, None, [f.data for f in frames], usage)
        self.dialect.completed(gw, call, plan, self.ctx)
        return resp

    async def _stream_fault(self, call: Call, plan: Plan, resp: web.StreamResponse, fault: str,
                            sent: int) -> web.StreamResponse:
        entry = self.entry
        entry["outcome"] = "failed"
        self.gw.biller.settle_failure(self.ctx, call, self.gw.biller.usage(call, plan), fault)
        if fault == "disconnect_midstream":
            abort_connection(self.request)
            raise Aborted
        data = self.dialect.inband_error(call, self.ctx, sent) if fault == "stream_error" else self.dialect.malformed(call)
        if fault == "stream_error":
            data += self.dialect.stream_tail(call)
        await resp.write(data)
        entry["chunk_times"].append(time.time())
        entry["chunk_tokens"].append(0)
        await resp.write_eof()
        entry["last_byte"] = time.time()
        return resp

    async def replay(self, call: Call, stored: StoredResponse) -> web.StreamResponse:
        """The stored answer again, marked as a replay, charged nothing."""
        gw = self.gw
        entry = self.entry
        entry["replay_of"] = stored.request_id
        fault = gw.faults.choose(self.ctx["attempt_key"], [k for k in REPLAY_FAULTS])
        entry["fault"] = fault
        if fault is not None:
            entry["expected_error_kind"] = FAULT_TABLE[fault].client_error_kind
        early = await self.pre_faults(fault)
        if early is not None:
            return early
        headers = {"Idempotent-Replayed": "true", "X-TT-Original-Request-ID": stored.request_id}
        ctype = stored.headers.get("Content-Type", "application/json")
        if stored.frames is None:
            resp = await send_bytes(self.request, self.ctx, stored.status, stored.body or b"", headers, ctype)
        else:
            resp = web.StreamResponse(status=stored.status, headers={**id_headers(self.ctx), **headers,
                                                                      "Cache-Control": "no-cache"})
            resp.content_type = ctype
            entry["status"] = stored.status
            await resp.prepare(self.request)
            entry["headers_sent"] = time.time()
            for data in stored.frames:
                await resp.write(data)
                entry["chunk_times"].append(time.time())
                entry["chunk_tokens"].append(0)
            await resp.write_eof()
            entry["last_byte"] = time.time()
        entry["outcome"] = "ok"
        if stored.usage is not None:
            entry["usage"] = {"input_tokens": stored.usage.input_tokens, "output_tokens": stored.usage.output_tokens,
                              "cached_input_tokens": stored.usage.cached_input_tokens,
                              "cache_write_tokens": stored.usage.cache_write_tokens}
            gw.biller.settle_replay(self.ctx, call, stored.usage)
        entry["fair_amount"] = "0"
        return resp
