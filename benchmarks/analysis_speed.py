"""How fast the analysis gets through a big run: synthetic chat-mix attempt records through analysis.report.analyze.

Writes --records synthetic attempt records (default 1,000,000) of the chat-mix shape into a temporary run
folder, as the harness writes them (compact JSON, one per line, every record valid against
locustfiles/record.schema.json): about 60% streamed with 64 content chunks each (encoded with
locustfiles.records.encode_chunks), the rest plain; mostly chat, some messages, gemini, embeddings, images and
model listings, the odd dry run; a few % failed attempts of every error kind, most retried (attempt 2, some of
them idempotent replays), and the last calls cancelled by the stop; plus a scenario.yaml. Unless --no-ledger,
also the gateway's billing ledger (ledger.csv, the simulator's columns; the scenario points the analysis at it)
with one charge per successful call, priced exactly by prices.yaml (the simulator's default sheet, copied), and
billing errors planted at random (--plant-share), counted by kind: the audit must find exactly those.
Generating stays quick: chunk timings and usage come from small pre-built pools and per-batch numpy draws; the
first records of every shape and a spread sample are checked against the schema and against json.dumps, and the
first charges and a spread sample are priced again with PriceSheet.cost. The same --seed gives byte-identical
files (the ledger draws from its own stream: records.jsonl is the same with --no-ledger).

Then, each in a child process of its own, it times three steps on the same folder:

  baseline report   analysis.report.analyze() of the analysis before the rewrite for scale (--baseline REV,
                    default 66f5fba, unpacked from git: every record in one frame); its summary.json is kept as
                    summary.baseline.json (runs above --baseline-max records skip it: it needs ~6 GiB a million);
  columnar copy     analysis.columnar.build(): records.parquet/, what a run's own report makes at its end;
  report            analysis.report.analyze() of today's code, reading the copy (--repeat N: the fastest of N).

Both reports read the same records.jsonl: for a size the baseline times, the generator writes the newest record
version the baseline reads (found in its analysis/records.py: 4 for 66f5fba, the same records under that number,
as version 5 added only summary timing); otherwise version 5 (--record-version sets it). A baseline that still
cannot read the records gives no speed-up. The baseline's summary is of an earlier summary version: the keys
today's adds are listed, not counted as differences, and every figure both have is compared.

For each it prints the time, the CPU time of the step and its helper processes, and the peak RSS of that process
tree (sampled); then the speed-up, whether today's summary.json equals the baseline's (counts exact, floats within
1e-9: benchmarks/summary_compare.py) and the billing findings against the planted errors. Several --records
sizes (or --run-dir folders) run in one go; the issue's targets are judged for the sizes they name: 1,000,000
records (report <= 5 s, >= 3.5x faster than the baseline) and 10,000,000 (report <= 60 s, peak <= 2 GiB and
<= 1.3x the 1M peak). Other work on the machine slows every figure: the share of the CPUs other processes used
meanwhile is printed too.

Usage:
    python benchmarks/analysis_speed.py [--records 1000000 [10000000 ...]] [--keep | --out DIR]
                                        [--run-dir DIR [DIR ...]] [--repeat N] [--baseline REV | --no-baseline]
                                        [--baseline-max N] [--duration-s 3600] [--seed 1] [--no-ledger]
                                        [--record-version 4|5]
                                        [--plant-share 0.002] [--check-reference SUMMARY]
                                        [--write-reference SUMMARY] [--write-fixture DIR]

References for the analysis rewrite (issue 15): the baseline's analysis of fixed generated runs, which today's
must reproduce (counts exact, floats within 1e-9 relative: benchmarks/summary_compare.py). Regenerate them with
(the records are not committed: the seed makes them, and <reference>.inputs.json keeps their sha256, so a check
tells a changed generator from a changed analysis):

    # 300,000 records with a ledger -> benchmarks/reference/summary-300k.json (+ summary-300k.inputs.json, which
    # names the analysis that wrote it: today's was written by 1456a0d's, before a rewrite of the passes)
    .venv/bin/python benchmarks/analysis_speed.py --records 300000 --seed 15 --duration-s 3600 \
        --baseline 1456a0d --write-reference benchmarks/reference/summary-300k.json
    # the small fixed run folder of tests/test_analysis_reference.py (the records and ledger gzipped)
    .venv/bin/python benchmarks/analysis_speed.py --records 3000 --seed 151 --duration-s 300 \
        --plant-share 0.01 --write-fixture tests/data/reference_run

and check a (rewritten) analysis against the 300k reference with
    .venv/bin/python benchmarks/analysis_speed.py --records 300000 --seed 15 --duration-s 3600 \
        --check-reference benchmarks/reference/summary-300k.json
(the exit code is 1 when anything differs; the inputs' sha256 are compared first).
"""

from __future__ import annotations

import argparse
import ast
import gzip
import hashlib
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, busy_seconds, non_negative_float, positive_float, positive_int  # noqa: E402
from summary_compare import compare_files  # noqa: E402

from locustfiles.records import RECORD_VERSION, encode_chunks  # noqa: E402

#: Arrow's pool as the benchmark was started: importing today's `analysis` (as planted_table does) sets it in this
#: process, and each timed step starts without that (the baseline chose no pool; today's code sets its own)
USER_POOL = os.environ.get("ARROW_DEFAULT_MEMORY_POOL")
BASELINE = "66f5fba"  # the analysis before the rewrite for scale (issue 15): every record in memory
BASELINE_MAX = 2_000_000  # records: the baseline needs about 1.9 GiB a million
OLDEST_VERSION = 4  # the generator's records mean the same under 4 (5 added only summary timing, not written here)
GENERATED = "generated.json"  # the generator's figures (and planted errors), kept in the run folder
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
_NO_USAGE: dict[str, int] = {}


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

    def __init__(self, n_records: int, duration_s: float, seed: int, version: int = RECORD_VERSION) -> None:
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
        self.base.update(v=version, run_id=RUN_ID, final=True, replayed=False, dry_run=False)
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


