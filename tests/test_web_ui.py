"""The web UI's LLM views, driven in headless Chromium; and a master with two workers as separate processes."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from analysis.report import analyze
from ttbench.simproc import SimProcess

from .runs import ROOT, free_port, jsonl, records, start_master_and_workers, write_scenario

pytestmark = pytest.mark.timeout(240)
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
DRIVER = shutil.which("chromedriver")


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"{url} did not come up")


@pytest.mark.skipif(CHROMIUM is None or DRIVER is None,
                    reason="no chromium/chromedriver here (.ci/run installs Debian's chromium and chromium-driver)")
def test_llm_views_update_live_in_the_browser(tmp_path):
    from selenium import webdriver
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    port = free_port()
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "ttbench", "ui", "scenarios/smoke.yaml", "--out", str(out),
                             "--web-port", str(port), "-t", "60s", "-u", "4"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1400,1000", f"--user-data-dir={tmp_path / 'profile'}"):
        opts.add_argument(arg)
    opts.binary_location = CHROMIUM
    driver = None
    try:
        wait_http(f"http://127.0.0.1:{port}/")
        driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
        driver.set_page_load_timeout(30)
        driver.get(f"http://127.0.0.1:{port}/")
        time.sleep(1.5)
        driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()  # START, from the UI's own form
        time.sleep(1.0)
        next(t for t in driver.find_elements(By.CSS_SELECTOR, "[role=tab]") if t.text.strip().upper() == "LLM").click()
        seen: list[str] = []
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                rows = [r.text for r in driver.find_elements(By.CSS_SELECTOR, "table tr")]
            except StaleElementReferenceException:  # the table was redrawn while it was read
                continue
            all_row = next((r for r in rows if r.startswith("All ")), "")
            cells = all_row.split()
            if len(cells) >= 6 and int(cells[1]) > 0 and any("." in c for c in cells[2:]):
                seen.append(all_row)
                if len(seen) >= 2 and seen[-1] != seen[0]:
                    break  # the views update while the run goes on
            time.sleep(1.0)
        assert len(seen) >= 2 and seen[-1] != seen[0], seen
        deadline = time.time() + 20  # every dialect of the mix gets its rows, the Responses API's included
        while time.time() < deadline and not any(r.startswith("responses ") for r in rows):
            time.sleep(1.0)
            try:
                rows = [r.text for r in driver.find_elements(By.CSS_SELECTOR, "table tr")]
            except StaleElementReferenceException:  # the table was redrawn while it was read
                continue
        assert any(r.startswith("responses ") for r in rows), rows
        live_rows = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/ttbench/live.json").read())
        assert "responses" in json.dumps(live_rows)
        calls, ttft_p50 = int(seen[-1].split()[1]), float(seen[-1].split()[4])
        assert calls > 0 and ttft_p50 > 0
        shots = ROOT / "test-output"
        shots.mkdir(exist_ok=True)
        driver.save_screenshot(str(shots / "web-ui-llm.png"))
        next(b for b in driver.find_elements(By.TAG_NAME, "button") if b.text.strip().upper() == "STOP").click()
        deadline = time.time() + 40
        link = None
        while time.time() < deadline and link is None:
            live = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/ttbench/live.json").read())
            link = live["report"]
            time.sleep(0.5)
        assert link == "/ttbench/report"  # when the run stops, its report is linked
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}{link}").read().decode()
        assert "ttbench report" in page
        driver.get(f"http://127.0.0.1:{port}{link}")
        driver.save_screenshot(str(shots / "web-ui-report.png"))
    finally:
        if driver is not None:
            driver.quit()
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output[-3000:]
    assert (out / "ledger.jsonl").exists() and (out / "summary.json").exists()


def test_master_and_two_workers_as_separate_processes(tmp_path):
    fast = {"defaults": {"chat": {"base_ms": 5, "decode_tokens_per_s": 300}}}
    scenario = write_scenario(tmp_path / "dist.yaml", {
        "name": "dist", "seed": 8, "users": 6, "spawn_rate": 6, "duration": "6s", "stop_timeout": "20s",
        "defaults": {"prompt_tokens": 20, "output_tokens": 16},
        "mix": [{"endpoint": "chat", "stream": 0.8}, {"endpoint": "messages", "stream": 0.8},
                {"endpoint": "gemini", "stream": 0.8}, {"endpoint": "embeddings"}]})
    from .conftest import write_config

    out = tmp_path / "run"
    with SimProcess(config=write_config(tmp_path / "sim.yaml", fast, fast=False), api_key="dist-key") as sim:
        master, workers = start_master_and_workers(scenario, out, sim.url, "dist-key", 6, "dist-run")
        try:
            output, _ = master.communicate(timeout=120)
            for w in workers:
                w.communicate(timeout=60)
        finally:
            for p in (master, *workers):
                if p.poll() is None:
                    p.kill()
        truth = [e for e in json.loads("[" + ",".join(sim.admin("/_sim/truth").text.splitlines()) + "]")]
    assert master.returncode == 0, output[-3000:]
    recs = records(out)
    assert {r["worker"] for r in recs} == {0, 1}
    seen = {r["request_id"] for r in recs} | {r["attempt_id"] for r in recs}
    assert all(e["request_id"] in seen or e["client_attempt_id"] in seen for e in truth)  # the master has them all
    assert len(recs) >= len(truth) and len({r["attempt_id"] for r in recs}) == len(recs)
    live = json.loads((out / "harness.json").read_text())["live"]
    summary, _ = analyze(out)
    o = summary["metrics"]["overall"]
    assert live["calls"] == o["calls"] and live["ok"] == o["successes"] and live["failed"] == o["failures"]
    assert live["ttft_p50"] == pytest.approx(o["ttft_ms"]["p50"]) and live["ttft_p95"] == pytest.approx(o["ttft_ms"]["p95"])
    assert live["itl_p50"] == pytest.approx(o["itl_ms"]["p50"])
    assert jsonl(out / "records.jsonl")
