"""Start the embedded simulator in its own process and talk to its admin API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Self

import httpx

DEFAULT_API_KEY = "tt-sim-local-key"
DEFAULT_ADMIN_TOKEN = "tt-sim-admin"



def stop_process(proc: subprocess.Popen[Any], timeout_s: float = 10.0) -> None:
    """Terminate a child process and wait for it; kill it if it outlives `timeout_s`."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

class SimProcessError(RuntimeError):
    """A server process did not start: the message carries what it printed."""


class ServerProcess:
    """A child process that prints `... listening on URL` once it serves; stopped on exit."""

    what = "the server"

    def __init__(self, cmd: list[str], env: dict[str, str] | None = None, startup_timeout: float = 20.0) -> None:
        env = dict(env if env is not None else os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                     start_new_session=True)
        self.url = self._wait_for_url(startup_timeout)
        self._stderr: list[str] = []
        threading.Thread(target=self._drain, daemon=True).start()

    def _wait_for_url(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            if "listening on " in line:
                return line.split("listening on ", 1)[1].strip()
        err = self.proc.stderr.read() if self.proc.stderr else ""
        self.proc.kill()
        raise SimProcessError(f"{self.what} did not start: {err.strip() or 'no output'}")

    def _drain(self) -> None:
        if self.proc.stderr is not None:
            for line in self.proc.stderr:
                self._stderr.append(line)

    @property
    def stderr(self) -> str:
        """What the process has written to stderr so far."""
        return "".join(self._stderr)

    def stop(self) -> None:
        """Terminate the process and wait for it."""
        stop_process(self.proc)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class SimProcess(ServerProcess):
    """A running `ttbench sim` child process."""

    what = "the simulator"

    def __init__(self, config: str | Path | None = None, seed: int = 0, api_key: str = DEFAULT_API_KEY,
                 admin_token: str = DEFAULT_ADMIN_TOKEN, extra_args: list[str] | None = None,
                 startup_timeout: float = 20.0, port: int = 0) -> None:
        self.api_key = api_key
        self.admin_token = admin_token
        cmd = [sys.executable, "-m", "ttbench", "sim", "--host", "127.0.0.1", "--port", str(port), "--seed", str(seed),
               "--admin-token", admin_token]
        if config is not None:
            cmd += ["--config", str(config)]
        cmd += extra_args or []
        # the key goes in the environment, never on a command line
        super().__init__(cmd, dict(os.environ, TT_API_KEY=api_key), startup_timeout)

    def admin(self, path: str, **params: Any) -> httpx.Response:
        """GET an admin route with the admin token."""
        with httpx.Client(verify=False, timeout=30) as client:
            return client.get(self.url + path, params=params, headers={"X-Admin-Token": self.admin_token})

    def download(self, path: str, dest: Path) -> int:
        """Stream an admin route's body to a file (never whole in memory); returns the bytes written."""
        part = dest.with_name(dest.name + ".part")
        written = 0
        with httpx.Client(verify=False, timeout=httpx.Timeout(30, read=300)) as client, \
                client.stream("GET", self.url + path, headers={"X-Admin-Token": self.admin_token}) as resp:
            resp.raise_for_status()
            with open(part, "wb") as f:
                for block in resp.iter_bytes(1 << 20):
                    f.write(block)
                    written += len(block)
        part.replace(dest)
        return written

    def ledger(self) -> list[dict[str, Any]]:
        """The ledger rows."""
        return [json.loads(line) for line in self.admin("/_sim/ledger").text.splitlines() if line]

    def truth(self) -> list[dict[str, Any]]:
        """The truth entries."""
        return [json.loads(line) for line in self.admin("/_sim/truth").text.splitlines() if line]
