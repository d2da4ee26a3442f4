"""TLS against an https target: verification on by default, a CA from the scenario, and --insecure said loudly."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from ttbench.simproc import SimProcess

from .conftest import write_config
from .runs import records, ttbench, write_scenario

pytestmark = pytest.mark.timeout(120)

KEY = "ttb-tls-test-key-5c1d7e"
MIX = [{"endpoint": "chat", "stream": 0.5}, {"endpoint": "messages", "weight": 2, "stream": 0.5},
       {"endpoint": "gemini", "weight": 2, "stream": 0.5, "json_array": 0.5}, {"endpoint": "embeddings"}]


@pytest.fixture(scope="module")
def tls_sim(tmp_path_factory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file, ca_file = tmp / "cert.pem", tmp / "key.pem", tmp / "ca.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    ca.cert_pem.write_to_path(str(ca_file))
    cfg = write_config(tmp / "sim.yaml")
    with SimProcess(config=cfg, seed=3, api_key=KEY,
                    extra_args=["--tls-cert", str(cert_file), "--tls-key", str(key_file)]) as sim:
        assert sim.url.startswith("https://127.0.0.1:")
        yield {"sim": sim, "dir": tmp, "ca_file": ca_file}


def scenario(tmp: Path, name: str, **extra: Any) -> Path:
    return write_scenario(tmp / f"{name}.yaml", {"name": name, "users": 3, "duration": "3s", "stop_timeout": "5s",
                                                 "think_time": {"min_s": 0, "max_s": 0.05},
                                                 "defaults": {"prompt_tokens": 10, "output_tokens": 8},
                                                 "mix": MIX, **extra})


def run(tls_sim: dict[str, Any], path: Path, out: Path, *flags: str) -> Any:
    return ttbench("run", str(path), "--target", tls_sim["sim"].url, "--out", str(out), "--max-spend", "0.5",
                   *flags, env=dict(os.environ, TT_API_KEY=KEY), timeout=90)


def test_an_untrusted_certificate_is_one_clear_line_exit_2(tls_sim):
    path = scenario(tls_sim["dir"], "untrusted")
    t0 = time.time()
    res = run(tls_sim, path, tls_sim["dir"] / "untrusted-run")
    assert res.returncode == 2, res.stderr[-2000:]
    assert time.time() - t0 < 15
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    line = lines[0]
    assert line.startswith(f"ttbench: error: target {tls_sim['sim'].url}: TLS certificate verification failed")
    assert "tls.ca_file" in line and "--insecure" in line
    assert "Traceback" not in res.stderr and KEY not in res.stderr + res.stdout
    assert not (tls_sim["dir"] / "untrusted-run" / "records.jsonl").exists()  # no load was sent


def test_a_ca_file_that_is_no_certificate_is_one_line_exit_2(tls_sim):
    bogus = tls_sim["dir"] / "bogus.pem"
    bogus.write_text("not a certificate\n")
    path = scenario(tls_sim["dir"], "bogus", tls={"ca_file": "bogus.pem"})
    res = run(tls_sim, path, tls_sim["dir"] / "bogus-run")
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "tls.ca_file: cannot load" in lines[0] and "bogus.pem" in lines[0], res.stderr


def test_insecure_runs_and_says_so_everywhere(tls_sim):
    out = tls_sim["dir"] / "insecure-run"
    res = run(tls_sim, scenario(tls_sim["dir"], "insecure"), out, "--insecure")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "TLS certificate verification is OFF" in res.stderr
    recs = records(out)
    assert recs and sum(r["ok"] for r in recs) / len(recs) > 0.9
    assert {r["endpoint"] for r in recs if r["ok"]} == {"chat", "messages", "gemini", "embeddings"}
    assert json.loads((out / "run.json").read_text())["insecure"] is True
    summary = json.loads((out / "summary.json").read_text())
    assert summary["harness"]["insecure_tls"] is True
    assert "| TLS verification | OFF (--insecure) |" in (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    assert "TLS verification" in html and "OFF (--insecure)" in html


def test_the_scenarios_ca_file_makes_verification_pass(tls_sim):
    out = tls_sim["dir"] / "trusted-run"
    path = scenario(tls_sim["dir"], "trusted", tls={"ca_file": "ca.pem"})  # relative to the scenario file
    res = run(tls_sim, path, out)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "verification is OFF" not in res.stderr
    recs = records(out)
    assert recs and sum(r["ok"] for r in recs) / len(recs) > 0.9
    assert not any(r["error_kind"] == "connect" for r in recs)  # the calls verified the certificate too
    assert json.loads((out / "run.json").read_text())["insecure"] is False
    assert "| TLS verification | on |" in (out / "report.md").read_text()
