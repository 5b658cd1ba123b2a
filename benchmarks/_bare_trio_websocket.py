"""A bare trio-websocket server, the baseline of ``python -m benchmarks.compare``.

    python -m benchmarks._bare_trio_websocket

Listens on 127.0.0.1 (a free port) and prints ``listening on PORT``. On a text
message ``send N S`` it sends N text frames of S bytes each, then one ``done``
frame; on ``count`` it answers with the number of open connections (this one
included). Nothing else: no JSON, no ids, no metrics.
"""

from __future__ import annotations

import sys

import trio
from trio_websocket import ConnectionClosed, WebSocketRequest, serve_websocket

_open = 0


async def handler(request: WebSocketRequest) -> None:
    global _open
    ws = await request.accept()
    _open += 1
    try:
        while True:
            message = await ws.get_message()
            if not isinstance(message, str):
                continue
            if message == "count":
                await ws.send_message(str(_open))
            elif message.startswith("send "):
                _, count, size = message.split()
                payload = "x" * int(size)
                for _ in range(int(count)):
                    await ws.send_message(payload)
                await ws.send_message("done")
    except ConnectionClosed:
        pass
    finally:
        _open -= 1


async def main() -> None:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
        print(f"listening on {server.port}", flush=True)


if __name__ == "__main__":
    try:
        trio.run(main)
    except KeyboardInterrupt:
        sys.exit(0)
