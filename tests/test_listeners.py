"""Several listening sockets share one port so accepting keeps up under load."""

from __future__ import annotations

import trio

from server._listeners import open_listeners
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
