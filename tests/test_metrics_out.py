"""Live metrics out: a real Prometheus scrapes a run's endpoint, and an OTLP/HTTP receiver gets its OTel export."""

from __future__ import annotations

import bisect
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from locustfiles.telemetry import LATENCY_BUCKETS_S, Telemetry
from ttformats.calls import call_ttft_ms

from .otlp_receiver import OtlpReceiver
from .runs import ROOT, free_port, records, ttbench, write_scenario

pytestmark = pytest.mark.timeout(180)

SIM = {"defaults": {"chat": {"base_ms": 20, "ttft_jitter_ms": 40, "prefill_ms_per_token": 0,
                             "decode_tokens_per_s": 400, "slots": 64, "queue": 64,
                             "output_tokens": {"min": 8, "max": 24}}}}
SCENARIO = {
    "name": "metrics-out", "seed": 11, "target": "sim", "sim": {"config": SIM}, "users": 6, "spawn_rate": 6,
    "duration": "10s", "stop_timeout": "5s", "defaults": {"prompt_tokens": 20, "output_tokens": 16},
    "mix": [{"endpoint": "chat", "weight": 1, "stream": 1.0}],
}


def _summary(out: Path) -> dict[str, Any]:
    return json.loads((out / "summary.json").read_text())


def _ttfts_s(recs: list[dict[str, Any]]) -> list[float]:
    """The report's TTFT population: successful streamed calls (not dry runs), from their first attempt's start."""
    first: dict[str, float] = {}
    for r in recs:
        first[r["call_id"]] = min(first.get(r["call_id"], r["t_start"]), r["t_start"])
    return sorted(call_ttft_ms(first[r["call_id"]], r["t_start"], r["first_content_ms"]) / 1000.0 for r in recs
                  if r["final"] and r["ok"] and r["stream"] and not r["dry_run"] and r["first_content_ms"] is not None)


def _tolerance(values: list[float], q: float) -> tuple[float, float]:
    """How far histogram_quantile may be from numpy's percentile, in two parts: the width of the bucket holding the
    sample at rank ceil(q*n) (PromQL interpolates inside it), and the spread of the samples numpy interpolates
    between."""
    n = len(values)
    rank = q * n
    lo, hi = max(1, math.floor(rank)), min(n, math.ceil(rank) + 1)
    x = values[min(n, math.ceil(rank)) - 1]
    bounds = [0.0, *LATENCY_BUCKETS_S]
    i = bisect.bisect_left(bounds, x)  # bucket (bounds[i-1], bounds[i]]: Prometheus' le is inclusive
    width = bounds[i] - bounds[i - 1] if i < len(bounds) else math.inf
    return width, values[hi - 1] - values[lo - 1]