# ---------------------------------------------------------------------------------------------------------------
# the gateway's billing ledger of the synthetic run

PRICES = ROOT / "gatewaysim" / "defaults" / "prices.yaml"
LEDGER_HEADER = ("time", "type", "request_id", "idempotency_key", "client_attempt_id", "endpoint", "model",
                 "input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens", "images", "amount",
                 "currency")  # gatewaysim.ledger.COLUMNS (checked when the ledger is written)
#: the billing errors planted, in the order a call's one uniform draw is matched against them: double_charge (the
#: call's charge row twice), missing_charge (no row), dry_run_billed (a charge under a dry run's request id),
#: failed_billed (a charge under a failed attempt's request id), amount_mismatch (the amount x1.1),
#: token_mismatch (output_tokens + 1, the amount unchanged), unknown_request (a charge whose request id and
#: idempotency key match nothing), cache_discount_missing (cached input charged at the input price: only for a
#: model whose cached rate differs), image_count_mismatch (images + 1, the amount unchanged)
PLANT_KINDS = ("double_charge", "missing_charge", "dry_run_billed", "failed_billed", "amount_mismatch",
               "token_mismatch", "unknown_request", "cache_discount_missing", "image_count_mismatch")
#: each kind's chance per call it can be planted on, in units of --plant-share: the kinds that need a rare call
#: (a dry run: ~1% of calls; a failed attempt with a request id: ~3%; cached input: ~1.5%; images: 2%) get more
PLANT_WEIGHT = {"double_charge": 1, "missing_charge": 1, "dry_run_billed": 20, "failed_billed": 10,
                "amount_mismatch": 1, "token_mismatch": 1, "unknown_request": 1, "cache_discount_missing": 20,
                "image_count_mismatch": 10}
PLANT_SHARE = 0.002
LEDGER_SEED_SALT = 0x1ED6E5  # the ledger draws from its own stream: records.jsonl is the same with --no-ledger
LEDGER_CHECKED = 1000  # the first charges, and as many spread ones, are priced again with PriceSheet.cost


class _Rates:
    """A model's token prices as integers: a charge's amount in units of 10**-digits, exactly."""

    def __init__(self, price: Any) -> None:
        rates = [price.input, price.output,
                 price.cached_input if price.cached_input is not None else price.input,
                 price.cache_write if price.cache_write is not None else price.input]
        exp = max(0, *(-r.as_tuple().exponent for r in rates))
        self.inp, self.out, self.cached, self.write = (int(r.scaleb(exp)) for r in rates)
        self.digits = 6 + exp  # the price sheet's rates are per 1M tokens
        self.discounted = self.cached != self.inp

    def amount(self, inp: int, out: int, cached: int, write: int = 0) -> str:
        """PriceSheet.cost of these tokens, written as gatewaysim.ledger.format_amount writes it."""
        units = (max(0, inp - cached - write) * self.inp + cached * self.cached + write * self.write
                 + out * self.out)
        text = str(units).rjust(self.digits + 1, "0")
        head, tail = text[:-self.digits], text[-self.digits:].rstrip("0")
        return f"{head}.{tail}" if tail else head


