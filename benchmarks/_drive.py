"""Drive a server from another process: ``benchmarks.compare``'s clients, one JSON line out.

    python -m benchmarks._drive PORT CLIENTS RUNS MESSAGE

``CLIENTS`` lean clients connect to ``ws://127.0.0.1:PORT/ws`` at once, each
sends ``MESSAGE`` (a client frame, e.g. a ``start_agent``) ``RUNS`` times and
reads each run to its final event. Prints one JSON object: frames, bytes,
requests and run outcomes. ``benchmarks.breakdown`` runs the server in its
own process and the clients here, so its CPU clock counts the server alone.
"""

from __future__ import annotations

import json
import sys

import attrs
import trio

from .compare import Load, our_client


async def drive(port: int, clients: int, runs: int, message: str) -> Load:
    load = Load()
    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            for index in range(clients):
                nursery.start_soon(our_client, port, index, runs, message, load)
    return load


def main(argv: list[str]) -> int:
    port, clients, runs, message = argv
    load = trio.run(drive, int(port), int(clients), int(runs), message)
    print(json.dumps(attrs.asdict(load)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
