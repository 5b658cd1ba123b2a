"""Chromium driven over the DevTools protocol, for the chat page's tests.

Debian's ``chromium`` (installed by ``make browser``) is driven straight from
Python over trio-websocket: no npm, no driver binary. A test starts a chat
server in its nursery, opens the browser inside it (:func:`open_browser`),
loads the page from the server's admin port, types and clicks with
``Runtime.evaluate``, and waits on real DOM conditions (a ``MutationObserver``
promise in the page, :meth:`Page.wait_for`), never on sleeps. One browser may
show several tabs (:meth:`Page.open_tab`), sharing one profile.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, wrap_client_stream

from server import ChatServer

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_MISSING = (
    "Debian's chromium is not installed (`make browser` installs it): the page cannot be driven"
)
requires_chromium = pytest.mark.skipif(CHROMIUM is None, reason=CHROMIUM_MISSING)

#: Cap on one browser test, start-up and teardown included.
TEST_TIMEOUT = 30.0
#: Cap on one wait for a condition in the page.
WAIT_TIMEOUT = 10.0


def admin_port(server: ChatServer) -> int:
    assert server.admin_port is not None
    return server.admin_port


# -- a DevTools protocol client -----------------------------------------------------


class PageError(Exception):
    """A DevTools command failed, or a script in the page threw."""


class DevTools:
    """The browser's DevTools WebSocket: commands and their replies, events to their tab."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._replies: dict[int, trio.MemorySendChannel[dict[str, Any]]] = {}
        self._pages: dict[str, Page] = {}

    async def read_messages(self) -> None:
        while True:
            try:
                text = await self._ws.get_message()
            except ConnectionClosed as exc:
                raise PageError(f"the DevTools connection closed: {exc.reason}") from None
            message = json.loads(text)
            if "id" in message:
                reply = self._replies.pop(message["id"], None)
                if reply is not None:
                    reply.send_nowait(message)
            elif (page := self._pages.get(message.get("sessionId", ""))) is not None:
                page.on_event(message["method"], message.get("params", {}))

    async def command(
        self, method: str, session_id: str | None, within: float, params: dict[str, Any]
    ) -> Any:
        """Send a command (to a tab's session, or to the browser); its result."""
        command_id = next(self._ids)
        message: dict[str, Any] = {"id": command_id, "method": method, "params": params}
        if session_id is not None:
            message["sessionId"] = session_id
        reply_in, reply_out = trio.open_memory_channel[dict[str, Any]](1)
        self._replies[command_id] = reply_in
        with trio.fail_after(within):
            await self._ws.send_message(json.dumps(message))
            reply = await reply_out.receive()
        if "error" in reply:
            raise PageError(f"{method}: {reply['error']}")
        return reply["result"]

    async def open_page(self) -> Page:
        """A new blank tab, attached, with its Page, Runtime and Log events on."""
        created = await self.command(
            "Target.createTarget", None, WAIT_TIMEOUT, {"url": "about:blank"}
        )
        attached = await self.command(
            "Target.attachToTarget",
            None,
            WAIT_TIMEOUT,
            {"targetId": created["targetId"], "flatten": True},
        )
        page = Page(self, attached["sessionId"])
        self._pages[page.session_id] = page
        for domain in ("Page", "Runtime", "Log"):
            await page.send(f"{domain}.enable")
        return page


