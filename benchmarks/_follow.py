"""Clients that drop mid-run and resume, and second connections that follow a thread.

Used by ``benchmarks.churn`` and ``benchmarks.soak`` (issue 13). One cycle
(:func:`follow_cycle`) of a user:

1. with ``subscribe``, a second connection B of the same user first subscribes
   to the user's thread (created by the user's first cycle);
2. connection A starts a run (on that thread when B follows it, else on a new
   one) and reads it;
3. with ``drop``, A's socket is dropped without a close frame after ``cut``
   events of the run (a network blip); A reconnects at once, with
   ``?resume=<token>`` when the server offered one and ``use_token``, and
   sends ``resume_run`` with the last ``seq`` it saw. The time from that
   message to the first missed event is recorded; A reads to the final event;
4. B reads the run to its final event.

What A saw before and after the drop together, and what B saw, must each be
the run's events ``1..last`` exactly once: every missing ``seq`` is counted as
lost, every repeated one as duplicated (both must stay 0). Frames are parsed
with ``json.loads`` (these cycles are about correctness, not the client's CPU).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

import attrs
import trio

from ._load_client import Closed, LeanClient

#: Seconds one cycle may take before it is counted as stuck (a lost run).
CYCLE_SECONDS = 30.0
THREAD_BUSY_RETRIES = 100


@attrs.define
class FollowStats:
    outcome: Counter[str] = attrs.Factory(Counter)
    #: seq values missing from what a connection received of a run (must stay 0).
    lost_events: int = 0
    #: seq values received twice by one connection (must stay 0).
    duplicated_events: int = 0
    #: resume_run sent -> the first missed event received, milliseconds (only when
    #: that event had been emitted before the resume: ``run_resumed``'s ``last_seq``).
    resume_ms: list[float] = attrs.Factory(list)
    #: runs whose events did not add up, with what was seen (the first few).
    bad_runs: list[dict[str, Any]] = attrs.Factory(list)
    #: the first few error_message frames that ended a cycle
    errors: list[dict[str, Any]] = attrs.Factory(list)

    def check_run(self, run_id: str, who: str, seqs: list[int], last: int | None) -> None:
        """Count what ``seqs`` (all a connection received of a run) misses or repeats."""
        if last is None:
            self.outcome[f"{who}_no_final"] += 1
            self._bad(run_id, who, seqs, last)
            return
        seen = Counter(seqs)
        missing = sum(1 for seq in range(1, last + 1) if seq not in seen)
        repeated = sum(n - 1 for n in seen.values() if n > 1)
        beyond = sum(1 for seq in seen if not 1 <= seq <= last)
        self.lost_events += missing
        self.duplicated_events += repeated + beyond
        if missing or repeated or beyond:
            self._bad(run_id, who, seqs, last)

    def _bad(self, run_id: str, who: str, seqs: list[int], last: int | None) -> None:
        if len(self.bad_runs) < 20:
            self.bad_runs.append({"run_id": run_id, "who": who, "seqs": seqs, "last": last})


@attrs.define
class UserState:
    """One user's lasting state across its cycles: its thread, once it exists."""

    user_id: str
    thread_id: str
    thread_exists: bool = False
    runs: int = 0


class CycleError(Exception):
    """The server answered a cycle's request with an ``error_message``."""

    def __init__(self, frame: dict[str, Any]) -> None:
        super().__init__(frame.get("error_code"))
        self.code = str(frame.get("error_code"))
        self.frame = frame


async def connect(host: str, port: int, user: str, token: str | None = None) -> tuple[
    LeanClient, dict[str, Any]
]:  # fmt: skip
    target = f"/ws?user_id={user}" + (f"&resume={token}" if token else "")
    client = await LeanClient.connect(host, port, target)
    try:
        established = json.loads(await client.receive_message())
    except BaseException:
        await trio.aclose_forcefully(client.stream)
        raise
    return client, established


async def send(client: LeanClient, kind: str, payload: dict[str, Any], message_id: str) -> None:
    await client.send_text(json.dumps({"type": kind, "message_id": message_id, "payload": payload}))


async def reply_to(client: LeanClient, message_id: str) -> dict[str, Any]:
    """The reply to ``message_id`` (run events of other runs in between are skipped)."""
    while True:
        frame: dict[str, Any] = json.loads(await client.receive_message())
        if frame.get("message_id") == message_id and "seq" not in frame:
            if frame.get("type") == "error_message":
                raise CycleError(frame)
            return frame


class RunReader:
    """Reads one run's events off a connection, keeping their seqs."""

    def __init__(self, client: LeanClient, run_id: str) -> None:
        self.client = client
        self.run_id = run_id
        self.seqs: list[int] = []
        self.last: int | None = None  # the final event's seq, once seen
        self.status: str | None = None
        self.error_code: str | None = None

    async def next_event(self, message_id: str | None = None) -> dict[str, Any]:
        """The next event of this run (``error_message`` for ``message_id``: CycleError)."""
        while True:
            frame = json.loads(await self.client.receive_message())
            if frame.get("run_id") == self.run_id and "seq" in frame:
                self.seqs.append(frame["seq"])
                if frame.get("final") is True:
                    self.last = frame["seq"]
                    self.status = frame["data"]["status"]
                    self.error_code = (frame["data"].get("error") or {}).get("code")
                return dict(frame)
            is_error = frame.get("type") == "error_message"
            if is_error and message_id is not None and frame.get("message_id") == message_id:
                raise CycleError(frame)

    async def to_final(self) -> None:
        while self.last is None:
            await self.next_event()


