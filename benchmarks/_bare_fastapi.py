"""A bare FastAPI + uvicorn[standard] push server, a baseline of ``benchmarks.compare``.

    python -m benchmarks._bare_fastapi

What a Python team would most likely pick instead of this server: a FastAPI
WebSocket route served by uvicorn with its ``standard`` extras, i.e. the uvloop
event loop, httptools for HTTP and the ``websockets`` library for the frames
(uvicorn's sans-I/O binding of it, its default when websockets is installed).
One process, one worker, no access log, compression off (no client offers it).

Same behaviour as ``benchmarks._bare_trio_websocket``: prints ``listening on
PORT``; ``send N S`` answers N text frames of S bytes then ``done``; ``count``
answers the number of open connections (this one included).
"""

from __future__ import annotations

import socket
import sys

import uvicorn
from fastapi import FastAPI, WebSocket, WebSocketDisconnect

app = FastAPI()
_open = 0


@app.websocket("/")
async def push(ws: WebSocket) -> None:
    global _open
    await ws.accept()
    _open += 1
    try:
        while True:
            message = await ws.receive_text()
            if message == "count":
                await ws.send_text(str(_open))
            elif message.startswith("send "):
                _, count, size = message.split()
                payload = "x" * int(size)
                for _ in range(int(count)):
                    await ws.send_text(payload)
                await ws.send_text("done")
    except WebSocketDisconnect:
        pass
    finally:
        _open -= 1


def main() -> None:
    config = uvicorn.Config(
        app,
        loop="uvloop",
        http="httptools",
        ws="websockets-sansio",
        ws_per_message_deflate=False,
        lifespan="off",
        access_log=False,
        log_level="warning",
        backlog=4096,
    )
    server = uvicorn.Server(config)
    # Our own listening socket, so that port 0 works and the port is known
    # before uvicorn starts (connections wait in the backlog until it accepts).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(4096)
    print(f"listening on {sock.getsockname()[1]}", flush=True)
    server.run(sockets=[sock])


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(0)
