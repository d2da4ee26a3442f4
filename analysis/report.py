"""A run folder in, summary.json, report.md and a self-contained report.html out."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from ttformats.prices import PriceError, PriceSheet, load_price_sheet

from . import columnar, jsonfile, overhead, settings, trim, trust
from .attempt_facts import AttemptFacts, FactsScan
from .billing import Policy
from .billing_job import AuditJob
from .billing_stream import AUDIT_COLUMNS, audit_batches, read_ledger_stream
from .callscan import frame_batches, index_calls
from .capacity import SETTLE_S, stage_durations
from .capacity import analyse as capacity_analyse
from .conversations import by_turn
from .gates import check_names, evaluate
from .limits import Replay, limits_report
from .load import InputError, LoadReport, load_jsonl
from .metrics import SLO, Options, build_calls, finite
from .metrics_scan import compute_scan
from .records import load_records
from .scrape import scrape_summary, scrape_table
from .tenants import isolation, tenant_metrics

BATCH_ROWS = 65_536  # records analysed at a time
SUMMARY_VERSION = 4  # 2: gates[].n/min_samples/insufficient, capacity settle/drain/early stop, harness workers; 3: tenants, limits, isolation;
# 4: timing, per-call ITL figures, itl_ms / added_chunk_ms null (with why) under summary timing
UNTRUSTED = "the billing audit cannot be trusted: "
FINDINGS_SHOWN = 20  # rate-limit findings listed in the report per kind (summary.json has them all)
BOTTLENECK_CPU_PCT = 90.0
BOTTLENECK_LAG_P99_MS = 100.0
BOTTLENECK_TIMING_P99_MS = 10.0


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


TIMING_COLUMNS = ["ok", "stream", "dry_run", "replayed", "chunks_n", "request_id", "t_start", "chunk_first_us",
                  "chunk_us"]


def _timing_error(source: Any, truth: list[dict[str, Any]]) -> dict[str, Any] | None:
    """First content chunk: client receive time minus the simulator's write time (ms), over batches of records."""
    if not truth:
        return None
    by_rid = {e["request_id"]: e for e in truth}
    errs = []
    for b in source(TIMING_COLUMNS):
        f = b.frame
        sel = (f["ok"].to_numpy(dtype=bool) & f["stream"].to_numpy(dtype=bool) & ~f["dry_run"].to_numpy(dtype=bool)
               & ~f["replayed"].to_numpy(dtype=bool) & (f["chunks_n"].to_numpy() > 0))
        if b.chunk_offsets is None or b.chunk_values is None or not sel.any():
            continue
        rids = f["request_id"].to_numpy(dtype=object)
        starts = f["t_start"].to_numpy(dtype=np.float64)
        firsts = f["chunk_first_us"].to_numpy(dtype=np.float64)  # a summary-timing record's first delta
        off, vals = b.chunk_offsets, b.chunk_values
        for i in np.flatnonzero(sel).tolist():
            e = by_rid.get(rids[i])
            if not e or (off[i + 1] == off[i] and np.isnan(firsts[i])):
                continue
            written = [t for t, n in zip(e.get("chunk_times") or [], e.get("chunk_tokens") or [], strict=False) if n]
            if written:
                first = vals[off[i]] if off[i + 1] > off[i] else firsts[i]
                first_ms = float(np.float64(first) / 1000.0)  # as decode_chunk_column gives it
                errs.append((starts[i] + first_ms / 1000.0 - written[0]) * 1000.0)
    if not errs:
        return None
    a = np.array(errs)
    return {"n": int(a.size), "p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)),
            "max_ms": float(a.max())}


def _workers(h: dict[str, Any]) -> list[dict[str, Any]]:
    """harness.json's workers (a distributed run's master), each with its CPU mean and peak (% of a core)."""
    out = []
    for w in h.get("workers") or []:
        if not isinstance(w, dict):
            continue
        arr = w.get("arrivals") if isinstance(w.get("arrivals"), dict) else None
        out.append({"client_id": w.get("client_id"), "worker_index": w.get("worker_index"),
                    "records": w.get("records"), "cpu_percent_mean": w.get("cpu_percent_mean"),
                    "cpu_percent_peak": w.get("cpu_percent_peak"), "arrivals": arr})
    return out


