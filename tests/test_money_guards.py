"""Money guards and hopeless runs: the default spend cap against any target this run did not start, unpriced
models refused before load, one cap and one retry budget per run across worker processes, refused keys."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from decimal import Decimal

import pytest
import yaml
from aiohttp import web

from locustfiles.transport import proxy_for
from ttbench.simproc import SimProcess

from .conftest import FAST, write_config
from .runs import ROOT, records, ttbench, write_scenario

pytestmark = pytest.mark.timeout(150)

PRICES = ROOT / "gatewaysim" / "defaults" / "prices.yaml"
CHAT_ONLY = {"defaults": {"prompt_tokens": 20, "output_tokens": 12}, "mix": [{"endpoint": "chat"}]}


@pytest.fixture(scope="module")
def url_sim(tmp_path_factory) -> Iterator[SimProcess]:
    """A simulator this run did not start: to `ttbench run` it is just a URL."""
    cfg = write_config(tmp_path_factory.mktemp("urlsim") / "sim.yaml",
                       {"faults": {"rate": 0.0}})
    with SimProcess(config=cfg, seed=2) as proc:
        yield proc


def _env(sim: SimProcess) -> dict[str, str]:
    return dict(os.environ, TT_API_KEY=sim.api_key)


def _charges(sim: SimProcess, since: float) -> list[dict]:
    return [r for r in sim.ledger() if r["type"] == "charge" and r["time"] >= since]


def test_the_default_cap_holds_against_a_url_whatever_the_scenario_says(tmp_path, url_sim):
    prices = yaml.safe_load(PRICES.read_text())
    prices["models"]["gpt-4o-mini"] = {"input": "20000", "output": "20000"}  # 0.02 per token: ~0.64 a call
    sheet = tmp_path / "prices.yaml"
    sheet.write_text(yaml.safe_dump(prices))
    scenario = write_scenario(tmp_path / "s.yaml", {"name": "cap", "target": "sim", "users": 2, "duration": "30s",
                                                    **CHAT_ONLY})
    out = tmp_path / "run"
    started = time.time()
    res = ttbench("run", str(scenario), "--target", url_sim.url, "--prices", str(sheet), "--out", str(out),
                  env=_env(url_sim))
    assert res.returncode == 0, res.stderr[-2000:]
    assert time.time() - started < 25
    harness = json.loads((out / "harness.json").read_text())
    assert harness["spend"]["cap"] == "1.0" and "spend cap reached" in harness["stop_reason"]
    ok = [r for r in records(out) if r["ok"]]
    assert 2 <= len(ok) <= 4  # two calls reach 1.00; at most one more per user was in flight


def test_an_unpriced_model_is_refused_before_any_load(tmp_path, url_sim):
    scenario = write_scenario(tmp_path / "s.yaml", {
        "name": "unpriced", "users": 2, "duration": "5s", "defaults": {"prompt_tokens": 20, "output_tokens": 12},
        "mix": [{"endpoint": "chat", "models": ["gpt-4o-mini", "my-private-model"]}]})
    out = tmp_path / "run"
    since = time.time()
    res = ttbench("run", str(scenario), "--target", url_sim.url, "--out", str(out), env=_env(url_sim))
    assert res.returncode == 2
    line = res.stderr.strip().splitlines()[-1]
    assert "my-private-model has no price" in line and "--prices" in line
    assert not [e for e in url_sim.truth() if e["received"] >= since and e.get("endpoint") == "chat"]
    # a token-only cap needs no prices
    scenario2 = write_scenario(tmp_path / "s2.yaml", {
        "name": "tokens-only", "users": 1, "duration": "2s", "spend": {"max": "off", "max_tokens": 100000},
        "defaults": {"prompt_tokens": 20, "output_tokens": 12}, "mix": [{"endpoint": "chat"}]})
    res = ttbench("run", str(scenario2), "--target", url_sim.url, "--out", str(tmp_path / "run2"),
                  env=_env(url_sim))
    assert res.returncode == 0, res.stderr[-2000:]


def test_two_processes_share_one_spend_cap(tmp_path, url_sim):
    cap = Decimal("0.0004")  # about 30 calls of 20 in / 12 out at gpt-4o-mini's price
    scenario = write_scenario(tmp_path / "s.yaml", {"name": "shared-cap", "users": 4, "spawn_rate": 4,
                                                    "duration": "30s", **CHAT_ONLY})
    out = tmp_path / "run"
    since = time.time()
    res = ttbench("run", str(scenario), "--target", url_sim.url, "--max-spend", str(cap), "--processes", "2",
                  "--out", str(out), env=_env(url_sim))
    assert res.returncode == 0, res.stderr[-2000:]
    harness = json.loads((out / "harness.json").read_text())
    assert harness["spend"]["held_by"] == "master" and "spend cap reached" in harness["stop_reason"]
    charges = _charges(url_sim, since)
    spent = sum(Decimal(c["amount"]) for c in charges)
    biggest = max(Decimal(c["amount"]) for c in charges)
    bound = 4 * biggest  # the stated bound: one call in flight per user when the cap (a worker's lease) ran out
    assert cap <= spent <= cap + bound, (spent, cap, bound)
    assert spent < 2 * cap  # a cap per worker would let the run spend twice as much


def test_two_processes_share_one_retry_budget(tmp_path, url_sim):
    sim = dict(FAST, faults={"rate": 0.6, "weights": {"server_error": 1}})
    scenario = write_scenario(tmp_path / "s.yaml", {
        "name": "shared-budget", "sim": {"config": sim},
        "users": 4, "spawn_rate": 4, "duration": "5s",
        "retry": {"max_attempts": 10, "base_s": 0.01, "cap_s": 0.02, "budget": 12}, **CHAT_ONLY})
    out = tmp_path / "run"
    res = ttbench("run", str(scenario), "--processes", "2", "--out", str(out))
    assert res.returncode == 0, res.stderr[-2000:]
    recs = records(out)
    retried = sum(1 for r in recs if r["attempt"] > 1)
    failed = sum(1 for r in recs if not r["ok"])
    assert failed > 40  # far more failures than the budget covers
    assert retried == 12
    harness = json.loads((out / "harness.json").read_text())
    assert harness["retry_budget"]["held_by"] == "master" and harness["retry_budget"]["spent"] == 12


# keys refused mid-run -----------------------------------------------------------------------------------
class RevokingGateway:
    """A gateway that serves `good` chat calls, then refuses the key (a revoked key, a firewall)."""

    def __init__(self, good: int) -> None:
        self.good = good
        self.served = 0
        self.loop = asyncio.new_event_loop()
        self.port = 0
        ready = threading.Event()
        threading.Thread(target=self._serve, args=(ready,), daemon=True).start()
        ready.wait(10)
        self.url = f"http://127.0.0.1:{self.port}"

    async def chat(self, request: web.Request) -> web.Response:
        await request.read()
        self.served += 1
        if self.served > self.good:
            return web.json_response({"error": {"type": "invalid_request_error", "code": "invalid_api_key",
                                                "message": "Incorrect API key provided"}}, status=401)
        await asyncio.sleep(0.02)
        return web.json_response({"id": "c", "object": "chat.completion", "model": "gpt-4o-mini",
                                  "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi there"},
                                               "finish_reason": "stop"}],
                                  "usage": {"prompt_tokens": 20, "completion_tokens": 2, "total_tokens": 22}},
                                 headers={"x-request-id": f"req-{self.served}"})

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": []})

    def _serve(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_get("/v1/models", self.models)
        runner = web.AppRunner(app)
        self.loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        ready.set()
        self.loop.run_forever()


def test_a_key_refused_mid_run_stops_it_with_exit_3_and_a_report(tmp_path):
    gw = RevokingGateway(good=30)
    scenario = write_scenario(tmp_path / "s.yaml", {"name": "revoked", "users": 4, "spawn_rate": 4,
                                                    "duration": "40s", **CHAT_ONLY})
    out = tmp_path / "run"
    started = time.time()
    res = ttbench("run", str(scenario), "--target", gw.url, "--gateway", "openai-compatible", "--out", str(out),
                  env=dict(os.environ, TT_API_KEY="sk-revoked-key-0001"))
    assert res.returncode == 3, res.stderr[-2000:]
    assert time.time() - started < 30
    assert "refused the API key on" in res.stderr
    assert (out / "report.html").is_file() and (out / "summary.json").is_file()
    recs = records(out)
    assert sum(r["ok"] for r in recs) == 30
    assert all(r["request_id"] == r["ids"]["x-request-id"] for r in recs if r["ok"])  # no X-TT header here
    assert sum(r["status"] == 401 for r in recs) < 60  # stopped, not hammering
    assert "sk-revoked-key-0001" not in "".join(p.read_text(errors="replace") for p in out.rglob("*") if p.is_file())


# the standard proxy variables ------------------------------------------------------------------------
def test_proxy_settings_follow_the_standard_variables(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://user:pw@proxy.example:3128")
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:8080")
    monkeypatch.setenv("NO_PROXY", "internal.example,127.0.0.1")
    assert proxy_for("https", "gateway.example") == ("proxy.example", 3128, "user", "pw")
    assert proxy_for("http", "gateway.example") == ("proxy.example", 8080, None, None)
    assert proxy_for("https", "internal.example") is None
    assert proxy_for("http", "127.0.0.1") is None


class ForwardProxy:
    """A minimal HTTP forward proxy on 127.0.0.1 that counts the requests it relays."""

    def __init__(self) -> None:
        self.requests: list[bytes] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            conn, _ = self.sock.accept()
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        head = b""
        while b"\r\n" not in head:
            data = conn.recv(65536)
            if not data:
                return conn.close()
            head += data
        line = head.split(b"\r\n", 1)[0]
        self.requests.append(line)
        target = line.split(b" ")[1]  # absolute form: http://host:port/path
        hostport = target.split(b"/")[2].decode()
        host, port = hostport.rsplit(":", 1)
        up = socket.create_connection((host, int(port)))
        up.sendall(head)

        def pipe(a: socket.socket, b: socket.socket) -> None:
            try:
                while data := a.recv(65536):
                    if a is conn and data.split(b" ", 1)[0] in (b"POST", b"GET"):
                        self.requests.append(data.split(b"\r\n", 1)[0])
                    b.sendall(data)
            except OSError:
                pass
            finally:
                for s in (a, b):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        threading.Thread(target=pipe, args=(up, conn), daemon=True).start()
        pipe(conn, up)


def test_calls_go_through_http_proxy(tmp_path, url_sim):
    proxy = ForwardProxy()
    scenario = write_scenario(tmp_path / "s.yaml", {"name": "proxied", "users": 2, "duration": "3s", **CHAT_ONLY})
    out = tmp_path / "run"
    env = dict(_env(url_sim), HTTP_PROXY=proxy.url, NO_PROXY="")
    env.pop("no_proxy", None)
    res = ttbench("run", str(scenario), "--target", url_sim.url, "--out", str(out), env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    ok = [r for r in records(out) if r["ok"]]
    posts = [r for r in proxy.requests if r.startswith(b"POST " + url_sim.url.encode())]
    assert ok and len(posts) >= len(ok)


def test_a_client_certificate_the_simulator_requires(tmp_path):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("ttbench-client")
    paths = {}
    for name, blob in (("cert.pem", server.cert_chain_pems[0].bytes()), ("key.pem", server.private_key_pem.bytes()),
                       ("ca.pem", ca.cert_pem.bytes()), ("client.pem", client.cert_chain_pems[0].bytes()),
                       ("client-key.pem", client.private_key_pem.bytes())):
        (tmp_path / name).write_bytes(blob)
        paths[name] = str(tmp_path / name)
    cfg = write_config(tmp_path / "sim.yaml")
    with SimProcess(config=cfg, extra_args=["--tls-cert", paths["cert.pem"], "--tls-key", paths["key.pem"],
                                            "--tls-client-ca", paths["ca.pem"]]) as sim:
        base = {"name": "mtls", "users": 1, "duration": "2s", **CHAT_ONLY}
        good = write_scenario(tmp_path / "good.yaml", {**base, "tls": {
            "ca_file": "ca.pem", "client_cert": "client.pem", "client_key": "client-key.pem"}})
        res = ttbench("run", str(good), "--target", sim.url, "--out", str(tmp_path / "ok"), env=_env(sim))
        assert res.returncode == 0, res.stderr[-2000:]
        assert [r for r in records(tmp_path / "ok") if r["ok"]]
        bad = write_scenario(tmp_path / "bad.yaml", {**base, "tls": {"ca_file": "ca.pem"}})
        res = ttbench("run", str(bad), "--target", sim.url, "--out", str(tmp_path / "no"), env=_env(sim))
        assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    shutil.rmtree(tmp_path / "ok", ignore_errors=True)