class LedgerWriter:
    """ledger.csv of the synthetic run, as the simulator exports it: one charge per successful, billable call
    (under its billing request id: a replay's is the original request's), plus errors planted at random (one kind
    at most per call) and counted by kind. Charge rules follow analysis.billing.audit with the default policy, so
    a call with nothing planted gives no finding."""

    def __init__(self, path: Path, seed: int, share: float = PLANT_SHARE) -> None:
        from gatewaysim.ledger import COLUMNS, format_amount
        from ttformats.prices import Usage, load_price_sheet

        if tuple(COLUMNS) != LEDGER_HEADER:
            raise SystemExit(f"the simulator's ledger columns changed: {COLUMNS}")
        self.sheet = load_price_sheet(PRICES)
        unpriced = sorted({m for _, _, models, _ in MIX for m, _ in models if m != "-"} - set(self.sheet.models))
        if unpriced:
            raise SystemExit(f"{PRICES}: no price for {', '.join(unpriced)}: use a priced model in MIX")
        self.format_amount, self.Usage = format_amount, Usage
        self.currency = self.sheet.currency
        self.rates = {m: _Rates(p) for m, p in self.sheet.models.items()}
        self.rng = np.random.default_rng([seed, LEDGER_SEED_SALT])
        self.thresholds = {k: share * w for k, w in PLANT_WEIGHT.items()}
        self.most = sum(self.thresholds.values())  # a draw above this plants nothing on any call
        self.draws: list[float] = []
        self.planted = dict.fromkeys(PLANT_KINDS, 0)
        self.charges = 0
        self.checked = 0
        self.unknown = 0
        self.lines: list[str] = []
        self.f = open(path, "w", encoding="utf-8", newline="")
        self.f.write(",".join(LEDGER_HEADER) + "\n")

    def _draw(self) -> float:
        if not self.draws:
            self.draws = self.rng.random(BATCH).tolist()
            self.draws.reverse()
        return self.draws.pop()

    def _row(self, r: dict[str, Any], rid: str, aid: str | None, inp: int, out: int, cached: int, images: int,
             amount: str, key: str | None = None) -> None:
        t = r["t_start"] + (r["end_ms"] or 0.0) / 1000.0
        self.lines.append(f"{t:.6f},charge,{rid},{key or r['idempotency_key']},{aid or ''},{r['endpoint']},"
                          f"{r['model']},{inp},{out},{cached},0,{images},{amount},{self.currency}\n")
        self.charges += 1

    def _cost(self, r: dict[str, Any], inp: int, out: int, cached: int, images: int) -> str:
        """The amount of a charge; the first ones and a spread sample also through PriceSheet.cost."""
        model = r["model"]
        if r["endpoint"] == "images":
            return self.format_amount(self.sheet.cost(model, self.Usage(
                images=images, image_size=r["image_size"] or "auto", image_quality=r["image_quality"] or "auto")))
        amount = self.rates[model].amount(inp, out, cached)
        if self.charges < LEDGER_CHECKED or self.charges % LEDGER_CHECKED == 0:
            exact = self.format_amount(self.sheet.cost(model, self.Usage(input_tokens=inp, output_tokens=out,
                                                                         cached_input_tokens=cached)))
            if exact != amount:
                raise SystemExit(f"{model} {inp}/{out}/{cached} tokens: {amount} but PriceSheet.cost says {exact}")
            self.checked += 1
        return amount

    def _plant(self, recs: list[dict[str, Any]], billable: bool, cached: int, u: float) -> str | None:
        """The error to plant on this call, if any: the first kind it can take whose share `u` falls in."""
        final = recs[-1]
        can = {
            "double_charge": billable and not final["replayed"],  # a replay's second charge is failed_billed
            "missing_charge": billable,
            "dry_run_billed": final["dry_run"] and final["request_id"] is not None,
            "failed_billed": bool(self._failed(recs)),
            "amount_mismatch": billable and cached == 0,  # else x1.1 might be the undiscounted price
            "token_mismatch": billable and final["endpoint"] != "images",  # images are checked by count
            "unknown_request": True,
            "cache_discount_missing": billable and cached > 0 and self.rates[final["model"]].discounted,
            "image_count_mismatch": billable and final["endpoint"] == "images",
        }
        acc = 0.0
        for kind in PLANT_KINDS:
            if can[kind]:
                acc += self.thresholds[kind]
                if u < acc:
                    return kind
        return None

    @staticmethod
    def _failed(recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The call's failed attempts with a request id, but not the one a replay was billed under."""
        final = recs[-1]
        orig = final["original_request_id"] if final["replayed"] else None
        return [r for r in recs if not r["ok"] and r["request_id"] is not None and r["request_id"] != orig]

    def call(self, recs: list[dict[str, Any]]) -> None:
        """The charges of one logical call (its attempt records in order)."""
        final = recs[-1]
        u = self._draw()
        billable = final["ok"] and not final["dry_run"] and final["endpoint"] != "models"
        usage = final["usage"] or _NO_USAGE
        cached = usage.get("cached_input", 0) if billable else 0
        plant = self._plant(recs, billable, cached, u) if u < self.most else None
        if plant is not None:
            self.planted[plant] += 1
        if billable and plant != "missing_charge":
            if final["replayed"]:  # the gateway billed the original request, the retry got its stored answer
                rid = orig = final["original_request_id"]
                aid = next((r["attempt_id"] for r in recs if r["request_id"] == orig), None)
            else:
                rid, aid = final["request_id"], final["attempt_id"]
            inp, out = usage.get("input", 0), usage.get("output", 0)
            images = final["images_returned"] or 0
            amount = self._cost(final, inp, out, cached, images)
            if plant == "amount_mismatch":
                amount = self.format_amount(Decimal(amount) * Decimal("1.1"))
            elif plant == "cache_discount_missing":
                amount = self._cost(final, inp, out, 0, images)
            self._row(final, rid, aid, inp, out + (plant == "token_mismatch"), cached,
                      images + (plant == "image_count_mismatch"), amount)
            if plant == "double_charge":
                self.lines.append(self.lines[-1])
                self.charges += 1
        elif plant == "dry_run_billed":
            basis = final["estimate"]["estimate"]["basis"]
            inp, out = basis["input_tokens"], basis["max_output_tokens"]
            self._row(final, final["request_id"], final["attempt_id"], inp, out, 0, 0,
                      self._cost(final, inp, out, 0, 0))
        if plant == "failed_billed":
            failed = self._failed(recs)
            r = failed[int(u * 1e9) % len(failed)]
            inp, out = r["prompt_tokens_target"] or 0, (r["usage"] or {}).get("output", 0)
            images = r["images_requested"] or 0
            self._row(r, r["request_id"], r["attempt_id"], inp, out, 0, images, self._cost(r, inp, out, 0, images))
        elif plant == "unknown_request":  # a charge for a request this run never made
            self.unknown += 1
            self._row({**final, "endpoint": "chat", "model": "gpt-4o-mini"}, f"req_x{self.unknown:023x}", None,
                      100, 50, 0, 0, self.rates["gpt-4o-mini"].amount(100, 50, 0), key=f"unknown-{self.unknown}")
        if len(self.lines) >= BATCH:
            self.flush()

    def flush(self) -> None:
        """Write the pending rows."""
        self.f.write("".join(self.lines))
        self.lines.clear()

    def close(self) -> None:
        """Write the pending rows and close the file."""
        self.flush()
        self.f.close()


def write_run(run_dir: Path, n: int, duration_s: float, seed: int, sample: int = 1000, ledger: bool = True,
              plant_share: float = PLANT_SHARE, version: int = RECORD_VERSION) -> dict[str, Any]:
    """records.jsonl and scenario.yaml; with `ledger`, also ledger.csv (LedgerWriter), prices.yaml (the
    simulator's default sheet) and a scenario.yaml that points the analysis at the ledger. Every shape of record
    (the first few of each) and a spread sample are checked against the schema and against the harness's own
    encoder (json.dumps, compact): the file is written with orjson, which gives the same bytes for these records.
    `version` 4 writes the same records under that number: version 5 added only summary timing, and the generator
    writes every chunk's time. Returns figures about the records (with a ledger: `planted`, the errors planted by
    kind, and `charges`)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    scenario = "name: chat-mix\n"
    book = None
    if ledger:
        scenario += "ledger:\n  file: ledger.csv\n"
        shutil.copyfile(PRICES, run_dir / "prices.yaml")
        book = LedgerWriter(run_dir / "ledger.csv", seed, plant_share)
    (run_dir / "scenario.yaml").write_text(scenario)
    if not OLDEST_VERSION <= version <= RECORD_VERSION:
        raise SystemExit(f"--record-version {version}: the generator writes versions {OLDEST_VERSION} to "
                         f"{RECORD_VERSION}")
    gen = Generator(n, duration_s, seed, version)
    call: list[dict[str, Any]] = []
    validator = None
    try:
        import jsonschema

        schema = json.loads((ROOT / "locustfiles" / "record.schema.json").read_text())
        schema["properties"]["v"] = {"const": version}  # the same keys and values under an earlier number
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
                if book is not None:
                    call.append(r)
                    if r["final"]:  # the last attempt of its call
                        book.call(call)
                        call = []
            lines.append(b"")
            f.write(b"\n".join(lines))
    counts["records"] = idx
    counts["calls"] = gen.calls
    counts["shapes"] = len(shapes)
    if book is not None:
        book.close()
        if call:
            raise SystemExit("the records end in the middle of a call")
        counts.update(planted=dict(book.planted), charges=book.charges, charges_checked=book.checked)
    return counts


# ---------------------------------------------------------------------------------------------------------------
# timing the analysis (in a child process)


#: what a timed child runs: argv = code folder (first on sys.path), run folder, "report" | "copy"
CHILD = r"""
import json, resource, sys, time
code, run, mode = sys.argv[1:4]
sys.path.insert(0, code)
t0 = time.perf_counter()
if mode == "copy":
    from analysis import columnar
    t1 = time.perf_counter()
    columnar.build(run)
    out = {}
else:
    import analysis.report as rep
    t1 = time.perf_counter()
    summary, rc = rep.analyze(run)
    o = summary["metrics"]["overall"] or {}
    out = {"exit_code": rc, "attempts": o.get("attempts"), "calls": o.get("calls"),
           "ttft_p50": (o.get("ttft_ms") or {}).get("p50"), "itl_p50": (o.get("itl_ms") or {}).get("p50"),
           "itl_n": (o.get("itl_ms") or {}).get("n"), "groups": len(summary["metrics"]["groups"]),
           "billing": (summary.get("billing") or {}).get("counts")}
total = time.perf_counter() - t1
ru = resource.getrusage(resource.RUSAGE_SELF)
hwm = 0
with open("/proc/self/status") as f:
    for line in f:
        if line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) * 1024