def harness_health(source: Any, facts: AttemptFacts, run_dir: Path, scenario: dict[str, Any],
                   metrics: dict[str, Any], truth: list[dict[str, Any]]) -> dict[str, Any]:
    """The load generator's own figures (per worker in a distributed run), and a loud warning when it was the
    bottleneck."""
    h = _read_json(run_dir / "harness.json")
    lag = facts.lag
    cpu_pct = None  # the local process, or the master
    if h.get("cpu_s") is not None and h.get("wall_s"):
        cpu_pct = 100.0 * h["cpu_s"] / h["wall_s"]
    workers = _workers(h)
    peaks = [float(w["cpu_percent_peak"]) for w in workers if isinstance(w["cpu_percent_peak"], int | float)]
    peak_worker = h.get("peak_worker_cpu_percent")
    if peak_worker is None and peaks:
        peak_worker = max(peaks)
    arrivals = h.get("arrivals") or {}
    target_rate = None
    arr = scenario.get("arrivals") or {}
    duration = metrics.get("duration_s") or 0
    if not scenario.get("stages"):
        if arr.get("process") in ("constant", "poisson", "gamma"):
            target_rate = float(arr.get("rate") or 0)
        elif arr.get("process") == "onoff" and (arr.get("on_s") or 0) + (arr.get("off_s") or 0) > 0:
            target_rate = float(arr.get("rate") or 0) * arr["on_s"] / (arr["on_s"] + arr["off_s"])
        elif scenario.get("trace") and arrivals.get("offered") and duration:
            target_rate = arrivals["offered"] / duration
    achieved = (facts.first_attempt_calls / duration) if duration else None
    timing = _timing_error(source, truth)
    reasons = []
    if cpu_pct is not None and cpu_pct >= BOTTLENECK_CPU_PCT:
        reasons.append(f"{'master' if workers else 'client'} CPU {cpu_pct:.0f}% of a core")
    hot = [w for w in workers if isinstance(w["cpu_percent_peak"], int | float)
           and w["cpu_percent_peak"] >= BOTTLENECK_CPU_PCT]
    for w in hot:
        reasons.append(f"worker {w['worker_index']} CPU peaked at {w['cpu_percent_peak']:.0f}% of a core")
    if not hot and peak_worker is not None and float(peak_worker) >= BOTTLENECK_CPU_PCT:
        reasons.append(f"a worker's CPU peaked at {float(peak_worker):.0f}% of a core")
    if h.get("cpu_warning"):
        reasons.append("Locust reported high CPU on a worker")
    if lag and lag["p99"] > BOTTLENECK_LAG_P99_MS:
        reasons.append(f"schedule lag p99 {lag['p99']:.0f} ms")
    if timing and timing["p99_ms"] > BOTTLENECK_TIMING_P99_MS:
        reasons.append(f"TTFT timing error p99 {timing['p99_ms']:.1f} ms against the simulator's truth")
    return {
        "client_cpu_percent": cpu_pct,
        "peak_worker_cpu_percent": peak_worker,
        "workers": workers,
        "resplits": [r for r in h.get("resplits") or [] if isinstance(r, dict)],
        "schedule_lag_ms": lag,
        "arrivals_offered": arrivals.get("offered"),
        "dropped_arrivals": arrivals.get("dropped", 0),
        "target_rate_rps": target_rate,
        "achieved_rate_rps": achieved,
        "ttft_timing_error": timing,
        "retry_budget": h.get("retry_budget"),
        "stop_reason": h.get("stop_reason"),
        "early_stop": h.get("early_stop") if isinstance(h.get("early_stop"), dict) else None,
        "insecure_tls": _read_json(run_dir / "run.json").get("insecure", False),
        "lost_workers": [w for w in h.get("lost_workers") or [] if isinstance(w, dict)],
        "bottleneck_warning": ("WARNING: the load generator, not the gateway, was the bottleneck: " +
                               "; ".join(reasons)) if reasons else None,
    }


