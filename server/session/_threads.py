"""Handlers of the v1.1 messages: threads and history, resuming runs, following threads.

``ThreadsHandler`` answers ``list_threads``, ``get_thread``, ``rename_thread`` and
``delete_thread`` from the history store; ``FollowHandler`` answers
``resume_run``, ``subscribe_thread`` and ``unsubscribe_thread``. Every lookup
is by this connection's user: another user's thread or run is answered
exactly as a missing one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from server.protocol import (
    ClientMessage,
    DeleteThread,
    FormatError,
    GetThread,
    ListThreads,
    RenameThread,
    ResumeRun,
    RunNotFoundError,
    SubscribeThread,
    ThreadBusyError,
    ThreadNotFoundError,
    as_replay,
    encode_reply,
)
from server.store import DeleteResult

from ..runs import RemoteRun, Run
from ._handlers import MessageHandler

if TYPE_CHECKING:
    from server.store import RunInfo, ThreadInfo

#: Events read from the store per query while replaying a run.
REPLAY_PAGE = 256


def thread_data(thread: ThreadInfo) -> dict[str, Any]:
    return {
        "thread_id": thread.thread_id,
        "title": thread.title,
        "created_at": thread.created_at,
        "updated_at": thread.updated_at,
        "run_count": thread.run_count,
        "last_status": thread.last_status,
    }


def run_data(run: RunInfo, *, live_seq: int | None = None) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "agent_name": run.agent_name,
        "status": run.status,
        "user_request": run.request,
        "answer": run.answer,
        "started_at": run.started_at,
        "ended_at": run.ended_at,
        # A run live in this process may be ahead of what is committed.
        "last_seq": live_seq if live_seq is not None else run.last_seq,
    }


def _not_found(thread_id: str, message_id: str | None) -> ThreadNotFoundError:
    return ThreadNotFoundError(
        "no such thread", details={"thread_id": thread_id}, message_id=message_id
    )


class ThreadsHandler(MessageHandler):
    __slots__ = ()
    message_types = ("list_threads", "get_thread", "rename_thread", "delete_thread")

    async def handle(self, message: ClientMessage) -> None:
        context = self.context
        store = context.history.store
        user_id = context.user_id
        message_id = message.message_id
        if isinstance(message, ListThreads):
            page = await store.list_threads(user_id, limit=message.limit, cursor=message.cursor)
            data: dict[str, Any] = {
                "threads": [thread_data(t) for t in page.items],
                "next_cursor": page.next_cursor,
            }
            await context.send(encode_reply("threads", data, message_id=message_id))
        elif isinstance(message, GetThread):
            found = await store.get_thread(
                user_id, message.thread_id, limit=message.limit, cursor=message.cursor
            )
            if found is None:
                raise _not_found(message.thread_id, message_id)
            thread, runs = found
            directory = context.directory
            data = thread_data(thread)
            del data["run_count"], data["last_status"]
            data["runs"] = [
                run_data(r, live_seq=_live_seq(directory.find(user_id, r.run_id), r))
                for r in runs.items
            ]
            data["next_cursor"] = runs.next_cursor
            await context.send(encode_reply("thread", data, message_id=message_id))
        elif isinstance(message, RenameThread):
            renamed = await store.rename_thread(user_id, message.thread_id, message.title)
            if renamed is None:
                raise _not_found(message.thread_id, message_id)
            data = {"thread_id": renamed.thread_id, "title": renamed.title}
            await context.send(encode_reply("thread_renamed", data, message_id=message_id))
        else:
            assert isinstance(message, DeleteThread)
            result = await store.delete_thread(user_id, message.thread_id)
            if result is DeleteResult.NOT_FOUND:
                raise _not_found(message.thread_id, message_id)
            if result is DeleteResult.BUSY:
                raise ThreadBusyError(
                    "the thread has a run in progress",
                    details={"thread_id": message.thread_id},
                    message_id=message_id,
                )
            context.follows.unsubscribe(message.thread_id)
            data = {"thread_id": message.thread_id}
            await context.send(encode_reply("thread_deleted", data, message_id=message_id))


def _live_seq(live: Run | None, run: RunInfo) -> int | None:
    if live is not None and live.run_key == run.run_key:
        return live.last_seq
    return None


class FollowHandler(MessageHandler):
    __slots__ = ()
    message_types = ("resume_run", "subscribe_thread", "unsubscribe_thread")

    async def handle(self, message: ClientMessage) -> None:
        if isinstance(message, ResumeRun):
            await self._resume(message)
        else:
            assert isinstance(message, SubscribeThread)
            await self._subscription(message)

    async def _resume(self, message: ResumeRun) -> None:
        context = self.context
        message_id = message.message_id
        after = message.after_seq
        # A run stays in the directory until its final event is delivered, even
        # while that event is being committed: following it then gets the final.
        run = context.directory.find(context.user_id, message.run_id)
        if run is not None:
            if context.runs.receives(run) or context.follows.is_following(run):
                raise FormatError(
                    "this connection already receives that run's events",
                    details={"field": "payload.run_id", "run_id": message.run_id},
                    message_id=message_id,
                )
            reply = {
                "run_id": run.run_id,
                "thread_id": run.thread_id,
                "status": "running",
                "after_seq": after,
                "last_seq": run.last_seq,
                "live": True,
            }
            # The reply, what the run sent after after_seq, then its live events:
            # queued in one step, so nothing is missed or repeated.
            context.follows.follow(
                run, after, first=encode_reply("run_resumed", reply, message_id=message_id)
            )
            return
        info = await context.history.store.get_run(context.user_id, message.run_id)
        if info is None:
            raise RunNotFoundError(
                "no such run", details={"run_id": message.run_id}, message_id=message_id
            )
        cluster = context.cluster
        if info.running and cluster is not None and info.node_id != cluster.node_id:
            await self._resume_remote(info, after, message_id)
            return
        live = info.running  # ended: everything is in the store (its final was committed first)
        reply = {
            "run_id": info.run_id,
            "thread_id": info.thread_id,
            "status": info.status,
            "after_seq": after,
            "last_seq": info.last_seq,
            "live": live,
        }
        await context.send(encode_reply("run_resumed", reply, message_id=message_id))
        await self._replay(info.run_key, after, info.last_seq)

    async def _resume_remote(self, info: RunInfo, after: int, message_id: str | None) -> None:
        """A run another process runs: its history, then its broker stream (live)."""
        context = self.context
        cluster = context.cluster
        assert cluster is not None
        if context.follows.is_following_remote(info.run_key):
            raise FormatError(
                "this connection already receives that run's events",
                details={"field": "payload.run_id", "run_id": info.run_id},
                message_id=message_id,
            )
        run = RemoteRun.of(info)
        # Its owner publishes from the run's first event on; if the owner is
        # gone, the NODE_LOST sweep of another process publishes its end.
        await cluster.remote_runs().request_publish(run)
        reply = {
            "run_id": info.run_id,
            "thread_id": info.thread_id,
            "status": "running",
            "after_seq": after,
            "last_seq": info.last_seq,
            "live": True,
        }
        context.follows.follow_remote(
            run, after, first=encode_reply("run_resumed", reply, message_id=message_id)
        )

    async def _replay(self, run_key: str, after: int, last: int) -> None:
        """Send the committed events after ``after`` up to ``last``, marked as replayed."""
        store = self.context.history.store
        send_event = self.context.send_event
        while after < last:
            events = await store.read_events(run_key, after, REPLAY_PAGE)
            if not events:
                break
            for event in events:
                await send_event(as_replay(event.frame))
            after = events[-1].seq

    async def _subscription(self, message: SubscribeThread) -> None:
        context = self.context
        message_id = message.message_id
        thread_id = message.thread_id
        if message.type == "unsubscribe_thread":
            context.follows.unsubscribe(thread_id)
            if context.cluster is not None:
                context.cluster.interest_may_have_ended()
            await context.send(
                encode_reply("thread_unsubscribed", {"thread_id": thread_id}, message_id=message_id)
            )
            return
        found = await context.history.store.get_thread(context.user_id, thread_id, limit=1)
        if found is None:
            raise _not_found(thread_id, message_id)
        context.follows.subscribe(thread_id, message_id=message_id)
        if context.cluster is not None:
            # Other processes publish this thread's runs from now on.
            await context.cluster.follow_thread(context.user_id, thread_id)
        running = context.directory.running_on(context.user_id, thread_id)
        running_id = running.run_id if running is not None else None
        newest = found[1].items
        if running_id is None and newest and newest[0].running:
            running_id = newest[0].run_id  # running in another process
        data = {"thread_id": thread_id, "running_run_id": running_id}
        await context.send(encode_reply("thread_subscribed", data, message_id=message_id))