print(json.dumps({"import_s": t1 - t0, "total_s": total, "cpu_s": ru.ru_utime + ru.ru_stime, "hwm_bytes": hwm,
                  **out}))
"""


def _mib(b: float) -> str:
    return f"{b / 2**20:,.0f} MiB"


def run_child(code: Path, run_dir: Path, mode: str) -> dict[str, Any]:
    """One timed step in a child process (`mode` report: analyze(); copy: columnar.build()) with the analysis
    code of `code`; its figures, with the peak RSS of its whole process tree (the child and the helpers it
    starts) sampled every 100 ms, their CPU time, and the share of the machine other processes used meanwhile."""
    import psutil

    busy0 = busy_seconds()
    kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    # run in the code's own folder: a helper that code starts with `python -c` imports `analysis` from there (from
    # ROOT, the baseline's helpers read with today's reader and could not be merged)
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    if USER_POOL:
        env["ARROW_DEFAULT_MEMORY_POOL"] = USER_POOL
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(code), str(run_dir), mode], cwd=str(code),
                            stdout=subprocess.PIPE, text=True, env=env)
    tree_peak = 0
    top = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            tree_peak = max(tree_peak, sum(p.memory_info().rss for p in [top, *top.children(recursive=True)]))
        except psutil.Error:
            pass
        time.sleep(0.1)
    out, _ = proc.communicate()
    wall = time.perf_counter() - t0
    kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    ours = kids1.ru_utime - kids0.ru_utime + kids1.ru_stime - kids0.ru_stime  # the child and its helpers
    other = (busy_seconds() - busy0 - ours) / (wall * (os.cpu_count() or 1))
    if proc.returncode != 0:
        print(out, end="")
        raise SystemExit(f"the {mode} step failed (exit {proc.returncode}, code {code})")
    fig = json.loads(out.strip().splitlines()[-1])
    fig.update(wall_s=wall, tree_peak_bytes=max(tree_peak, fig["hwm_bytes"]), tree_cpu_s=ours,
               other_cpu_share=other)
    return fig


def baseline_code(rev: str, into: Path) -> Path:
    """The analysis as it was at `rev` (analysis/, ttformats/, locustfiles/ from git), unpacked into a folder."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "analysis", "ttformats", "locustfiles"],
                             capture_output=True, check=False)
    if archive.returncode != 0:
        raise SystemExit(f"--baseline {rev}: git archive failed ({archive.stderr.decode(errors='replace').strip()}); "
                         "run from a git checkout, or pass --no-baseline")
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def newest_read(code: Path) -> int:
    """The newest record version the generator can write that the analysis in `code` reads: its
    analysis/records.py RECORD_VERSIONS (a literal tuple, read with ast); RECORD_VERSION, with a warning, when that
    names none the generator writes or cannot be read."""
    path = code / "analysis" / "records.py"
    reads: list[int] = []
    try:
        for node in ast.walk(ast.parse(path.read_text())):
            target = node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else \
                node.target if isinstance(node, ast.AnnAssign) else None
            if isinstance(target, ast.Name) and target.id == "RECORD_VERSIONS" and node.value is not None:
                reads = [v for v in ast.literal_eval(node.value) if isinstance(v, int)]
    except (OSError, SyntaxError, ValueError, TypeError):
        reads = []
    fits = [v for v in reads if OLDEST_VERSION <= v <= RECORD_VERSION]
    if not fits:
        print(f"warning: {path} names no record version from {OLDEST_VERSION} to {RECORD_VERSION} in "
              f"RECORD_VERSIONS; writing version {RECORD_VERSION}", file=sys.stderr)
        return RECORD_VERSION
    return max(fits)


