"""One HTTP GET to a worker's internal admin listener (h11 over trio), bounded in time and size."""

from __future__ import annotations

import h11
import trio

#: Largest body read from a worker (its /metrics is a few tens of KiB).
MAX_BODY_BYTES = 8 << 20


async def http_get(
    host: str, port: int, path: str, *, within: float, max_bytes: int = MAX_BODY_BYTES
) -> tuple[int, bytes] | None:
    """(status, body) of ``GET path``, None without a whole answer within ``within`` s.

    A worker that is dying, starting or stuck answers None, never an exception.
    """
    with trio.move_on_after(within):
        try:
            return await _get(host, port, path, max_bytes)
        except (OSError, trio.BrokenResourceError, h11.ProtocolError, _TooLarge):
            return None
    return None


class _TooLarge(Exception):
    pass


async def _get(host: str, port: int, path: str, max_bytes: int) -> tuple[int, bytes]:
    stream = await trio.open_tcp_stream(host, port)
    async with stream:
        conn = h11.Connection(h11.CLIENT)
        request = h11.Request(
            method="GET", target=path, headers=[("host", f"{host}:{port}"), ("connection", "close")]
        )
        await stream.send_all((conn.send(request) or b"") + (conn.send(h11.EndOfMessage()) or b""))
        status = 0
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > max_bytes:
                    raise _TooLarge
            elif isinstance(event, h11.EndOfMessage):
                return status, bytes(body)
            elif isinstance(event, h11.ConnectionClosed):
                raise h11.RemoteProtocolError("connection closed before the end of the response")
