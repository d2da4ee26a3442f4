"""Run the simulator as an HTTP(S) server until it is told to stop."""

from __future__ import annotations

import asyncio
import signal
import ssl
import sys
from typing import TextIO

from aiohttp import web

from .app import make_app
from .state import Gateway


def tls_context(cert: str, key: str, client_ca: str | None = None) -> ssl.SSLContext:
    """A server TLS context from a certificate chain and key file.

    With client_ca (a PEM file of CA certificates), mutual TLS: every client must present a certificate
    signed by one of them, else the handshake fails.
    """
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    if client_ca is not None:
        require_client_certs(ctx, client_ca)
    return ctx


def require_client_certs(ctx: ssl.SSLContext, client_ca: str) -> None:
    """Mutual TLS: refuse every client without a certificate signed by a CA in the PEM file client_ca."""
    ctx.load_verify_locations(cafile=client_ca)
    ctx.verify_mode = ssl.CERT_REQUIRED


async def start(gw: Gateway, host: str = "127.0.0.1", port: int = 0,
                ssl_context: ssl.SSLContext | None = None) -> tuple[web.AppRunner, str]:
    """Start serving; returns the runner and the base URL (port 0 picks a free port)."""
    runner = web.AppRunner(make_app(gw), access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context, backlog=1024)
    await site.start()
    server = site._server
    assert server is not None and server.sockets
    bound = server.sockets[0].getsockname()[1]
    scheme = "https" if ssl_context else "http"
    shown = f"[{host}]" if ":" in host else host
    return runner, f"{scheme}://{shown}:{bound}"


async def serve_forever(gw: Gateway, host: str, port: int, ssl_context: ssl.SSLContext | None,
                        out: TextIO = sys.stdout) -> None:
    """Serve until SIGINT or SIGTERM, printing the URL first."""
    runner, url = await start(gw, host, port, ssl_context)
    print(f"gatewaysim listening on {url}", file=out, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()
    gw.close()
