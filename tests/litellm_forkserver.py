"""Starts LiteLLM proxies by forking a process that has already imported LiteLLM's proxy (about 18 s of CPU per
import on this machine, and the tests start about ten proxies).

Run by `.venv-litellm/bin/python tests/litellm_forkserver.py SOCKET`: it imports `litellm.proxy.proxy_server`,
listens on the Unix socket SOCKET and prints `ready`. Each connection sends one JSON line {"argv", "env", "cwd",
"log"}: the server forks; the child starts a new session, takes that environment, folder and log file, and runs
LiteLLM's own command line (`litellm.proxy.proxy_cli.run_server`) with argv, exactly as the `litellm` script
does; the server answers {"pid": N}. Children are reaped by the kernel (SIGCHLD ignored)."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys


def _child(req: dict, listener: socket.socket, conn: socket.socket) -> None:
    """In the forked child: become LiteLLM with the request's argv, environment, folder and log."""
    try:
        listener.close()
        conn.close()
        os.setsid()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update(req["env"])
        fd = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        sys.stdout = os.fdopen(1, "w", buffering=1)
        sys.stderr = os.fdopen(2, "w", buffering=1)
        sys.argv = ["litellm", *req["argv"]]
        from litellm.proxy.proxy_cli import run_server

        run_server.main(args=req["argv"], prog_name="litellm")
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - the log gets the traceback
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except Exception:  # noqa: BLE001
            pass
    os._exit(code)


def main(path: str) -> None:
    """Import LiteLLM's proxy once, then fork a proxy per request on the socket at `path`."""
    import litellm.proxy.proxy_cli  # noqa: F401
    import litellm.proxy.proxy_server  # noqa: F401

    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(16)
    print("ready", flush=True)
    while True:
        conn, _ = listener.accept()
        with conn:
            data = b""
            while not data.endswith(b"\n"):
                part = conn.recv(65536)
                if not part:
                    break
                data += part
            if not data.strip():
                continue
            req = json.loads(data)
            pid = os.fork()
            if pid == 0:
                _child(req, listener, conn)
            conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")


if __name__ == "__main__":
    main(sys.argv[1])
