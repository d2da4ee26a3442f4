"""Live LLM metrics out: a Prometheus endpoint and OpenTelemetry instruments, fed from the run's records.

Only the local process or a distributed run's master exports (it sees every record: its own, or the workers'
shipments), so one endpoint carries the whole run. Names follow OpenTelemetry's GenAI semantic conventions where
they exist (`gen_ai.client.*`), ttbench's own figures are `ttbench.*`; a Prometheus name is the OpenTelemetry name
with dots as underscores plus the unit (`_seconds`) and, for a counter, `_total`, and so are its label names.
A call's figures come from its final record, its TTFT and E2E from its first attempt's start (as in the report).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from ttformats.calls import call_e2e_ms, call_ttft_ms, counts_as_attempt

from .dialects import DIALECTS
from .records import chunk_gaps_ms


def _steps(start: float, stop: float, step: float) -> list[float]:
    """Bucket bounds from start + step up to stop, rounded to whole microseconds."""
    n = round((stop - start) / step)
    return [round(start + step * i, 6) for i in range(1, n + 1)]


#: Latency buckets (seconds) of TTFT and E2E: 5 ms steps to 200 ms, 25 ms to 1 s, 100 ms to 2 s, 250 ms to 5 s,
#: 500 ms to 10 s, 2.5 s to 30 s, then 40, 50, 60, 90, 120, 180, 300, 600 s (120 bounds).
LATENCY_BUCKETS_S: tuple[float, ...] = tuple(
    _steps(0.0, 0.2, 0.005) + _steps(0.2, 1.0, 0.025) + _steps(1.0, 2.0, 0.1) + _steps(2.0, 5.0, 0.25)
    + _steps(5.0, 10.0, 0.5) + _steps(10.0, 30.0, 2.5) + [40.0, 50.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0])
#: Gaps between content chunks (seconds): 0.5 ms steps to 10 ms, 1 ms to 50 ms, 5 ms to 200 ms, 25 ms to 1 s,
#: then 2, 5, 10 s (125 bounds).
CHUNK_BUCKETS_S: tuple[float, ...] = tuple(
    _steps(0.0, 0.01, 0.0005) + _steps(0.01, 0.05, 0.001) + _steps(0.05, 0.2, 0.005) + _steps(0.2, 1.0, 0.025)
    + [2.0, 5.0, 10.0])
#: Tokens per call: the GenAI conventions' advice (powers of 4).
TOKEN_BUCKETS: tuple[float, ...] = tuple(float(4 ** i) for i in range(14))

#: `gen_ai.operation.name` by endpoint (the conventions' well-known values where one fits).
OPERATIONS = {"chat": "chat", "responses": "chat", "messages": "chat", "gemini": "generate_content",
              "embeddings": "embeddings", "images": "image_generation", "models": "list_models"}
#: `gen_ai.provider.name` by the dialect's API family.
PROVIDERS = {"openai": "openai", "anthropic": "anthropic", "gemini": "gcp.gemini"}
#: distinct values kept per attribute (models, tenants, ...) before further ones become "other"
MAX_VALUES = 64
#: calls whose first attempt's start is kept until their final record arrives
MAX_OPEN_CALLS = 100_000

Attrs = dict[str, str | None]
Recorder = Callable[[float, Attrs], None]

CALL_ATTRS = ("gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model", "ttbench.endpoint",
              "ttbench.stream", "ttbench.tenant", "ttbench.route")


@dataclass(frozen=True)
class Spec:
    """One instrument: its OpenTelemetry name, kind, unit, attributes and (histograms) bucket bounds."""

    name: str
    kind: str  # histogram | counter | gauge
    unit: str
    description: str
    attrs: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()

    @property
    def prom_name(self) -> str:
        """The Prometheus name (without the `_total` a counter gets from prometheus_client)."""
        base = self.name.replace(".", "_")
        return base + "_seconds" if self.unit == "s" else base


DURATION = Spec("gen_ai.client.operation.duration", "histogram", "s",
                "GenAI operation duration: a call's E2E, from its first attempt's start to its final attempt's "
                "last byte (cancelled calls excluded)", CALL_ATTRS + ("error.type",), LATENCY_BUCKETS_S)
TTFT = Spec("gen_ai.client.operation.time_to_first_chunk", "histogram", "s",
            "Time to first content chunk of a successful streamed call, from its first attempt's start",
            CALL_ATTRS, LATENCY_BUCKETS_S)
CHUNK = Spec("gen_ai.client.operation.time_per_output_chunk", "histogram", "s",
             "Gaps between content chunks of a successful streamed call (replays excluded)", CALL_ATTRS,
             CHUNK_BUCKETS_S)
TOKENS = Spec("gen_ai.client.token.usage", "histogram", "{token}",
              "Tokens per call by gen_ai.token.type (input includes cached input; output includes reasoning)",
              CALL_ATTRS + ("gen_ai.token.type",), TOKEN_BUCKETS)
CALLS = Spec("ttbench.calls", "counter", "{call}", "Logical calls by outcome (ok, an error kind, or cancelled)",
             CALL_ATTRS + ("ttbench.outcome",))
ATTEMPTS = Spec("ttbench.attempts", "counter", "{attempt}", "Attempts sent, by outcome (ok or an error kind)",
                CALL_ATTRS + ("ttbench.outcome",))
RETRIES = Spec("ttbench.retries", "counter", "{attempt}", "Attempts after a call's first", CALL_ATTRS)
SPEND = Spec("ttbench.spend", "counter", "{currency}",
             "Estimated spend from the price sheet and the usage returned (the spend cap's figure)", ("currency",))
IN_FLIGHT = Spec("ttbench.calls.in_flight", "gauge", "{call}", "Calls in flight (on a master: the workers' last "
                                                               "reports)")
SPECS = (DURATION, TTFT, CHUNK, TOKENS, CALLS, ATTEMPTS, RETRIES, SPEND, IN_FLIGHT)


def add_arguments(parser: Any) -> None:
    """The metrics options on Locust's command line (not in the web UI's start form)."""
    group = parser.add_argument_group("ttbench metrics")
    group.add_argument("--metrics-port", type=int, default=0,
                       help="serve live LLM metrics for Prometheus on this port (local or master process; 0: off)")
    group.add_argument("--metrics-host", default="127.0.0.1",
                       help="address the metrics endpoint listens on (default 127.0.0.1)")
    group.add_argument("--metrics-linger", type=float, default=0.0,
                       help="seconds the endpoint stays up after the run's last record (so a scrape sees the end)")


class _Bounded:
    """Caps the distinct values of each attribute (never unbounded label cardinality)."""

    def __init__(self, limit: int = MAX_VALUES) -> None:
        self.limit = limit
        self.seen: dict[str, set[str]] = {}

    def __call__(self, name: str, value: Any) -> str | None:
        """The value as a short string, or "other" once the attribute has `limit` distinct values."""
        if value is None:
            return None
        text = str(value)[:100]
        seen = self.seen.setdefault(name, set())
        if text in seen:
            return text
        if len(seen) >= self.limit:
            return "other"
        seen.add(text)
        return text


class PrometheusOut:
    """The instruments in a registry of their own, served over HTTP by a gevent WSGI server."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, disable_created_metrics

        disable_created_metrics()
        self.registry = CollectorRegistry(auto_describe=True)
        self.server: Any = None

    @staticmethod
    def _label(name: str) -> str:
        return name.replace(".", "_")

    def instrument(self, spec: Spec, read: Callable[[], float] | None = None) -> Recorder | None:
        """A recorder for a histogram or counter; a gauge reads `read` at each scrape."""
        from prometheus_client import Counter, Gauge, Histogram

        labels = [self._label(a) for a in spec.attrs]
        if spec.kind == "gauge":
            assert read is not None
            Gauge(spec.prom_name, spec.description, registry=self.registry).set_function(read)
            return None
        if spec.kind == "histogram":
            metric: Any = Histogram(spec.prom_name, spec.description, labels, registry=self.registry,
                                    buckets=spec.buckets)
            observe = "observe"
        else:
            metric = Counter(spec.prom_name, spec.description, labels, registry=self.registry)
            observe = "inc"

        def record(value: float, attrs: Attrs) -> None:
            child = metric.labels(*[attrs.get(a) or "" for a in spec.attrs]) if labels else metric
            getattr(child, observe)(value)

        return record

    def serve(self, host: str, port: int) -> None:
        """Serve /metrics (any path) on host:port."""
        from gevent.pywsgi import WSGIServer
        from prometheus_client import make_wsgi_app

        self.server = WSGIServer((host, port), make_wsgi_app(self.registry), log=None)
        self.server.start()

    def stop(self) -> None:
        """Stop serving."""
        if self.server is not None:
            self.server.stop(timeout=1)
            self.server = None


