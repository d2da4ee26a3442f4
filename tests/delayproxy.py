"""A TCP pass-through proxy on 127.0.0.1 that holds every byte going upstream for a fixed delay (so each
request reaches the upstream that much later); the answers come back untouched.

Run as `python -m tests.delayproxy UPSTREAM_PORT DELAY_MS`: it prints `delayproxy listening on http://...`, then
`held <ms>` for every chunk it held (the delay really injected)."""

from __future__ import annotations

import asyncio
import sys


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay_s: float) -> None:
    """Copy bytes from reader to writer, each chunk written delay_s after it arrived (order kept)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def later() -> None:
        while True:
            due, data = await queue.get()
            if not data:
                break
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            # what this chunk was really held (the event loop's timers overshoot by a fraction of a millisecond)
            print(f"held {(loop.time() - due + delay_s) * 1000:.3f}", flush=True)
            await writer.drain()

    sender = asyncio.create_task(later()) if delay_s > 0 else None
    try:
        while True:
            data = await reader.read(65536)
            if sender is None:
                if not data:
                    break
                writer.write(data)
                await writer.drain()
                continue
            queue.put_nowait((loop.time() + delay_s, data))
            if not data:
                await sender
                break
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        try:
            writer.close()
        except (ConnectionError, RuntimeError):
            pass


async def serve(upstream_port: int, delay_ms: float, port: int = 0) -> None:
    """Serve until cancelled, printing the URL once listening."""
    delay_s = delay_ms / 1000.0

    async def handle(cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        try:
            ur, uw = await asyncio.open_connection("127.0.0.1", upstream_port)
        except OSError:
            cw.close()
            return
        await asyncio.gather(_pump(cr, uw, delay_s), _pump(ur, cw, 0.0), return_exceptions=True)

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    bound = server.sockets[0].getsockname()[1]
    print(f"delayproxy listening on http://127.0.0.1:{bound}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str]) -> None:
    """Command line: UPSTREAM_PORT DELAY_MS."""
    asyncio.run(serve(int(argv[0]), float(argv[1])))


if __name__ == "__main__":
    main(sys.argv[1:])