def time_run(run_dir: Path, base: Path | None, repeat: int) -> dict[str, Any]:
    """The baseline's report (its summary kept as summary.baseline.json), the columnar copy built afresh, then the
    report of today's code (fastest of `repeat`); the figures of each step and the summaries' differences."""
    out: dict[str, Any] = {"baseline": None}
    if base is not None:
        print("  baseline report ...", file=sys.stderr, flush=True)
        out["baseline"] = run_child(base, run_dir, "report")
        (run_dir / "summary.json").replace(run_dir / "summary.baseline.json")
        out["baseline_read"] = _attempts_read(run_dir / "summary.baseline.json")
    shutil.rmtree(run_dir / "records.parquet", ignore_errors=True)
    print("  columnar copy ...", file=sys.stderr, flush=True)
    out["copy"] = run_child(ROOT, run_dir, "copy")
    runs = []
    for i in range(repeat):
        print(f"  report{f' {i + 1} of {repeat}' if repeat > 1 else ''} ...", file=sys.stderr, flush=True)
        runs.append(run_child(ROOT, run_dir, "report"))
    out["runs"] = runs
    out["report"] = dict(min(runs, key=lambda r: r["total_s"]))
    out["report"]["tree_peak_bytes"] = max(r["tree_peak_bytes"] for r in runs)
    out["added"] = []  # keys a later summary version adds: not differences in the figures both have
    out["diffs"] = compare_files(run_dir / "summary.baseline.json", run_dir / "summary.json", limit=10,
                                 added=out["added"]) if base is not None else None
    if base is not None and out["baseline_read"][0] < _attempts_read(run_dir / "summary.json")[0]:
        out["baseline_unread"] = out["baseline_read"][1] or "it analysed fewer records than today's code"
    return out


def _attempts_read(summary: Path) -> tuple[int, str | None]:
    """The attempts a report analysed, and its first warning about lines it skipped (if any)."""
    got = json.loads(summary.read_text())
    overall = (got.get("metrics") or {}).get("overall") or {}
    skipped = next((w for w in got.get("warnings") or [] if "skipped" in w and "lines" in w), None)
    return int(overall.get("attempts") or 0), skipped


# ---------------------------------------------------------------------------------------------------------------
# references for the analysis rewrite

INPUT_FILES = ("records.jsonl", "ledger.csv", "prices.yaml", "scenario.yaml")  # what the analysis reads
FIXTURE_GZIPPED = ("records.jsonl", "ledger.csv")


def sha256_of(path: Path) -> str:
    """The sha256 of a file, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def input_hashes(run_dir: Path) -> dict[str, str]:
    """The sha256 of each input file the run folder has."""
    return {name: sha256_of(run_dir / name) for name in INPUT_FILES if (run_dir / name).is_file()}


def inputs_path(reference: Path) -> Path:
    """Where a reference summary's inputs are described: summary-300k.json -> summary-300k.inputs.json."""
    return reference.with_name(reference.name.removesuffix(".json") + ".inputs.json")


def command_of(args: argparse.Namespace) -> str:
    """The command that generates the same run folder."""
    cmd = (f".venv/bin/python benchmarks/analysis_speed.py --records {args.records} --seed {args.seed} "
           f"--duration-s {args.duration_s:g}")
    if args.no_ledger:
        cmd += " --no-ledger"
    elif args.plant_share != PLANT_SHARE:
        cmd += f" --plant-share {args.plant_share:g}"
    if getattr(args, "version", RECORD_VERSION) != RECORD_VERSION:
        cmd += f" --record-version {args.version}"
    return cmd


def generated_by(args: argparse.Namespace, counts: dict[str, Any], hashes: dict[str, str]) -> dict[str, Any]:
    """What made a run folder: the generator's settings and command, its figures, its files' sha256."""
    return {"command": command_of(args), "records": counts["records"], "calls": counts["calls"],
            "seed": args.seed, "duration_s": args.duration_s,
            "plant_share": None if args.no_ledger else args.plant_share,
            "charges": counts.get("charges"), "planted": counts.get("planted"), "sha256": hashes}


def planted_table(planted: dict[str, int], found: dict[str, int]) -> tuple[list[str], bool]:
    """Lines of planted against found billing findings per kind, and whether they all agree."""
    from analysis.billing import FINDING_KINDS

    lines = ["billing finding         planted   found"]
    ok = True
    for kind in FINDING_KINDS:
        p, f = planted.get(kind, 0), found.get(kind, 0)
        ok &= p == f
        lines.append(f"  {kind:<22}{p:>7,} {f:>7,}{'' if p == f else '   <- differs'}")
    return lines, ok