def analyze(run_dir: str | Path, ledger: str | None = None, prices: str | None = None,
            ledger_token: str | None = None, ledger_mapping: str | None = None,
            ledger_headers: list[str] | None = None,
            ledger_header_envs: list[str] | None = None) -> tuple[dict[str, Any], int]:
    """Analyse a run folder; writes summary.json, report.md, report.html; returns (summary, exit code).

    `ledger_headers` ('Name: value') and `ledger_header_envs` (VARIABLE holding 'Name: value', or
    Name=VARIABLE) go with a ledger URL and are never written anywhere."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError(f"{run_dir}: not a run folder")
    trim.system_pool()
    scenario_path = run_dir / "scenario.yaml"
    try:
        scenario = yaml.safe_load(scenario_path.read_text()) if scenario_path.exists() else {}
    except yaml.YAMLError:
        raise InputError(f"{scenario_path}: invalid YAML") from None
    scenario = scenario if isinstance(scenario, dict) else {}
    gates_cfg = scenario.get("gates") or {}
    check_names(gates_cfg, str(scenario_path))
    an = settings.check_analysis(scenario.get("analysis"), f"{scenario_path}: analysis")
    ledger_cfg = settings.resolve(scenario.get("ledger") or {}, ledger, ledger_mapping, ledger_headers,
                                  ledger_header_envs, base=run_dir, where=f"{scenario_path}: ledger")
    opts = Options(warmup_s=float(an.get("warmup_s", 0)), slo=SLO.from_mapping(an.get("slo")))
    lr = LoadReport()
    records_path = run_dir / "records.jsonl"
    col = columnar.ensure(run_dir, lr) if records_path.exists() else None
    if col is None:
        lr.warnings.append(f"{run_dir}: no records.jsonl")
    try:
        return _analyze(run_dir, col, lr, scenario, an, opts, gates_cfg, ledger_cfg, prices, ledger_token)
    finally:
        if col is not None:
            col.close()


def _analyze(run_dir: Path, col: columnar.Columnar | None, lr: LoadReport, scenario: dict[str, Any],
             an: dict[str, Any], opts: Options, gates_cfg: dict[str, Any], ledger_cfg: settings.LedgerSettings,
             prices: str | None, ledger_token: str | None) -> tuple[dict[str, Any], int]:
    """analyze() once the settings are read: the records in batches from their columnar copy."""
    frame: list[pd.DataFrame] = []

    def whole() -> pd.DataFrame:
        """Every record in one frame, as load_records gives it: only for what needs every record at once."""
        if not frame:
            if col is None:
                from .records import COLUMNS

                frame.append(pd.DataFrame(columns=list(COLUMNS)))
            else:
                frame.append(load_records(run_dir / "records.jsonl", LoadReport()))
        return frame[0]

    def source(columns: list[str]) -> Any:
        if col is None:
            return frame_batches(whole(), BATCH_ROWS)(columns)
        return col.batches(columns, rows=BATCH_ROWS)

    rows = col.rows if col is not None else 0
    harness = _read_json(run_dir / "harness.json")
    price_path = Path(prices) if prices else run_dir / "prices.yaml"
    try:
        sheet: PriceSheet | None = load_price_sheet(price_path) if price_path.exists() else None
    except PriceError as exc:
        raise InputError(str(exc)) from None
    ledger_warnings: list[str] = []
    stream, ledger_cfg = read_ledger_stream(run_dir, ledger_cfg, ledger_token, ledger_warnings)
    if stream is not None and sheet is None:
        stream.close()
        raise InputError(f"{price_path}: a ledger needs a price sheet (--prices)")
    job: AuditJob | None = None
    try:
        if stream is not None and sheet is not None and col is not None:  # the audit beside the metrics
            lost = {int(w["worker_index"]) for w in harness.get("lost_workers") or []
                    if w.get("worker_index") is not None}
            job = AuditJob(run_dir, stream, sheet, Policy.from_mapping(an.get("billing")), lost, col)
        return _summarise(run_dir, col, lr, scenario, an, opts, gates_cfg, ledger_cfg, harness, rows, sheet,
                          price_path, stream, ledger_warnings, job, source, whole)
    finally:
        if job is not None:
            job.close()
        if stream is not None:
            stream.close()


def _summarise(run_dir: Path, col: columnar.Columnar | None, lr: LoadReport, scenario: dict[str, Any],
               an: dict[str, Any], opts: Options, gates_cfg: dict[str, Any], ledger_cfg: settings.LedgerSettings,
               harness: dict[str, Any], rows: int, sheet: PriceSheet | None, price_path: Path, stream: Any,
               ledger_warnings: list[str], job: AuditJob | None, source: Any, whole: Any) -> tuple[dict[str, Any], int]:
    """The figures, the audit's result, summary.json and the reports."""
    idx = index_calls(source, opts.warmup_s)
    fscan = FactsScan(idx)  # gathered in the metrics' pass
    figdata: dict[str, Any] = {}
    m = compute_scan(source, opts, dropped=(harness.get("arrivals") or {}).get("dropped", 0), figures=figdata,
                     idx=idx, also=fscan)
    if not fscan.fed:  # the metrics found no calls to read
        fscan.read(source)
    facts = fscan.finish(source)
    figs = _metric_figures(figdata, m)  # drawn while the audit may still run in its helper
    # the per-call frame, only for what needs every call: stages, conversations, tenants, isolation
    need_calls = bool(stage_durations(scenario)) or bool(an.get("isolation")) or facts.turns or facts.tenants
    calls = build_calls(whole(), opts.warmup_s) if need_calls and not m["empty"] else None
    summary: dict[str, Any] = {
        "schema": "ttbench.summary", "version": SUMMARY_VERSION, "run": _read_json(run_dir / "run.json"),
        "scenario": scenario.get("name"), "empty": m["empty"], "warnings": list(lr.warnings),
        "metrics": m, "billing": None, "capacity": None,
    }
    if m["empty"]:
        summary["warnings"].append("the run has no completed calls: nothing to measure")
    gateway = _read_json(run_dir / "gateway.json") if (run_dir / "gateway.json").exists() else None
    summary["gateway"] = gateway
    overall = m.get("overall") or {}
    if overall.get("dry_runs_ignored"):
        summary["warnings"].append(
            f"{overall['dry_runs_ignored']} dry runs were answered with a real completion: the gateway ignored the "
            "dry-run header, made the calls and may bill them (they are audited as ordinary calls)")
    summary["warnings"] += ledger_warnings
    if stream is not None and sheet is not None:
        if job is not None:
            bill = job.result()
        else:  # no records: the audit of no attempts
            lost = {int(w["worker_index"]) for w in harness.get("lost_workers") or []
                    if w.get("worker_index") is not None}
            bill = audit_batches(lambda: (b.frame for b in source(list(AUDIT_COLUMNS))), stream, sheet,
                                 Policy.from_mapping(an.get("billing")), lost)
        bill["findings_total"] = len(bill["findings"])
        bill["ledger"] = ledger_cfg.describe()
        problems = trust.issues(facts, bill, summary["run"], gateway, price_path)
        bill["trusted"] = not problems
        bill["trust_issues"] = problems
        summary["warnings"] += [UNTRUSTED + p for p in problems]
        summary["billing"] = bill
    if calls is not None and not calls.empty:
        dropped_by_stage: dict[int, int] = {}
        early = harness.get("early_stop") if isinstance(harness.get("early_stop"), dict) else None
        summary["capacity"] = capacity_analyse(calls, scenario, opts.slo, dropped_by_stage,
                                               float(an.get("slo_share", 0.95)),
                                               float(an.get("settle_s", SETTLE_S)), early)
        if early is not None:
            summary["warnings"].append(f"the sweep stopped early after stage {early.get('stage')}: "
                                       f"{early.get('reason') or 'no reason given'}; later stages never ran")
    summary["conversations"] = by_turn(calls) if calls is not None and not calls.empty else None
    have_calls = calls is not None and not calls.empty
    summary["tenants"] = tenant_metrics(calls, whole(), m["duration_s"], opts.slo) if have_calls else None
    headers = col.headers() if col is not None and rows else {}
    lim_cfg = an.get("limits") or {}
    summary["limits"], replays = limits_report(whole(), run_dir / "records.jsonl", lim_cfg, headers) \
        if rows and (any(h[0] for h in headers.values()) or lim_cfg.get("tenants")) else (None, {})
    iso_cfg = an.get("isolation")
    summary["isolation"], iso_samples = isolation(calls if have_calls else whole().iloc[:0], whole(), iso_cfg) \
        if iso_cfg else (None, {})
    truth = load_jsonl(run_dir / "truth.jsonl")
    summary["harness"] = harness_health(source, facts, run_dir, scenario, m, truth) if rows else None
    summary["overhead"] = overhead.analyse(run_dir, scenario)
    summary["timing"] = timing_note(scenario, m, summary["overhead"])
    if summary["timing"]["missing"]:
        summary["warnings"].append(
            f"the run kept summary timing ({summary['timing']['summary_timing_calls']} streamed calls): figures "
            "that need every chunk's time are not given (" + ", ".join(summary["timing"]["missing"]) + "); "
            "inter-token latency is given per call only (" + ", ".join(summary["timing"]["per_call"]) + ")")
    for w in (summary["harness"] or {}).get("lost_workers", []):
        summary["warnings"].append(
            f"worker {w.get('worker_index')} was lost mid-run (client {w.get('client_id')}): up to "
            f"{w.get('possibly_missing_records')} of its records may be missing; the gateway's charges for its "
            "unfinished calls are attributed to it (billing.lost_worker_charges)")
    summary["scrape"] = scrape_summary(run_dir)
    summary["gates"] = evaluate(gates_cfg, summary)
    summary["gates_ok"] = all(g["ok"] for g in summary["gates"])
    summary = finite(summary)
    (run_dir / "summary.json").write_text(jsonfile.dumps(summary))
    figs.update(_figures(calls, summary))
    figs.update(_limit_figures(replays, iso_samples, summary.get("isolation")))
    figs.update(_overhead_figures(run_dir, summary.get("overhead")))
    (run_dir / "report.md").write_text(render_md(summary, figs))
    (run_dir / "report.html").write_text(render_html(summary, figs))
    return summary, (0 if summary["gates_ok"] else 1)


