"""Several listening sockets share one port so accepting keeps up under load."""

from __future__ import annotations

import trio

from server._listeners import BurstListener, open_listeners
from server.testing import open_chat_client, start_test_server


async def test_listeners_share_one_free_port() -> None:
    listeners = await open_listeners("127.0.0.1", 0, count=4)
    try:
        ports = {listener.socket.getsockname()[1] for listener in listeners}
        assert len(listeners) == 4
        assert len(ports) == 1
        assert ports != {0}
    finally:
        for listener in listeners:
            await listener.aclose()


async def test_a_single_acceptor_is_a_plain_listener() -> None:
    listeners = await open_listeners("127.0.0.1", 0, count=1)
    try:
        assert len(listeners) == 1
    finally:
        await listeners[0].aclose()


async def test_a_burst_of_200_clients_is_all_served(nursery: trio.Nursery) -> None:
    server = await start_test_server(nursery, max_connections_per_user=0)
    done = 0

    async def client(i: int) -> None:
        nonlocal done
        async with open_chat_client(server, user_id=f"burst{i}") as c:
            await c.send({"type": "ping"})
            await c.receive_frame("pong")
        done += 1

    with trio.fail_after(20):
        async with trio.open_nursery() as clients:
            for i in range(200):
                clients.start_soon(client, i)
    assert done == 200
    await server.wait_idle()
    assert server.statistics().connections_total == 200


async def test_a_listener_takes_every_waiting_connection_when_it_wakes() -> None:
    listeners = await open_listeners("127.0.0.1", 0, count=2)
    listener = listeners[0]
    try:
        assert isinstance(listener, BurstListener)
        for other in listeners[1:]:
            await other.aclose()  # all new connections go to the first one
        port = listener.socket.getsockname()[1]
        clients = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(10)]
        first = await listener.accept()
        # The other nine came with the first wake-up: handed out from memory,
        # without waiting for another scheduler pass each.
        assert len(listener._ready) == 9
        streams = [first] + [await listener.accept() for _ in range(9)]
        for client in clients:
            await client.send_all(b"x")
        assert sorted([await s.receive_some(1) for s in streams]) == [b"x"] * 10
        for stream in [*streams, *clients]:
            await stream.aclose()
    finally:
        await listener.aclose()


async def test_closing_a_listener_closes_connections_it_had_not_handed_out() -> None:
    listeners = await open_listeners("127.0.0.1", 0, count=2)
    for other in listeners[1:]:
        await other.aclose()
    listener = listeners[0]
    assert isinstance(listener, BurstListener)
    port = listener.socket.getsockname()[1]
    clients = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(3)]
    first = await listener.accept()
    assert len(listener._ready) == 2
    await listener.aclose()
    assert not listener._ready
    for client in clients[1:]:  # their server side is gone: the peer sees EOF
        with trio.fail_after(5):
            assert await client.receive_some(1) == b""
    for stream in [first, *clients]:
        await stream.aclose()
