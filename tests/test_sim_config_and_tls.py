"""Bad simulator configs fail in one line with exit 2; TLS with a test CA."""

from __future__ import annotations

import ssl
import subprocess
import sys

import httpx
import pytest
import trustme

from ttbench.simproc import SimProcess

from .helpers import CHAT, auth

pytestmark = pytest.mark.timeout(60)


def run_sim(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ttbench", "sim", "--port", "0", *args],
                          capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize(
    "text,needle",
    [
        ("faults:\n  rate: 0.5\n  wieghts: {}\n", "faults.wieghts: unknown key"),
        ("defaults:\n  chat:\n    slots: many\n", "defaults.chat.slots: expected a number"),
        ("defaults:\n  chat:\n    decode_tokens_per_s: -5\n", "decode_tokens_per_s: must not be negative"),
        ("faults:\n  rate: 0.2\n  weights: {gremlins: 1}\n", "faults.weights.gremlins: unknown kind"),
        ("faults:\n  rate: 1.5\n  weights: {reset: 1}\n", "faults.rate: must be between 0 and 1"),
        ("faults:\n  rate: 0.2\n", "faults.weights: rate is 0.2 but no kind has a weight"),
        ("billing_errors:\n  quota: {double_charge: 2.5}\n", "billing_errors.quota.double_charge: expected a whole"),
        ("models:\n  my-model: {kind: chat}\n", "models.my-model: no price in the price sheet"),
        ("models:\n  gpt-4o: {kind: video}\n", "models.gpt-4o.kind: unknown kind"),
        ("seed: [1]\n", "seed: expected a number"),
        ("- just\n- a list\n", "expected a mapping at the top level"),
        ("faults: {rate: 0.1\n", "invalid YAML"),
        ("prices: nowhere.yaml\n", "nowhere.yaml: cannot read the price sheet"),
    ],
)
def test_bad_config_is_one_line_exit_2(tmp_path, text, needle):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    res = run_sim("--config", str(cfg))
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert needle in lines[0]
    assert "bad.yaml" in lines[0] or "nowhere.yaml" in lines[0]
    assert "Traceback" not in res.stderr


def test_binary_and_missing_config_files(tmp_path):
    blob = tmp_path / "blob.yaml"
    blob.write_bytes(b"\x00\x01\x02binary")
    res = run_sim("--config", str(blob))
    assert res.returncode == 2 and "binary content" in res.stderr and len(res.stderr.splitlines()) == 1
    res = run_sim("--config", str(tmp_path / "absent.yaml"))
    assert res.returncode == 2 and "absent.yaml: cannot read the simulator config" in res.stderr
    bad = tmp_path / "no-such-folder" / "truth.jsonl"
    res = run_sim("--truth", str(bad))
    assert res.returncode == 2 and res.stderr.strip() == f"ttbench: error: {bad}: cannot open for writing: " \
        "No such file or directory"


def test_tls_needs_a_trusted_ca(tmp_path):
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file, ca_file = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    ca.cert_pem.write_to_path(str(ca_file))
    with SimProcess(extra_args=["--tls-cert", str(cert_file), "--tls-key", str(key_file)]) as sim:
        assert sim.url.startswith("https://127.0.0.1:")
        with pytest.raises(httpx.ConnectError):
            httpx.post(sim.url + "/v1/chat/completions", json=CHAT, headers=auth(sim))
        trusted = ssl.create_default_context(cafile=str(ca_file))
        r = httpx.post(sim.url + "/v1/chat/completions", json=CHAT, headers=auth(sim), verify=trusted)
        assert r.status_code == 200
        insecure = httpx.post(sim.url + "/v1/chat/completions", json=CHAT, headers=auth(sim), verify=False)
        assert insecure.status_code == 200


def test_tls_flags_go_together():
    res = run_sim("--tls-cert", "x.pem")
    assert res.returncode == 2 and "--tls-cert and --tls-key go together" in res.stderr


def test_the_event_loop_is_asyncio_unless_uvloop_is_asked_for(monkeypatch):
    """asyncio's own loop by default; `--loop uvloop` or TTBENCH_SIM_LOOP=uvloop picks uvloop (a dependency here),
    which serves the same answers; an unknown name is one line, exit 2."""
    with SimProcess() as sim:
        assert sim.admin("/_sim/stats").json()["event_loop"] == "asyncio"
    with SimProcess(extra_args=["--loop", "uvloop"]) as sim:
        assert sim.admin("/_sim/stats").json()["event_loop"] == "uvloop"
        body = dict(CHAT, stream=True, max_tokens=12, ignore_eos=True)
        r = httpx.post(sim.url + "/v1/chat/completions", headers=auth(sim), json=body)
        assert r.status_code == 200 and r.text.endswith("data: [DONE]\n\n") and r.text.count("data: ") == 12 + 3
    monkeypatch.setenv("TTBENCH_SIM_LOOP", "uvloop")
    with SimProcess() as sim:
        assert sim.admin("/_sim/stats").json()["event_loop"] == "uvloop"
    monkeypatch.setenv("TTBENCH_SIM_LOOP", "trio")
    res = run_sim()
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert "TTBENCH_SIM_LOOP): expected one of asyncio, uvloop, got 'trio'" in res.stderr