def check_reference(run_dir: Path, reference: Path) -> tuple[list[str], bool]:
    """The run folder's summary.json against a reference one (and its inputs against the reference's, when
    described): report lines and whether it matches."""
    lines = []
    ok = True
    described = inputs_path(reference)
    if described.is_file():
        want = json.loads(described.read_text()).get("sha256") or {}
        have = input_hashes(run_dir)
        changed = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))
        if changed:
            ok = False
            lines.append(f"inputs             DIFFER from {described.name} ({', '.join(changed)}): the generator (or "
                         "its options) changed, not only the analysis; regenerate the reference with today's analysis")
        else:
            lines.append(f"inputs             identical to the reference's ({', '.join(sorted(have))}: sha256)")
    diffs = compare_files(reference, run_dir / "summary.json", limit=20)
    if diffs:
        ok = False
        lines.append(f"reference          DIFFERS from {reference} (the first {len(diffs)} differences):")
        lines += [f"  {d}" for d in diffs]
    else:
        lines.append(f"reference          OK: summary.json reproduces {reference} (counts exact, floats within 1e-9)")
    return lines, ok


def write_reference(run_dir: Path, reference: Path, meta: dict[str, Any], baseline: str | None) -> None:
    """The run folder's summary.json as the reference (written by `baseline`'s analysis, or None: today's code),
    and its inputs described next to it."""
    reference.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run_dir / "summary.json", reference)
    again = f" --baseline {baseline}" if baseline else " --no-baseline"
    meta = {"summary": reference.name, **meta,
            "regenerate": f"{meta['command']}{again} --write-reference {reference}",
            "check": f"{meta['command']} --check-reference {reference}"}
    inputs_path(reference).write_text(json.dumps(meta, indent=2) + "\n")


def write_fixture(run_dir: Path, out: Path, meta: dict[str, Any]) -> None:
    """A small run folder for the tests: the inputs (records and ledger gzipped), summary.reference.json and
    planted.json (what made them: the generator's figures and planted errors, the sha256 of the plain files)."""
    out.mkdir(parents=True, exist_ok=True)
    for name in INPUT_FILES:
        src = run_dir / name
        if not src.is_file():
            continue
        if name in FIXTURE_GZIPPED:
            with open(src, "rb") as f, open(out / f"{name}.gz", "wb") as raw, \
                    gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz:
                shutil.copyfileobj(f, gz)
        else:
            shutil.copyfile(src, out / name)
    shutil.copyfile(run_dir / "summary.json", out / "summary.reference.json")
    meta = {**meta, "regenerate": f"{meta['command']} --write-fixture {out}"}
    (out / "planted.json").write_text(json.dumps(meta, indent=2) + "\n")


def _step_line(name: str, fig: dict[str, Any]) -> str:
    return (f"  {name:<34}{fig['total_s']:8.2f} s {fig['tree_cpu_s']:8.1f} s   {_mib(fig['tree_peak_bytes']):>10}"
            f"   (other processes {max(fig['other_cpu_share'], 0.0):.0%} of the machine)")


def report_lines(run_dir: Path, t: dict[str, Any], base_rev: str | None) -> list[str]:
    """What one run's timing says, step by step."""
    rep, copy, base = t["report"], t["copy"], t["baseline"]
    outs = ", ".join(f"{p} {(run_dir / p).stat().st_size / 1024:,.0f} KiB"
                     for p in ("summary.json", "report.md", "report.html"))
    lines = [
        f"analysed           {rep['attempts']:,} attempts, {rep['calls']:,} calls, {rep['groups']} groups, "
        f"TTFT p50 {rep['ttft_p50']:.1f} ms, ITL p50 {rep['itl_p50']:.2f} ms over {rep['itl_n']:,} gaps",
        f"outputs            {outs}",
        "",
        f"  {'step':<34}{'time':>10} {'CPU':>10}   {'peak RSS':>10}   (process tree: the step and its helpers)",
    ]
    if base is not None:
        lines.append(_step_line(f"baseline report ({base_rev})", base))
    lines.append(_step_line("columnar copy (end of a run)", copy))
    if len(t["runs"]) > 1:
        lines.append("  report runs (s)                   " + ", ".join(f"{r['total_s']:.2f}" for r in t["runs"])
                     + "   (the fastest below)")
    lines.append(_step_line("report (today's code)", rep))
    alone = copy["total_s"] + rep["total_s"]
    lines.append(f"  {'from records.jsonl alone':<34}{alone:8.2f} s   (copy + report: `ttbench report` on a folder "
                 "without the copy)")
    if base is not None and t.get("baseline_unread"):  # a baseline that could not read these records: no figure
        lines += ["", f"baseline           could not read these records, so no speed-up: {t['baseline_unread']}"]
    elif base is not None:
        lines += ["", f"speed-up           {base['total_s'] / rep['total_s']:.1f}x the baseline's time "
                      f"({base['total_s'] / alone:.1f}x counting the copy); peak memory "
                      f"{rep['tree_peak_bytes'] / base['tree_peak_bytes']:.2f}x the baseline's"]
        diffs, added = t["diffs"], t.get("added") or []
        more = ""
        if added:
            names = sorted({a.rsplit(".", 1)[-1] for a in added})
            more = (f"; today's summary version adds {len(added)} keys the baseline's lacks: "
                    + ", ".join(names[:6]) + (", ..." if len(names) > 6 else ""))
        lines.append("same figures       " + ("yes: summary.json equals the baseline's in every key it has (counts "
                                               f"exact, floats within 1e-9){more}" if not diffs
                                               else f"NO, {len(diffs)} differences:"))
        lines += [f"  {d}" for d in diffs or []]
    return lines


