"""The chat page's threads, history, resume and several tabs, in headless Chromium.

The page lists the user's threads, reopens the one in its URL after a
reload (from history), renames and deletes threads, catches up on a run
after its socket dropped mid-run (the test cuts it with a TCP proxy between
the page and the server), and follows a thread from two tabs. What the page
shows is checked against what the server recorded, read back over the
protocol by a test client of the same user.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
from _asking import ask, recorded_events
from _browser import (
    SETTLED,
    TEST_TIMEOUT,
    Page,
    admin_port,
    load_chat,
    nonzero,
    open_browser,
    requires_chromium,
    run_selector,
    send_message,
    step_tree,
    wait_run_status,
)
from _gate import AT_GATE, GATE_EVENTS, GATES, open_gate, start_gate_server
from _redis import TcpProxy

from server.testing import ChatClient, open_chat_client, start_test_server

COST_QUESTION = (
    "We send 40M input and 10M output tokens a month to gpt-4o and p95 latency is 1200 ms. "
    "How much would switching to gpt-4o-mini save? We want to cut cost by 30%."
)
FOLLOW_UP = "And what if we switched to claude 3.5 haiku?"


@pytest.fixture(autouse=True)
def fresh_gates() -> None:
    GATES.clear()


# -- what the page shows ------------------------------------------------------------


async def shown_runs(page: Page) -> list[dict[str, Any]]:
    """The run cards in the log, in order: id, status, request, answer text."""
    runs = await page.evaluate(
        """[...document.querySelectorAll('#log > article.run')].map((r) => ({
             id: r.dataset.runId, status: r.dataset.status,
             request: r.querySelector('.user-text').textContent,
             answer: r.querySelector('.answer-body').innerText}))"""
    )
    assert isinstance(runs, list)
    return runs


async def shown_threads(page: Page) -> list[dict[str, Any]]:
    threads = await page.evaluate(
        """[...document.querySelectorAll('#thread-list > li')].map((li) => ({
             id: li.dataset.threadId, title: li.querySelector('.thread-name').textContent,
             meta: li.querySelector('.thread-meta').textContent,
             current: li.querySelector('button').getAttribute('aria-current') === 'page'}))"""
    )
    assert isinstance(threads, list)
    return threads


async def seen(page: Page, run_id: str) -> list[int]:
    """The seq of every event the page received for the run, in order of arrival."""
    seqs = await page.evaluate(f"window.chatPage.app.runs.get({json.dumps(run_id)}).seen")
    assert isinstance(seqs, list)
    return seqs


async def node_counts(page: Page, run_id: str) -> dict[str, int]:
    counts = await page.evaluate(
        f"""(() => {{ const r = document.querySelector({json.dumps(run_selector(run_id))});
            const n = (s) => r.querySelectorAll(s).length;
            return {{agents: n('li.agent'), thoughts: n('li.thinking'), tools: n('li.tool'),
                     warnings: n('.run-errors .warning')}}; }})()"""
    )
    assert isinstance(counts, dict)
    return counts


def expected_counts(events: list[dict[str, Any]]) -> dict[str, int]:
    """One node per agent, thought and tool call: what the live view builds from events."""
    kinds = [e["type"] for e in events]
    return {
        "agents": kinds.count("agent_started"),
        "thoughts": kinds.count("agent_thinking"),
        "tools": kinds.count("tool_executing"),
        "warnings": 0,
    }


def listed_with(text: str) -> str:
    """JavaScript: the first thread in the list says ``text``."""
    return (
        "document.querySelector('#thread-list .thread-meta')"
        f"?.textContent.includes({json.dumps(text)})"
    )


def got_seq(run_id: str, seq: int) -> str:
    """JavaScript: the page has received the run's events up to ``seq``."""
    return f"window.chatPage.app.runs.get({json.dumps(run_id)})?.lastSeq === {seq}"


async def current_thread(page: Page) -> str:
    thread_id = await page.wait_for(
        "location.hash.startsWith('#thread=') && window.chatPage.app.threadKnown"
        " && location.hash.slice('#thread='.length)"
    )
    assert isinstance(thread_id, str)
    return thread_id


# -- threads and history --------------------------------------------------------------


