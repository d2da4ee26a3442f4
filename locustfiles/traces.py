"""Trace replay: readers for Azure, Mooncake, BurstGPT and generic traces, and the replay schedule.

Readers turn a trace file into a `Trace` (arrival times in seconds from the earliest row, sorted, with
input and output token lengths, and the model and endpoint where the trace has them). `schedule`
turns a trace and the scenario's `trace:` settings into the replay's arrivals: the window, rate
scaling (thinning or duplicating with seeded draws), time scaling and each arrival's endpoint and
model. It is a pure function of its inputs and the seed, so every worker process computes the same
schedule and takes the arrivals whose index modulo the worker count is its own.
"""

from __future__ import annotations

import calendar
import csv
import gzip
import io
import itertools
import json
import math
import random
import re
from array import array
from bisect import bisect, bisect_left
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .dialects import TEXT_ENDPOINTS

FORMATS = ("azure", "mooncake", "burstgpt", "generic")
#: Endpoints a trace can drive (text generation: the trace's output tokens are the call's max_tokens).
TRACE_ENDPOINTS = TEXT_ENDPOINTS  # a trace drives text generation
#: Seconds per unit of a generic trace's time column ("datetime" parses date-time strings).
TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
#: BurstGPT names its models ChatGPT and GPT-4; `trace.models` overrides these.
BURSTGPT_MODELS = {"ChatGPT": "gpt-4o-mini", "GPT-4": "gpt-4o"}
#: The replay starts this long after the run (while the users spawn) ...
LEAD_IN_S = 1.0
#: ... and the run lasts this long after the window's end, so the last arrival is sent before the drain.
TAIL_S = 0.5
#: A duplicated arrival (rate_scale > 1) lands up to this long (trace time) after its original,
#: and never after the next original arrival.
MAX_COPY_OFFSET_S = 0.1

_DATETIME = re.compile(r"^\s*(\d{4})-(\d\d)-(\d\d)[ T](\d\d):(\d\d):(\d\d)(?:[.,](\d+))?\s*(Z|[+-]\d\d:?\d\d)?\s*$")


class TraceError(ValueError):
    """A trace that cannot be read: one line naming the file (and the line) and the reason."""


@dataclass
class TraceSpec:
    """The scenario's `trace:` settings, validated."""

    format: str
    file: str
    time_scale: float = 1.0
    rate_scale: float = 1.0
    start_s: float = 0.0
    duration_s: float | None = None
    models: dict[str, str] = field(default_factory=dict)
    endpoint_weights: dict[str, float] = field(default_factory=dict)
    endpoint_by_model: dict[str, str] = field(default_factory=dict)
    columns: dict[str, str] = field(default_factory=dict)
    time_unit: str = "s"
    stream: float = 1.0
    ignore_eos: bool = True

    def model_map(self) -> dict[str, str]:
        """Trace model name to the model to call (BurstGPT's names have defaults)."""
        return ({**BURSTGPT_MODELS, **self.models} if self.format == "burstgpt" else dict(self.models))


@dataclass
class Trace:
    """A trace's rows sorted by time: seconds from the earliest row, tokens, and optional model and endpoint."""

    file: str
    times: array = field(default_factory=lambda: array("d"))
    inputs: array = field(default_factory=lambda: array("q"))
    outputs: array = field(default_factory=lambda: array("q"))
    models: list[str | None] | None = None
    endpoints: list[str | None] | None = None
    complete: bool = True  # False: a time-ordered file read only as far as the window needs

    def __len__(self) -> int:
        return len(self.times)

    @property
    def span_s(self) -> float:
        """Trace time from the first row to the last."""
        return self.times[-1] - self.times[0] if len(self.times) else 0.0

    def model_names(self) -> set[str]:
        """The distinct model names the trace carries."""
        return {m for m in self.models or () if m is not None}


@dataclass(slots=True)
class TraceArrival:
    """One arrival of a replay: when (seconds from the replay's start), which row, and the call it makes."""

    t: float
    row: int
    input_tokens: int
    output_tokens: int
    model: str
    endpoint: str
    copy: int = 0  # 0: the row itself; 1, 2, ...: a copy added by rate_scale > 1