async def start_run(
    client: LeanClient,
    user: UserState,
    run_id: str,
    request: str,
    thread_id: str | None,
    stats: FollowStats,
    agent: str | None = None,
) -> RunReader:
    """Send ``start_agent`` (again after a short pause while the thread is busy); its reader."""
    payload: dict[str, Any] = {"user_request": request, "run_id": run_id}
    if thread_id is not None:
        payload["thread_id"] = thread_id
    if agent is not None:
        payload["agent_name"] = agent
    for attempt in range(THREAD_BUSY_RETRIES):
        reader = RunReader(client, run_id)
        await send(client, "start_agent", payload, run_id)
        try:
            await reader.next_event(message_id=run_id)  # its agent_started
            return reader
        except CycleError as error:
            # The thread's previous run ends after its final event went out:
            # for a moment the thread may still be busy.
            if error.code != "THREAD_BUSY" or attempt == THREAD_BUSY_RETRIES - 1:
                raise
            stats.outcome["thread_busy_retries"] += 1
            await trio.sleep(0.01)
    raise AssertionError("unreachable")


async def follow_cycle(
    host: str,
    port: int,
    user: UserState,
    *,
    request: str,
    drop: bool,
    cut: int,
    use_token: bool,
    subscribe: bool,
    stats: FollowStats,
    agent: str | None = None,
) -> bool:
    """One cycle (see the module doc), counted in ``stats``; False if it failed."""
    user.runs += 1
    run_id = f"{user.user_id}-r{user.runs}"
    subscribe = subscribe and user.thread_exists
    a: LeanClient | None = None
    b: LeanClient | None = None
    try:
        with trio.fail_after(CYCLE_SECONDS):
            a, established = await connect(host, port, user.user_id)
            token = established["data"].get("resume_token")
            follower: RunReader | None = None
            if subscribe:
                b, _ = await connect(host, port, user.user_id)
                await send(b, "subscribe_thread", {"thread_id": user.thread_id}, "sub")
                await reply_to(b, "sub")
                follower = RunReader(b, run_id)
            # The user's thread: created by its first cycle, followed by the later ones
            # with a subscriber; the other cycles start a thread of their own.
            on_thread = subscribe or not user.thread_exists
            thread = user.thread_id if on_thread else None
            reader = await start_run(a, user, run_id, request, thread, stats, agent)
            if on_thread:
                user.thread_exists = True
            while reader.last is None and (not drop or len(reader.seqs) < cut):
                await reader.next_event()
            if drop and reader.last is None:
                dropped, a = a, None
                await drop_and_resume(host, port, user, dropped, reader, token, use_token, stats)
            else:
                stats.outcome["finished_before_drop" if drop else "read_to_final"] += 1
                stats.check_run(run_id, "starter", reader.seqs, reader.last)
            if follower is not None:
                await follower.to_final()
                stats.check_run(run_id, "subscriber", follower.seqs, follower.last)
                stats.outcome["subscriber_runs"] += 1
            return True
    except trio.TooSlowError:
        stats.outcome["lost_run"] += 1
    except CycleError as error:
        stats.outcome[f"error_{error.code}"] += 1
        if len(stats.errors) < 2000:
            stats.errors.append(error.frame)
    except (Closed, OSError, trio.BrokenResourceError) as exc:
        stats.outcome[f"client_error_{type(exc).__name__}"] += 1
    finally:
        for client in (a, b):
            if client is not None:
                await client.aclose()
    return False


async def drop_and_resume(
    host: str,
    port: int,
    user: UserState,
    dropped: LeanClient,
    reader: RunReader,
    token: str | None,
    use_token: bool,
    stats: FollowStats,
) -> None:
    """Drop ``dropped`` without a close frame, reconnect, resume the run, check what it saw."""
    await trio.aclose_forcefully(dropped.stream)  # no close frame: a lost socket
    after = reader.seqs[-1] if reader.seqs else 0
    use = token if use_token else None
    client, established = await connect(host, port, user.user_id, use)
    try:
        if use is not None:
            resumed = established["data"].get("resumed") is True
            stats.outcome["session_resumed" if resumed else "session_not_resumed"] += 1
        resumer = RunReader(client, reader.run_id)
        sent = time.perf_counter()
        await send(client, "resume_run", {"run_id": reader.run_id, "after_seq": after}, "resume")
        reply = await reply_to(client, "resume")
        stats.outcome["resumed_live" if reply["data"]["live"] else "resumed_ended"] += 1
        first = await resumer.next_event()
        # Timed only when the first missed event existed when the run was resumed
        # (else the wait would include the run's own time to make it).
        if first["seq"] == after + 1 and reply["data"]["last_seq"] > after:
            stats.resume_ms.append((time.perf_counter() - sent) * 1000)
        else:
            stats.outcome["resumed_before_next_event"] += 1
        await resumer.to_final()
        status = f"resumed_final_{resumer.status}"
        if resumer.error_code:
            status += f"_{resumer.error_code}"
        stats.outcome[status] += 1
        stats.check_run(reader.run_id, "resumer", reader.seqs + resumer.seqs, resumer.last)
    finally:
        await client.aclose()
