"""Redis key names: pure code, one place.

Every key starts with the broker's prefix (``chat:`` by default; tests use
one per test). Ids may contain ``:`` (the id syntax allows it), so a key
made of two ids writes each as ``<length>:<id>``: ``alice`` + ``b:c`` and
``alice:b`` + ``c`` can never name the same key.
"""

from __future__ import annotations

import attrs


def _part(value: str) -> str:
    return f"{len(value)}:{value}"


@attrs.frozen
class RunStream:
    """The Redis stream of one run's events, and the interest set that gates it.

    ``key`` is the stream; ``interest_key`` the sorted set of nodes that follow
    the run's thread (see ``Broker.follow``). Made by ``Broker.run_stream``.
    """

    key: str
    interest_key: str


@attrs.frozen
class Keys:
    """The names of every key the broker uses, under one prefix."""

    prefix: str = "chat:"

    @property
    def nodes(self) -> str:
        """Sorted set of node ids scored by lease expiry (ms, Redis clock)."""
        return f"{self.prefix}nodes"

    def node(self, node_id: str) -> str:
        """A node's lease: exists while the node is alive (TTL = lease)."""
        return f"{self.prefix}node:{node_id}"

    def inbox(self, node_id: str) -> str:
        """A node's command stream (``Broker.send`` appends, the node reads)."""
        return f"{self.prefix}inbox:{node_id}"

    def sweep(self, node_id: str) -> str:
        """Claimed by the one node that sweeps a dead node's runs."""
        return f"{self.prefix}sweep:{node_id}"

    def connections(self, user_id: str) -> str:
        """Sorted set of a user's connection leases scored by expiry."""
        return f"{self.prefix}conns:{user_id}"

    def interest(self, user_id: str, thread_id: str) -> str:
        """Sorted set of the nodes following a thread, scored by expiry."""
        return f"{self.prefix}follow:{_part(user_id)}:{thread_id}"

    def run_stream(self, user_id: str, thread_id: str, run_key: str) -> RunStream:
        return RunStream(
            key=f"{self.prefix}run:{_part(user_id)}:{run_key}",
            interest_key=self.interest(user_id, thread_id),
        )


def stream_id(seq: int) -> str:
    """The stream entry id of the event numbered ``seq`` (ids are ``0-<seq>``).

    Publishing with explicit ids makes an append idempotent (Redis refuses an
    id that is not above the stream's last one) and lets a reader that has
    seen ``seq`` n continue with ``after_id=stream_id(n)``.
    """
    if seq < 0:
        raise ValueError(f"seq must be >= 0, not {seq}")
    return f"0-{seq}"


def seq_of(entry_id: str) -> int:
    """The ``seq`` an entry id made by :func:`stream_id` stands for."""
    return int(entry_id.rpartition("-")[2])