class OtelOut:
    """The same instruments on the global MeterProvider (the one Locust sets up with --otel)."""

    def __init__(self) -> None:
        from opentelemetry import metrics

        self.meter = metrics.get_meter("ttbench")

    def instrument(self, spec: Spec, read: Callable[[], float] | None = None) -> Recorder | None:
        """A recorder for a histogram or counter; a gauge is observed at each collection."""
        from opentelemetry.metrics import CallbackOptions, Observation

        if spec.kind == "gauge":
            assert read is not None

            def observe(_options: CallbackOptions) -> list[Observation]:
                return [Observation(read())]

            self.meter.create_observable_gauge(spec.name, callbacks=[observe], unit=spec.unit,
                                               description=spec.description)
            return None
        if spec.kind == "histogram":
            inst: Any = self.meter.create_histogram(spec.name, unit=spec.unit, description=spec.description,
                                                    explicit_bucket_boundaries_advisory=list(spec.buckets))
            method = inst.record
        else:
            inst = self.meter.create_counter(spec.name, unit=spec.unit, description=spec.description)
            method = inst.add

        def record(value: float, attrs: Attrs) -> None:
            method(value, {k: v for k, v in attrs.items() if v is not None})

        return record


    def flush(self) -> None:
        """Export what the provider holds now (the run's final figures), where the provider can."""
        from opentelemetry import metrics

        flush = getattr(metrics.get_meter_provider(), "force_flush", None)
        if flush is not None:
            flush(timeout_millis=5000)