# reading -------------------------------------------------------------------------------------------

#: Columns per format: role -> column name (matched without regard to case), and the time unit.
LAYOUTS: dict[str, tuple[str, dict[str, str], str]] = {
    "azure": ("csv", {"time": "TIMESTAMP", "input_tokens": "ContextTokens", "output_tokens": "GeneratedTokens"},
              "datetime"),
    "mooncake": ("jsonl", {"time": "timestamp", "input_tokens": "input_length", "output_tokens": "output_length"},
                 "ms"),
    "burstgpt": ("csv", {"time": "Timestamp", "model": "Model", "input_tokens": "Request tokens",
                         "output_tokens": "Response tokens"}, "s"),
}
#: A time-ordered file is read this far (trace time) past the window's end, then no further.
READ_PAST_WINDOW_S = 60.0


def _open(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")  # noqa: SIM115 - closed by the caller's with


def file_kind(path: Path) -> str:
    """csv or jsonl, by the file name (a .gz suffix aside)."""
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    last = suffixes[-1] if suffixes else ""
    if last in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if last in (".csv", ".txt"):
        return "csv"
    raise TraceError(f"{path}: cannot tell CSV from JSONL by the file name (use .csv or .jsonl, optionally .gz)")


def parse_datetime(text: str) -> tuple[int, float]:
    """A date-time string (e.g. `2023-11-16 18:15:46.6805900`, optional `Z` or `+00:00`; naive is UTC)
    as (whole epoch seconds, fraction): kept apart so that sub-microsecond digits survive."""
    m = _DATETIME.match(text)
    if not m:
        raise ValueError(text)
    y, mo, d, h, mi, s = (int(g) for g in m.groups()[:6])
    if not (1 <= mo <= 12 and 1 <= d <= 31 and h < 24 and mi < 60 and s < 61):
        raise ValueError(text)
    secs = calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0))
    tz = m.group(8)
    if tz and tz != "Z":
        sign = -1 if tz[0] == "-" else 1
        digits = tz[1:].replace(":", "")
        secs -= sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
    frac = m.group(7)
    return secs, float(f"0.{frac}") if frac else 0.0


class _Times:
    """Date-time strings to seconds: the regular parse once per distinct date, hour and zone, then slices."""

    def __init__(self) -> None:
        self.hours: dict[tuple[str, str], int] = {}

    def __call__(self, text: str) -> tuple[int, float]:
        if len(text) >= 19 and text[13] == ":" and text[16] == ":" and text[14:16].isdigit() \
                and text[17:19].isdigit() and text[14] < "6" and text[17] < "6":
            tail = text[19:]
            frac = ""
            if tail[:1] in (".", ","):
                j = 1
                while j < len(tail) and tail[j].isdigit():
                    j += 1
                frac, tail = tail[1:j], tail[j:]
            key = (text[:13], tail)
            base = self.hours.get(key)
            if base is None:
                base = parse_datetime(f"{text[:13]}:00:00{tail}")[0]
                self.hours[key] = base
            return base + int(text[14:16]) * 60 + int(text[17:19]), float(f"0.{frac}") if frac else 0.0
        return parse_datetime(text)


def _match(names: list[str], wanted: str) -> str | None:
    """The name for a column: exact, else without regard to case."""
    if wanted in names:
        return wanted
    low = wanted.lower()
    return next((k for k in names if k.lower() == low), None)


def _token_count(v: Any) -> int:
    if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
        return v
    if isinstance(v, str) and v.isdigit():
        return int(v)
    x = float(v)  # raises ValueError / TypeError for the caller
    if not (x >= 0 and x == int(x)):
        raise ValueError(v)
    return int(x)


