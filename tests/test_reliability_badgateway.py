"""A gateway that answers badly: every bad answer becomes a classified failed record, and the run goes on.

`tests/badgateway.py` runs in its own process; the first path segment picks its
behaviour (`/html/v1/chat/completions`), and `/mix/` rotates through all of them.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from typing import Any

import gevent
import pytest

from locustfiles.calls import CallSpec
from locustfiles.dialects import DIALECTS
from locustfiles.profile import Profile
from locustfiles.transport import MAX_BODY_BYTES, Timeouts, Transport

from .badgateway import ARRAY, CASES, HUGE_BYTES, PLAIN, SSE, BadGateway
from .runs import records, ttbench, write_scenario

pytestmark = pytest.mark.timeout(200)

#: What each bad answer must become in the record (None: a success).
EXPECTED: dict[str, str | None] = {
    "ok": None,
    "html": "protocol",                  # 200 text/html
    "octet_stream": "protocol",          # a stream as application/octet-stream
    "gzip": "protocol",                  # Content-Encoding: gzip, though we asked for identity
    "huge": "protocol",                  # 100 MB: given up at the 32 MB cap
    "cut_mid_event": "truncated",        # the connection closed inside an event
    "bad_utf8": "protocol",              # invalid UTF-8 in a data line
    "array_never_closes": "truncated",   # a Gemini JSON array without its `]`
    "empty_body": "empty",               # a 200 with no body
    "no_terminator": "truncated",        # no [DONE] / message_stop / finishReason, closed cleanly
    "keepalive_only": "timeout",         # `: keep-alive` comments until the total timeout
    "error_502_text": "http_5xx",        # 502 with an HTML body
    "error_echoes_key": "http_5xx",      # 500 whose error code is the caller's API key
    "chunked_violation": "protocol",     # a chunk size that is not hex
    "garbage": "protocol",               # not HTTP at all
    "short_content_length": "truncated", # Content-Length larger than the body
    "not_an_object": "protocol",         # JSON of the wrong shape (a list, a number)
    "reset_before_headers": "reset",     # a TCP reset instead of an answer
    "no_answer": "timeout",              # nothing until the first-byte timeout
}
ERROR_KINDS = {"http_4xx", "http_429", "http_5xx", "connect", "timeout", "reset", "stream_error", "truncated",
               "empty", "protocol", "cancelled"}
MODELS = {"chat": "gpt-4o-mini", "messages": "claude-3-5-sonnet", "gemini": "gemini-2.0-flash"}


def test_the_table_covers_every_case():
    assert set(EXPECTED) == set(CASES) and len(CASES) >= 10
    assert set(EXPECTED.values()) - {None} <= ERROR_KINDS


@pytest.fixture(scope="module")
def bad() -> Iterator[BadGateway]:
    with BadGateway() as gw:
        yield gw


def combos() -> list[tuple[str, str, str]]:
    out = []
    for case, (modes, _h) in CASES.items():
        for endpoint in ("chat", "messages", "gemini"):
            for mode in (PLAIN, SSE, ARRAY):
                if mode in modes and (mode != ARRAY or endpoint == "gemini"):
                    out.append((case, endpoint, mode))
    return out


def one_call(base: str, case: str, endpoint: str, mode: str) -> tuple[Any, Any]:
    spec = CallSpec(endpoint=endpoint, model=MODELS[endpoint], name="x", prompt="Hello", max_tokens=8,
                    stream=mode != PLAIN, stream_format=mode if endpoint == "gemini" and mode != PLAIN else None)
    total = 1.5 if case == "keepalive_only" else 30.0
    transport = Transport(f"{base}/{case}/", Timeouts(connect_s=3, first_byte_s=0.5, idle_s=1.0, total_s=total))
    dialect = DIALECTS[endpoint]
    reader = dialect.Reader((mode if endpoint == "gemini" else "sse") if spec.stream else None)
    try:
        wire = dialect.build(spec)
        Profile().apply(wire, spec, "bad-key")
        return transport.send(wire, reader, spec.stream, False), reader
    finally:
        transport.close()


@pytest.mark.serial  # every case at once against timeouts: runs alone (make test)
def test_each_bad_answer_is_classified_by_the_transport(bad):
    """Every case against every dialect and mode it applies to, all at once (gevent), straight through Transport."""
    cases = combos()
    jobs = {c: gevent.spawn(one_call, bad.url, *c) for c in cases}
    gevent.joinall(list(jobs.values()), timeout=150)
    wrong = []
    for (case, endpoint, mode), job in jobs.items():
        assert job.successful(), (case, endpoint, mode, job.exception)  # nothing escaped Transport.send
        out, reader = job.value
        if out.error_kind != EXPECTED[case] or (out.error_kind and not out.error):
            wrong.append((case, endpoint, mode, out.error_kind, out.error))
        if case == "ok":
            assert reader.usage and reader.usage["output"] == 2 and reader.has_content
    assert not wrong, wrong
    assert len(cases) > 90
    msgs = {(c, e, m): jobs[(c, e, m)].value[0].error for c, e, m in cases}
    assert "gzip" in msgs[("gzip", "chat", SSE)]
    assert "text/html" in msgs[("html", "chat", PLAIN)]
    assert str(MAX_BODY_BYTES) in msgs[("huge", "chat", SSE)]
    assert "502" in msgs[("error_502_text", "messages", PLAIN)]
    assert all("bad-key" not in (msgs[("error_echoes_key", e, m)] or "") for _c, e, m in cases)
    assert "[redacted]" in msgs[("error_echoes_key", "gemini", SSE)]
    sent = [e["bytes"] for e in bad.log() if e["case"] == "huge"]
    assert len(sent) == 7
    # the client stopped reading at its 32 MB cap and closed: the server got rid of the cap plus what the
    # kernel buffers on both ends held (up to tcp_rmem's max + tcp_wmem's max), never the 100 MB offered
    assert max(sent) < HUGE_BYTES * 0.8


@pytest.fixture(scope="module")
def mixed_run(bad, tmp_path_factory) -> dict[str, Any]:
    """One `ttbench run` against the rotating bad gateway: every case meets the load generator."""
    tmp = tmp_path_factory.mktemp("badrun")
    before = len(bad.log())
    scenario = write_scenario(tmp / "bad.yaml", {
        "name": "bad-gateway", "seed": 5, "users": 12, "spawn_rate": 12, "duration": "8s", "stop_timeout": "10s",
        "think_time": {"min_s": 0, "max_s": 0.02},
        "timeouts": {"connect_s": 2, "first_byte_s": 1, "idle_s": 1, "total_s": 3},
        "retry": {"max_attempts": 2, "base_s": 0.01, "cap_s": 0.05, "budget": 100000},
        "defaults": {"prompt_tokens": 10, "output_tokens": 8},
        "mix": [{"endpoint": "chat", "weight": 1, "stream": 0.5},
                {"endpoint": "messages", "weight": 1, "stream": 0.5},
                {"endpoint": "gemini", "weight": 1, "stream": 0.7, "json_array": 0.5}]})
    out = tmp / "run"
    res = ttbench("run", str(scenario), "--target", f"{bad.url}/mix/", "--out", str(out), "--max-spend", "0.5",
                  env=dict(os.environ, TT_API_KEY="bad-gateway-key"), timeout=90)
    return {"res": res, "out": out, "log": bad.log()[before:]}


def test_the_run_goes_on_and_records_every_bad_answer(mixed_run):
    res, out, log = mixed_run["res"], mixed_run["out"], mixed_run["log"]
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout, res.stderr[-3000:]
    recs = records(out)
    by_attempt = {r["attempt_id"]: r for r in recs}
    assert len(by_attempt) == len(recs)
    met = Counter(e["case"] for e in log)
    assert set(met) == set(CASES), set(CASES) - set(met)  # every bad answer met the load generator
    wrong, cut = [], 0
    for e in log:
        rec = by_attempt.get(e["attempt_id"])
        assert rec is not None, e  # every attempt that reached the gateway is recorded
        if rec["error_kind"] == "cancelled":
            cut += 1  # the end of the run cut it
            continue
        if rec["error_kind"] != EXPECTED[e["case"]]:
            wrong.append((e["case"], e["dialect"], e["mode"], rec["error_kind"], rec["error"]))
        assert rec["ok"] == (EXPECTED[e["case"]] is None)
    assert not wrong, wrong[:10]
    assert cut <= 12
    assert len(recs) == len(log)  # and no record of an attempt the gateway never saw
    ok = [r for r in recs if r["ok"]]
    assert len(ok) >= met["ok"] - cut and ok  # calls keep succeeding between the bad answers
    assert max(r["t_start"] for r in ok) > min(r["t_start"] for r in recs if not r["ok"])
    assert all(e["bytes"] < HUGE_BYTES * 0.8 for e in log if e["case"] == "huge")
    summary = json.loads((out / "summary.json").read_text())
    errors = summary["metrics"]["overall"]["errors"]
    assert {"protocol", "truncated", "empty", "reset", "http_5xx", "timeout"} <= set(errors)
    assert not (out / "locust_failures.csv").read_text().count("Traceback")
    for path in (p for p in out.rglob("*") if p.is_file()):  # the gateway echoed the key into its errors; no artifact repeats it
        assert b"bad-gateway-key" not in path.read_bytes(), path.name
