"""CPU per streamed chat request of one Locust process running ttbench's users, next to a bare Locust user.

A canned server (this script with --serve: a plain asyncio keep-alive HTTP/1.1 server, pinned to CPU 0)
answers POST /v1/chat/completions at once with a fixed, precomputed chunked SSE body: the role chunk,
--chunks content chunks, the finish chunk, the usage chunk (choices: []) and `data: [DONE]`, one HTTP
chunk per event, with a fresh X-TT-Request-ID. Against it, one Locust process pinned to CPU 1 runs for
--duration seconds, once per variant:

* bare: a FastHttpUser reading the body with `resp._response.readline(b"\\n")` to EOF, nothing parsed
  (benchmarks/_harness_bare_locustfile.py);
* ttbench: ttbench's own users (locustfiles/gateway.py) with a scenario of streamed chat only, think
  time 0, retry budget 0, records written to records.jsonl.

The CPU time of the Locust process, of the server and of both cores is sampled at every whole wall-clock
second; requests/s and CPU per request come from a steady window that skips the first --warmup seconds
after the first request and the last second. The target is ttbench <= 1.3x the bare user's CPU per request.

Usage:
    python benchmarks/harness_throughput.py [--duration 10] [--users 20] [--warmup 3] [--chunks 32]
                                            [--rounds 1] [--quiet-wait 10] [--no-pin]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import psutil

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from common import (  # noqa: E402
    LOCUST_CPU,
    ROOT,
    SERVER_CPU,
    busy_seconds,
    check_run_args,
    cpu_seconds,
    non_negative_float,
    non_negative_int,
    pinned,
    positive_int,
    run_sampled,
    settle,
)

from ttbench.simproc import ServerProcess  # noqa: E402

GATEWAY = ROOT / "locustfiles" / "gateway.py"
BARE = BENCH / "_harness_bare_locustfile.py"
MODEL = "gpt-4o-mini"
API_KEY = "canned-bench-key"
TARGET_RATIO = 1.3
VARIANTS = ("bare", "ttbench")
WORDS = ("load", "testing", "measures", "how", "a", "gateway", "behaves", "under", "pressure", "and", "where",
         "it", "breaks", "first")


# ---------------------------------------------------------------------------------------------------------
# The canned server


def sse_events(n_content: int) -> list[bytes]:
    """The SSE events of one streamed chat answer: role, content chunks, finish, usage, [DONE]."""
    head = {"id": "chatcmpl-canned", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": MODEL,
            "system_fingerprint": "fp_canned"}

    def chunk(delta: dict, finish: str | None = None) -> dict:
        return {**head, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

    events = [chunk({"role": "assistant", "content": "", "refusal": None})]
    events += [chunk({"content": (" " if i else "") + WORDS[i % len(WORDS)]}) for i in range(n_content)]
    events.append(chunk({}, "stop"))
    events.append({**head, "choices": [], "usage": {
        "prompt_tokens": 24, "completion_tokens": n_content, "total_tokens": 24 + n_content,
        "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 0}}})
    out = [b"data: " + json.dumps(e, separators=(",", ":")).encode() + b"\n\n" for e in events]
    return [*out, b"data: [DONE]\n\n"]


def chunked(parts: list[bytes]) -> bytes:
    """HTTP/1.1 chunked transfer encoding, one chunk per part, with the terminating zero chunk."""
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


class CannedProtocol(asyncio.Protocol):
    """Keep-alive HTTP/1.1: reads each request (headers and Content-Length body) and writes the canned answer."""

    stream_body = b""
    models_body = json.dumps({"object": "list", "data": [{"id": MODEL, "object": "model", "created": 0,
                                                          "owned_by": "canned"}]}).encode()
    served = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport."""
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        """Answer every complete request in the buffer (pipelining allowed)."""
        buf = self.buf + data
        while (end := buf.find(b"\r\n\r\n")) >= 0:
            head = buf[:end]
            length = 0
            low = head.lower()
            i = low.find(b"\r\ncontent-length:")
            if i >= 0:
                j = low.find(b"\r\n", i + 2)
                length = int(low[i + 17:j if j >= 0 else len(low)])
            total = end + 4 + length
            if len(buf) < total:
                break
            line = head[:head.find(b"\r\n")] if b"\r\n" in head else head
            method, _, rest = line.partition(b" ")
            path = rest.split(b" ", 1)[0]
            CannedProtocol.served += 1
            rid = b"req_canned_%010d" % CannedProtocol.served
            if method == b"POST" and path == b"/v1/chat/completions":
                self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                                     b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n"
                                     b"X-TT-Request-ID: " + rid + b"\r\n\r\n" + self.stream_body)
            elif method == b"GET" and path.startswith(b"/v1/models"):
                self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                                     b"X-TT-Request-ID: %s\r\n\r\n%s" % (len(self.models_body), rid, self.models_body))
            else:
                msg = b'{"error":{"message":"not found","type":"invalid_request_error","code":"not_found"}}'
                self.transport.write(b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n"
                                     b"Content-Length: %d\r\nX-TT-Request-ID: %s\r\n\r\n%s" % (len(msg), rid, msg))
            buf = buf[total:]
        self.buf = buf