def judge(sizes: list[tuple[int, dict[str, Any]]]) -> tuple[list[str], bool]:
    """The issue's targets for the sizes measured: lines and whether all that apply are met."""
    lines, ok = ["", "targets (2-core development machine)"], True
    peaks = {n: t["report"]["tree_peak_bytes"] for n, t in sizes}

    def check(met: bool, what: str) -> None:
        nonlocal ok
        ok &= met
        lines.append(f"  {'met    ' if met else 'NOT met'}  {what}")

    for n, t in sizes:
        rep, base = t["report"], t["baseline"]
        if n == 1_000_000:
            check(rep["total_s"] <= 5.0, f"1M records: report <= 5 s ({rep['total_s']:.2f} s)")
            if base is not None and t.get("baseline_unread"):
                lines.append("  unknown  1M records: >= 3.5x faster than the baseline, and the same summary (the "
                             "baseline could not read these records)")
            elif base is not None:
                check(base["total_s"] / rep["total_s"] >= 3.5,
                      f"1M records: >= 3.5x faster than the baseline ({base['total_s'] / rep['total_s']:.1f}x)")
                check(not t["diffs"], "1M records: the same summary as the baseline")
        if n == 10_000_000:
            check(rep["total_s"] <= 60.0, f"10M records: report <= 60 s ({rep['total_s']:.2f} s)")
            check(rep["tree_peak_bytes"] <= 2 * 1024**3,
                  f"10M records: peak memory <= 2 GiB ({_mib(rep['tree_peak_bytes'])})")
            if 1_000_000 in peaks:
                ratio = rep["tree_peak_bytes"] / peaks[1_000_000]
                check(ratio <= 1.3, f"10M records: peak memory <= 1.3x the 1M peak ({ratio:.2f}x)")
    if len(lines) == 2:
        lines.append("  (none apply: they are set for 1,000,000 and 10,000,000 records)")
    return lines, ok