def _read(path: Path, kind: str, columns: dict[str, str], unit: str, fmt: str,
          stop_after: float | None = None) -> Trace:
    """Read a trace's rows (roles `time`, `input_tokens`, `output_tokens`, optional `model`, `endpoint`),
    sorted by time, from the earliest row. With `stop_after`, a file whose rows come in time order is
    read only up to the first row more than `stop_after` seconds after the first."""
    tr = Trace(str(path), models=[] if "model" in columns else None,
               endpoints=[] if "endpoint" in columns else None)
    times, inputs, outputs, models, endpoints = tr.times, tr.inputs, tr.outputs, tr.models, tr.endpoints
    labels: dict[str, str] = {}
    parse_dt = _Times()
    scale = TIME_UNITS.get(unit, 1.0)
    base: int | None = None
    first: float | None = None
    last = -math.inf
    in_order = True

    def bad(n: int, role: str, v: Any, what: str) -> TraceError:
        return TraceError(f"{path} line {n}: {columns[role]}: expected {what}, got {v!r}")

    def add(n: int, tv: Any, iv: Any, ov: Any, mv: Any, ev: Any) -> bool:
        nonlocal base, first, last, in_order
        if unit == "datetime":
            try:
                secs, frac = parse_dt(str(tv))
            except ValueError:
                raise bad(n, "time", tv, "a date-time like 2023-11-16 18:15:46.6805900") from None
            if base is None:
                base = secs
            t = (secs - base) + frac
        else:
            try:
                t = float(tv) * scale
            except (TypeError, ValueError):
                raise bad(n, "time", tv, "a number") from None
            if not math.isfinite(t) or isinstance(tv, bool):
                raise bad(n, "time", tv, "a finite number")
        if first is None:
            first = t
        if t < last:
            in_order = False
        elif stop_after is not None and in_order and t - first > stop_after:
            return False
        last = t
        try:
            i = _token_count(iv)
        except (TypeError, ValueError):
            raise bad(n, "input_tokens", iv, "a whole number >= 0") from None
        try:
            o = _token_count(ov)
        except (TypeError, ValueError):
            raise bad(n, "output_tokens", ov, "a whole number >= 0") from None
        times.append(t)
        inputs.append(i)
        outputs.append(o)
        if models is not None:
            models.append(None if mv is None or mv == "" else labels.setdefault(str(mv), str(mv)))
        if endpoints is not None:
            e = None if ev is None or ev == "" else str(ev)
            if e is not None and e not in TRACE_ENDPOINTS:
                raise TraceError(f"{path} line {n}: {columns['endpoint']}: unknown endpoint {e!r} "
                                 f"(a trace drives {', '.join(TRACE_ENDPOINTS)})")
            endpoints.append(labels.setdefault(e, e) if e is not None else None)
        return True

    roles = ("time", "input_tokens", "output_tokens", "model", "endpoint")
    complete = True
    with _open(path) as f:
        if kind == "csv":
            reader = csv.reader(f)
            header = [h.strip() for h in next(reader, [])]
            idx: list[int | None] = []
            for role in roles:
                if role not in columns:
                    idx.append(None)
                    continue
                name = _match(header, columns[role])
                if name is None:
                    why = f"for format {fmt}" if fmt != "generic" else f"(columns.{role})"
                    raise TraceError(f"{path}: no column {columns[role]!r} {why} "
                                     f"(the header has: {', '.join(header) or 'nothing'})")
                idx.append(header.index(name))
            width = max(i for i in idx if i is not None) + 1
            ti, ii, oi, mi, ei = idx
            for row in reader:
                if len(row) < width:
                    if not row or (len(row) == 1 and not row[0].strip()):
                        continue
                    row = row + [""] * (width - len(row))
                if not add(reader.line_num, row[ti].strip(), row[ii].strip(), row[oi].strip(),
                           row[mi].strip() if mi is not None else None, row[ei].strip() if ei is not None else None):
                    complete = False
                    break
        else:
            keys: dict[tuple[str, ...], dict[str, str | None]] = {}
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise TraceError(f"{path} line {n}: not JSON: {exc.msg}") from None
                if not isinstance(obj, dict):
                    raise TraceError(f"{path} line {n}: expected a JSON object, got {type(obj).__name__}")
                shape = tuple(obj)
                found = keys.get(shape)
                if found is None:
                    found = {role: _match(list(obj), col) for role, col in columns.items()}
                    keys[shape] = found
                for role in ("time", "input_tokens", "output_tokens"):
                    if found[role] is None:
                        why = f"for format {fmt}" if fmt != "generic" else f"(columns.{role})"
                        raise TraceError(f"{path} line {n}: no field {columns[role]!r} {why} "
                                         f"(fields: {', '.join(map(str, obj)) or 'none'})")
                mk, ek = found.get("model"), found.get("endpoint")
                if not add(n, obj[found["time"]], obj[found["input_tokens"]], obj[found["output_tokens"]],
                           obj.get(mk) if mk else None, obj.get(ek) if ek else None):
                    complete = False
                    break
    if not len(times):
        raise TraceError(f"{path}: the trace has no rows")
    tr.complete = complete
    if not in_order:
        order = sorted(range(len(times)), key=times.__getitem__)
        tr.times = array("d", (times[k] for k in order))
        tr.inputs = array("q", (inputs[k] for k in order))
        tr.outputs = array("q", (outputs[k] for k in order))
        if models is not None:
            tr.models = [models[k] for k in order]
        if endpoints is not None:
            tr.endpoints = [endpoints[k] for k in order]
    t0 = tr.times[0]
    if t0 != 0.0:
        tr.times = array("d", (t - t0 for t in tr.times))
    return tr