class Page:
    """One browser tab, over a flattened DevTools session on the browser's WebSocket."""

    def __init__(self, devtools: DevTools, session_id: str) -> None:
        self._devtools = devtools
        self._expected: list[tuple[str, trio.Event]] = []
        self.session_id = session_id
        #: Uncaught exceptions, console errors and browser log errors (CSP violations...).
        self.errors: list[str] = []

    async def open_tab(self) -> Page:
        """Another tab of the same browser (same profile: same storage)."""
        return await self._devtools.open_page()

    def on_event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            self.errors.append(details.get("exception", {}).get("description", details["text"]))
        elif method == "Runtime.consoleAPICalled" and params["type"] == "error":
            self.errors.append(" ".join(str(a.get("value")) for a in params["args"]))
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            entry = params["entry"]
            self.errors.append(f"{entry['text']} ({entry.get('url', 'no url')})")
        for expected in [e for e in self._expected if e[0] == method]:
            self._expected.remove(expected)
            expected[1].set()

    def expect(self, method: str) -> trio.Event:
        """An event set when the next ``method`` event arrives (ask before acting)."""
        event = trio.Event()
        self._expected.append((method, event))
        return event

    async def send(
        self, method: str, /, *, browser: bool = False, within: float = WAIT_TIMEOUT, **params: Any
    ) -> Any:
        """Send a DevTools command (to the page's session unless ``browser``); its result."""
        session_id = None if browser else self.session_id
        return await self._devtools.command(method, session_id, within, params)

    async def evaluate(self, expression: str, *, within: float = WAIT_TIMEOUT) -> Any:
        """Evaluate JavaScript in the page (awaiting a promise); its JSON value."""
        result = await self.send(
            "Runtime.evaluate",
            within=within,
            expression=expression,
            awaitPromise=True,
            returnByValue=True,
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise PageError(details.get("exception", {}).get("description", details["text"]))
        return result["result"].get("value")

    async def wait_for(self, condition: str, *, within: float = WAIT_TIMEOUT) -> Any:
        """Wait until the JavaScript ``condition`` is truthy; return its value.

        The page re-checks it on every DOM mutation, so nothing polls on a timer.
        """
        script = f"""new Promise((resolve, reject) => {{
            let done = false;
            const finish = (ok, value) => {{
              if (done) return;
              done = true; observer.disconnect(); clearTimeout(timer);
              ok ? resolve(value) : reject(value);
            }};
            const check = () => {{
              try {{ const value = ({condition}); if (value) finish(true, value); }}
              catch (error) {{ finish(false, error); }}
            }};
            const observer = new MutationObserver(check);
            observer.observe(document, {{subtree: true, childList: true, attributes: true,
                                         characterData: true}});
            const timer = setTimeout(() => finish(false, new Error(
              "timed out waiting for " + {json.dumps(condition)})), {int(within * 1000)});
            check();
        }})"""
        return await self.evaluate(script, within=within + 2)

    async def goto(self, url: str) -> None:
        loaded = self.expect("Page.loadEventFired")
        result = await self.send("Page.navigate", url=url)
        assert "errorText" not in result, result
        with trio.fail_after(WAIT_TIMEOUT):
            await loaded.wait()

    async def set_value(self, element_id: str, value: str) -> None:
        await self.evaluate(
            f"""(() => {{ const e = document.getElementById({json.dumps(element_id)});
                e.value = {json.dumps(value)};
                e.dispatchEvent(new Event("input", {{bubbles: true}})); }})()"""
        )

    async def click(self, selector: str) -> None:
        found = await self.evaluate(
            f"""(() => {{ const e = document.querySelector({json.dumps(selector)});
                if (!e || e.disabled) return false; e.click(); return true; }})()"""
        )
        assert found, f"no enabled element {selector}"

    async def text(self, selector: str) -> str:
        value = await self.evaluate(
            f"document.querySelector({json.dumps(selector)})?.innerText ?? null"
        )
        assert isinstance(value, str), f"no element {selector}"
        return value

    async def screenshot(self) -> bytes:
        result = await self.send("Page.captureScreenshot", format="png")
        return base64.b64decode(result["data"])


async def _run_browser(tmp_path: Path, *, task_status: trio.TaskStatus[Page]) -> None:
    """Run headless Chromium with one page until cancelled; kill its process group after."""
    assert CHROMIUM is not None
    profile = tmp_path / "chromium-profile"
    argv = [
        CHROMIUM,
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        # Tabs in the background keep their timers and sockets going (the two-tab tests).
        "--disable-background-timer-throttling",
        "--disable-renderer-backgrounding",
        "--disable-backgrounding-occluded-windows",
        "--remote-debugging-port=0",
        f"--user-data-dir={profile}",
        "about:blank",
    ]
    process = await trio.lowlevel.open_process(
        argv,
        # Chromium keeps its crash reports under XDG_CONFIG_HOME: not in $HOME.
        env={**os.environ, "XDG_CONFIG_HOME": str(profile), "XDG_CACHE_HOME": str(profile)},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group: its helpers die with it
    )
    assert process.stderr is not None
    stream: trio.SocketStream | None = None
    try:
        url = urlsplit(await _devtools_url(process.stderr))
        assert url.hostname is not None
        assert url.port is not None
        stream = await trio.open_tcp_stream(url.hostname, url.port)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_drain, process.stderr)
            ws = await wrap_client_stream(
                nursery, stream, url.netloc, url.path, max_message_size=64 * 2**20
            )
            devtools = DevTools(ws)
            nursery.start_soon(devtools.read_messages)
            task_status.started(await devtools.open_page())
            await trio.sleep_forever()
    finally:
        with trio.CancelScope(shield=True):
            await _kill_all(process, marker=str(profile))
            await process.stderr.aclose()
            # The DevTools socket is ours to close (Chromium never answers a close
            # frame, and trio-websocket's client does not close a socket whose
            # peer went first).
            if stream is not None:
                await trio.aclose_forcefully(stream)


