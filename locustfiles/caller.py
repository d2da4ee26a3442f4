"""One logical call: attempts with one Idempotency-Key, records for each, one Locust sample at the end."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from typing import Any

import gevent

from ttformats.records import call_name

from .baseline import marker_text, with_marker
from .calls import CallSpec
from .dialects import DIALECTS
from .profile import Profile, ratelimit_wait
from .records import RECORD_VERSION, encode_chunks
from .retry import RetryBudget, RetryPolicy
from .transport import Outcome, Transports


def stats_name(spec: CallSpec) -> str:
    """The Locust stats name of a call: endpoint, mode, model; never a secret."""
    return call_name(spec.endpoint, spec.model, spec.stream, spec.stream_format, spec.dry_run)


def _ms(t: float | None, t0: float) -> float | None:
    return None if t is None else round((t - t0) * 1000.0, 3)


#: a clock pair read further apart than this was interrupted (the OS, or a garbage collection) and is read again
PAIR_SPAN_S = 0.0002


def clock_pair() -> tuple[float, float]:
    """(time.time(), time.perf_counter()) of the same moment, to within PAIR_SPAN_S: an attempt's wall-clock start
    and the reference its chunk offsets are measured from (a pause between the two reads would shift every chunk's
    wall-clock time by that pause)."""
    for _ in range(4):
        p0 = time.perf_counter()
        epoch = time.time()
        if time.perf_counter() - p0 <= PAIR_SPAN_S:
            return epoch, p0
    return epoch, p0


class Caller:
    """Runs logical calls for one process and hands their records to a sink."""

    def __init__(self, run_id: str, worker: int, api_key: str, retry: RetryPolicy, budget: RetryBudget,
                 emit: Callable[[dict[str, Any]], None], rng: Any,
                 on_call: Callable[[CallSpec, list[dict[str, Any]]], None] | None = None,
                 profile: Profile | None = None) -> None:
        self.profile = profile or Profile()
        self.on_dry_run_ignored: Callable[[], None] | None = None
        self.admit: Callable[[Any], bool] | None = None  # False: a spend cap forbids starting the call (of a tenant)
        self.run_id = run_id
        self.worker = worker
        self.api_key = api_key
        self.retry = retry
        self.budget = budget
        self.emit = emit
        self.rng = rng
        self.on_call = on_call
        self.seq = 0
        self._ids = random.Random(os.urandom(16))  # trace and span ids: random, apart from the seeded workload
        self.overhead: Any = None  # baseline.Overhead: the route (gateway or baseline) and the prompt marker
        self.in_flight = 0
        self.retries = 0

    def next_call_id(self) -> str:
        """run id, worker index and a sequence number: any charge traces back to its worker."""
        self.seq += 1
        return f"{self.run_id}-w{self.worker}-{self.seq}"

    def run(self, transports: Transports, spec: CallSpec, scheduled: float | None = None,
            stage: int | None = None, answer: list[str] | None = None,
            arrival: int | None = None, tenant: Any = None) -> list[dict[str, Any]]:
        """Make the call, retrying idempotently; returns its records (the last one is final).

        With `answer`, the final attempt's answer text is appended to it (a conversation's next turn needs it).
        With `tenant`, the call goes with that tenant's key and its records carry its label.
        """
        if self.admit is not None and not self.admit(tenant):
            return []
        dialect = DIALECTS[spec.endpoint]
        profile = self.profile
        ov = self.overhead
        route = ov.route(stage) if ov is not None else None
        origin: str | None = None  # the baseline's origin for a baseline attempt
        if route == "baseline":
            profile, origin, tenant = ov.profile, ov.url, None
        idempotent = profile.idempotency_honoured is True
        label = tenant.label if tenant is not None else None
        # one marker per call: every attempt sends the same body, as an Idempotency-Key's retries must
        marker = marker_text(self._ids.getrandbits(48)) if ov is not None and ov.marker else None
        call_id = self.next_call_id()
        trace_id = f"{self._ids.getrandbits(128) or 1:032x}"  # one W3C trace per logical call, a span per attempt
        records: list[dict[str, Any]] = []
        attempt = 0
        self.in_flight += 1
        try:
            while True:
                attempt += 1
                wire = dialect.build(with_marker(spec, marker) if marker else spec)
                key = ov.key if route == "baseline" else tenant.api_key if tenant is not None else self.api_key
                profile.apply(wire, spec, key, spec.headers)
                attempt_id = f"{call_id}-a{attempt}"
                wire.headers[profile.idempotency_header] = call_id
                wire.headers["X-Client-Attempt-ID"] = attempt_id
                traceparent = f"00-{trace_id}-{self._ids.getrandbits(64) or 1:016x}-01"
                wire.headers["traceparent"] = traceparent
                if spec.dry_run:
                    wire.headers[profile.dry_run_header] = "true"
                stream_format = (spec.stream_format or "sse") if spec.stream else None
                reader = dialect.Reader(stream_format)
                if answer is not None:
                    reader.text_parts = []
                epoch0, t0 = clock_pair()
                rec = self._record(spec, call_id, attempt_id, attempt, epoch0, scheduled, stage, arrival, label)
                rec["traceparent"] = traceparent
                rec["route"], rec["marker"] = route, marker
                out = Outcome()
                try:
                    transports.get(wire.base or origin).send(wire, reader, spec.stream, spec.dry_run, out)
                except gevent.GreenletExit:
                    # what arrived before the stop is kept (status, request id, chunks): its charge can be joined
                    out.error_kind, out.error, out.t_end = "cancelled", "the harness stopped the attempt", \
                        time.perf_counter()
                    self._fill(rec, spec, out, reader, t0)
                    rec["final"] = True
                    records.append(rec)
                    self.emit(rec)
                    raise
                if out.refusal == "rate_limit" and out.retry_after_s is None:
                    # no retry-after: wait until the exhausted limit holds this call, as its headers say
                    need = {"requests": 1.0, "tokens": float((spec.prompt_tokens_target or 0) + (spec.max_tokens or 0))}
                    wait = ratelimit_wait(out.ratelimit, need)
                    if wait is not None:
                        out.retry_after_s, out.retry_after_header = round(wait, 3), "x-ratelimit-reset"
                self._fill(rec, spec, out, reader, t0)
                if out.dry_run_ignored and self.on_dry_run_ignored is not None:
                    self.on_dry_run_ignored()
                retry = out.error_kind is not None and self.retry.should_retry(out, attempt, idempotent)
                if retry and not self.budget.take():
                    retry = False
                rec["final"] = not retry
                records.append(rec)
                self.emit(rec)
                if not retry:
                    if answer is not None and rec["ok"]:  # the answer's text, and its id where the dialect has one
                        answer += [reader.text or "", getattr(reader, "response_id", None) or ""]
                    break
                self.retries += 1
                try:
                    gevent.sleep(self.retry.delay(attempt, out.retry_after_s, self.rng))
                except gevent.GreenletExit:
                    # the run stopped while the call waited to retry: a marker closes the call as cancelled
                    # (never sent, so no attempt); its last error is not the call's outcome
                    epoch0, t0 = clock_pair()
                    rec = self._record(spec, call_id, f"{call_id}-a{attempt + 1}", attempt + 1, epoch0, scheduled,
                                       stage, arrival, label)
                    marker = Outcome(error_kind="cancelled", error="the run stopped while the call waited to retry",
                                     t_end=t0)
                    self._fill(rec, spec, marker, dialect.Reader(None), t0)
                    records.append(rec)
                    self.emit(rec)
                    raise
        finally:
            self.in_flight -= 1
            if self.on_call is not None and records:
                self.on_call(spec, records)
        return records

    def _record(self, spec: CallSpec, call_id: str, attempt_id: str, attempt: int, epoch0: float,
                scheduled: float | None, stage: int | None, arrival: int | None = None,
                tenant: str | None = None) -> dict[str, Any]:
        return {
            "v": RECORD_VERSION, "run_id": self.run_id, "worker": self.worker, "tenant": tenant, "attempt_id": attempt_id,
            "traceparent": None, "route": None, "marker": None,
            "call_id": call_id, "attempt": attempt, "final": True, "idempotency_key": call_id,
            "request_id": None, "original_request_id": None, "replayed": False,
            "endpoint": spec.endpoint, "model": spec.model, "stream": spec.stream,
            "stream_format": (spec.stream_format or "sse") if spec.stream else None,
            "dry_run": spec.dry_run, "pair_id": spec.pair_id, "session_id": spec.session_id, "turn": spec.turn,
            "name": stats_name(spec), "t_start": epoch0, "scheduled": scheduled,
            "schedule_lag_ms": None if scheduled is None or attempt > 1 else round((epoch0 - scheduled) * 1000, 3),
            "stage": stage, "arrival": arrival,
            "prompt_tokens_target": spec.prompt_tokens_target, "max_tokens": spec.max_tokens,
            "images_requested": spec.images_n if spec.endpoint == "images" else None,
            "image_size": spec.image_size if spec.endpoint == "images" else None,
            "image_quality": spec.image_quality if spec.endpoint == "images" else None,
        }

    def _fill(self, rec: dict[str, Any], spec: CallSpec, out: Outcome, reader: Any, t0: float) -> None:
        streamed = spec.stream and (not spec.dry_run or out.dry_run_ignored)
        rec.update(
            request_id=out.request_id, request_id_header=out.request_id_header, ids=out.ids,
            original_request_id=out.original_request_id, replayed=out.replayed,
            status=out.status, ok=out.error_kind is None, error_kind=out.error_kind, error=out.error,
            error_type=out.error_type, error_code=out.error_code, error_reason=out.error_reason,
            sent=out.sent, dry_run_ignored=out.dry_run_ignored, framing_mismatch=out.framing is not None,
            retry_after_s=out.retry_after_s, retry_after_header=out.retry_after_header,
            ratelimit_reset_s=out.ratelimit_reset_s, ratelimit=out.ratelimit, refusal=out.refusal,
            headers_ms=_ms(out.t_headers, t0), end_ms=_ms(out.t_end, t0) or 0.0,
            stream_format=out.framing or rec["stream_format"],
            first_event_ms=_ms(reader.first_event, t0) if streamed else None,
            first_content_ms=_ms(reader.first_content, t0) if streamed else None,
            first_text_ms=_ms(reader.first_text, t0) if streamed else None,
            first_tool_ms=_ms(reader.first_tool, t0) if streamed else None,
            first_reasoning_ms=_ms(reader.first_reasoning, t0) if streamed else None,
            chunks=encode_chunks(reader.chunks, t0) if streamed else None,
            usage=reader.usage, usage_raw=reader.usage_raw, finish_reason=reader.finish,
            output_chars=reader.chars if not spec.dry_run or out.dry_run_ignored else None,
            estimate=out.body if spec.dry_run and isinstance(out.body, dict) else None,
            images_returned=reader.images_returned, embeddings=reader.embeddings,
        )