class Telemetry:
    """The run's live metrics: every record the local or master process sees, folded into the instruments."""

    def __init__(self, outs: Sequence[PrometheusOut | OtelOut], in_flight: Callable[[], float],
                 currency: str = "USD") -> None:
        self.outs = list(outs)
        self.currency = currency
        self.bounded = _Bounded()
        self.open_calls: dict[str, float] = {}  # call id -> its first attempt's start, until its final record
        self.spent = Decimal(0)
        self.linger_s = 0.0
        self.rec: dict[str, list[Recorder]] = {}
        for spec in SPECS:
            recorders = [out.instrument(spec, in_flight if spec.kind == "gauge" else None) for out in self.outs]
            self.rec[spec.name] = [r for r in recorders if r is not None]

    @classmethod
    def for_runtime(cls, opts: Any, in_flight: Callable[[], float], currency: str) -> Telemetry | None:
        """From Locust's options: a Prometheus endpoint (--metrics-port), OpenTelemetry (--otel); None: neither."""
        port = int(getattr(opts, "metrics_port", 0) or 0)
        if not 0 <= port <= 65535:
            print(f"ttbench: error: --metrics-port: expected 0 (off) or a TCP port, got {port}", file=sys.stderr,
                  flush=True)
            os._exit(2)
        outs: list[PrometheusOut | OtelOut] = []
        prom = None
        if port:
            prom = PrometheusOut()
            outs.append(prom)
        if getattr(opts, "otel", False):
            outs.append(OtelOut())
        if not outs:
            return None
        tel = cls(outs, in_flight, currency)
        tel.linger_s = float(getattr(opts, "metrics_linger", 0.0) or 0.0)
        if prom is not None:
            host = getattr(opts, "metrics_host", None) or "127.0.0.1"
            try:
                prom.serve(host, port)
            except OSError as exc:
                print(f"ttbench: error: --metrics-port: cannot listen on {host}:{port}: {exc.strerror or exc}",
                      file=sys.stderr, flush=True)
                os._exit(2)
        return tel

    def _emit(self, spec: Spec, value: float, attrs: Attrs) -> None:
        for record in self.rec[spec.name]:
            record(value, attrs)

    def _attrs(self, rec: dict[str, Any]) -> Attrs:
        endpoint = rec.get("endpoint")
        dialect = DIALECTS.get(str(endpoint))
        family = getattr(dialect.DECLARATION, "family", None) if dialect is not None else None
        b = self.bounded
        return {
            "gen_ai.operation.name": OPERATIONS.get(str(endpoint), b("gen_ai.operation.name", endpoint)),
            "gen_ai.provider.name": PROVIDERS.get(str(family), b("gen_ai.provider.name", family)),
            "gen_ai.request.model": b("gen_ai.request.model", rec.get("model")),
            "ttbench.endpoint": b("ttbench.endpoint", endpoint),
            "ttbench.stream": "true" if rec.get("stream") else "false",
            "ttbench.tenant": b("ttbench.tenant", rec.get("tenant")),
            "ttbench.route": rec.get("route") or "",  # gateway | baseline with an overhead section
        }

    def add(self, rec: dict[str, Any], spent: Decimal | None = None) -> None:
        """Fold one attempt record in; `spent`: the run's estimated spend so far (the spend cap's money)."""
        if spent is not None and spent > self.spent:
            self._emit(SPEND, float(spent - self.spent), {"currency": self.currency})
            self.spent = spent
        attrs = self._attrs(rec)
        kind = rec.get("error_kind")
        if counts_as_attempt(kind, rec.get("sent", True)):
            self._emit(ATTEMPTS, 1, {**attrs, "ttbench.outcome": self.bounded("ttbench.outcome", kind or "ok")})
            if rec["attempt"] > 1:
                self._emit(RETRIES, 1, attrs)
        call_id = str(rec.get("call_id"))
        if not rec.get("final", True):
            if call_id not in self.open_calls:
                if len(self.open_calls) >= MAX_OPEN_CALLS:  # a call that never ended: forget the oldest
                    self.open_calls.pop(next(iter(self.open_calls)))
                self.open_calls[call_id] = rec["t_start"]
            return
        first = self.open_calls.pop(call_id, rec["t_start"])
        ok = bool(rec.get("ok"))
        outcome = "ok" if ok else (kind or "error")
        self._emit(CALLS, 1, {**attrs, "ttbench.outcome": self.bounded("ttbench.outcome", outcome)})
        if kind == "cancelled":
            return  # cut by the harness: no figures (as in the report)
        error = None if ok else self.bounded("error.type", kind or "error")
        self._emit(DURATION, call_e2e_ms(first, rec["t_start"], rec["end_ms"]) / 1000.0, {**attrs, "error.type": error})
        if ok and rec.get("stream") and not rec.get("dry_run") and rec.get("first_content_ms") is not None:
            self._emit(TTFT, call_ttft_ms(first, rec["t_start"], rec["first_content_ms"]) / 1000.0, attrs)
            if not rec.get("replayed") and self.rec[CHUNK.name]:  # a replay's frames arrive in one burst
                for gap in chunk_gaps_ms(rec.get("chunks")):
                    self._emit(CHUNK, gap / 1000.0, attrs)
        usage = rec.get("usage")
        if usage and not rec.get("dry_run"):
            self._emit(TOKENS, float(usage.get("input") or 0), {**attrs, "gen_ai.token.type": "input"})
            self._emit(TOKENS, float(usage.get("output") or 0), {**attrs, "gen_ai.token.type": "output"})

    def close(self, sleep: Callable[[float], Any] | None = None) -> None:
        """After the run's last record: the endpoint stays up --metrics-linger s, then stops; OTel exports its last."""
        if self.linger_s > 0 and sleep is not None and any(isinstance(o, PrometheusOut) for o in self.outs):
            sleep(self.linger_s)
        for out in self.outs:
            if isinstance(out, PrometheusOut):
                out.stop()
            else:
                out.flush()