def _plots() -> Any:
    """analysis.plots, imported when the first figure is drawn (matplotlib takes a while to import: the audit's
    helper starts sooner without it)."""
    from . import plots

    return plots


def _metric_figures(figdata: dict[str, Any], m: dict[str, Any]) -> dict[str, bytes]:
    """The figures of the metrics alone: TTFT CDF, latency and throughput over time, tokens/s per request."""
    plots = _plots()
    out = {}
    hist = figdata.get("tps_hist")
    for name, png in (("ttft_cdf", plots.ttft_cdf(figdata.get("ttft_cdf") or {})),
                      ("over_time", plots.over_time(m.get("timeseries", []))),
                      ("tokens_per_s", plots.tps_hist(*hist) if hist else None)):
        if png:
            out[name] = png
    return out


def _figures(calls: pd.DataFrame | None, summary: dict[str, Any]) -> dict[str, bytes]:
    """The figures that need the summary: capacity curve, billing findings, TTFT against input tokens."""
    plots = _plots()
    out = {}
    for name, png in (("capacity", plots.capacity_curve(summary["capacity"])),
                      ("billing", plots.billing_findings((summary["billing"] or {}).get("counts"))),
                      ("ttft_vs_input", plots.ttft_vs_input(calls) if summary.get("conversations") and calls is not None
                       else None)):
        if png:
            out[name] = png
    return out


def _overhead_figures(run_dir: Path, ov: dict[str, Any] | None) -> dict[str, bytes]:
    if not ov:
        return {}
    out = {}
    plots = _plots()
    for name, png in (("overhead_ttft", plots.overhead_ttft_cdf(overhead.samples(run_dir))),
                      ("overhead_load", plots.overhead_vs_load(ov.get("stages") or []))):
        if png:
            out[name] = png
    return out


def _overhead_tables(ov: dict[str, Any] | None) -> list[tuple[str, list[str], list[list[str]]]]:
    """The gateway overhead section: joins and counts, added figures per group (raw and net), per stage."""
    if not ov:
        return []
    j = ov["join"]
    out = [("Gateway overhead", ["figure", "value"], [
        ["attempts joined by X-Client-Attempt-ID / by prompt marker / not joined",
         f"{j['by_attempt_id']} / {j['by_marker']} / {j['unjoined']}"],
        ["upstream requests", _fmt(ov["upstream_requests"])],
        ["hidden upstream retries (upstream requests beyond one per attempt)", _fmt(ov["hidden_retries"])],
        ["answers with no upstream request (cache answers)", _fmt(ov["cache_answers"])],
        ["clocks", ov.get("clocks") or ""]])]
    rows = []
    names = (("added_ttfb_ms", "first byte"), ("added_ttft_ms", "TTFT"), ("added_chunk_ms", "per chunk"),
             ("added_e2e_ms", "E2E"))
    for key, g in ov["groups"].items():
        for metric, label in names:
            d, b = g[metric], g["baseline"][metric]
            if d is None or b is None:  # summary timing: no chunk times to pair
                rows.append([key, label, "–", "not available: " + (g.get(metric + "_missing") or
                             g["baseline"].get(metric + "_missing") or ""), "–", "–", "–"])
                continue
            if not d["n"] and not b["n"]:
                continue
            rows.append([key, label, _fmt(d["n"]), " / ".join(_fmt(d[k], " ms") for k in ("p50", "p95", "p99", "max")),
                         _fmt(b["n"]), _fmt(b["p50"], " ms"), _fmt(g["net_p50"][metric], " ms")])
    if rows:
        out.append(("Gateway overhead: added time per group (gateway raw; baseline = the harness's own share)",
                    ["group", "figure", "n", "gateway p50 / p95 / p99 / max", "baseline n", "baseline p50",
                     "net p50 (gateway - baseline)"], rows))
    if ov["stages"]:
        out.append(("Gateway overhead per stage", ["stage", "route", "offered rps", "attempts", "added TTFT p50",
                                                   "added E2E p50"],
                    [[str(s["stage"]), s["route"], _fmt(s["offered_rps"]), _fmt(s["attempts"]),
                      _fmt(s["added_ttft_p50_ms"], " ms"), _fmt(s["added_e2e_p50_ms"], " ms")] for s in ov["stages"]]))
    return out


