"""How fast the analysis gets through a big run: synthetic chat-mix attempt records through analysis.report.analyze.

Writes --records synthetic attempt records (default 1,000,000) of the chat-mix shape into a temporary run
folder, as the harness writes them (compact JSON, one per line, every record valid against
locustfiles/record.schema.json): about 60% streamed with 64 content chunks each (encoded with
locustfiles.records.encode_chunks), the rest plain; mostly chat, some messages, gemini, embeddings, images and
model listings, the odd dry run; a few % failed attempts of every error kind, most retried (attempt 2, some of
them idempotent replays), and the last calls cancelled by the stop; plus a scenario.yaml with just a name.
Generating stays quick: chunk timings and usage come from small pre-built pools and per-batch numpy draws; the
first records of every shape and a spread sample are checked against the schema and against json.dumps.

Then it runs analysis.report.analyze(run_dir) (records -> summary.json, report.md and report.html with plots)
in a child process and prints the time to load the records, compute the metrics and write the report, the
total, and the peak resident memory: the child's own VmHWM (getrusage(RUSAGE_CHILDREN) as a cross-check), and,
as the loader reads big files with a helper process, the helper's and both together (sampled with psutil).
The targets: 20 s and 2 GiB on the 2-core development machine. Other work on the machine slows every figure:
the share of the CPUs other processes used meanwhile is printed too; --repeat N judges the fastest of N.

Usage:
    python benchmarks/analysis_speed.py [--records 1000000] [--keep] [--duration-s 3600] [--seed 1]
                                        [--repeat N] [--run-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, busy_seconds, positive_float, positive_int  # noqa: E402

from locustfiles.records import RECORD_VERSION, encode_chunks  # noqa: E402

TARGET_S = 20.0
TARGET_RSS_BYTES = 2 * 1024**3
RUN_ID = "chat-mix-bench"
CHUNKS = 64
BATCH = 20_000  # calls drawn at once
POOL = 4096  # pre-encoded chunk-time arrays
RUN_START = 1_796_000_000.0  # epoch seconds

# endpoint, weight, models (name, weight), stream share
MIX = (
    ("chat", 55, (("gpt-4o-mini", 3), ("gpt-4o", 1)), 0.74),
    ("messages", 15, (("claude-sonnet-4-5", 1),), 0.72),
    ("gemini", 12, (("gemini-2.5-flash", 1),), 0.72),
    ("embeddings", 15, (("text-embedding-3-small", 1),), 0.0),
    ("images", 2, (("gpt-image-1", 1),), 0.0),
    ("models", 1, (("-", 1),), 0.0),
)
FAIL_SHARE = 0.035  # of attempts
DRY_RUN_SHARE = 0.02  # of chat calls
# error kind, weight, for streams only, retried
ERROR_KINDS = (
    ("http_5xx", 30, False, True), ("http_429", 20, False, True), ("reset", 8, False, True),
    ("timeout", 4, False, True), ("http_4xx", 4, False, False), ("protocol", 3, False, True),
    ("empty", 1, False, False), ("truncated", 15, True, True), ("stream_error", 8, True, True),
)
RETRY_OK = 0.9
REPLAY_SHARE = 0.4  # of retries after a truncated stream: the gateway had billed and stored it
MAX_ATTEMPTS = 4
CANCELLED_CALLS = 20  # the last calls of the run, cut by the stop

KEYS = ("v", "run_id", "worker", "attempt_id", "call_id", "attempt", "final", "idempotency_key", "request_id",
        "original_request_id", "replayed", "endpoint", "model", "stream", "stream_format", "dry_run", "pair_id",
        "session_id", "turn", "name", "t_start", "scheduled", "schedule_lag_ms", "stage", "prompt_tokens_target",
        "max_tokens", "images_requested", "image_size", "image_quality", "status", "ok", "error_kind", "error",
        "retry_after_s", "headers_ms", "end_ms", "first_event_ms", "first_content_ms", "first_text_ms",
        "first_tool_ms", "first_reasoning_ms", "chunks", "usage", "usage_raw", "finish_reason", "output_chars",
        "estimate", "images_returned", "embeddings")
FINISH = {"chat": ("stop", "length", "tool_calls"), "messages": ("end_turn", "max_tokens", "tool_use"),
          "gemini": ("STOP", "MAX_TOKENS", "STOP")}
NO_CHUNKS = {"n": 0, "us": ""}


# ---------------------------------------------------------------------------------------------------------------
# generating records


class ChunkPool:
    """Pre-encoded arrival times of content chunks: full streams of CHUNKS and cut ones."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.full: list[tuple[dict[str, Any], list[float]]] = []
        self.cut: list[tuple[dict[str, Any], list[float]]] = []
        for i in range(POOL + POOL // 8):
            ttft = 0.03 + rng.lognormal(math.log(0.3), 0.5)  # seconds
            itl = rng.uniform(0.012, 0.035)
            gaps = itl * rng.gamma(8.0, 1 / 8.0, CHUNKS - 1)
            times = (ttft + np.concatenate(([0.0], np.cumsum(gaps)))).tolist()
            if i >= POOL:
                times = times[: int(rng.integers(3, CHUNKS - 4))]
            enc = encode_chunks(times, 0.0)
            ms = [round(t * 1000.0, 3) for t in times]
            (self.full if i < POOL else self.cut).append((enc, ms))


def _pick(u: float, cum: list[float]) -> int:
    for i, c in enumerate(cum):
        if u < c:
            return i
    return len(cum) - 1


def _cum(weights: list[float]) -> list[float]:
    total = float(sum(weights))
    out, acc = [], 0.0
    for w in weights:
        acc += w / total
        out.append(acc)
    return out


def _usage(endpoint: str, inp: int, out: int, cached: int = 0, reasoning: int = 0) -> tuple[dict, dict]:
    """(normalised usage, the dialect's own usage object)."""
    norm = {"input": inp, "output": out, "cached_input": cached, "cache_write": 0, "reasoning": reasoning}
    if endpoint == "chat":
        raw = {"prompt_tokens": inp, "completion_tokens": out, "total_tokens": inp + out,
               "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
               "completion_tokens_details": {"reasoning_tokens": reasoning, "audio_tokens": 0,
                                             "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}
    elif endpoint == "messages":
        raw = {"input_tokens": inp - cached, "output_tokens": out, "cache_creation_input_tokens": 0,
               "cache_read_input_tokens": cached, "service_tier": "standard"}
    elif endpoint == "gemini":
        raw = {"promptTokenCount": inp, "candidatesTokenCount": out - reasoning, "totalTokenCount": inp + out,
               "promptTokensDetails": [{"modality": "TEXT", "tokenCount": inp}]}
        if reasoning:
            raw["thoughtsTokenCount"] = reasoning
    elif endpoint == "embeddings":
        raw = {"prompt_tokens": inp, "total_tokens": inp}
    else:  # images
        raw = {"total_tokens": inp + out, "input_tokens": inp, "output_tokens": out,
               "input_tokens_details": {"text_tokens": inp, "image_tokens": 0},
               "output_tokens_details": {"text_tokens": 0, "image_tokens": out}}
    return norm, raw


class Generator:
    """Draws calls of the chat-mix shape and turns each into its attempt records."""

    def __init__(self, n_records: int, duration_s: float, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.n_records = n_records
        self.duration_s = duration_s
        self.pool = ChunkPool(self.rng)
        self.mix_cum = _cum([m[1] for m in MIX])
        self.model_cum = [_cum([w for _, w in m[2]]) for m in MIX]
        self.kinds_all = [k for k in ERROR_KINDS if not k[2]]
        self.cum_plain = _cum([k[1] for k in self.kinds_all])
        self.cum_stream = _cum([k[1] for k in ERROR_KINDS])
        self.base = dict.fromkeys(KEYS)
        self.base.update(v=RECORD_VERSION, run_id=RUN_ID, final=True, replayed=False, dry_run=False)
        self.seq = [0, 0]
        self.written = 0
        self.calls = 0
        self.rid = 0

    def request_id(self) -> str:
        self.rid += 1
        return f"req_{(self.rid * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFFFFFFFFFF:024x}"

    def batches(self):
        """Lists of records, call by call, until n_records are out."""
        rng = self.rng
        while self.written < self.n_records:
            b = BATCH
            u = rng.random((b, 12)).tolist()
            p_in = np.maximum(1, rng.lognormal(math.log(400) - 0.32, 0.8, b)).astype(int).tolist()
            p_out = np.maximum(16, rng.lognormal(math.log(120) - 0.18, 0.6, b)).astype(int).tolist()
            pool_i = rng.integers(0, POOL, b).tolist()
            cut_i = rng.integers(0, len(self.pool.cut), b).tolist()
            hdr = (1.0 + rng.gamma(2.0, 3.0, b)).round(3).tolist()
            gap = rng.uniform(12.0, 35.0, b).tolist()
            out: list[dict[str, Any]] = []
            for i in range(b):
                if self.written >= self.n_records:
                    break
                recs = self.call(u[i], p_in[i], p_out[i], pool_i[i], cut_i[i], hdr[i], gap[i],
                                 self.n_records - self.written)
                out.extend(recs)
                self.written += len(recs)
            yield out

    def call(self, u: list[float], p_in: int, p_out: int, pool_i: int, cut_i: int, hdr: float,
             gap: float, room: int) -> list[dict[str, Any]]:
        """The records of one logical call (at most `room`: the file ends with exactly n_records)."""
        e = _pick(u[0], self.mix_cum)
        endpoint, _, models, stream_share = MIX[e]
        model = models[_pick(u[1], self.model_cum[e])][0]
        stream = u[2] < stream_share
        dry = endpoint == "chat" and u[3] < DRY_RUN_SHARE
        fmt = None
        if stream:
            fmt = "json_array" if endpoint == "gemini" and u[4] < 0.1 else "sse"
        worker = self.calls & 1
        self.calls += 1
        self.seq[worker] += 1
        call_id = f"{RUN_ID}-w{worker}-{self.seq[worker]}"
        if endpoint == "models":
            name = "models list"
        else:
            mode = ("stream-array" if fmt == "json_array" else "stream") if stream else "plain"
            name = f"{endpoint} {mode} {model}" + (" dry-run" if dry else "")
        spec = dict(self.base)
        spec.update(worker=worker, call_id=call_id, idempotency_key=call_id, endpoint=endpoint, model=model,
                    stream=stream, stream_format=fmt, dry_run=dry, name=name)
        if endpoint in ("chat", "messages", "gemini"):
            spec["prompt_tokens_target"] = p_in
            spec["max_tokens"] = max(CHUNKS, p_out) if stream else p_out
        elif endpoint in ("embeddings", "images"):
            spec["prompt_tokens_target"] = p_in if endpoint == "images" else 20 + p_in % 180
        if endpoint == "images":
            spec.update(images_requested=1 + (u[5] < 0.33), image_size="1024x1024", image_quality="medium")
        t = RUN_START + self.duration_s * self.written / self.n_records + u[6] * 0.05
        cancelled = room <= CANCELLED_CALLS
        records: list[dict[str, Any]] = []
        fail = u[7] < FAIL_SHARE and not dry and endpoint != "models"
        prev: dict[str, Any] | None = None
        attempt = 0
        while True:
            attempt += 1
            r = dict(spec)
            r["attempt_id"] = f"{call_id}-a{attempt}"
            r["attempt"] = attempt
            r["t_start"] = round(t, 6)
            if cancelled:
                self.cancelled(r, hdr)
                retried = False
            elif fail:
                kinds, cum = (ERROR_KINDS, self.cum_stream) if stream else (self.kinds_all, self.cum_plain)
                kind = kinds[_pick(u[8] if attempt == 1 else self.rng.random(), cum)]
                self.failed(r, kind[0], hdr, cut_i)
                retried = kind[3] and attempt < min(MAX_ATTEMPTS, room)
            else:
                replay = (prev is not None and prev["error_kind"] == "truncated" and prev["request_id"] is not None
                          and u[9] < REPLAY_SHARE)
                self.ok(r, u, p_in, p_out, pool_i, hdr, gap)
                if replay:
                    r["replayed"] = True
                    r["original_request_id"] = prev["request_id"]
                retried = False
            r["final"] = not retried
            records.append(r)
            if not retried:
                return records
            ra = r["retry_after_s"]
            backoff = ra + 0.25 * u[10] if ra is not None else u[10] * min(8.0, 0.25 * 2 ** (attempt - 1))
            t += r["end_ms"] / 1000.0 + backoff
            prev = r
            fail = self.rng.random() >= RETRY_OK

    def ok(self, r: dict[str, Any], u: list[float], p_in: int, p_out: int, pool_i: int, hdr: float,
           gap: float) -> None:
        """A successful attempt."""
        endpoint = r["endpoint"]
        r.update(request_id=self.request_id(), status=200, ok=True, headers_ms=hdr)
        inp = max(1, p_in + int((u[11] - 0.5) * 8))
        if r["dry_run"]:
            out_max = r["max_tokens"]
            amount = f"{(inp * 15 + out_max * 60) / 1e8:.8f}".rstrip("0")
            rid = r["request_id"]
            r.update(end_ms=round(hdr + 0.4, 3), estimate={
                "object": "billing.estimate", "dry_run": True, "request_id": rid, "endpoint": endpoint,
                "model": r["model"], "currency": "USD",
                "estimate": {"amount": amount, "basis": {"input_tokens": inp, "max_output_tokens": out_max,
                                                         "images": 0, "image_size": None, "image_quality": None}},
                "hold": {"hold_id": f"hold_{rid}", "amount": amount, "status": "released"}})
            return
        if endpoint == "models":
            r.update(end_ms=round(hdr + 0.3, 3), output_chars=12)
            return
        if endpoint == "embeddings":
            k = 1 + int(u[5] * 8)
            tokens = r["prompt_tokens_target"] * k
            r["usage"], r["usage_raw"] = _usage(endpoint, tokens, 0)
            r.update(end_ms=round(hdr + 0.6, 3), output_chars=0, embeddings={"count": k, "dims": 256})
            return
        if endpoint == "images":
            n = r["images_requested"]
            r["usage"], r["usage_raw"] = _usage(endpoint, inp, 1056 * n)
            r.update(headers_ms=round(hdr + 4000.0 + 2500.0 * n * u[4], 3), images_returned=n, output_chars=0)
            r["end_ms"] = round(r["headers_ms"] + 0.2, 3)
            return
        cached = (inp // 2) // 128 * 128 if inp >= 1024 and u[5] < 0.3 else 0
        finish = FINISH[endpoint]
        if r["stream"]:
            enc, ms = self.pool.full[pool_i]
            first = ms[0]
            r.update(first_event_ms=round(hdr + 0.02, 3), first_content_ms=first, chunks=enc,
                     end_ms=round(ms[-1] + 0.3, 3), output_chars=5 * CHUNKS - 1)
            reasoning = 0
            if u[3] < 0.1 and endpoint != "gemini":  # a tool call
                r["first_tool_ms"] = first
                r["finish_reason"] = finish[2]
            else:
                if (endpoint == "gemini" and u[4] < 0.2) or (endpoint == "chat" and u[4] < 0.05):
                    reasoning = 8 + int(u[9] * 24)
                    r["first_reasoning_ms"] = first
                    r["first_text_ms"] = ms[reasoning]
                else:
                    r["first_text_ms"] = first
                r["finish_reason"] = finish[1] if r["max_tokens"] == CHUNKS else finish[0]
            r["usage"], r["usage_raw"] = _usage(endpoint, inp, CHUNKS, cached, reasoning)
            return
        natural = max(1, int(p_out * (0.6 + u[9])))
        out = min(natural, r["max_tokens"])
        ttft = 40.0 + 0.4 * inp + u[10] * 300.0
        end = round(hdr + ttft + out * gap, 3)
        r["usage"], r["usage_raw"] = _usage(endpoint, inp, out, cached)
        r.update(headers_ms=round(end - 0.2, 3), end_ms=end, output_chars=5 * out - 1,
                 finish_reason=finish[1] if out == r["max_tokens"] else finish[0])

    def failed(self, r: dict[str, Any], kind: str, hdr: float, cut_i: int) -> None:
        """A failed attempt of the given kind (what arrived is kept)."""
        endpoint, stream = r["endpoint"], r["stream"]
        r.update(ok=False, error_kind=kind, output_chars=0)
        if stream:
            r["chunks"] = NO_CHUNKS
        if kind in ("http_5xx", "http_429", "http_4xx"):
            if kind == "http_5xx":
                status = (500, 502, 503)[self.rid % 3]
                if endpoint == "messages" and status != 500:
                    status = 529
                r.update(status=status, error=f"HTTP {status}: server_error",
                         retry_after_s=1.0 if status in (503, 529) else None)
            elif kind == "http_429":
                r.update(status=429, error="HTTP 429: rate_limit_exceeded", retry_after_s=float(1 + self.rid % 8))
            else:
                r.update(status=400, error="HTTP 400: invalid_request_error")
            r.update(request_id=self.request_id(), headers_ms=hdr, end_ms=round(hdr + 0.1, 3))
        elif kind == "reset":
            r.update(error="connection reset before the response headers", end_ms=round(hdr * 2, 3))
        elif kind == "timeout":
            r.update(error="timeout: no first byte within 60 s", end_ms=round(60000.0 + hdr, 3))
        elif kind == "empty":
            r.update(request_id=self.request_id(), status=200, headers_ms=hdr, end_ms=round(hdr + 300.0, 3),
                     error="the response had no content", finish_reason="stop" if endpoint == "chat" else None)
        elif kind == "protocol" and not stream:
            r.update(request_id=self.request_id(), status=200, headers_ms=hdr, end_ms=round(hdr + 250.0, 3),
                     error="unexpected content type text/html")
        else:  # a stream cut, broken or in error after some content
            enc, ms = self.pool.cut[cut_i]
            first = ms[0]
            r.update(request_id=self.request_id(), status=200, headers_ms=hdr, first_event_ms=round(hdr + 0.02, 3),
                     first_content_ms=first, first_text_ms=first, chunks=enc, end_ms=round(ms[-1] + 0.5, 3),
                     output_chars=5 * enc["n"] - 1,
                     error={"truncated": "the stream ended without its terminator",
                            "stream_error": "in-band error: server_error",
                            "protocol": "a chunk is not valid JSON"}[kind])
            if endpoint == "messages":
                r["usage"], r["usage_raw"] = _usage(endpoint, r["prompt_tokens_target"], 1)

    def cancelled(self, r: dict[str, Any], hdr: float) -> None:
        """An attempt the harness stopped at the end of the run."""
        r.update(ok=False, error_kind="cancelled", error="the harness stopped the attempt", output_chars=0,
                 end_ms=round(hdr * 40, 3))
        if r["stream"] and not r["dry_run"]:
            r["chunks"] = NO_CHUNKS
        if r["dry_run"]:
            r["output_chars"] = None


def _shape(r: dict[str, Any]) -> tuple[Any, ...]:
    """What makes records differ in form: each shape gets checked against the schema."""
    return (r["endpoint"], r["stream"], r["stream_format"], r["dry_run"], r["ok"], r["error_kind"], r["replayed"],
            r["attempt"] > 1, r["final"], r["first_tool_ms"] is None, r["first_reasoning_ms"] is None,
            r["status"], r["usage"] is None, r["finish_reason"])


def write_run(run_dir: Path, n: int, duration_s: float, seed: int, sample: int = 1000) -> dict[str, Any]:
    """records.jsonl and scenario.yaml. Every shape of record (the first few of each) and a spread sample are
    checked against the schema and against the harness's own encoder (json.dumps, compact): the file is written
    with orjson, which gives the same bytes for these records. Returns figures about the records."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "scenario.yaml").write_text("name: chat-mix\n")
    gen = Generator(n, duration_s, seed)
    validator = None
    try:
        import jsonschema

        schema = json.loads((ROOT / "locustfiles" / "record.schema.json").read_text())
        validator = jsonschema.Draft202012Validator(schema)
    except ImportError:
        print("jsonschema is not installed: records are not checked against the schema", file=sys.stderr)
    step = max(1, n // sample)
    dumps = orjson.dumps
    counts = {"streamed": 0, "failed": 0, "retries": 0, "checked": 0}
    shapes: dict[tuple[Any, ...], int] = {}
    idx = 0
    with open(run_dir / "records.jsonl", "wb") as f:
        for batch in gen.batches():
            lines = []
            for r in batch:
                line = dumps(r)
                lines.append(line)
                counts["streamed"] += r["stream"] and not r["dry_run"]
                counts["failed"] += not r["ok"]
                counts["retries"] += r["attempt"] > 1
                shape = _shape(r)
                seen = shapes.get(shape, 0)
                shapes[shape] = seen + 1
                if idx % step == 0 or seen < 3:
                    if line != json.dumps(r, separators=(",", ":")).encode():
                        raise SystemExit(f"record {idx}: orjson and json.dumps disagree:\n{line[:300]!r}")
                    if validator is not None:
                        errors = list(validator.iter_errors(orjson.loads(line)))
                        if errors:
                            raise SystemExit(f"record {idx} breaks the schema: {errors[0].message}")
                    counts["checked"] += 1
                idx += 1
            lines.append(b"")
            f.write(b"\n".join(lines))
    counts["records"] = idx
    counts["calls"] = gen.calls
    counts["shapes"] = len(shapes)
    return counts


# ---------------------------------------------------------------------------------------------------------------
# timing the analysis (in a child process)


def child(run_dir: str) -> int:
    """Run analyze() with the load and metrics steps timed; print the figures as JSON on the last line."""
    t0 = time.perf_counter()
    import analysis.report as rep

    t_import = time.perf_counter() - t0
    sections: dict[str, float] = {"load": 0.0, "metrics": 0.0}

    def timed(name: str, fn: Any) -> Any:
        def wrapper(*a: Any, **k: Any) -> Any:
            s = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                sections[name] += time.perf_counter() - s
        return wrapper

    rep.load_records = timed("load", rep.load_records)
    rep.compute = timed("metrics", rep.compute)
    t1 = time.perf_counter()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    summary, code = rep.analyze(run_dir)
    total = time.perf_counter() - t1
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu_s = cpu1.ru_utime - cpu0.ru_utime + cpu1.ru_stime - cpu0.ru_stime
    hwm = 0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) * 1024
    # a loader helper process, if any (an upper bound: it also counts our size when the helper was started)
    helper_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    o = summary["metrics"]["overall"] or {}
    print(json.dumps({"import_s": t_import, "load_s": sections["load"], "metrics_s": sections["metrics"],
                      "total_s": total, "cpu_s": cpu_s, "hwm_bytes": hwm, "helper_rss_bytes": helper_rss,
                      "exit_code": code, "attempts": o.get("attempts"), "calls": o.get("calls"),
                      "ttft_p50": o.get("ttft_ms", {}).get("p50"), "itl_p50": o.get("itl_ms", {}).get("p50"),
                      "itl_n": o.get("itl_ms", {}).get("n"), "groups": len(summary["metrics"]["groups"])}))
    return 0


def _mib(b: float) -> str:
    return f"{b / 2**20:,.0f} MiB"


def analyse_once(run_dir: Path) -> dict[str, Any]:
    """One analysis in a child process; its figures, with the peak RSS of its whole process tree (the child
    and the helper it may start to read half of a big records file) sampled every 50 ms when psutil is there."""
    try:
        import psutil
    except ImportError:
        psutil = None
    busy0 = busy_seconds() if psutil is not None else None
    kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--child", str(run_dir)],
                            cwd=str(ROOT), stdout=subprocess.PIPE, text=True)
    tree_peak = 0
    if psutil is not None:
        top = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                tree_peak = max(tree_peak, sum(p.memory_info().rss for p in [top, *top.children(recursive=True)]))
            except psutil.Error:
                pass
            time.sleep(0.05)
    out, _ = proc.communicate()
    wall = time.perf_counter() - t0
    kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    ours = kids1.ru_utime - kids0.ru_utime + kids1.ru_stime - kids0.ru_stime  # the child and its helper
    busy1 = busy_seconds() if psutil is not None else None
    other = (busy1 - busy0 - ours) / (wall * (os.cpu_count() or 1)) if busy0 is not None else None
    if proc.returncode != 0:
        print(out, end="")
        raise SystemExit(f"the analysis failed (exit {proc.returncode})")
    fig = json.loads(out.strip().splitlines()[-1])
    fig.update(wall_s=wall, tree_peak_bytes=tree_peak, tree_cpu_s=ours, other_cpu_share=other,
               report_s=fig["total_s"] - fig["load_s"] - fig["metrics_s"])
    return fig


def main(argv: list[str] | None = None) -> int:
    """Generate, analyse in a child, print the figures."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--records", type=positive_int, default=1_000_000, help="attempt records (default 1,000,000)")
    parser.add_argument("--keep", action="store_true", help="keep the run folder (its path is printed)")
    parser.add_argument("--run-dir", type=Path, help="analyse this folder (from --keep) instead of generating")
    parser.add_argument("--repeat", type=positive_int, default=1,
                        help="analyse this many times and judge the time on the fastest (default 1; "
                             "use 3 on a machine other work keeps busy)")
    parser.add_argument("--duration-s", type=positive_float, default=3600.0,
                        help="the synthetic run's length in seconds (default 3600)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the synthetic records (default 1)")
    parser.add_argument("--child", metavar="RUN_DIR", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.child)
    reuse = args.run_dir is not None
    run_dir = args.run_dir or Path(tempfile.mkdtemp(prefix="analysis_speed_"))
    if reuse and not (run_dir / "records.jsonl").is_file():
        parser.error(f"{run_dir}: no records.jsonl")
    try:
        lines = []
        if not reuse:
            print(f"generating {args.records:,} records in {run_dir} ...", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            counts = write_run(run_dir, args.records, args.duration_s, args.seed)
            gen_s = time.perf_counter() - t0
            lines += [
                f"analysis speed: synthetic chat-mix run, {args.duration_s:,.0f} s long, seed {args.seed}",
                f"records            {counts['records']:,} attempts, {counts['calls']:,} calls "
                f"({counts['streamed'] / counts['records']:.1%} streamed x {CHUNKS} chunks, "
                f"{counts['failed'] / counts['records']:.1%} failed, {counts['retries']:,} retries; "
                f"{counts['checked']:,} of them, every one of {counts['shapes']} shapes, checked against the schema)",
            ]
        else:
            gen_s = None
            lines.append(f"analysis speed: {run_dir}")
        size = (run_dir / "records.jsonl").stat().st_size
        runs = []
        for i in range(args.repeat):
            print(f"analysing ({os.cpu_count()} CPUs){f', run {i + 1} of {args.repeat}' if args.repeat > 1 else ''}"
                  " ...", file=sys.stderr, flush=True)
            runs.append(analyse_once(run_dir))
        ru_maxrss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # KB on Linux
        fig = min(runs, key=lambda r: r["total_s"])
        peak = max(r["hwm_bytes"] for r in runs)
        tree = max(r["tree_peak_bytes"] for r in runs)
        ok_t = fig["total_s"] <= TARGET_S
        ok_m = peak <= TARGET_RSS_BYTES
        outs = ", ".join(f"{p} {(run_dir / p).stat().st_size / 1024:,.0f} KiB"
                         for p in ("summary.json", "report.md", "report.html"))
        made = f", generated in {gen_s:.1f} s" if gen_s is not None else ""
        lines += [
            f"records.jsonl      {size / 2**20:,.0f} MiB ({size / fig['attempts']:,.0f} bytes a record){made}",
            f"analysed           {fig['attempts']:,} attempts, {fig['calls']:,} calls, {fig['groups']} groups, "
            f"TTFT p50 {fig['ttft_p50']:.1f} ms, ITL p50 {fig['itl_p50']:.2f} ms over {fig['itl_n']:,} gaps",
            f"outputs            {outs}",
            "",
        ]
        if len(runs) > 1:
            lines.append("runs (total s)     " + ", ".join(f"{r['total_s']:.2f}" for r in runs)
                         + "   (the fastest below)")
        lines += [
            f"load time          {fig['load_s']:6.2f} s   (load_records)",
            f"metrics time       {fig['metrics_s']:6.2f} s   (compute)",
            f"report time        {fig['report_s']:6.2f} s   (the rest: harness health, summary.json, plots, md, html)",
            f"total              {fig['total_s']:6.2f} s   analyze() end to end ({fig['cpu_s']:.1f} s of CPU in the "
            f"analysing process; child process {fig['wall_s']:.1f} s with {fig['import_s']:.1f} s of imports)",
            f"peak RSS           {_mib(peak)} ({peak / 1e9:.2f} GB)   the analysing process (its VmHWM; "
            f"getrusage(RUSAGE_CHILDREN) says {_mib(ru_maxrss)},",
            "                   which also counts this process's own size when it started the child)",
        ]
        if fig["helper_rss_bytes"]:
            lines.append(f"                   at most {_mib(max(r['helper_rss_bytes'] for r in runs))} the helper process "
                         f"that read part of the records meanwhile; both together at most {_mib(tree)}")
        share = fig["other_cpu_share"]
        lines += [
            f"machine            {os.cpu_count()} CPUs; the analysis and its helper used {fig['tree_cpu_s']:.1f} s of "
            "CPU" + (f", other processes {max(share, 0.0):.0%} of the machine meanwhile" if share is not None else "")
            + " (other work slows every figure above)",
            "",
            f"target time   <= {TARGET_S:.0f} s:   {'met' if ok_t else 'NOT met'} ({fig['total_s']:.2f} s"
            f"{', fastest of ' + str(len(runs)) if len(runs) > 1 else ''})",
            f"target memory <= {TARGET_RSS_BYTES / 2**30:.0f} GiB: {'met' if ok_m else 'NOT met'} ({_mib(peak)})",
        ]
        if args.keep and not reuse:
            lines.append(f"kept {run_dir}")
        print("\n".join(lines), flush=True)
        return 0 if ok_t and ok_m else 1
    finally:
        if not args.keep and not reuse:
            shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
