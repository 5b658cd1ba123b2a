"""Asking the server what it recorded, as a user, over the protocol (v1.1 requests).

The client tests and the browser tests compare what a client showed with
what the server recorded: these helpers send a request on a test client's
connection and read its answer straight off the socket (the events of a
resumed run are not the test client's own runs).
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import trio

from server.testing import ChatClient

_asks = itertools.count(1)


async def ask(client: ChatClient, kind: str, **payload: Any) -> dict[str, Any]:
    """Send a request; its reply (or error_message), skipping any other frame."""
    message_id = f"ask-{next(_asks)}"
    await client.send({"type": kind, "payload": payload, "message_id": message_id})
    with trio.fail_after(client.receive_timeout):
        while True:
            frame: dict[str, Any] = json.loads(await client.ws.get_message())
            if frame.get("message_id") == message_id:
                return frame


async def recorded_events(client: ChatClient, run_id: str) -> list[dict[str, Any]]:
    """Every event of a run that has ended, as the server recorded it (resume_run from 0)."""
    reply = await ask(client, "resume_run", run_id=run_id, after_seq=0)
    assert reply["type"] == "run_resumed", reply
    events: list[dict[str, Any]] = []
    with trio.fail_after(client.receive_timeout):
        while not (events and events[-1]["final"]):
            frame = json.loads(await client.ws.get_message())
            if frame.get("run_id") == run_id and "seq" in frame:
                events.append(frame)
    return events


async def newest_run(client: ChatClient) -> dict[str, Any]:
    """The newest run of the client's user (in the most recently updated thread)."""
    threads = await ask(client, "list_threads", limit=1)
    [thread] = threads["data"]["threads"]
    record = await ask(client, "get_thread", thread_id=thread["thread_id"], limit=1)
    run: dict[str, Any] = record["data"]["runs"][0]
    return run