def _limit_figures(replays: dict[str, Replay], samples: dict[str, Any],
                   iso: dict[str, Any] | None) -> dict[str, bytes]:
    out = {}
    plots = _plots()
    for name, png in (("ratelimit_remaining", plots.ratelimit_remaining(replays)),
                      ("ratelimit_tokens", plots.ratelimit_tokens(replays)),
                      ("isolation_ttft", plots.isolation_ttft(samples, (iso or {}).get("steady", ""),
                                                              (iso or {}).get("burst", "")))):
        if png:
            out[name] = png
    return out


def _fmt(v: Any, unit: str = "") -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.1f}{unit}" if abs(v) >= 10 else f"{v:,.3g}{unit}"
    return f"{v}{unit}"


def _epoch(t: Any) -> str:
    """An epoch time as UTC, or –."""
    if not isinstance(t, int | float) or isinstance(t, bool):
        return "–"
    import datetime as _dt

    return _dt.datetime.fromtimestamp(t, _dt.UTC).strftime("%H:%M:%S UTC")


def _pcts(d: dict[str, Any] | None, keys: tuple[str, ...]) -> str:
    return " / ".join(_fmt((d or {}).get(k)) for k in keys)


def _tenant_tables(summary: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """The Tenants, Rate limits and Isolation tables (those that have figures)."""
    out: list[tuple[str, list[str], list[list[str]]]] = []
    tenants = summary.get("tenants")
    if tenants:
        out.append(("Tenants", ["tenant", "calls", "successes", "error rate", "refusals: rate limit / quota",
                                "TTFT p50 / p95 / p99 ms", "E2E p50 / p95 ms", "requests/s", "output tokens/s",
                                "errors"],
                    [[label, _fmt(t["calls"]), _fmt(t["successes"]), _fmt(t["error_rate"]),
                      f"{t['refusals']['rate_limit']} / {t['refusals']['quota']}",
                      _pcts(t["ttft_ms"], ("p50", "p95", "p99")), _pcts(t["e2e_ms"], ("p50", "p95")),
                      _fmt(t["requests_per_s"]), _fmt(t["output_tokens_per_s"]),
                      ", ".join(f"{k} {v}" for k, v in t["errors"].items()) or "–"] for label, t in tenants.items()]))
    lim = summary.get("limits")
    if lim:
        rows, drift = [], []
        for label, t in lim["tenants"].items():
            refusals = f"{t['refusals']['rate_limit']} / {t['refusals']['quota']}"
            if not t["dimensions"]:
                rows.append([label, "–", "no limit known", _fmt(t["accepted_requests"]), "–", "–", refusals,
                             "–", "–"])
            for dim, d in t["dimensions"].items():
                ep = d["empty_to_first_429"]
                rows.append([
                    label, dim, f"{_fmt(d['limit'])}/min ({d['limit_source']})", _fmt(d["accepted"]),
                    _fmt(d["allowed"]), f"{_fmt(d['overshoot'])} ({_fmt(d['overshoot_pct'], ' %')})", refusals,
                    f"{d['early_refusals']} / {d['late_acceptances']}",
                    f"{ep['episodes']} ({ep['without_429']} without a 429): median {_fmt(ep['median_s'], ' s')}, "
                    f"max {_fmt(ep['max_s'], ' s')}"])
                rem, reset = d["drift"]["remaining"], d["drift"]["reset_s"]
                if rem["n"] or reset["n"]:
                    drift.append([label, dim, _fmt(max(rem["n"], reset["n"])),
                                  _pcts(rem, ("p50_abs", "p95_abs", "max_abs")),
                                  _pcts(reset, ("p50_abs", "p95_abs", "max_abs"))])
        out.append((f"Rate limits: conformance ({lim['accounting']} accounting)",
                    ["tenant", "dimension", "advertised limit", "accepted", "allowed over the span",
                     "overshoot (% of accepted)", "refusals: rate limit / quota",
                     "refused with room / accepted past the limit", "empty bucket to first 429"], rows))
        if drift:
            out.append(("Rate limits: header drift against the model (reported, never gated)",
                        ["tenant", "dimension", "headers", "remaining drift (absolute) p50 / p95 / max",
                         "reset drift (absolute) p50 / p95 / max s"], drift))
        counts = lim.get("finding_counts") or {}
        shown: dict[str, int] = {}
        frows = []
        for f in lim.get("findings") or []:
            shown[f["kind"]] = shown.get(f["kind"], 0) + 1
            if shown[f["kind"]] <= FINDINGS_SHOWN:
                frows.append([f["kind"], str(f["tenant"]), str(f["dimension"]), f["request_id"] or "–",
                              _finding_detail(f)])
        out.append(("Rate limits: findings (" + (", ".join(f"{k} {v}" for k, v in counts.items()) or "none") + ")",
                    ["finding", "tenant", "dimension", "request id", "detail"],
                    frows or [["none", "–", "–", "–", "no header or limit disagrees with the model"]]))
    iso = summary.get("isolation")
    if iso:
        ci = iso.get("ci")
        out.append((f"Isolation: {iso['steady']} while {iso['burst']} bursts", ["figure", "value"], [
            ["calls during the bursts (TTFT p95)",
             f"{iso['during']['n']} ({_fmt(iso['during']['ttft_p95_ms'], ' ms')})"],
            ["calls outside them (TTFT p95)",
             f"{iso['outside']['n']} ({_fmt(iso['outside']['ttft_p95_ms'], ' ms')})"],
            ["TTFT p95 ratio (during / outside)", _fmt(iso.get("ratio"))],
            [f"{100 * iso['confidence']:g}% bootstrap interval",
             f"{_fmt(ci[0])} – {_fmt(ci[1])}" if ci else (iso.get("reason") or "–")]]))
    return out


def _finding_detail(f: dict[str, Any]) -> str:
    d = f.get("detail") or {}
    if f["kind"] == "remaining_stuck":
        return f"reported {_fmt(d.get('reported'))}, the model at most {_fmt(d.get('model_at_most'))}"
    if f["kind"] == "reset_wrong":
        lo, hi = d.get("model_range_s") or (None, None)
        return f"reported {_fmt(d.get('reported_s'), ' s')}, the model {_fmt(lo)}–{_fmt(hi, ' s')}"
    return (f"{d.get('limit_source') or 'advertised'} limit {_fmt(d.get('advertised'))}, "
            f"enforced {d.get('enforced')} it (about {_fmt(d.get('estimated_limit'))}): "
            f"{d.get('early_refusals')} refusals with room, {d.get('late_acceptances')} calls accepted past the limit")


def _per_call_itl_rows(o: dict[str, Any]) -> list[list[str]]:
    """The per-call ITL figures (each call's own mean, p50, p99 and largest gap): p50 / p95 over the calls."""
    rows = []
    for key, label in (("itl_per_request_mean_ms", "ITL per call: mean gap, p50 / p95 over calls"),
                       ("itl_per_request_p50_ms", "ITL per call: median gap, p50 / p95 over calls"),
                       ("itl_per_request_p99_ms", "ITL per call: p99 gap, p50 / p95 over calls"),
                       ("itl_per_request_max_ms", "ITL per call: largest gap, p50 / p95 over calls")):
        d = o.get(key)
        if d is not None:
            rows.append([label, " / ".join(_fmt(d[k], " ms") for k in ("p50", "p95"))])
    return rows


def timing_note(scenario: dict[str, Any], metrics: dict[str, Any], ov: dict[str, Any] | None) -> dict[str, Any]:
    """What the records kept of chunk times, and which figures are per call or missing because of it."""
    o = metrics.get("overall") or {}
    summary_calls = int(o.get("summary_timing_calls") or 0)
    streamed = int((o.get("itl_per_request_mean_ms") or {}).get("n") or 0)
    cfg = (scenario.get("records") or {}) if isinstance(scenario.get("records"), dict) else {}
    kept = "summary" if summary_calls and summary_calls == streamed else "mixed" if summary_calls else \
        str(cfg.get("timing") or "full")
    missing = []
    if o.get("itl_ms") is None and summary_calls:
        missing.append("metrics.*.itl_ms")
    if ov and any(g.get("added_chunk_ms") is None for g in (ov.get("groups") or {}).values()):
        missing.append("overhead.groups.*.added_chunk_ms")
    return {"records": kept, "summary_timing_calls": summary_calls,
            "per_call": ["itl_per_request_mean_ms", "itl_per_request_p50_ms", "itl_per_request_p99_ms",
                         "itl_per_request_max_ms"],
            "missing": missing}


def _tables(summary: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) for every table of the report."""
    out: list[tuple[str, list[str], list[list[str]]]] = []
    m = summary["metrics"]
    if not summary["empty"]:
        o = m["overall"]
        out.append(("Overall", ["metric", "value"], [
            ["duration", _fmt(m["duration_s"], " s")], ["logical calls", _fmt(o["calls"])],
            ["attempts", _fmt(o["attempts"])], ["successes", _fmt(o["successes"])],
            ["error rate", _fmt(o["error_rate"])], ["retries", _fmt(o["retries"])], ["replays", _fmt(o["replays"])],
            ["dry runs answered for real (dry-run header ignored)", _fmt(o.get("dry_runs_ignored", 0))],
            ["streams answered in another framing", _fmt(o.get("framing_mismatches", 0))],
            ["dropped arrivals", _fmt(o["dropped_arrivals"])], ["requests/s", _fmt(o["requests_per_s"])],
            ["TTFT p50 / p95 / p99", " / ".join(_fmt(o["ttft_ms"][k], " ms") for k in ("p50", "p95", "p99"))],
            ["ITL p50 / p95 (pooled)", " / ".join(_fmt(o["itl_ms"][k], " ms") for k in ("p50", "p95"))
             if o.get("itl_ms") is not None else "not available (the run kept summary timing: see the per-call "
                                                 "ITL rows)"],
            *_per_call_itl_rows(o),
            ["TPOT p50 / p95", " / ".join(_fmt(o["tpot_ms"][k], " ms") for k in ("p50", "p95"))],
            ["E2E p50 / p95 / p99", " / ".join(_fmt(o["e2e_ms"][k], " ms") for k in ("p50", "p95", "p99"))],
            ["output tokens/s (aggregate)", _fmt(o["output_tokens_per_s"])],
            ["input tokens/s (aggregate)", _fmt(o["input_tokens_per_s"])],
            ["goodput (calls/s meeting every SLO)", _fmt(o["goodput_per_s"])],
            ["goodput share", _fmt(o["goodput_share"])],
        ]))
        rows = []
        for key, g in m["groups"].items():
            rows.append([key, _fmt(g["calls"]), _fmt(g["error_rate"]), _fmt(g["ttft_ms"]["p50"]),
                         _fmt(g["ttft_ms"]["p95"]),
                         _fmt(g["itl_ms"]["p50"]) if g.get("itl_ms") is not None else "n/a (summary timing)",
                         _fmt(g["e2e_ms"]["p50"]),
                         _fmt(g["e2e_ms"]["p95"]), _fmt(g["output_tokens_per_s_per_request"]["p50"]),
                         ", ".join(f"{k} {v}" for k, v in g["errors"].items()) or "–"])
        out.append(("Per endpoint, model and stream mode",
                    ["group", "calls", "error rate", "TTFT p50 ms", "TTFT p95 ms", "ITL p50 ms", "E2E p50 ms",
                     "E2E p95 ms", "out tok/s p50", "errors"], rows))
    out += _tenant_tables(summary)
    b = summary.get("billing")
    if b:
        joins = b.get("joins") or {}
        led = b.get("ledger") or {}
        out.append(("Billing accuracy", ["metric", "value"], [
            ["audit trusted", "yes" if b.get("trusted", True) else
             f"NO: {len(b.get('trust_issues') or [])} reasons (at the top of the report)"],
            ["ledger", f"{led.get('source') or '–'} (mapping {led.get('mapping') or '–'})"],
            ["charges joined (request id / attempt id / key / lost worker)",
             f"{_fmt(b.get('charges_joined'))} of {_fmt(b['charges'])} ("
             + " / ".join(str(joins.get(k, 0)) for k in ("request_id", "attempt_id", "idempotency_key",
                                                         "lost_worker")) + ")"],
            ["logical calls", _fmt(b.get("calls"))], ["correctly billed", _fmt(b.get("correct_calls"))],
            ["billing accuracy", _fmt(b.get("accuracy"))], ["charges", _fmt(b.get("charges"))],
            ["charged in total", f"{_fmt(b.get('charged_total'))} {b.get('currency') or ''}"],
            ["overcharged", f"{_fmt(b.get('overcharged'))} {b.get('currency') or ''}"],
            ["undercharged", f"{_fmt(b.get('undercharged'))} {b.get('currency') or ''}"],
            ["dry-run pairs (hold covers charge)", f"{(b.get('dry_run_pairs') or {}).get('pairs', 0)} "
                                                   f"({_fmt((b.get('dry_run_pairs') or {}).get('hold_covers_share'))})"],
        ] + [[f"findings: {k}", str(v)] for k, v in (b.get("counts") or {}).items()]
          + [[f"charges attributed to lost worker {w}", f"{v['charges']} ({v['amount']} {b.get('currency')})"]
             for w, v in (b.get("lost_worker_charges") or {}).items()]))
    conv = summary.get("conversations")
    if conv:
        out.append(("Conversations: TTFT by turn", ["turn", "calls", "TTFT p50 ms", "TTFT p95 ms", "input tokens",
                                                    "cached input tokens", "cached share"],
                    [[str(t["turn"]), str(t["calls"]), _fmt(t["ttft_ms"]["p50"]), _fmt(t["ttft_ms"]["p95"]),
                      _fmt(t["input_tokens_mean"]), _fmt(t["cached_input_tokens_mean"]), _fmt(t["cached_share"])]
                     for t in conv["by_turn"]]))
        if conv["by_context_length"]:
            out.append(("TTFT by context length", ["input tokens", "calls", "TTFT p50 ms", "TTFT p95 ms"],
                        [[c["input_tokens"], str(c["calls"]), _fmt(c["ttft_ms"]["p50"]), _fmt(c["ttft_ms"]["p95"])]
                         for c in conv["by_context_length"]]))
    c = summary.get("capacity")
    if c:
        rows = []
        for r in c["stages"]:
            ex = r.get("excluded") or {}
            excluded = f"{ex.get('settle', 0)} / {ex.get('drain', 0)}"
            if not r.get("ran", True):
                rows.append([str(r["stage"]), _fmt(r["offered_rps"]), _fmt(r["users"]), "not run", "–", "–", "–",
                             "–", "–", "–", excluded])
                continue
            rows.append([str(r["stage"]), _fmt(r["offered_rps"]), _fmt(r["users"]), _fmt(r["achieved_rps"]),
                         _fmt(r["served_share"]), _fmt(r["error_rate"]), str(r["rate_limited"]),
                         _fmt(r["ttft_p95_ms"]), _fmt(r["e2e_p95_ms"]), _fmt(r["goodput_share"]), excluded])
        settle = (c.get("definitions") or {}).get("settle_s")
        out.append(("Capacity per stage", ["stage", "offered req/s", "users", "achieved req/s", "served share",
                                           "error rate", "429s", "TTFT p95 ms", "E2E p95 ms", "goodput share",
                                           f"calls excluded: first {_fmt(settle)} s / drain"], rows))
        stop = c.get("early_stop")
        figures = [
            ["maximum sustainable throughput", _fmt(c["max_sustainable_rps"], " req/s")],
            ["latency knee (stage, offered)", _fmt((c["knee"] or {}).get("offered_rps"))],
            ["highest stage meeting the SLOs", json.dumps(c["at_slo"])]]
        if stop:
            not_run = ", ".join(map(str, stop.get("stages_not_run") or [])) or "none"
            figures.append(["sweep stopped early",
                            f"after stage {stop['stage']}: {stop.get('reason') or '–'} (not run: {not_run})"])
        out.append(("Capacity", ["figure", "value"], figures))
    h = summary.get("harness")
    if h:
        rows = [
            ["client CPU" + (" (master)" if h.get("workers") else ""), _fmt(h["client_cpu_percent"], " %")],
            ["schedule lag p50 / p99", " / ".join(_fmt((h["schedule_lag_ms"] or {}).get(k), " ms")
                                                  for k in ("p50", "p99"))],
            ["dropped arrivals", _fmt(h["dropped_arrivals"])],
            ["target / achieved rate", f"{_fmt(h['target_rate_rps'])} / {_fmt(h['achieved_rate_rps'])} req/s"],
            ["TTFT timing error vs truth p50 / p99 / max", " / ".join(
                _fmt((h["ttft_timing_error"] or {}).get(k), " ms") for k in ("p50_ms", "p99_ms", "max_ms"))],
            ["TLS verification", "OFF (--insecure)" if h["insecure_tls"] else "on"],
        ]
        if h.get("peak_worker_cpu_percent") is not None:
            rows.append(["peak worker CPU", _fmt(h["peak_worker_cpu_percent"], " %")])
        for w in h.get("workers") or []:
            arr = w.get("arrivals") or {}
            flag = " (BOTTLENECK)" if (w.get("cpu_percent_peak") or 0) >= BOTTLENECK_CPU_PCT else ""
            rows.append([f"worker {w.get('worker_index')} CPU mean / peak, records, arrivals offered / dropped",
                         f"{_fmt(w.get('cpu_percent_mean'), ' %')} / {_fmt(w.get('cpu_percent_peak'), ' %')}{flag}, "
                         f"{_fmt(w.get('records'))}, {_fmt(arr.get('offered'))} / {_fmt(arr.get('dropped'))}"])
        for r in h.get("resplits") or []:
            ranks = ", ".join(f"worker {k} → {v}" for k, v in (r.get("ranks") or {}).items())
            rows.append([f"arrivals re-split at +{_fmt(r.get('from_t'))} s",
                         f"{_fmt(r.get('workers'))} workers ({ranks or '–'})"])
        for w in h.get("lost_workers") or []:
            rows.append([f"worker {w.get('worker_index')} LOST", f"client {w.get('client_id')}; last shipment at "
                         f"{_epoch(w.get('last_shipment_at'))}; up to {_fmt(w.get('possibly_missing_records'))} "
                         "records may be missing"])
        out.append(("Harness health", ["figure", "value"], rows))
    out += _overhead_tables(summary.get("overhead"))
    out += scrape_table(summary.get("scrape"))
    if summary["gates"]:
        out.append(("Gates", ["gate", "threshold", "value", "samples (min)", "result", "why"],
                    [[g["gate"], f"{g['sense']} {g['threshold']}", _fmt(g["value"]),
                      f"{_fmt(g.get('n'))} ({_fmt(g.get('min_samples'))})",
                      ("not enough data" if g.get("insufficient") and g["ok"] else "pass" if g["ok"] else "FAIL"),
                      g.get("reason") or ""] for g in summary["gates"]]))
    return out


def _trust_issues(summary: dict[str, Any]) -> list[str]:
    b = summary.get("billing") or {}
    return list(b.get("trust_issues") or []) if b.get("trusted") is False else []


def render_md(summary: dict[str, Any], figs: dict[str, bytes]) -> str:
    """The report as Markdown (plots are in report.html)."""
    lines = [f"# ttbench report: {summary.get('scenario') or 'run'}", ""]
    issues = _trust_issues(summary)
    if issues:
        lines += ["> **WARNING: THE BILLING AUDIT CANNOT BE TRUSTED** (billing gates fail):", ">"]
        lines += [f"> - {i}" for i in issues] + [""]
    for w in summary["warnings"]:
        if not w.startswith(UNTRUSTED):
            lines += [f"> **warning:** {w}", ""]
    h = summary.get("harness") or {}
    if h.get("bottleneck_warning"):
        lines += [f"> **{h['bottleneck_warning']}**", ""]
    if summary["empty"]:
        lines += ["The run has no completed calls: nothing to measure.", ""]
    for title, header, rows in _tables(summary):
        lines += [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        lines.append("")
    if summary["gates"]:
        lines.append("All gates passed." if summary["gates_ok"] else "**Gates breached.**")
    return "\n".join(lines) + "\n"


def render_html(summary: dict[str, Any], figs: dict[str, bytes]) -> str:
    """The report as one self-contained HTML page with embedded plots."""
    e = html.escape
    parts = ["<!doctype html><html><head><meta charset='utf-8'>",
             f"<title>ttbench report: {e(str(summary.get('scenario') or 'run'))}</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;"
             "text-align:left;font-size:14px}th{background:#f3f3f3}.warn{background:#fff3cd;padding:8px;"
             "border:1px solid #e0c060}.bad{background:#f8d7da;padding:8px;border:1px solid #d08080}"
             "img{max-width:100%}</style></head><body>",
             f"<h1>ttbench report: {e(str(summary.get('scenario') or 'run'))}</h1>"]
    issues = _trust_issues(summary)
    if issues:
        parts.append("<div class='bad' id='billing-untrusted'><b>WARNING: THE BILLING AUDIT CANNOT BE TRUSTED</b> "
                     "(billing gates fail):<ul>" + "".join(f"<li>{e(i)}</li>" for i in issues) + "</ul></div>")
    for w in summary["warnings"]:
        if not w.startswith(UNTRUSTED):
            parts.append(f"<p class='warn'>warning: {e(w)}</p>")
    h = summary.get("harness") or {}
    if h.get("bottleneck_warning"):
        parts.append(f"<p class='bad'><b>{e(h['bottleneck_warning'])}</b></p>")
    if summary["empty"]:
        parts.append("<p>The run has no completed calls: nothing to measure.</p>")
    for title, header, rows in _tables(summary):
        parts.append(f"<h2>{e(title)}</h2><table><tr>" + "".join(f"<th>{e(c)}</th>" for c in header) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows]
        parts.append("</table>")
    titles = {"ttft_cdf": "TTFT CDF per endpoint", "over_time": "Latency and throughput over time",
              "tokens_per_s": "Output tokens/s per request", "capacity": "Capacity curve",
              "billing": "Billing findings", "ttft_vs_input": "TTFT against input tokens",
              "ratelimit_remaining": "Remaining requests: headers against the model",
              "ratelimit_tokens": "Accepted tokens against the limit", "isolation_ttft": "Isolation: TTFT CDF",
              "overhead_ttft": "Gateway overhead: added TTFT CDF (gateway against baseline)",
              "overhead_load": "Gateway overhead against offered load"}
    for name, png in figs.items():
        parts.append(f"<h2>{titles[name]}</h2><img alt='{name}' src='data:image/png;base64,"
                     f"{base64.b64encode(png).decode()}'>")
    if summary["gates"]:
        parts.append("<p><b>" + ("All gates passed." if summary["gates_ok"] else "Gates breached.") + "</b></p>")
    parts.append("</body></html>")
    return "\n".join(parts)