def load_trace(spec: TraceSpec) -> Trace:
    """Read the trace `spec` names (`spec.file` already resolved); a time-ordered file only up to a
    minute (trace time) past the window's end."""
    path = Path(spec.file)
    if not path.is_file():
        raise TraceError(f"no such file: {spec.file}")
    if spec.format == "generic":
        kind, columns, unit = file_kind(path), spec.columns, spec.time_unit
    else:
        kind, columns, unit = LAYOUTS[spec.format]
    stop = spec.start_s + spec.duration_s + READ_PAST_WINDOW_S if spec.duration_s is not None else None
    try:
        return _read(path, kind, columns, unit, spec.format, stop)
    except (OSError, UnicodeDecodeError, csv.Error, EOFError, gzip.BadGzipFile) as exc:
        raise TraceError(f"{path}: cannot read the trace: {exc}") from None


def read_trace(path: str | Path, fmt: str, columns: dict[str, str] | None = None, time_unit: str = "s") -> Trace:
    """Read a whole trace file (`fmt`: azure, mooncake, burstgpt, or generic with `columns`)."""
    return load_trace(TraceSpec(fmt, str(path), columns=dict(columns or {}), time_unit=time_unit))


# scheduling ----------------------------------------------------------------------------------------

def window(trace: Trace, start_s: float = 0.0, duration_s: float | None = None) -> tuple[int, int]:
    """Row indices [lo, hi) with start_s <= time < start_s + duration_s (to the last row without a duration)."""
    lo = bisect_left(trace.times, start_s)
    hi = len(trace) if duration_s is None else bisect_left(trace.times, start_s + duration_s)
    return lo, max(lo, hi)


def window_length(trace: Trace, spec: TraceSpec) -> float:
    """The window's length in trace time: its duration, else from its start to the last row."""
    if spec.duration_s is not None:
        return spec.duration_s
    return max(0.0, trace.times[-1] - spec.start_s) if len(trace) else 0.0


def replay_duration(trace: Trace, spec: TraceSpec) -> float:
    """The run's length: lead-in, the window scaled by time_scale, and a short tail."""
    return LEAD_IN_S + window_length(trace, spec) / spec.time_scale + TAIL_S


