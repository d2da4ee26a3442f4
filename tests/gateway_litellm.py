"""A real LiteLLM proxy (from `.venv-litellm`, made by `make test`) on 127.0.0.1 in front of a simulator."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from decimal import Decimal
from pathlib import Path
from typing import Any, Self

import httpx
import yaml

from ttbench.simproc import stop_process

ROOT = Path(__file__).resolve().parent.parent
LITELLM_VENV = ROOT / ".venv-litellm"
LITELLM_BIN = LITELLM_VENV / "bin" / "litellm"
COST_LOG_SOURCE = ROOT / "analysis" / "ledgers" / "litellm_cost_log.py"
#: The name LiteLLM imports the cost logger under: `ttbench_cost_log.py` next to the generated config.
COST_LOG_MODULE = "ttbench_cost_log"
ADMIN_TOKEN = "tt-sim-admin"
MILLION = Decimal(1_000_000)


class LiteLLMProxyError(RuntimeError):
    """LiteLLM is not installed, did not start, or is not the process serving its port."""


def offline_env() -> dict[str, str]:
    """The environment every LiteLLM here runs in: offline, no telemetry, no proxy for loopback."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "LITELLM_MASTER_KEY")}
    env.update(LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_TELEMETRY_DISABLED="true",
               NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost", PYTHONUNBUFFERED="1")
    return env


class ForkedProxy:
    """A LiteLLM process forked by the fork server (not this process's child): its pid, whether it still runs."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        """None while it runs; once gone, -1 (its exit code went to the fork server, which let the kernel reap it)."""
        if self.returncode is None:
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                self.returncode = -1
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Wait until it is gone (TimeoutExpired past `timeout`)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(["litellm"], timeout or 0.0)
            time.sleep(0.05)
        assert self.returncode is not None
        return self.returncode


class ForkServer:
    """tests/litellm_forkserver.py, started once (it imports LiteLLM's proxy, about 18 s of CPU) and asked to fork
    each proxy; set TTBENCH_LITELLM_FORK=0 to start every proxy as its own `litellm` process instead."""

    _lock = threading.Lock()
    _instance: ForkServer | None = None
    _failed = False

    def __init__(self) -> None:
        self.folder = tempfile.mkdtemp(prefix="ttbench-litellm-fork-")
        self.socket_path = os.path.join(self.folder, "fork.sock")
        self.log = open(os.path.join(self.folder, "server.log"), "wb")  # noqa: SIM115
        self.proc = subprocess.Popen([str(LITELLM_VENV / "bin" / "python"), str(ROOT / "tests" / "litellm_forkserver.py"),
                                      self.socket_path], stdout=subprocess.PIPE, stderr=self.log,
                                     stdin=subprocess.DEVNULL, env=offline_env(), cwd=self.folder)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != b"ready":
            self.close()
            raise LiteLLMProxyError(f"the LiteLLM fork server did not start: {line!r}")
        atexit.register(self.close)

    @classmethod
    def get(cls) -> ForkServer | None:
        """The one fork server (started on first use); None where it is switched off or could not start."""
        if os.environ.get("TTBENCH_LITELLM_FORK", "1") == "0" or not (LITELLM_VENV / "bin" / "python").exists():
            return None
        with cls._lock:
            if cls._instance is None and not cls._failed:
                try:
                    cls._instance = ForkServer()
                except (OSError, LiteLLMProxyError):
                    cls._failed = True
            return cls._instance

    def spawn(self, argv: list[str], env: dict[str, str], cwd: Path, log: Path) -> ForkedProxy:
        """A LiteLLM proxy forked with this command line, environment, folder and log file."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.connect(self.socket_path)
            conn.sendall(json.dumps({"argv": argv, "env": env, "cwd": str(cwd), "log": str(log)}).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                part = conn.recv(4096)
                if not part:
                    raise LiteLLMProxyError("the LiteLLM fork server closed the connection")
                data += part
        return ForkedProxy(int(json.loads(data)["pid"]))

    def close(self) -> None:
        """Stop the fork server (the proxies it forked are stopped by their owners)."""
        stop_process(self.proc)
        self.log.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port: int) -> bool:
    """Whether a listening socket could bind 127.0.0.1:port now."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _listening_inodes(port: int) -> set[str]:
    """Socket inodes listening on `port` (IPv4 and IPv6), from /proc/net."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def _group_pids(pgid: int) -> list[int]:
    """The pids of the process group `pgid` (read from /proc)."""
    pids: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if len(fields) > 2 and int(fields[2]) == pgid:
            pids.append(int(entry.name))
    return pids


def group_listens_on(pgid: int, port: int) -> bool | None:
    """Whether a process of group `pgid` owns the socket listening on `port`; None if /proc cannot tell."""
    if not Path("/proc/net/tcp").exists():
        return None
    inodes = _listening_inodes(port)
    if not inodes:
        return False
    targets = {f"socket:[{inode}]" for inode in inodes}
    for pid in _group_pids(pgid):
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) in targets:
                    return True
            except OSError:
                continue
    return False


def per_token(per_million: Any) -> float:
    """A price per 1M tokens (decimal string) as a price per token."""
    return float(Decimal(str(per_million or "0")) / MILLION)


def image_price(sheet: dict[str, Any]) -> float | None:
    """One per-image price from a price-sheet entry: 1024x1024 `auto`, else the first listed."""
    images = sheet.get("images") or {}
    if not images:
        return None
    sizes = images.get("1024x1024") or next(iter(images.values()))
    price = sizes.get("auto") or next(iter(sizes.values()))
    return float(Decimal(str(price)))


def provider_of(name: str, model: dict[str, Any]) -> str:
    """The LiteLLM provider a simulator model goes through: openai, anthropic or gemini."""
    owner = str(model.get("owned_by") or "")
    if name.startswith("claude") or owner == "anthropic":
        return "anthropic"
    if name.startswith("gemini") or owner == "google":
        return "gemini"
    return "openai"


def model_list(sim_url: str, sim_key: str, models: dict[str, Any], prices: dict[str, Any],
               model_prices: dict[str, tuple[float, float]] | None = None) -> list[dict[str, Any]]:
    """LiteLLM `model_list` entries for the simulator's models, priced from its sheet."""
    entries: list[dict[str, Any]] = []
    sheet_models = prices.get("models") or {}
    for name, model in models.items():
        kind = model.get("kind", "chat")
        sheet = sheet_models.get(name) or {}
        provider = provider_of(name, model) if kind == "chat" else "openai"
        api_base = {"openai": f"{sim_url}/v1", "anthropic": sim_url, "gemini": f"{sim_url}/v1beta"}[provider]
        params: dict[str, Any] = {"model": f"{provider}/{name}", "api_base": api_base, "api_key": sim_key,
                                  "input_cost_per_token": per_token(sheet.get("input")),
                                  "output_cost_per_token": per_token(sheet.get("output"))}
        if model_prices and name in model_prices:
            params["input_cost_per_token"], params["output_cost_per_token"] = model_prices[name]
        info: dict[str, Any] = {}
        if kind == "embedding":
            info["mode"] = "embedding"
        elif kind == "image":
            info["mode"] = "image_generation"
            per_image = image_price(sheet)
            if per_image is not None:
                # used by LiteLLM only when the upstream reports no usage: gpt-image-* are priced by tokens
                params["output_cost_per_image"] = per_image
        if sheet.get("cached_input") is not None:
            info["cache_read_input_token_cost"] = per_token(sheet["cached_input"])
        if sheet.get("cache_write") is not None:
            info["cache_creation_input_token_cost"] = per_token(sheet["cache_write"])
        entry: dict[str, Any] = {"model_name": name, "litellm_params": params}
        if info:
            entry["model_info"] = info
        entries.append(entry)
    return entries


class LiteLLMProxy:
    """LiteLLM proxy 1.108.7 on 127.0.0.1 in front of a simulator, with the ttbench cost log; a context manager."""

    def __init__(self, sim_url: str, sim_key: str, workdir: str | Path, prices: dict[str, Any] | None = None,
                 master_key: str = "sk-ttbench-litellm", cost_log: str | Path | None = None,
                 forward_headers: bool = True, extra_litellm_settings: dict[str, Any] | None = None,
                 model_prices: dict[str, tuple[float, float]] | None = None, startup_timeout: float = 60.0,
                 admin_token: str = ADMIN_TOKEN) -> None:
        self.sim_url = sim_url.rstrip("/")
        self.sim_key = sim_key
        self.workdir = Path(workdir)
        self.prices = prices
        self.master_key = master_key
        self.cost_log = Path(cost_log) if cost_log is not None else self.workdir / "litellm-cost-log.jsonl"
        self.forward_headers = forward_headers
        self.extra_litellm_settings = extra_litellm_settings or {}
        self.model_prices = model_prices
        self.startup_timeout = startup_timeout
        self.admin_token = admin_token
        self.config_path = self.workdir / "litellm-config.yaml"
        self.log_path = self.workdir / "litellm.log"
        self.port = 0
        self.url = ""
        self.proc: subprocess.Popen[bytes] | ForkedProxy | None = None

    def config(self) -> dict[str, Any]:
        """The LiteLLM config for the simulator's models and prices."""
        with httpx.Client(timeout=10, trust_env=False) as client:
            resp = client.get(self.sim_url + "/_sim/config", headers={"X-Admin-Token": self.admin_token})
        resp.raise_for_status()
        sim = resp.json()
        prices = self.prices if self.prices is not None else sim.get("prices") or {}
        models = sim["config"]["models"]
        settings: dict[str, Any] = {"num_retries": 0, "callbacks": f"{COST_LOG_MODULE}.cost_logger",
                                    **self.extra_litellm_settings}
        general: dict[str, Any] = {"master_key": self.master_key}
        if self.forward_headers:
            # LiteLLM 1.108.7 reads this from general_settings (litellm_settings has no such key)
            general["forward_client_headers_to_llm_api"] = True
        return {
            "model_list": model_list(self.sim_url, self.sim_key, models, prices, self.model_prices),
            "litellm_settings": settings,
            "router_settings": {"disable_cooldowns": True},
            "general_settings": general,
        }

    def env(self) -> dict[str, str]:
        """LiteLLM's environment: offline, no telemetry, no proxy for loopback, the cost log path."""
        return dict(offline_env(), TTBENCH_COST_LOG=str(self.cost_log))

    def log_text(self) -> str:
        """Everything LiteLLM printed so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def _fail(self, why: str) -> LiteLLMProxyError:
        tail = "\n".join(self.log_text().splitlines()[-40:])
        self.stop()
        return LiteLLMProxyError(f"LiteLLM proxy {why} (config {self.config_path}); last lines of its log:\n{tail}")

    def start(self) -> Self:
        """Write the config, start LiteLLM on a free port and wait until it serves there."""
        if not LITELLM_BIN.exists():
            raise LiteLLMProxyError(f"{LITELLM_BIN} is missing: run `make test` (it installs LiteLLM "
                                    "into .venv-litellm)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(COST_LOG_SOURCE, self.workdir / f"{COST_LOG_MODULE}.py")
        self.config_path.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        for _ in range(20):  # another process may take an ephemeral port between the two looks
            self.port = free_port()
            if port_is_free(self.port):
                break
        else:
            raise LiteLLMProxyError(f"port {self.port} is busy")
        self.url = f"http://127.0.0.1:{self.port}"
        args = ["--config", str(self.config_path), "--host", "127.0.0.1", "--port", str(self.port)]
        server = ForkServer.get()
        self.log_path.write_bytes(b"")
        if server is not None:
            self.proc = server.spawn(args, self.env(), self.workdir, self.log_path)
        else:
            with open(self.log_path, "wb") as log:
                self.proc = subprocess.Popen([str(LITELLM_BIN), *args], stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, cwd=self.workdir, env=self.env(),
                                             start_new_session=True)
        deadline = time.monotonic() + self.startup_timeout
        with httpx.Client(timeout=2, trust_env=False) as client:
            while True:
                if self.proc.poll() is not None:
                    raise self._fail(f"exited with code {self.proc.returncode} before serving")
                try:
                    if client.get(self.url + "/health/liveliness").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise self._fail(f"did not answer /health/liveliness within {self.startup_timeout:.0f} s")
                time.sleep(0.25)
        owner = group_listens_on(self.proc.pid, self.port)
        if owner is None:  # no /proc: trust uvicorn's own line
            owner = f"running on {self.url}" in self.log_text()
        if not owner:
            raise self._fail(f"is not the process listening on {self.url}")
        return self

    def stop(self) -> None:
        """Terminate LiteLLM's whole process group and wait for it."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
        else:  # the leader is gone; make sure nothing it spawned stays behind
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def cost_lines(self) -> list[dict[str, Any]]:
        """The cost log's lines so far."""
        if not self.cost_log.exists():
            return []
        return [json.loads(line) for line in self.cost_log.read_text().splitlines() if line.strip()]

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_together(stack: ExitStack, proxies: list[LiteLLMProxy]) -> list[LiteLLMProxy]:
    """Start several LiteLLM proxies at once (each takes seconds to start); the stack stops them."""
    with ThreadPoolExecutor(len(proxies)) as pool:
        list(pool.map(stack.enter_context, proxies))
    return proxies