def serve(port: int, n_content: int) -> None:
    """Run the canned server until SIGTERM; prints `listening on URL` once bound."""
    CannedProtocol.stream_body = chunked(sse_events(n_content))

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(CannedProtocol, "127.0.0.1", port, backlog=1024)
        print(f"listening on http://127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
        async with server:
            await server.serve_forever()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass


class CannedServer(ServerProcess):
    """The canned server as a child process (this script with --serve)."""

    what = "the canned server"

    def __init__(self, n_content: int) -> None:
        super().__init__([sys.executable, str(Path(__file__).resolve()), "--serve", "0", "--chunks", str(n_content)])


def check_server(url: str, n_content: int) -> str:
    """One raw streamed call: the body must hold the expected SSE events."""
    import httpx

    with httpx.Client(timeout=5) as client:
        r = client.post(url + "/v1/chat/completions", json={"model": MODEL, "stream": True},
                        headers={"Accept-Encoding": "identity"})
        r.raise_for_status()
        events = [ln for ln in r.text.split("\n") if ln.startswith("data:")]
    expected = n_content + 4
    if len(events) != expected or events[-1] != "data: [DONE]" or not r.headers.get("x-tt-request-id"):
        raise RuntimeError(f"canned server: {len(events)} SSE events (expected {expected})")
    return f"{len(events)} SSE events ({n_content} content), {len(r.content)} body bytes, chunked"


# ---------------------------------------------------------------------------------------------------------
# The Locust runs


def scenario_yaml(url: str, n_content: int) -> str:
    """The ttbench scenario: streamed chat only, no think time, no retries."""
    return (
        "# written by benchmarks/harness_throughput.py\n"
        "name: harness-throughput\n"
        f"target: {url}\n"
        "seed: 1\n"
        "users: 20\n"
        "duration: 10s\n"
        "stop_timeout: 5s\n"
        "think_time: {min_s: 0, max_s: 0}\n"
        "retry: {max_attempts: 1, budget: 0}\n"
        f"defaults: {{output_tokens: {n_content}, prompt_tokens: 24}}\n"
        "mix:\n"
        f"  - {{endpoint: chat, weight: 1, stream: 1.0, models: [{MODEL}]}}\n"
    )


@dataclass
class Result:
    """The figures of one variant's run."""

    variant: str
    round: int
    window_s: int = 0
    requests: int = 0
    total: int = 0
    failures: int = 0
    locust_cpu_s: float = math.nan
    server_cpu_s: float = math.nan
    core_busy_s: dict[str, float] = field(default_factory=dict)
    records: int | None = None
    records_ok: int | None = None
    record_check: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def rps(self) -> float:
        """Requests/s in the steady window."""
        return self.requests / self.window_s if self.window_s else math.nan

    @property
    def us_per_request(self) -> float:
        """Locust CPU µs per request in the window."""
        return 1e6 * self.locust_cpu_s / self.requests if self.requests else math.nan

    @property
    def server_us_per_request(self) -> float:
        """Canned-server CPU µs per request in the window."""
        return 1e6 * self.server_cpu_s / self.requests if self.requests else math.nan

    def pct(self, cpu_s: float) -> float:
        """CPU seconds in the window as % of one core."""
        return 100 * cpu_s / self.window_s if self.window_s else math.nan


def locust_cmd(variant: str, url: str, workdir: Path, args: argparse.Namespace) -> tuple[list[str], Path]:
    """The Locust command line of a variant and the base path of its --json-file."""
    base = workdir / f"{variant}_stats"
    cmd = [sys.executable, "-m", "locust", "--headless", "-u", str(args.users), "-r", str(args.users), "-H", url,
           "--json-file", str(base), "--only-summary", "--loglevel", "WARNING"]
    if variant == "bare":
        cmd += ["-f", str(BARE), "-t", f"{args.duration}s", "--stop-timeout", "0", "BareStream"]
    else:
        scenario = workdir / "scenario.yaml"
        scenario.write_text(scenario_yaml(url, args.chunks))
        cmd += ["-f", str(GATEWAY), "--scenario", str(scenario), "--ttbench-out", str(workdir / "ttbench_out"),
                "--ttbench-duration", str(args.duration), "--run-id", "harness-bench", "--max-spend", "1000000000"]
    return cmd, base


def analyse_records(path: Path, n_content: int, result: Result) -> None:
    """Count ttbench's records and check that they saw every content chunk and the usage."""
    recs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    result.records = len(recs)
    result.records_ok = sum(1 for r in recs if r.get("ok"))
    bad = [r for r in recs if r.get("ok") and ((r.get("chunks") or {}).get("n") != n_content
                                               or (r.get("usage") or {}).get("output") != n_content
                                               or not r.get("request_id"))]
    kinds: dict[str, int] = {}
    for r in recs:
        if not r.get("ok"):
            kinds[str(r.get("error_kind"))] = kinds.get(str(r.get("error_kind")), 0) + 1
    result.record_check = (f"{len(recs)} records, {result.records_ok} ok, {len(bad)} ok records without "
                           f"{n_content} content chunks + usage + request id"
                           + (f"; errors: {kinds}" if kinds else ""))


def run_variant(variant: str, rnd: int, server: CannedServer, workdir: Path, args: argparse.Namespace) -> Result:
    """Run one Locust variant against the canned server, sampling CPU at every whole second."""
    result = Result(variant=variant, round=rnd)
    vdir = workdir / f"{variant}_{rnd}"
    vdir.mkdir()
    cmd, base = locust_cmd(variant, server.url, vdir, args)
    env = dict(os.environ, TT_API_KEY=API_KEY, BARE_API_KEY=API_KEY, BARE_MODEL=MODEL, PYTHONPATH=str(ROOT))
    env.pop("TTBENCH_TARGET_IS_SIM", None)
    log_path = vdir / "locust.log"
    sp = psutil.Process(server.proc.pid)

    def sample(second: int, lp: psutil.Process) -> tuple[int, float, float, float, float]:
        """second, Locust CPU, server CPU, core 0 and core 1 busy seconds."""
        return (second, cpu_seconds(lp), cpu_seconds(sp), busy_seconds(SERVER_CPU), busy_seconds(LOCUST_CPU))

    samples, log_text, killed = run_sampled(cmd, env, vdir, None if args.no_pin else LOCUST_CPU, log_path,
                                            args.duration + 30, sample)
    if killed:
        result.notes.append("Locust did not stop in time: killed")
    try:
        stats = json.loads(Path(f"{base}.json").read_text())
    except (OSError, ValueError):
        stats = []
    entry = next((e for e in stats if e["method"] == "POST" and e["name"].startswith("chat")), None)
    if entry is None:
        raise RuntimeError(f"Locust ({variant}) recorded no requests; its output:\n{log_text[-4000:]}")
    result.total, result.failures = entry["num_requests"], entry["num_failures"]
    if result.failures:
        result.notes.append("Locust failures; end of its output:\n" + log_text[-2000:])
    if "Traceback" in log_text:
        result.notes.append("traceback in Locust's output:\n" + log_text[-3000:])
    if variant == "ttbench":
        records = vdir / "ttbench_out" / "records.jsonl"
        if records.is_file():
            analyse_records(records, args.chunks, result)
        else:
            result.notes.append("no records.jsonl written")
    per_sec = {int(k): v for k, v in entry["num_reqs_per_sec"].items()}
    first, last = min(per_sec), max(per_sec)
    start, end = first + args.warmup, last - 1
    at = {s[0]: s for s in samples}
    if start not in at or end not in at or end <= start:
        result.notes.append(f"no steady window ({len(samples)} samples, requests {first}..{last}): lengthen --duration")
        return result
    result.window_s = end - start
    result.requests = sum(per_sec.get(s, 0) for s in range(start, end))
    result.locust_cpu_s = at[end][1] - at[start][1]
    result.server_cpu_s = at[end][2] - at[start][2]
    result.core_busy_s = {"server": at[end][3] - at[start][3], "Locust": at[end][4] - at[start][4]}
    return result


# ---------------------------------------------------------------------------------------------------------
# Report


def pooled(results: list[Result]) -> Result:
    """One variant's rounds pooled: windows, requests and CPU seconds summed."""
    out = Result(variant=results[0].variant, round=-1)
    for r in results:
        if not r.window_s:
            continue
        out.window_s += r.window_s
        out.requests += r.requests
        out.locust_cpu_s = (0.0 if math.isnan(out.locust_cpu_s) else out.locust_cpu_s) + r.locust_cpu_s
        out.server_cpu_s = (0.0 if math.isnan(out.server_cpu_s) else out.server_cpu_s) + r.server_cpu_s
        for k, v in r.core_busy_s.items():
            out.core_busy_s[k] = out.core_busy_s.get(k, 0.0) + v
    out.total = sum(r.total for r in results)
    out.failures = sum(r.failures for r in results)
    return out


def report(results: list[Result], args: argparse.Namespace, server_check: str) -> str:
    """The side-by-side table with ttbench/bare ratios and the verdict on the target."""
    by = {v: pooled([r for r in results if r.variant == v]) for v in VARIANTS}

    def row(label: str, fmt: str, get, with_ratio: bool = False) -> tuple[str, str, str, str]:  # noqa: ANN001
        a, b = float(get(by["bare"])), float(get(by["ttbench"]))
        ratio = f"{b / a:.2f}x" if with_ratio and a and not (math.isnan(a) or math.isnan(b)) else ""
        return label, format(a, fmt), format(b, fmt), ratio

    rows = [
        row("steady window (s)", ".0f", lambda r: r.window_s),
        row("requests in window", ",.0f", lambda r: r.requests),
        row("requests/s", ",.0f", lambda r: r.rps, True),
        row("Locust CPU/request (µs)", ",.1f", lambda r: r.us_per_request, True),
        row("Locust CPU (% of a core)", ".1f", lambda r: r.pct(r.locust_cpu_s), True),
        row("server CPU/request (µs)", ",.1f", lambda r: r.server_us_per_request),
        row("server CPU (% of a core)", ".1f", lambda r: r.pct(r.server_cpu_s)),
    ]
    if not args.no_pin:
        rows += [
            row(f"core {LOCUST_CPU} busy, all work (%)", ".1f", lambda r: r.pct(r.core_busy_s.get("Locust", math.nan))),
            row(f"core {SERVER_CPU} busy, all work (%)", ".1f", lambda r: r.pct(r.core_busy_s.get("server", math.nan))),
        ]
    rows.append(row("failures (whole run)", ",.0f", lambda r: r.failures))
    head = ("", "bare readline", "ttbench users", "ttbench/bare")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(4)]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths,
                                                                                               strict=True)))

    rounds = f", {args.rounds} rounds (pooled)" if args.rounds > 1 else ""
    out = [
        f"harness throughput: {args.users} users, {args.duration} s per variant{rounds}, streamed chat of "
        f"{args.chunks} content chunks, first {args.warmup} s and last 1 s skipped",
        (f"canned server pinned to CPU {SERVER_CPU}, Locust to CPU {LOCUST_CPU}" if not args.no_pin
         else "no CPU pinning") + f"; canned answer: {server_check}",
        "",
        line(head),
        "  ".join("-" * w for w in widths),
        *(line(r) for r in rows),
        "",
    ]
    bare_us, tt_us = by["bare"].us_per_request, by["ttbench"].us_per_request
    ratio = tt_us / bare_us if bare_us else math.nan
    verdict = "MET" if ratio <= TARGET_RATIO else "NOT MET"
    out.append(f"target ttbench CPU/request <= {TARGET_RATIO:g}x bare: {verdict} ({tt_us:,.1f} µs vs "
               f"{bare_us:,.1f} µs = {ratio:.2f}x; ttbench costs {tt_us - bare_us:,.1f} µs more per request)")
    if args.rounds > 1:  # the machine's speed drifts within a minute: each round's own ratio, and their median
        pairs = {}
        for r in results:
            pairs.setdefault(r.round, {})[r.variant] = r.us_per_request
        ratios = sorted(p["ttbench"] / p["bare"] for p in pairs.values() if p.get("bare") and p.get("ttbench"))
        if ratios:
            mid = len(ratios) // 2
            median = ratios[mid] if len(ratios) % 2 else (ratios[mid - 1] + ratios[mid]) / 2
            out.append(f"per-round ratios {', '.join(f'{x:.2f}x' for x in ratios)}; median {median:.2f}x")
    for r in results:
        tag = f"[{r.variant}{f' round {r.round}' if args.rounds > 1 else ''}]"
        if args.rounds > 1:
            out.append(f"{tag} {r.rps:,.0f} requests/s, {r.us_per_request:,.1f} µs CPU/request over {r.window_s} s")
        if r.variant == "ttbench" and r.record_check:
            out.append(f"{tag} records: {r.record_check}")
        if r.window_s and r.pct(r.core_busy_s.get("Locust", 0.0)) < 90 and not args.no_pin:
            out.append(f"{tag} note: the Locust core was under 90% busy: the server or the network limited it")
        out.extend(f"{tag} {note}" for note in r.notes)
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Start the canned server, run both variants, print the table."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--duration", type=positive_int, default=10,
                        help="Locust run time per variant, seconds (default 10)")
    parser.add_argument("--users", type=positive_int, default=20, help="concurrent Locust users (default 20)")
    parser.add_argument("--warmup", type=non_negative_int, default=3,
                        help="seconds skipped after the first request (default 3)")
    parser.add_argument("--chunks", type=positive_int, default=32,
                        help="content chunks per canned answer (default 32)")
    parser.add_argument("--rounds", type=positive_int, default=1,
                        help="rounds, alternating the order of the variants (default 1)")
    parser.add_argument("--quiet-wait", type=non_negative_float, default=10,
                        help="before each run, wait up to this many seconds for idle cores (default 10)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin the server and Locust to CPUs 0 and 1")
    parser.add_argument("--serve", type=non_negative_int, default=None, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve is not None:
        serve(args.serve, args.chunks)
        return 0
    check_run_args(parser, args)
    workdir = Path(tempfile.mkdtemp(prefix="harness_throughput_"))
    notes: list[str] = []
    server = pinned(CannedServer(args.chunks), None if args.no_pin else SERVER_CPU, notes)
    try:
        for note in notes:
            print(note, file=sys.stderr)
        server_check = check_server(server.url, args.chunks)
        results: list[Result] = []
        for rnd in range(args.rounds):
            for variant in (VARIANTS if rnd % 2 == 0 else VARIANTS[::-1]):
                settle((SERVER_CPU, LOCUST_CPU), args.quiet_wait)
                print(f"running {variant} for {args.duration} s ...", file=sys.stderr, flush=True)
                results.append(run_variant(variant, rnd, server, workdir, args))
        print(report(results, args, server_check), flush=True)
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
