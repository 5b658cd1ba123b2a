"""The broker: what crosses processes and machines, through Redis.

One :class:`Broker` per server process, opened with :func:`open_broker`. It
owns two background tasks in its own nursery: the health ping (``healthy``,
for ``/readyz``) and the lease renewal (this node's lease, the connection
leases it holds, the threads it follows). Everything else is a call, bounded
in time, that raises :class:`BrokerUnavailableError` rather than hang.

What lives in Redis (see ``_keys.py`` and ``_scripts.py``):

- ``node:{id}`` (TTL = lease) and the ``nodes`` set: who is alive.
- ``conns:{user}``: a user's connection leases, for the global limit.
- ``follow:{user}:{thread}``: the nodes with a subscriber for a thread.
- ``run:{user}:{run}``: a run's event stream (ids ``0-<seq>``), bounded by
  MAXLEN and expiry, written only while someone follows the thread.
- ``inbox:{node}``: commands to a node (``stop_agent`` of a run it owns).

Commands go through a per-node stream rather than pub/sub: pub/sub drops
whatever is published while the subscriber's connection is down, so a stop
sent during a blip would be lost. A stream keeps it, and the node's reader
continues from the last id it handled. ``send`` appends only if the target
node's lease is alive (one script), so the sender learns whether a live node
will read it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, cast

import attrs
import coredis
import orjson
import trio
from coredis.commands.script import Script
from coredis.retry import NoRetryPolicy

from server.protocol import BrokerUnavailableError

from . import _scripts
from ._driver import closing_buffers
from ._holdings import Holdings, chunks
from ._keys import Keys, RunStream, seq_of
from ._link import Link

log = logging.getLogger("server.broker")

#: ``observer(direction, count)``: ``out`` for published events and sent
#: commands, ``in`` for events read and commands received.
Observer = Callable[[str, int], None]
#: ``handler(command)`` for :meth:`Broker.serve_commands`.
CommandHandler = Callable[[dict[str, Any]], Awaitable[None]]
#: An argument of a script call.
Arg = str | int | bytes

#: Longest ``block`` a read may ask for (seconds); the driver's own response
#: timeout is set above it so a blocked read is never cut by the driver.
MAX_BLOCK = 10.0
#: Leases renewed per script call.
RENEW_CHUNK = 500
#: Entries kept per node inbox (approximately).
INBOX_MAXLEN = 1000


@attrs.frozen
class StreamEntry:
    """One entry of a run's stream: its id, the event's ``seq`` and its payload."""

    id: str
    seq: int
    payload: bytes


@attrs.frozen
class PublishOutcome:
    """What :meth:`Broker.publish` did with a batch."""

    #: Entries appended to their streams.
    appended: int
    #: Entries not appended: nobody followed their thread, or their seq was
    #: not above the stream's last (already published).
    skipped: int


@attrs.frozen
class BrokerStatistics:
    """A snapshot of one broker (``Broker.statistics()``)."""

    node_id: str
    healthy: bool
    #: How many times the link turned unhealthy.
    failures: int
    connection_leases: int
    follows: int
    #: Connection leases found taken back by Redis at renewal (they had
    #: lapsed, e.g. through an outage longer than the lease).
    leases_lost: int
    #: Times this node's own lease was renewed after it had lapsed: other
    #: nodes may have taken it for dead meanwhile.
    node_lease_lapses: int
    events_published: int
    events_read: int
    commands_sent: int
    commands_received: int


class Broker:
    """This node's handle on the broker. Made by :func:`open_broker`."""

    def __init__(
        self,
        link: Link,
        *,
        node_id: str,
        keys: Keys,
        lease_seconds: float,
        observer: Observer | None,
        stream_maxlen: int,
        stream_ttl: int,
    ) -> None:
        self._link = link
        self._client = link.client
        self.node_id = node_id
        self.keys = keys
        self.lease_seconds = lease_seconds
        self._lease_ms = max(1, round(lease_seconds * 1000))
        self._observe = observer or _ignore
        self._stream_maxlen = stream_maxlen
        self._stream_ttl = stream_ttl
        self._holdings = Holdings()
        self._inbox_after = "0-0"
        self._serving_commands = False
        self._renew_now = trio.Event()
        #: trio clock time until which this node's lease is surely valid.
        self._lease_valid_until = -1.0
        self._leases_lost = 0
        self._lease_lapses = 0
        self._published = 0
        self._read = 0
        self._sent = 0
        self._received = 0
        register = self._client.register_script
        self._renew_node = register(_scripts.RENEW_NODE)
        self._leave_node = register(_scripts.LEAVE_NODE)
        self._live_members = register(_scripts.LIVE_MEMBERS)
        self._acquire = register(_scripts.ACQUIRE_CONNECTION)
        self._release = register(_scripts.RELEASE)
        self._renew_members = register(_scripts.RENEW_MEMBERS)
        self._send = register(_scripts.SEND)
        self._publish = register(_scripts.PUBLISH)
        self._claim = register(_scripts.CLAIM)

    async def _eval(
        self, what: str, script: Script[bytes], keys: Sequence[str], args: Sequence[Arg]
    ) -> Any:
        """Run one of our Lua scripts through the link (bounded, errors ours)."""

        async def run() -> Any:
            return await script(keys, args)

        return await self._link.call(what, run)

    # -- health ---------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        """Whether Redis answers (for ``/readyz``); calls fail fast while False."""
        return self._link.healthy

    async def wait_healthy(self) -> None:
        """Return once Redis answers again (at once if it does)."""
        await self._link.wait_healthy()

    async def wait_unhealthy(self) -> None:
        """Return once Redis has stopped answering (at once if it has)."""
        await self._link.wait_unhealthy()

    def statistics(self) -> BrokerStatistics:
        return BrokerStatistics(
            node_id=self.node_id,
            healthy=self._link.healthy,
            failures=self._link.failures,
            connection_leases=len(self._holdings.connections),
            follows=len(self._holdings.follows),
            leases_lost=self._leases_lost,
            node_lease_lapses=self._lease_lapses,
            events_published=self._published,
            events_read=self._read,
            commands_sent=self._sent,
            commands_received=self._received,
        )

    # -- nodes ----------------------------------------------------------------

    async def live_nodes(self) -> set[str]:
        """The ids of every node whose lease has not expired (this one included)."""
        members = await self._eval("live_nodes", self._live_members, [self.keys.nodes], [])
        return {_text(m) for m in cast(list[bytes], members)}

    async def is_alive(self, node_id: str) -> bool:
        """Whether ``node_id``'s lease is alive."""
        key = self.keys.node(node_id)
        found: int = await self._link.call("is_alive", lambda: self._client.exists([key]))
        return found == 1

    async def claim_sweep(self, dead_node_id: str) -> bool:
        """Claim the sweep of a dead node's runs; True for one caller per lease period.

        A convenience that keeps every node from sweeping at once; the
        store's compare-and-set finish of each run stays the authority for
        "exactly one final event".
        """
        got: int = await self._eval(
            "claim_sweep",
            self._claim,
            [self.keys.sweep(dead_node_id)],
            [self.node_id, self._lease_ms],
        )
        return got == 1

    async def _renew_node_lease(self) -> None:
        started = trio.current_time()
        await self._eval(
            "renew node lease",
            self._renew_node,
            [self.keys.node(self.node_id), self.keys.nodes],
            [self.node_id, self._lease_ms],
        )
        if 0 <= self._lease_valid_until < started:
            self._lease_lapses += 1
            log.warning("broker: node %s renewed its lease after it had lapsed", self.node_id)
        self._lease_valid_until = started + self.lease_seconds

    # -- global connection limit ------------------------------------------------

    async def acquire_connection(self, user_id: str, connection_id: str, limit: int) -> bool:
        """Take one of ``user_id``'s ``limit`` connection slots (``limit`` <= 0: no limit).

        Atomic across every node: of concurrent acquires, exactly as many as
        there are free slots succeed. The lease is renewed in the background
        until :meth:`release_connection`; if this process dies, the slot is
        free again within ``lease_seconds``.
        """
        got = await self._eval(
            "acquire_connection",
            self._acquire,
            [self.keys.connections(user_id)],
            [connection_id, limit, self._lease_ms],
        )
        if got == 1:
            self._holdings.connections.add((user_id, connection_id))
            return True
        return False

    async def release_connection(self, user_id: str, connection_id: str) -> None:
        """Give the slot back (stops its renewal even if Redis cannot be reached)."""
        self._holdings.connections.discard((user_id, connection_id))
        await self._eval(
            "release_connection", self._release, [self.keys.connections(user_id)], [connection_id]
        )

    # -- interest ---------------------------------------------------------------

    async def follow(self, user_id: str, thread_id: str) -> None:
        """Record that this node has a subscriber for the thread (renewed until unfollowed).

        Once this returns, every later gated :meth:`publish` of the thread's
        runs appends to their streams. Calls are counted: the node follows
        until as many :meth:`unfollow` calls as follow calls.
        """
        self._holdings.follow(user_id, thread_id)
        try:
            await self._write_interest(user_id, thread_id)
        except BaseException:
            self._holdings.unfollow(user_id, thread_id)
            raise

    async def unfollow(self, user_id: str, thread_id: str) -> None:
        """One subscriber of this node fewer; the last one removes the node's interest."""
        if not self._holdings.unfollow(user_id, thread_id):
            return
        key = self.keys.interest(user_id, thread_id)
        await self._eval("unfollow", self._release, [key], [self.node_id])
        if self._holdings.following(user_id, thread_id):
            # A follow() ran while the removal was in flight: write it again.
            await self._write_interest(user_id, thread_id)

    async def followers(self, user_id: str, thread_id: str) -> set[str]:
        """The nodes with a live subscriber for the thread."""
        members = await self._eval(
            "followers", self._live_members, [self.keys.interest(user_id, thread_id)], []
        )
        return {_text(m) for m in cast(list[bytes], members)}

    async def _write_interest(self, user_id: str, thread_id: str) -> None:
        key = self.keys.interest(user_id, thread_id)
        await self._eval(
            "follow", self._renew_members, [key], [self._lease_ms, "add", self.node_id]
        )

    # -- run event streams ------------------------------------------------------

    def run_stream(self, user_id: str, thread_id: str, run_key: str) -> RunStream:
        """The stream of a run's events (named from the user and the run)."""
        return self.keys.run_stream(user_id, thread_id, run_key)

    async def publish(
        self, entries: Sequence[tuple[RunStream, int, bytes]], *, gated: bool = True
    ) -> PublishOutcome:
        """Append ``(stream, seq, payload)`` entries, in one round trip.

        Each stream is capped at about ``stream_maxlen`` entries and expires
        ``stream_ttl`` seconds after its last append. ``gated``: append to a
        stream only while some node follows its thread (checked in the same
        atomic step). An entry whose seq is not above its stream's last is
        skipped, so a retried batch never doubles an event.
        """
        if not entries:
            return PublishOutcome(0, 0)
        grouped: dict[RunStream, list[tuple[int, bytes]]] = {}
        for stream, seq, payload in entries:
            grouped.setdefault(stream, []).append((seq, payload))
        keys: list[str] = []
        args: list[str | int | bytes] = [
            "1" if gated else "0",
            self._stream_maxlen,
            self._stream_ttl,
        ]
        for stream, items in grouped.items():
            keys.append(stream.key)
            keys.append(stream.interest_key)
            args.append(len(items))
            for seq, payload in items:
                args.append(seq)
                args.append(payload)
        result = await self._eval("publish", self._publish, keys, args)
        appended, skipped = (int(n) for n in cast(list[int], result))
        self._published += appended
        if appended:
            self._observe("out", appended)
        return PublishOutcome(appended, skipped)

    async def read(
        self, stream: RunStream, after_id: str, *, block: float | None = None, count: int = 100
    ) -> list[StreamEntry]:
        """Up to ``count`` entries of ``stream`` after ``after_id`` (``0-0``: from the start).

        ``block``: wait up to that many seconds for an entry if there is
        none yet (at most :data:`MAX_BLOCK`); None returns at once. To go on
        after a blip, call again with the last entry's id. Entries come in
        seq order; a seq that jumps by more than one means entries were
        trimmed (MAXLEN) or published while nobody followed: read those
        from the history store.
        """
        found = await self.read_many({stream: after_id}, block=block, count=count)
        return found.get(stream, [])

    async def read_many(
        self,
        positions: Mapping[RunStream, str],
        *,
        block: float | None = None,
        count: int = 100,
    ) -> dict[RunStream, list[StreamEntry]]:
        """:meth:`read` of several streams in one call (one XREAD), by stream."""
        if not positions:
            return {}
        if block is not None and block > MAX_BLOCK:
            raise ValueError(f"block must be at most {MAX_BLOCK} s, not {block}")
        by_key = {stream.key: stream for stream in positions}
        raw = await self._xread(
            "read", {stream.key: after for stream, after in positions.items()}, count, block
        )
        found: dict[RunStream, list[StreamEntry]] = {}
        total = 0
        for key, items in raw.items():
            entries = [
                StreamEntry(id=entry_id, seq=seq_of(entry_id), payload=fields.get(b"p", b""))
                for entry_id, fields in items
            ]
            found[by_key[key]] = entries
            total += len(entries)
        if total:
            self._read += total
            self._observe("in", total)
        return found

    async def _xread(
        self, what: str, request: dict[str, str], count: int, block: float | None
    ) -> dict[str, list[tuple[str, dict[bytes, bytes]]]]:
        """XREAD through the link: {stream key: [(entry id, fields)]}, bytes decoded."""
        block_ms = None if block is None else max(1, round(block * 1000))

        async def run() -> dict[str, list[tuple[str, dict[bytes, bytes]]]]:
            raw = await self._client.xread(request, count=count, block=block_ms)
            return {
                _text(key): [
                    (_text(item.identifier), cast(dict[bytes, bytes], item.field_values))
                    for item in items
                ]
                for key, items in (raw or {}).items()
            }

        return await self._link.call(what, run, limit=self._link.timeout + (block or 0.0))

    # -- commands to nodes ------------------------------------------------------

    async def send(self, node_id: str, command: Mapping[str, Any]) -> bool:
        """Queue ``command`` (JSON-serialisable) for ``node_id``'s :meth:`serve_commands`.

        Returns False, and queues nothing, if that node's lease is not alive.
        A command queued for a live node is handed to its handler even if
        the node's connection to Redis blips meanwhile (it reads on from its
        last id), as long as the node lives.
        """
        body = orjson.dumps(command)
        ttl_ms = self._lease_ms * 4
        got = await self._eval(
            "send",
            self._send,
            [self.keys.node(node_id), self.keys.inbox(node_id)],
            [body, INBOX_MAXLEN, ttl_ms],
        )
        if got == 1:
            self._sent += 1
            self._observe("out", 1)
            return True
        return False

    async def serve_commands(
        self,
        handler: CommandHandler,
        *,
        block: float = 1.0,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Hand every command sent to this node to ``handler``, in order; run until cancelled.

        Starts with the first command sent after :func:`open_broker` made
        the node alive. Survives Redis outages (waits for recovery, then
        reads on from the last command handled). A handler's exception is
        logged and the next command goes on.
        """
        if self._serving_commands:
            raise RuntimeError("serve_commands is already running for this broker")
        self._serving_commands = True
        inbox = self.keys.inbox(self.node_id)
        after = self._inbox_after
        task_status.started()
        try:
            while True:
                try:
                    raw = await self._xread("read commands", {inbox: after}, 100, block)
                except BrokerUnavailableError:
                    await self._link.wait_healthy()
                    await trio.sleep(0.05)  # a refused read on a healthy link: no hot loop
                    continue
                for items in raw.values():
                    for entry_id, fields in items:
                        after = self._inbox_after = entry_id
                        self._received += 1
                        self._observe("in", 1)
                        await _handle(handler, fields.get(b"c", b"null"))
        finally:
            self._serving_commands = False

    # -- background ---------------------------------------------------------------

    async def _join(self) -> None:
        """Become a live node; commands sent from now on will be served."""
        last = await self._link.call(
            "read inbox end",
            lambda: self._client.xrevrange(self.keys.inbox(self.node_id), "+", "-", count=1),
        )
        if last:
            self._inbox_after = _text(last[0].identifier)
        await self._renew_node_lease()

    async def _leave(self) -> None:
        """Clean exit: drop the node's lease, its interest and its connection leases."""
        if not self._link.healthy:
            return
        node_keys = [self.keys.node(self.node_id), self.keys.nodes]
        held = sorted(self._holdings.connections)
        followed = sorted(self._holdings.follows)
        self._holdings = Holdings()
        try:
            await self._eval("leave", self._leave_node, node_keys, [self.node_id])
            for chunk in chunks(held, RENEW_CHUNK):
                keys = [self.keys.connections(user_id) for user_id, _ in chunk]
                members = [connection_id for _, connection_id in chunk]
                await self._eval("leave", self._release, keys, members)
            for chunk in chunks(followed, RENEW_CHUNK):
                keys = [self.keys.interest(user_id, thread_id) for user_id, thread_id in chunk]
                members = [self.node_id] * len(chunk)
                await self._eval("leave", self._release, keys, members)
        except BrokerUnavailableError as exc:
            log.warning("broker: left without cleaning up (leases will lapse): %s", exc)

    def _wake_renewal(self) -> None:
        self._renew_now.set()

    async def _serve_leases(self) -> None:
        """Renew every lease each third of the lease period, and at once after an outage."""
        period = self.lease_seconds / 3
        while True:
            with trio.move_on_after(period):
                await self._renew_now.wait()
            self._renew_now = trio.Event()
            try:
                await self._renew_all()
            except BrokerUnavailableError as exc:
                log.info("broker: lease renewal failed: %s", exc)

    async def _renew_all(self) -> None:
        await self._renew_node_lease()
        for chunk in chunks(sorted(self._holdings.connections), RENEW_CHUNK):
            keys = [self.keys.connections(user_id) for user_id, _ in chunk]
            members = [connection_id for _, connection_id in chunk]
            for user_id, connection_id in await self._renew(chunk, keys, members, "keep"):
                self._holdings.connections.discard((user_id, connection_id))
                self._leases_lost += 1
                log.warning("broker: connection lease %s/%s had lapsed", user_id, connection_id)
        for chunk in chunks(sorted(self._holdings.follows), RENEW_CHUNK):
            keys = [self.keys.interest(user_id, thread_id) for user_id, thread_id in chunk]
            await self._renew(chunk, keys, [self.node_id] * len(chunk), "add")

    async def _renew(
        self, chunk: list[tuple[str, str]], keys: list[str], members: list[str], mode: str
    ) -> list[tuple[str, str]]:
        """Renew ``members`` in ``keys`` (one script call); the pairs found lost."""
        lost = await self._eval(
            "renew leases", self._renew_members, keys, [self._lease_ms, mode, *members]
        )
        return [chunk[int(i) - 1] for i in cast(list[int], lost)]


async def _handle(handler: CommandHandler, body: bytes) -> None:
    try:
        command = orjson.loads(body)
    except orjson.JSONDecodeError:
        log.warning("broker: dropped a command that is not JSON: %r", body[:200])
        return
    if not isinstance(command, dict):
        log.warning("broker: dropped a command that is not an object: %r", body[:200])
        return
    try:
        await handler(command)
    except Exception:
        log.exception("broker: command handler failed on %r", command)


def _ignore(direction: str, count: int) -> None:
    pass


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _client_for(url: str, *, timeout: float, max_connections: int) -> coredis.Redis[bytes]:
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(f"broker URL must be redis://, rediss:// or unix://, not {url!r}")
    client = coredis.Redis.from_url(
        url,
        decode_responses=False,
        # Our own deadlines (Link.call) are the real limits; the driver's
        # response timeout only has to let the longest blocked read finish.
        stream_timeout=timeout + MAX_BLOCK,
        connect_timeout=timeout,
        pool_timeout=timeout,
        max_connections=max_connections,
        # No silent retries: a caller sees a failure within its deadline,
        # and appends are made idempotent by their ids instead.
        retry_policy=NoRetryPolicy(),
    )
    pool = client.connection_pool
    pool.connection_class = closing_buffers(pool.connection_class)
    return client


@asynccontextmanager
async def open_broker(
    url: str,
    *,
    node_id: str,
    key_prefix: str = "chat:",
    lease_seconds: float = 15.0,
    observer: Observer | None = None,
    call_timeout: float = 2.0,
    health_interval: float = 1.0,
    stream_maxlen: int = 10_000,
    stream_ttl: int = 600,
    max_connections: int = 64,
) -> AsyncIterator[Broker]:
    """Connect to Redis at ``url`` as node ``node_id``; leave and disconnect on exit.

    ``call_timeout`` bounds every call (a blocked read: its block plus this).
    Redis unreachable at the start raises :class:`BrokerUnavailableError`;
    later outages only turn ``healthy`` False until Redis answers again.
    On a clean exit the node's lease, interest and connection leases are
    removed at once (bounded by ``call_timeout``); after a crash they lapse
    within ``lease_seconds``.
    """
    if lease_seconds <= 0:
        raise ValueError(f"lease_seconds must be > 0, not {lease_seconds}")
    client = _client_for(url, timeout=call_timeout, max_connections=max_connections)
    # The body's exception is carried out of the nurseries (the driver's pool
    # and ours) and raised as it is, not wrapped in an ExceptionGroup.
    failure: BaseException | None = None
    async with client:
        link = Link(client, timeout=call_timeout)
        broker = Broker(
            link,
            node_id=node_id,
            keys=Keys(key_prefix),
            lease_seconds=lease_seconds,
            observer=observer,
            stream_maxlen=stream_maxlen,
            stream_ttl=stream_ttl,
        )
        try:
            await broker._join()
        except BrokerUnavailableError as exc:
            failure = exc
        if failure is None:
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(link.serve_health, health_interval, broker._wake_renewal)
                    nursery.start_soon(broker._serve_leases)
                    try:
                        yield broker
                    except BaseException as exc:
                        failure = exc
                    finally:
                        nursery.cancel_scope.cancel()
            finally:
                with trio.CancelScope(shield=True):
                    await broker._leave()
    if failure is not None:
        raise failure