def _alive(pgid: int, marker: str) -> list[int]:
    """Live processes of group ``pgid``, or whose command line holds ``marker``.

    Chromium's crash handler leaves the group (it starts its own session) but
    names our profile folder in its command line. Zombies waiting for init
    are dead, so they do not count.
    """
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            # pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses.
            fields = (proc / "stat").read_text().rpartition(")")[2].split()
            ours = int(fields[2]) == pgid or marker.encode() in (proc / "cmdline").read_bytes()
            if ours and fields[0] not in ("Z", "X"):
                pids.append(int(proc.name))
    return pids


async def _kill_all(process: trio.Process, marker: str) -> None:
    """SIGKILL Chromium's process group and its strays; fail unless all are dead within 5 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    await process.wait()
    with trio.move_on_after(5):
        # Processes that are not our children have no exit event to wait on.
        while pids := _alive(process.pid, marker):
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            await trio.sleep(0.01)
    leftover = _alive(process.pid, marker)
    assert not leftover, f"chromium processes still alive after SIGKILL: {leftover}"


async def _devtools_url(stderr: trio.abc.ReceiveStream) -> str:
    """Read Chromium's stderr up to ``DevTools listening on ws://...``."""
    buffer = b""
    with trio.fail_after(20):
        while True:
            chunk = await stderr.receive_some(65536)
            if not chunk:
                raise PageError(f"chromium exited before listening: {buffer.decode()[-2000:]}")
            buffer += chunk
            for line in buffer.decode("utf-8", "replace").splitlines(keepends=True):
                if line.startswith("DevTools listening on ") and line.endswith("\n"):
                    return line.removeprefix("DevTools listening on ").strip()


async def _drain(stderr: trio.abc.ReceiveStream) -> None:
    """Keep reading Chromium's log so a full pipe never blocks it."""
    while await stderr.receive_some(65536):
        pass


@asynccontextmanager
async def open_browser(tmp_path: Path) -> AsyncIterator[Page]:
    """Headless Chromium showing one blank page, its process group killed on exit.

    Use it inside the block that owns the chat server, so that Chromium is gone
    before the server is cancelled (a server cancelled first waits for the
    page's close frame).
    """
    async with trio.open_nursery() as nursery:
        page: Page = await nursery.start(_run_browser, tmp_path)
        try:
            yield page
        finally:
            nursery.cancel_scope.cancel()


#: True once the page is connected and has shown the thread it opened (if any).
SETTLED = (
    "document.body.dataset.connection === 'connected'"
    " && document.getElementById('log').dataset.loading !== 'true'"
)


async def load_chat(page: Page, server: ChatServer, query: str = "user_id=alice") -> None:
    """Load the page from the server's admin port; wait until it is connected and settled."""
    await page.goto(f"http://127.0.0.1:{admin_port(server)}/?{query}")
    await page.wait_for(SETTLED)


async def send_message(page: Page, text: str) -> str:
    """Type ``text``, press Send; the run id the page chose (its card is on the page)."""
    before = await page.evaluate("window.chatPage.app.lastSent")
    await page.set_value("message", text)
    await page.click("#send")
    run_id = await page.wait_for(
        f"""(() => {{ const id = window.chatPage.app.lastSent;
              return id !== {json.dumps(before)}
                && document.querySelector(`article.run[data-run-id="${{id}}"]`) && id; }})()"""
    )
    assert isinstance(run_id, str)
    return run_id


def nonzero(counts: Mapping[str, int]) -> dict[str, int]:
    return {key: value for key, value in counts.items() if value}


def run_selector(run_id: str) -> str:
    return f'article.run[data-run-id="{run_id}"]'


async def wait_run_status(page: Page, run_id: str, *statuses: str) -> str:
    status = await page.wait_for(
        f"""(() => {{ const s = document.querySelector({json.dumps(run_selector(run_id))})
              ?.dataset.status; return {json.dumps(statuses)}.includes(s) && s; }})()"""
    )
    assert isinstance(status, str)
    return status


#: The agent steps of one run as a tree: [[name, status, [children...]], ...].
STEP_TREE = """(run) => {
  const walk = (list) => [...list.children].filter((li) => li.matches('li.agent')).map((li) =>
    [li.dataset.agent, li.dataset.status, walk(li.querySelector(':scope > details > ol.items'))]);
  return walk(run.querySelector('ol.steps'));
}"""


async def step_tree(page: Page, run_id: str) -> list[Any]:
    tree = await page.evaluate(
        f"({STEP_TREE})(document.querySelector({json.dumps(run_selector(run_id))}))"
    )
    assert isinstance(tree, list)
    return tree