@pytest.fixture
def prometheus(tmp_path: Path) -> Any:
    """A real Prometheus scraping 127.0.0.1:<metrics port> every second; yields (its URL, the metrics port)."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus is not installed (apt-get install prometheus; .ci/run does)")
    metrics_port, web_port = free_port(), free_port()
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(json.dumps({  # JSON is YAML
        "global": {"scrape_interval": "1s", "scrape_timeout": "900ms"},
        "scrape_configs": [{"job_name": "ttbench", "scrape_interval": "1s", "scrape_timeout": "900ms",
                            "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}]}]}))
    proc = subprocess.Popen([binary, f"--config.file={cfg}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{web_port}"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    url = f"http://127.0.0.1:{web_port}"
    try:
        deadline = time.time() + 30
        while True:
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"prometheus did not start: {proc.stderr.read().decode()[-2000:] if proc.stderr else ''}")
            time.sleep(0.2)
        yield url, metrics_port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _query(url: str, promql: str, at: float | None = None) -> list[dict[str, Any]]:
    params = {"query": promql, **({"time": f"{at:.3f}"} if at is not None else {})}
    body = httpx.get(f"{url}/api/v1/query", params=params, timeout=10).json()
    assert body["status"] == "success", body
    return body["data"]["result"]


def _scalar(url: str, promql: str, at: float) -> float:
    result = _query(url, promql, at)
    assert len(result) == 1, (promql, result)
    return float(result[0]["value"][1])


@pytest.mark.serial  # TTFT percentiles against bucket widths: runs alone (make test)
def test_prometheus_scrapes_the_run_and_agrees_with_the_report(prometheus, tmp_path):
    url, metrics_port = prometheus
    scenario = write_scenario(tmp_path / "metrics-out.yaml", SCENARIO)
    out = tmp_path / "run"
    res = ttbench("run", str(scenario), "--out", str(out), "--metrics-port", str(metrics_port),
                  "--metrics-linger", "3")
    assert res.returncode == 0, res.stderr[-2000:]
    # the endpoint is gone now (a failed scrape marks the series stale): read them at the last good scrape
    ups = _query(url, 'up{job="ttbench"}[5m]')
    assert ups, "Prometheus never scraped the endpoint"
    good = [float(t) for t, v in ups[0]["values"] if v == "1"]
    assert len(good) >= 5, good
    last = max(good)
    recs = records(out)
    summary = _summary(out)["metrics"]["overall"]
    # the counters: every call in records.jsonl, by outcome
    call_ids = {r["call_id"] for r in recs}
    assert _scalar(url, "sum(ttbench_calls_total)", last) == len(call_ids) > 100
    assert _scalar(url, "sum(gen_ai_client_operation_duration_seconds_count)", last) == summary["calls"]
    assert _scalar(url, 'sum(ttbench_calls_total{ttbench_outcome="ok"})', last) == summary["successes"]
    assert _scalar(url, "sum(ttbench_attempts_total)", last) == summary["attempts"]
    harness = json.loads((out / "harness.json").read_text())
    assert _scalar(url, "sum(ttbench_spend_total)", last) == pytest.approx(float(harness["spend"]["money"]), rel=1e-9)
    assert _scalar(url, 'sum(gen_ai_client_token_usage_sum{gen_ai_token_type="output"})', last) == \
        summary["output_tokens"]
    # TTFT p95: PromQL's estimate from the buckets against the report's exact figure
    ttfts = _ttfts_s(recs)
    exact = summary["ttft_ms"]["p95"] / 1000.0
    assert summary["ttft_ms"]["n"] == len(ttfts) == _scalar(
        url, "sum(gen_ai_client_operation_time_to_first_chunk_seconds_count)", last)
    estimate = _scalar(url, "histogram_quantile(0.95, sum by (le) "
                            "(gen_ai_client_operation_time_to_first_chunk_seconds_bucket))", last)
    width, spread = _tolerance(ttfts, 0.95)
    # the comparison stays sharp: a 5 ms bucket below 200 ms, and neighbouring samples a few ms apart at most (a
    # loaded box spreads the tail: 1.2 ms was seen once in CI)
    assert width <= 0.005 + 1e-9 and spread <= 0.005, (width, spread)
    tol = width + spread
    assert abs(estimate - exact) <= tol, (estimate, exact, tol)
    _dashboard_queries_run(url, last)
    print(f"TTFT p95: PromQL {estimate * 1000:.2f} ms, report {exact * 1000:.2f} ms, tolerance {tol * 1000:.2f} ms; "
          f"calls {len(call_ids)}; scrapes {len(good)}")


def _dashboard_queries_run(url: str, at: float) -> None:
    """Every query of the Grafana dashboard is valid PromQL, and every panel but the error ones shows data."""
    dash = json.loads((ROOT / "dashboards" / "ttbench-grafana.json").read_text())
    assert dash["templating"]["list"][0]["type"] == "datasource"
    for panel in dash["panels"]:
        shown = []
        for target in panel["targets"]:
            expr = target["expr"].replace("$__rate_interval", "5s")
            for var in ("$instance", "$model", "$endpoint", "$tenant"):
                expr = expr.replace(var, ".*")
            shown += _query(url, expr, at)  # an invalid query fails in _query
        assert shown or "rror" in panel["title"], panel["title"]  # this run has no errors


def test_otel_export_reaches_an_otlp_receiver(tmp_path):
    scenario = write_scenario(tmp_path / "metrics-out.yaml", {**SCENARIO, "duration": "5s"})
    out = tmp_path / "run"
    with OtlpReceiver() as receiver:
        env = dict(os.environ, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
                   OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf", OTEL_TRACES_EXPORTER="none",
                   OTEL_LOGS_EXPORTER="none", OTEL_METRIC_EXPORT_INTERVAL="1000", OTEL_SERVICE_NAME="ttbench-test")
        res = ttbench("run", str(scenario), "--out", str(out), "--otel", env=env)
        assert res.returncode == 0, res.stderr[-2000:]
        exports = receiver.metrics("gen_ai.client.operation.duration")
        ttft = receiver.metrics("gen_ai.client.operation.time_to_first_chunk")
        locust_own = receiver.metrics("locust.client.duration")
    summary = _summary(out)["metrics"]["overall"]
    assert len(exports) >= 3, len(exports)  # periodic exports during the run, and the last one at its end
    final = exports[-1]
    assert final.unit == "s"
    points = final.histogram.data_points
    assert sum(p.count for p in points) == summary["calls"] > 30
    assert all(list(p.explicit_bounds) == pytest.approx(LATENCY_BUCKETS_S) for p in points)
    attrs = {kv.key: kv.value.string_value for kv in points[0].attributes}
    assert attrs["gen_ai.operation.name"] == "chat" and attrs["gen_ai.request.model"]
    assert "error.type" not in attrs and "ttbench.tenant" not in attrs  # no value: no attribute
    assert sum(p.count for p in ttft[-1].histogram.data_points) == summary["ttft_ms"]["n"]
    assert locust_own, "Locust's own metrics go the same way"


def test_a_final_record_after_retries_counts_from_the_first_attempt():
    seen: list[tuple[str, float, dict[str, Any]]] = []

    class Out:
        def instrument(self, spec: Any, read: Any = None) -> Any:
            return None if spec.kind == "gauge" else (lambda v, a: seen.append((spec.name, v, a)))

    tel = Telemetry([Out()], lambda: 0.0)  # type: ignore[list-item]
    base = {"call_id": "c1", "endpoint": "chat", "model": "m", "stream": True, "dry_run": False, "tenant": None,
            "replayed": False, "chunks": None, "usage": None, "sent": True}
    tel.add({**base, "attempt": 1, "final": False, "ok": False, "error_kind": "http_5xx", "t_start": 100.0,
             "end_ms": 50.0, "first_content_ms": None})
    tel.add({**base, "attempt": 2, "final": True, "ok": True, "error_kind": None, "t_start": 100.5,
             "end_ms": 300.0, "first_content_ms": 100.0})
    got = {(name, round(v, 6)) for name, v, _ in seen}
    assert ("gen_ai.client.operation.duration", 0.8) in got  # 0.5 s before the retry + its 300 ms
    assert ("gen_ai.client.operation.time_to_first_chunk", 0.6) in got
    assert [name for name, _, _ in seen].count("ttbench.attempts") == 2
    assert [name for name, _, _ in seen].count("ttbench.retries") == 1
    assert [name for name, _, _ in seen].count("ttbench.calls") == 1
    assert not tel.open_calls


def _scrape_totals(text: str) -> dict[str, float]:
    """Sums over every label set, by sample name, of one scrape."""
    from prometheus_client.parser import text_string_to_metric_families

    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            totals[s.name] = totals.get(s.name, 0.0) + s.value
    return totals


def test_a_distributed_run_exports_from_the_master(tmp_path):
    scenario = write_scenario(tmp_path / "metrics-out.yaml", {**SCENARIO, "duration": "5s"})
    out, port = tmp_path / "run", free_port()
    proc = subprocess.Popen([sys.executable, "-m", "ttbench", "run", str(scenario), "--out", str(out),
                             "--processes", "2", "--metrics-port", str(port), "--metrics-linger", "3"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    last = ""
    try:
        while proc.poll() is None:
            try:
                last = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1).text
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        output = proc.stdout.read() if proc.stdout else ""
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output[-2000:]
    recs = records(out)
    assert len({r["worker"] for r in recs}) == 2  # both workers ran calls; the master exported them all
    totals = _scrape_totals(last)
    assert totals["ttbench_calls_total"] == len({r["call_id"] for r in recs}) > 30
    assert totals["gen_ai_client_operation_duration_seconds_count"] == _summary(out)["metrics"]["overall"]["calls"]
