"""A bare ``websockets`` (asyncio) server, a baseline of ``python -m benchmarks.compare``.

    python -m benchmarks._bare_websockets

Same behaviour as ``benchmarks._bare_trio_websocket``: prints ``listening on PORT``;
``send N S`` answers N text frames of S bytes then ``done``; ``count`` answers the
number of open connections. Compression is off (the other servers do not compress
either); pings keep the library's defaults.
"""

from __future__ import annotations

import asyncio
import sys

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

_open = 0


async def handler(ws: ServerConnection) -> None:
    global _open
    _open += 1
    try:
        async for message in ws:
            if not isinstance(message, str):
                continue
            if message == "count":
                await ws.send(str(_open))
            elif message.startswith("send "):
                _, count, size = message.split()
                payload = "x" * int(size)
                for _ in range(int(count)):
                    await ws.send(payload)
                await ws.send("done")
    except ConnectionClosed:
        pass
    finally:
        _open -= 1


async def main() -> None:
    async with serve(handler, "127.0.0.1", 0, compression=None, backlog=4096) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        print(f"listening on {port}", flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