def main(argv: list[str] | None = None) -> int:
    """Generate, time the baseline, the columnar copy and the report in children, print the figures."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--records", type=positive_int, nargs="+", default=[1_000_000],
                        help="attempt records of each run to generate (default 1,000,000)")
    parser.add_argument("--keep", action="store_true", help="keep the run folders (their paths are printed)")
    parser.add_argument("--out", type=Path, help="generate into this folder (new or empty; a sub-folder per size) "
                                                 "and keep it")
    parser.add_argument("--run-dir", type=Path, nargs="+", help="time these folders (from --keep) instead of "
                                                                "generating")
    parser.add_argument("--repeat", type=positive_int, default=1,
                        help="run the report this many times and judge the fastest (default 1; use 3 on a "
                             "machine other work keeps busy)")
    parser.add_argument("--baseline", default=BASELINE, metavar="REV",
                        help=f"the analysis to compare with, from git (default {BASELINE}: the analysis before "
                             "the rewrite for scale)")
    parser.add_argument("--no-baseline", action="store_true", help="time today's code only")
    parser.add_argument("--baseline-max", type=positive_int, default=BASELINE_MAX,
                        help=f"runs bigger than this skip the baseline, which holds every record in memory "
                             f"(default {BASELINE_MAX:,})")
    parser.add_argument("--duration-s", type=positive_float, default=3600.0,
                        help="the synthetic run's length in seconds (default 3600)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the synthetic records (default 1)")
    parser.add_argument("--record-version", type=int, choices=range(OLDEST_VERSION, RECORD_VERSION + 1),
                        help=f"the records' version (default {RECORD_VERSION}, or, for a size the baseline "
                             "times, the newest it reads)")
    parser.add_argument("--no-ledger", action="store_true", help="no ledger.csv (and so no billing audit)")
    parser.add_argument("--plant-share", type=non_negative_float, default=PLANT_SHARE,
                        help=f"billing errors planted: the chance per call and kind, times the kind's weight "
                             f"(default {PLANT_SHARE:g}; at most {1 / sum(PLANT_WEIGHT.values()):.4f})")
    parser.add_argument("--check-reference", type=Path, metavar="SUMMARY",
                        help="compare the summary.json written against this reference (see above); exit 1 if "
                             "anything differs (today's code only: no baseline runs)")
    parser.add_argument("--write-reference", type=Path, metavar="SUMMARY",
                        help="write the baseline's summary.json (today's with --no-baseline) as a reference here "
                             "(and SUMMARY.inputs.json next to it)")
    parser.add_argument("--write-fixture", type=Path, metavar="DIR",
                        help="write the run folder, gzipped, with summary.reference.json (as --write-reference) "
                             "and planted.json, here")
    args = parser.parse_args(argv)
    if args.plant_share * sum(PLANT_WEIGHT.values()) > 1:
        parser.error(f"--plant-share: at most {1 / sum(PLANT_WEIGHT.values()):.4f}")
    reuse = args.run_dir is not None
    if reuse and args.out is not None:
        parser.error("--run-dir times existing folders, --out generates them: not both")
    refs = args.write_reference or args.write_fixture or args.check_reference
    if args.check_reference:  # the check is of today's analysis: the baseline would only take time (or fail)
        args.no_baseline = True
    if refs and (len(args.run_dir or args.records) > 1):
        parser.error("--write-reference, --write-fixture and --check-reference take one run")
    if reuse and (args.write_reference or args.write_fixture):
        parser.error("--write-reference and --write-fixture generate their run (the seed and options say how)")
    if args.out is not None and args.out.exists() and (not args.out.is_dir() or any(args.out.iterdir())):
        parser.error(f"--out {args.out}: not an empty folder")
    for d in args.run_dir or []:
        if not (d / "records.jsonl").is_file():
            parser.error(f"{d}: no records.jsonl")
    keep = args.keep or args.out is not None
    work = Path(tempfile.mkdtemp(prefix="analysis_speed_code_"))
    runs_root = args.out or (Path(tempfile.mkdtemp(prefix="analysis_speed_")) if not reuse else work)
    plan = [(d, None) for d in args.run_dir] if reuse else [(runs_root / f"r{n}", n) for n in args.records]
    rc = 0
    sizes: list[tuple[int, dict[str, Any]]] = []
    try:
        base = None
        if not args.no_baseline:
            base = baseline_code(args.baseline, work / "baseline")
        for run_dir, n in plan:
            args.records = n  # command_of() names the size of this run
            counts: dict[str, Any] = {}
            lines = []
            if n is not None:
                version = args.record_version or (
                    newest_read(base) if base is not None and n <= args.baseline_max else RECORD_VERSION)
                print(f"generating {n:,} records (version {version}) in {run_dir} ...", file=sys.stderr,
                      flush=True)
                t0 = time.perf_counter()
                counts = write_run(run_dir, n, args.duration_s, args.seed, ledger=not args.no_ledger,
                                   plant_share=args.plant_share, version=version)
                counts["version"] = args.version = version
                gen_s = time.perf_counter() - t0
                (run_dir / GENERATED).write_text(json.dumps(counts, indent=2) + "\n")
                lines += [
                    f"analysis speed: synthetic chat-mix run, {args.duration_s:,.0f} s long, seed {args.seed}",
                    f"records            {counts['records']:,} attempts (version {version}), "
                    f"{counts['calls']:,} calls "
                    f"({counts['streamed'] / counts['records']:.1%} streamed x {CHUNKS} chunks, "
                    f"{counts['failed'] / counts['records']:.1%} failed, {counts['retries']:,} retries; "
                    f"{counts['checked']:,} of them, every one of {counts['shapes']} shapes, checked against the "
                    "schema)",
                ]
                if "planted" in counts:
                    lines.append(f"ledger.csv         {counts['charges']:,} charges, "
                                 f"{sum(counts['planted'].values()):,} billing errors planted "
                                 f"({counts['charges_checked']:,} amounts checked against PriceSheet.cost)")
            else:
                gen_s = None
                lines.append(f"analysis speed: {run_dir}")
                if (run_dir / GENERATED).is_file():  # what the generator planted there
                    counts = json.loads((run_dir / GENERATED).read_text())
            size = (run_dir / "records.jsonl").stat().st_size
            records = sum(1 for _ in open(run_dir / "records.jsonl", "rb")) if n is None else n
            use_base = base if records <= args.baseline_max else None
            by = args.baseline if use_base is not None else None  # the baseline's revision when it ran here
            print(f"timing {run_dir} ({os.cpu_count()} CPUs) ...", file=sys.stderr, flush=True)
            t = time_run(run_dir, use_base, args.repeat)
            sizes.append((records, t))
            made = f", generated in {gen_s:.1f} s" if gen_s is not None else ""
            lines.append(f"records.jsonl      {size / 2**20:,.0f} MiB ({size / max(records, 1):,.0f} bytes a record)"
                         f"{made}")
            lines += report_lines(run_dir, t, by)
            if base is not None and use_base is None:
                lines.append(f"baseline           skipped: more than --baseline-max {args.baseline_max:,} records")
            summary = json.loads((run_dir / "summary.json").read_text())
            found = (summary.get("billing") or {}).get("counts")
            planted_ok = True
            if "planted" in counts:
                table, planted_ok = planted_table(counts["planted"], found or {})
                lines += ["", *table, "  the audit found " + ("exactly the planted errors" if planted_ok else
                                                               "OTHER errors than the planted ones")]
                rc = rc or (0 if planted_ok else 1)
            elif found is not None:
                lines += ["", "billing findings   " + ", ".join(f"{k} {v}" for k, v in found.items() if v)]
            if args.write_reference or args.write_fixture:
                if not planted_ok:
                    lines.append("NOT written: the audit does not find exactly the planted errors")
                    rc = 1
                else:
                    if use_base is not None:  # the reference is the baseline's analysis
                        shutil.copyfile(run_dir / "summary.baseline.json", run_dir / "summary.json")
                    meta = generated_by(args, counts, input_hashes(run_dir))
                    meta["analysis"] = f"the baseline, {by}" if by else "today's code"
                    if args.write_reference:
                        write_reference(run_dir, args.write_reference, meta, by)
                        lines.append(f"wrote              {args.write_reference} and "
                                     f"{inputs_path(args.write_reference)}")
                    if args.write_fixture:
                        write_fixture(run_dir, args.write_fixture, meta)
                        lines.append(f"wrote              {args.write_fixture}/ (" + ", ".join(
                            f"{p.name} {p.stat().st_size / 1024:,.0f} KiB"
                            for p in sorted(args.write_fixture.iterdir())) + ")")
            if args.check_reference:
                check, same = check_reference(run_dir, args.check_reference)
                lines += ["", *check]
                rc = rc or (0 if same else 1)
            if keep and not reuse:
                lines.append(f"kept {run_dir}")
            print("\n".join(lines) + "\n", flush=True)
            if not keep and not reuse:
                shutil.rmtree(run_dir, ignore_errors=True)
        verdict, ok = judge(sizes)
        print("\n".join(verdict), flush=True)
        if not refs:
            rc = rc or (0 if ok else 1)
        return rc
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if not keep and not reuse:
            shutil.rmtree(runs_root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
