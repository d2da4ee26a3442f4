"""Metrics in: the Scraper against a real simulator and dead targets, and the summary of scrape.jsonl."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import gevent
import pytest

from analysis.scrape import scrape_summary, scrape_table
from locustfiles.profile import headers
from locustfiles.scrape import SIM_URL_ENV, Scraper

from .helpers import chat
from .runs import free_port, jsonl

pytestmark = pytest.mark.timeout(90)

SECRET = "s3cr3t-scrape-value-7f2e"
LITERAL = "literal-header-value-91ab"


def test_scraper_start_periodic_stop_and_deltas_equal_the_truth(make_sim, tmp_path, monkeypatch):
    sim = make_sim()
    monkeypatch.setenv("TT_SCRAPE_TOKEN", SECRET)
    secret_headers = headers("scrape", {"X-Token": {"env": "TT_SCRAPE_TOKEN"}, "X-Literal": LITERAL})
    dead = f"http://127.0.0.1:{free_port()}/metrics"
    spec = {"every_s": 0.3, "targets": [
        {"name": "sim", "url": "sim", "headers": secret_headers},
        {"name": "dead", "url": dead, "headers": secret_headers},
        {"name": "refused", "url": sim.url + "/_sim/stats", "headers": {}},  # 401 without the admin token
        {"name": "not-metrics", "url": sim.url + "/_sim/health", "headers": {}},  # JSON, not Prometheus text
        {"name": "no-env", "url": sim.url + "/metrics", "headers": headers("s", {"X-K": {"env": "TT_UNSET_9"}})},
    ]}
    monkeypatch.delenv("TT_UNSET_9", raising=False)
    scraper = Scraper(spec, tmp_path, env={SIM_URL_ENV: sim.url}, timeout_s=2)
    scraper.start()
    started = jsonl(tmp_path / "scrape.jsonl")  # the start read is taken before start() returns: no call races it
    assert sorted((ln["target"], ln["phase"]) for ln in started) == sorted((t["name"], "start") for t in spec["targets"])
    for _ in range(4):
        assert chat(sim).status_code == 200
    gevent.sleep(0.75)  # two periodic reads at least
    for _ in range(3):
        assert chat(sim).status_code == 200
    scraper.stop()
    assert not scraper.running

    text = (tmp_path / "scrape.jsonl").read_text()
    assert SECRET not in text and LITERAL not in text
    lines = jsonl(tmp_path / "scrape.jsonl")
    phases = Counter((ln["target"], ln["phase"]) for ln in lines)
    assert phases[("sim", "start")] == 1 and phases[("sim", "stop")] == 1 and phases[("sim", "periodic")] >= 2
    assert all(ln["ok"] and ln["error"] is None for ln in lines if ln["target"] == "sim")
    first = next(ln for ln in lines if ln["target"] == "sim")
    assert ["gatewaysim_slots", {"model": "gpt-4o-mini", "pool": "shared"}, 16.0] in first["samples"]
    assert first["types"]["gatewaysim_requests"] == "counter" and first["types"]["gatewaysim_slots"] == "gauge"
    assert "gatewaysim_requests_total" not in first["types"]  # no request yet: the family has no sample
    for name in ("dead", "refused", "not-metrics", "no-env"):
        mine = [ln for ln in lines if ln["target"] == name]
        assert len(mine) == len([ln for ln in lines if ln["target"] == "sim"])  # never stopped the others
        assert all(not ln["ok"] and ln["error"] and "\n" not in ln["error"] and ln["samples"] == [] for ln in mine)
    assert all("HTTP 401" == ln["error"] for ln in lines if ln["target"] == "refused")
    assert all("ConnectError" in ln["error"] for ln in lines if ln["target"] == "dead")
    assert all("TT_UNSET_9" in ln["error"] for ln in lines if ln["target"] == "no-env")

    summary = scrape_summary(tmp_path)
    assert summary is not None
    sim_t = summary["targets"]["sim"]
    assert sim_t["ok"] == sim_t["scrapes"] and set(sim_t["phases"]) == {"start", "periodic", "stop"}
    series = {(s["metric"], tuple(sorted(s["labels"].items()))): s for s in sim_t["series"]}
    truth = sim.truth()
    assert series[("gatewaysim_requests_total", (("endpoint", "chat"), ("status", "200")))]["delta"] == 7 == len(truth)
    out_tokens = sum(e["usage"]["output_tokens"] for e in truth)
    assert series[("gatewaysim_tokens_total", (("model", "gpt-4o-mini"), ("type", "output")))]["delta"] == out_tokens
    slots = series[("gatewaysim_slots", (("model", "gpt-4o-mini"), ("pool", "shared")))]
    assert slots["type"] == "gauge" and slots["min"] == slots["max"] == slots["last"] == slots["mean"] == 16
    assert summary["targets"]["dead"]["ok"] == 0 and summary["targets"]["dead"]["series"] == []
    tables = scrape_table(summary)
    assert tables[0][0] == "Scraped metrics: targets"
    assert [t[0] for t in tables[1:]] == ["Scraped metrics: sim"]  # only targets that answered get a table
    for _, header, rows in tables:
        assert all(len(r) == len(header) and all(isinstance(c, str) for c in r) for r in rows)
    assert SECRET not in json.dumps(summary) + json.dumps(tables)


def test_sim_target_without_a_simulator_is_skipped_with_one_warning(tmp_path, capsys):
    scraper = Scraper({"every_s": 1, "targets": [{"name": "sim", "url": "sim", "headers": {}}]}, tmp_path, env={})
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "scrape target sim" in err and SIM_URL_ENV in err
    scraper.start()
    scraper.stop()
    assert not (tmp_path / "scrape.jsonl").exists()


def write(path: Path, lines: list[dict]) -> None:
    path.write_text("".join(json.dumps(ln) + "\n" for ln in lines))


def line(t: float, samples: list, ok: bool = True, types: dict | None = None) -> dict:
    return {"target": "x", "t": t, "phase": "periodic", "ok": ok, "error": None if ok else "boom",
            "samples": samples if ok else [], "types": types or {"c_total": "counter", "g": "gauge"}}


def test_counter_resets_late_series_and_failed_reads(tmp_path):
    write(tmp_path / "scrape.jsonl", [
        line(0, [["c_total", {"a": "1"}, 5], ["g", {}, 2]]),
        line(1, [], ok=False),
        line(2, [["c_total", {"a": "1"}, 8], ["c_total", {"a": "2"}, 4], ["g", {}, 6]]),
        line(3, [["c_total", {"a": "1"}, 2], ["c_total", {"a": "2"}, 5], ["g", {}, 4]]),  # a.1 reset
        line(4, [["c_total", {"a": "1"}, 4], ["c_total", {"a": "2"}, 5], ["g", {}, "NaN"]]),
    ])
    t = scrape_summary(tmp_path)["targets"]["x"]
    assert (t["scrapes"], t["ok"], t["failed"], t["errors"]) == (5, 4, 1, {"boom": 1})
    s = {tuple(r["labels"].items()): r for r in t["series"] if r["metric"] == "c_total"}
    assert s[(("a", "1"),)]["delta"] == 3 + 2 + 2 and s[(("a", "1"),)]["resets"] == 1
    assert s[(("a", "2"),)]["delta"] == 5 and s[(("a", "2"),)]["resets"] == 0  # appeared later: counted from 0
    g = next(r for r in t["series"] if r["metric"] == "g")
    assert (g["min"], g["mean"], g["max"], g["last"], g["n"]) == (2, 4, 6, 4, 3)


def test_series_beyond_the_bound_are_summed_with_a_note(tmp_path):
    samples0 = [["c_total", {"i": str(i)}, 0] for i in range(6)] + [["g", {"i": str(i)}, i] for i in range(4)]
    samples1 = [["c_total", {"i": str(i)}, i] for i in range(6)] + [["g", {"i": str(i)}, 2 * i] for i in range(4)]
    write(tmp_path / "scrape.jsonl", [line(0, samples0), line(1, samples1)])
    t = scrape_summary(tmp_path, max_series=2)["targets"]["x"]
    assert t["series_total"] == 10 and "8 of 10 series summed" in t["note"]
    named = [r for r in t["series"] if "summed" not in r]
    summed = {r["metric"]: r for r in t["series"] if "summed" in r}
    assert len(named) == 2 and summed["c_total"]["summed"] == 4
    total_c = sum(r["delta"] for r in t["series"] if r["metric"] == "c_total")
    assert total_c == sum(range(6))  # nothing lost in the sum
    kept_g = [r for r in named if r["metric"] == "g"]
    if "g" in summed:
        assert summed["g"]["last"] + sum(r["last"] for r in kept_g) == 2 * sum(range(4))
    rows = scrape_table(scrape_summary(tmp_path, max_series=2))
    assert "summed" in rows[0][2][0][5]


def test_no_scrape_file_no_summary(tmp_path):
    assert scrape_summary(tmp_path) is None
    assert scrape_table(None) == []


def test_a_run_scrapes_the_simulator_and_the_report_shows_the_deltas(tmp_path):
    """`scrape: [{url: sim}]` in a real `ttbench run`: start, periodic and end reads; the simulator's request counter
    grew by exactly the attempts the records show, and the report has the table."""
    from .runs import records, ttbench, write_scenario

    path = write_scenario(tmp_path / "scrape.yaml", {
        "name": "scrape", "seed": 3, "target": "sim", "users": 4, "spawn_rate": 4, "duration": "5s",
        "scrape": {"every_s": 1, "targets": [{"url": "sim"}]},
        "mix": [{"endpoint": "chat", "models": ["gpt-4o-mini"], "stream": 0.5, "prompt_tokens": 20,
                 "output_tokens": 8}]})
    out = tmp_path / "run"
    res = ttbench("run", str(path), "--out", str(out), timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    lines = jsonl(out / "scrape.jsonl")
    assert {x["phase"] for x in lines} == {"start", "periodic", "stop"} and all(x["ok"] for x in lines)
    summary = json.loads((out / "summary.json").read_text())
    series = summary["scrape"]["targets"]["sim"]["series"]
    got = Counter()
    for s in series:
        if s["metric"] == "gatewaysim_requests_total":
            got[(s["labels"]["endpoint"], s["labels"]["status"])] += s["delta"]
    want = Counter((r["endpoint"], str(r["status"])) for r in records(out))
    assert got == want and sum(want.values()) > 20
    assert "Scraped metrics" in (out / "report.md").read_text()