def scale_rate(times: Any, lo: int, hi: int, rate_scale: float, rng: random.Random,
               window_end: float | None = None) -> list[tuple[float, int, int]]:
    """(trace time, row, copy) for the rows in [lo, hi) after rate scaling, in time order.

    Below 1, 1/rate_scale whole (0.5, 0.25, 1/3): every n-th row from a seeded phase; otherwise a
    seeded Bernoulli draw per row. Above 1: every row `floor(rate_scale)` times and once more with the
    fractional part's probability; each copy lands a seeded offset after its row (up to
    MAX_COPY_OFFSET_S, never past the next row or the window's end)."""
    if rate_scale == 1.0:
        return [(times[i], i, 0) for i in range(lo, hi)]
    if rate_scale < 1.0:
        step = 1.0 / rate_scale
        if abs(step - round(step)) < 1e-9:
            n = round(step)
            phase = rng.randrange(n)
            return [(times[i], i, 0) for i in range(lo, hi) if (i - lo) % n == phase]
        return [(times[i], i, 0) for i in range(lo, hi) if rng.random() < rate_scale]
    whole = math.floor(rate_scale)
    frac = rate_scale - whole
    out: list[tuple[float, int, int]] = []
    for i in range(lo, hi):
        t = times[i]
        nxt = times[i + 1] if i + 1 < hi else (window_end if window_end is not None else t)
        room = min(max(0.0, nxt - t), MAX_COPY_OFFSET_S)
        out.append((t, i, 0))
        copies = whole - 1 + (1 if frac > 0 and rng.random() < frac else 0)
        for c in range(1, copies + 1):
            out.append((t + rng.random() * room, i, c))
    out.sort(key=lambda x: x[0])
    return out


class _Pick:
    def __init__(self, items: list[tuple[str, float]]) -> None:
        kept = [(k, w) for k, w in items if w > 0]
        self.items = [k for k, _ in kept]
        self.cum = list(itertools.accumulate(w for _, w in kept))

    def __call__(self, rng: random.Random) -> str:
        if len(self.items) == 1:
            return self.items[0]
        return self.items[bisect(self.cum, rng.random() * self.cum[-1])]


def schedule(trace: Trace, spec: TraceSpec, seed: int, mix: list[Any] | None = None,
             default_models: dict[str, str] | None = None) -> list[TraceArrival]:
    """The replay's arrivals in time order (t: seconds from the window's start, divided by time_scale).

    Each arrival's endpoint: the trace's own, else `spec.endpoint_by_model` for its model, else drawn
    by `spec.endpoint_weights`, else by the mix's weights (`mix`: entries with endpoint, weight and
    models), else chat. Its model: the trace's (through `spec.model_map()`), else drawn from the mix
    entry of its endpoint, else `default_models[endpoint]`. All draws come from `seed` alone."""
    rng = random.Random(f"{seed}:trace")
    lo, hi = window(trace, spec.start_s, spec.duration_s)
    end = spec.start_s + spec.duration_s if spec.duration_s is not None else None
    picked = scale_rate(trace.times, lo, hi, spec.rate_scale, rng, end)
    mix = [m for m in mix or () if m.endpoint in TRACE_ENDPOINTS]
    weights = spec.endpoint_weights or {}
    if not weights:
        acc: dict[str, float] = {}
        for m in mix:
            acc[m.endpoint] = acc.get(m.endpoint, 0.0) + m.weight
        weights = acc if sum(acc.values()) > 0 else {"chat": 1.0}
    pick_endpoint = _Pick(list(weights.items()))
    pick_model = {}
    for m in mix:
        pick_model.setdefault(m.endpoint, _Pick(list(m.models)))
    defaults = default_models or {}
    model_map = spec.model_map()
    out = []
    for t, i, c in picked:
        raw = trace.models[i] if trace.models is not None else None
        model = model_map.get(raw, raw) if raw is not None else None
        endpoint = trace.endpoints[i] if trace.endpoints is not None else None
        if endpoint is None and model is not None and spec.endpoint_by_model:
            endpoint = spec.endpoint_by_model.get(model) or spec.endpoint_by_model.get(raw or "")
        if endpoint is None:
            endpoint = pick_endpoint(rng)
        if model is None:
            model = pick_model[endpoint](rng) if endpoint in pick_model else defaults.get(endpoint, "gpt-4o-mini")
        out.append(TraceArrival(t=(t - spec.start_s) / spec.time_scale, row=i, input_tokens=max(1, trace.inputs[i]),
                                output_tokens=max(1, trace.outputs[i]), model=model, endpoint=endpoint, copy=c))
    return out