@requires_chromium
async def test_a_conversation_is_listed_continued_with_memory_and_reopened_after_a_reload(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        server = await start_test_server(nursery)
        async with open_browser(tmp_path) as page, open_chat_client(server, user_id="alice") as me:
            await load_chat(page, server)
            assert await page.evaluate(
                "getComputedStyle(document.getElementById('threads')).display"
            ) == ("flex")
            assert await shown_threads(page) == []
            assert await page.evaluate("!document.getElementById('threads-empty').hidden")

            first = await send_message(page, COST_QUESTION)
            assert await wait_run_status(page, first, "completed", "failed") == "completed"
            thread_id = await current_thread(page)
            title = COST_QUESTION[:80]
            await page.wait_for(listed_with("1 run"))
            [listed] = await shown_threads(page)
            assert listed == {
                "id": thread_id,
                "title": title,
                "meta": listed["meta"],
                "current": True,
            }
            assert "completed" in listed["meta"]
            assert await page.text("#thread-title") == title

            # A follow-up goes to the same thread: the answer builds on the first turn.
            second = await send_message(page, FOLLOW_UP)
            assert await wait_run_status(page, second, "completed", "failed") == "completed"
            follow_answer = await page.text(f"{run_selector(second)} .answer-body")
            assert "From earlier in this thread" in follow_answer
            assert "Earlier in this thread the monthly cost was $200.00" in follow_answer
            live = await shown_runs(page)
            live_tree = await step_tree(page, first)
            await page.wait_for(listed_with("2 runs"))
            record = await ask(me, "get_thread", thread_id=thread_id)
            assert [r["run_id"] for r in record["data"]["runs"]] == [second, first]

            # A reload shows the same conversation, read back from history.
            loaded = page.expect("Page.loadEventFired")
            await page.send("Page.reload")
            await loaded.wait()
            await page.wait_for(SETTLED)
            assert await page.evaluate("location.hash") == f"#thread={thread_id}"
            await page.wait_for("document.querySelectorAll('#log > article.run').length === 2")
            assert await shown_runs(page) == live
            assert await page.text("#thread-title") == title
            assert [t["current"] for t in await shown_threads(page)] == [True]
            # The steps are read on demand: the live view replays the whole timeline.
            events = await recorded_events(me, first)
            assert await page.text(f"{run_selector(first)} button.show-steps") == (
                f"Show all {len(events)} events"
            )
            await page.click(f"{run_selector(first)} button.show-steps")
            await page.wait_for(
                f"window.chatPage.app.runs.get({json.dumps(first)}).seen.length === {len(events)}"
            )
            assert await seen(page, first) == list(range(1, len(events) + 1))
            assert await step_tree(page, first) == live_tree
            assert await node_counts(page, first) == expected_counts(events)
            assert (await shown_runs(page))[0] == live[0]

            # Still the same thread after the reload; "New chat" starts another one.
            third = await send_message(page, "And with batching?")
            assert await wait_run_status(page, third, "completed", "failed") == "completed"
            record = await ask(me, "get_thread", thread_id=thread_id)
            assert [r["run_id"] for r in record["data"]["runs"]] == [third, second, first]
            await page.click("#new-chat")
            assert await page.evaluate("location.hash") == ""
            assert await shown_runs(page) == []
            assert await page.text("#thread-title") == "New chat"
            fourth = await send_message(page, "How do I cut my latency below 200 ms?")
            assert await wait_run_status(page, fourth, "completed", "failed") == "completed"
            other = await current_thread(page)
            assert other != thread_id
            await page.wait_for("document.querySelectorAll('#thread-list > li').length === 2")
            threads = await shown_threads(page)
            assert [(t["id"], t["current"]) for t in threads] == [(other, True), (thread_id, False)]

            # Back to the first thread from the list.
            await page.click(f'#thread-list li[data-thread-id="{thread_id}"] button')
            await page.wait_for(SETTLED)
            assert [r["id"] for r in await shown_runs(page)] == [first, second, third]
            assert page.errors == []


async def start_runs(client: ChatClient, runs: list[tuple[str, str | None]]) -> list[str]:
    """Run each (request, thread) on the gate agent to its end; their run ids."""
    ids = []
    for text, thread_id in runs:
        run = await client.run(text, agent_name="gate", thread_id=thread_id)
        ids.append(run.run_id)
    return ids


@requires_chromium
async def test_long_lists_are_paged_load_more_threads_and_earlier_runs(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        server = await start_gate_server(nursery, rate_limit=0)
        async with open_chat_client(server, user_id="bob") as bob:
            # 21 runs in one thread, then 21 other threads of one run each (newer).
            runs = await start_runs(bob, [(f"turn {i}", "t-long") for i in range(21)])
            await start_runs(bob, [(f"thread {i}", f"t-{i:02}") for i in range(21)])
        async with open_browser(tmp_path) as page:
            await load_chat(page, server, "user_id=bob")
            await page.wait_for("document.querySelectorAll('#thread-list > li').length === 20")
            assert [t["title"] for t in (await shown_threads(page))[:2]] == [
                "thread 20",
                "thread 19",
            ]
            await page.click("#more-threads")
            await page.wait_for("document.querySelectorAll('#thread-list > li').length === 22")
            assert await page.evaluate("document.getElementById('more-threads').hidden")
            assert (await shown_threads(page))[-1]["title"] == "turn 0"

            await page.click('#thread-list li[data-thread-id="t-long"] button')
            await page.wait_for(SETTLED)
            await page.wait_for("document.querySelectorAll('#log > article.run').length === 20")
            assert [r["id"] for r in await shown_runs(page)] == runs[1:]
            await page.click("#earlier-runs")
            await page.wait_for("document.querySelectorAll('#log > article.run').length === 21")
            shown = await shown_runs(page)
            assert [r["id"] for r in shown] == runs
            assert shown[0]["answer"] == "passed turn 0"
            assert await page.evaluate("document.getElementById('earlier-runs').hidden")
            assert page.errors == []


@requires_chromium
async def test_rename_and_delete_with_confirmation_and_thread_busy_is_explained(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        server = await start_gate_server(nursery)
        async with open_browser(tmp_path) as page, open_chat_client(server, user_id="alice") as me:
            await load_chat(page, server, "user_id=alice&agent=gate")
            first = await send_message(page, "first turn")
            assert await wait_run_status(page, first, "completed", "failed") == "completed"
            thread_id = await current_thread(page)

            # Rename: the dialog, then the new title in the bar, the list and the record.
            await page.click("#rename-thread")
            assert await page.evaluate("document.getElementById('rename-dialog').open")
            assert await page.evaluate("document.getElementById('rename-input').value") == (
                "first turn"
            )
            await page.set_value("rename-input", "  Budget talk  ")
            await page.click("#rename-save")
            await page.wait_for(
                "document.querySelector('#thread-list .thread-name')?.textContent === 'Budget talk'"
            )
            assert await page.text("#thread-title") == "Budget talk"
            assert not await page.evaluate("document.getElementById('rename-dialog').open")
            record = await ask(me, "get_thread", thread_id=thread_id)
            assert record["data"]["title"] == "Budget talk"

            # Delete while a run is in progress: THREAD_BUSY, explained; nothing deleted.
            busy = await send_message(page, "wait gate:busy")
            await page.wait_for(f"window.chatPage.app.runs.get({json.dumps(busy)}).lastSeq >= 5")
            await page.click("#delete-thread")
            assert "Budget talk" in await page.text("#delete-text")
            await page.click("#delete-confirm")
            alert = await page.wait_for(
                "!document.getElementById('thread-alert').hidden"
                " && document.getElementById('thread-alert').innerText"
            )
            assert "THREAD_BUSY" in alert
            assert "has a run in progress" in alert
            assert (await ask(me, "get_thread", thread_id=thread_id))["type"] == "thread"
            open_gate("busy")
            assert await wait_run_status(page, busy, "completed", "failed") == "completed"

            # Cancel keeps it; confirming deletes it for good.
            await page.click("#delete-thread")
            await page.click("#delete-cancel")
            assert not await page.evaluate("document.getElementById('delete-dialog').open")
            assert len(await shown_threads(page)) == 1
            await page.click("#delete-thread")
            await page.click("#delete-confirm")
            await page.wait_for("document.querySelectorAll('#thread-list > li').length === 0")
            assert await page.text("#thread-title") == "New chat"
            assert await shown_runs(page) == []
            assert await page.evaluate("location.hash") == ""
            gone = await ask(me, "get_thread", thread_id=thread_id)
            assert gone["error_code"] == "THREAD_NOT_FOUND"

            # A reload with the deleted thread in the URL says so and starts a new chat.
            await page.goto(
                f"http://127.0.0.1:{admin_port(server)}/?user_id=alice#thread={thread_id}"
            )
            alert = await page.wait_for(
                "!document.getElementById('thread-alert').hidden"
                " && document.getElementById('thread-alert').innerText"
            )
            assert f"There is no thread {thread_id} for alice" in alert
            assert await page.evaluate("location.hash") == ""
            assert nonzero(server.statistics().protocol_errors_total) == {
                "THREAD_BUSY": 1,
                "THREAD_NOT_FOUND": 3,  # the test's own get_thread, then the page's two asks
            }
            assert page.errors == []


# -- a network blip mid-run -----------------------------------------------------------


@requires_chromium
@pytest.mark.parametrize("grace", [0, 30])
async def test_a_network_blip_mid_run_shows_the_whole_run_once(
    nursery: trio.Nursery, tmp_path: Path, grace: int
) -> None:
    """The socket drops mid-run (the test cuts it with a TCP proxy); the page reconnects.

    With session resume (grace 30) the page takes its session over with the resume
    token, asks for the events after the last seq it saw, and the run goes on to
    complete. Without it (grace 0) the server cancelled the run when the socket went:
    the page shows the rest of it from history, to its recorded end. Either way every
    event is shown once, in order.
    """
    with trio.fail_after(TEST_TIMEOUT):
        server = await start_gate_server(nursery, resume_grace=grace)
        proxy = TcpProxy(server.url)
        await nursery.start(proxy.serve)
        async with open_browser(tmp_path) as page, open_chat_client(server, user_id="alice") as me:
            await load_chat(page, server, f"user_id=alice&agent=gate&server={proxy.url}")
            run_id = await send_message(page, "blip gate:blip")
            await page.wait_for(got_seq(run_id, 5))
            first_connection = await page.evaluate("window.chatPage.app.connectionId")

            proxy.cut()
            await page.wait_for("document.body.dataset.connection === 'reconnecting'")
            note = await page.text(f"{run_selector(run_id)} .run-note")
            assert "dropped after event 5" in note
            proxy.restore()
            await page.wait_for(SETTLED)
            connection = await page.evaluate("window.chatPage.app.connectionId")
            if grace:
                assert connection == first_connection  # the same session, taken over
                await page.wait_for(
                    "[...document.querySelectorAll('.notice.info')]"
                    ".some((n) => n.textContent.includes('the session was resumed'))"
                )
                open_gate("blip")
            else:
                assert connection != first_connection
            status = await wait_run_status(page, run_id, "cancelled", "completed", "failed")

            events = await recorded_events(me, run_id)
            if grace:
                assert status == "completed"
                assert len(events) == GATE_EVENTS
                assert "passed blip" in await page.text(f"{run_selector(run_id)} .answer")
            else:
                assert status == "cancelled"
                assert events[-1]["data"]["error"]["code"] == "DISCONNECTED"
                assert "DISCONNECTED" in await page.text(f"{run_selector(run_id)} .answer")
            assert await seen(page, run_id) == [e["seq"] for e in events]
            assert await node_counts(page, run_id) == expected_counts(events)
            assert "Resumed after event 5" in await page.text(f"{run_selector(run_id)} .run-note")
            network = ("WebSocket connection to", "Failed to load resource: net::")
            assert all(error.startswith(network) for error in page.errors), page.errors


@requires_chromium
@pytest.mark.parametrize("grace", [0, 30])
async def test_a_reload_mid_run_shows_the_run_again_and_with_resume_it_goes_on(
    nursery: trio.Nursery, tmp_path: Path, grace: int
) -> None:
    """The page keeps its resume token in the tab's storage: after a reload it takes its
    session over (grace 30), so the run goes on, and shows the run from its start. Without
    session resume the reload ends the run (the browser closed the socket): the page shows
    it from history, ended."""
    with trio.fail_after(TEST_TIMEOUT):
        server = await start_gate_server(nursery, resume_grace=grace)
        async with open_browser(tmp_path) as page:
            await load_chat(page, server, "user_id=alice&agent=gate")
            run_id = await send_message(page, "reload gate:reload")
            await page.wait_for(got_seq(run_id, AT_GATE))
            before = await page.evaluate("window.chatPage.app.connectionId")

            loaded = page.expect("Page.loadEventFired")
            await page.send("Page.reload")
            await loaded.wait()
            await page.wait_for(SETTLED)
            after = await page.evaluate("window.chatPage.app.connectionId")
            assert (after == before) == bool(grace)
            if grace:
                await page.wait_for(got_seq(run_id, AT_GATE))
                assert await wait_run_status(page, run_id, "running") == "running"
                open_gate("reload")
                assert await wait_run_status(page, run_id, "completed", "failed") == "completed"
                assert await seen(page, run_id) == list(range(1, GATE_EVENTS + 1))
            else:
                # Shown from its record, ended; its events on demand, each once.
                assert await wait_run_status(page, run_id, "cancelled", "failed") == "cancelled"
                await page.click(f"{run_selector(run_id)} button.show-steps")
                await page.wait_for(got_seq(run_id, AT_GATE + 1))
                assert await seen(page, run_id) == list(range(1, AT_GATE + 2))
            assert (await node_counts(page, run_id))["warnings"] == 0
            assert server.statistics().sessions_lingering == 0
            assert page.errors == []


# -- two tabs on one thread -------------------------------------------------------------


@requires_chromium
async def test_two_tabs_follow_one_thread_live_and_either_can_stop_a_run(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    with trio.fail_after(TEST_TIMEOUT * 1.5):
        server = await start_gate_server(nursery)
        async with open_browser(tmp_path) as one:
            await load_chat(one, server, "user_id=alice&agent=gate")
            first = await send_message(one, "hello")
            assert await wait_run_status(one, first, "completed", "failed") == "completed"
            thread_id = await current_thread(one)

            # A run in progress when the second tab opens the thread: caught up on, whole.
            running = await send_message(one, "slow gate:a")
            await one.wait_for(got_seq(running, 5))
            two = await one.open_tab()
            await load_chat(two, server, f"user_id=alice&agent=gate#thread={thread_id}")
            await two.wait_for(
                f"window.chatPage.app.runs.get({json.dumps(running)})?.lastSeq === 5"
            )
            assert [r["id"] for r in await shown_runs(two)] == [first, running]
            open_gate("a")
            for page in (one, two):
                assert await wait_run_status(page, running, "completed", "failed") == "completed"
                assert await seen(page, running) == list(range(1, GATE_EVENTS + 1))

            # A run started in the first tab shows live in the second; stopped from there.
            stoppable = await send_message(one, "stop me gate:never")
            await two.wait_for(
                f"""document.querySelector({json.dumps(run_selector(stoppable) + " .user-text")})
                    ?.textContent === 'stop me gate:never'
                    && window.chatPage.app.runs.get({json.dumps(stoppable)}).lastSeq === 5"""
            )
            # While it runs, a message from the second tab is refused: THREAD_BUSY, explained.
            refused = await send_message(two, "me too")
            assert await wait_run_status(two, refused, "rejected", "running") == "rejected"
            assert "has a run in progress" in await two.text(f"{run_selector(refused)} .error-box")
            await two.click(f"{run_selector(stoppable)} button.stop")
            for page in (one, two):
                assert await wait_run_status(page, stoppable, "cancelled", "failed") == "cancelled"
                assert "CANCELLED" in await page.text(f"{run_selector(stoppable)} .answer")
                # started, thinking, tool call and result, waiting; then cancelled.
                assert await seen(page, stoppable) == list(range(1, 7))

            # And the other way: a run started in the second tab shows in the first.
            back = await send_message(two, "from the second tab")
            for page in (one, two):
                assert await wait_run_status(page, back, "completed", "failed") == "completed"
                assert await seen(page, back) == list(range(1, GATE_EVENTS + 1))
            assert await one.text(f"{run_selector(back)} .user-text") == "from the second tab"
            assert nonzero(server.statistics().runs_total) == {"completed": 3, "cancelled": 1}
            assert nonzero(server.statistics().protocol_errors_total) == {"THREAD_BUSY": 1}
            assert one.errors == []
            assert two.errors == []
