"""The chat page end to end: served by the admin listener, driven in headless Chromium.

Chromium is driven through the DevTools protocol (``tests/_browser.py``):
each browser test starts a chat server in its nursery, loads the page from
the server's admin port, types and clicks, and waits on real DOM conditions,
never on sleeps. The HTTP tests of the page's routes need no browser and
always run. The thread, resume and several-tab behaviours are in
``tests/test_browser_threads.py``.

``UPDATE_SCREENSHOTS=1 pytest tests/test_browser.py -k screenshots`` rewrites
``docs/screenshots/chat-desktop.png``, ``chat-phone.png`` and ``chat-phone-threads.png``.
"""

from __future__ import annotations

import json
import os
import re
import struct
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import jwt
import pytest
import trio
from _browser import (
    TEST_TIMEOUT,
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

from agents import BaseAgent, FaultSpec
from agents.builtin import default_registry
from server import ChatServer
from server.testing import open_chat_client, start_test_server

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "docs" / "screenshots"
STATIC = ROOT / "server" / "static"

HTTP_TIMEOUT = 10.0

COST_QUESTION = (
    "We send 40M input and 10M output tokens a month to gpt-4o and p95 latency is 1200 ms. "
    "How much would switching to gpt-4o-mini save? We want to cut cost by 30%."
)


# -- plain HTTP (the page's routes) ------------------------------------------------


@attrs.frozen
class HttpResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes


async def http_get(
    port: int, path: str, *, method: str = "GET", headers: Mapping[str, str] | None = None
) -> HttpResponse:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    with trio.fail_after(HTTP_TIMEOUT):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode("ascii"))
            received = bytearray()
            while chunk := await stream.receive_some(65536):
                received += chunk
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        parsed[name.strip().lower()] = value.strip()
    return HttpResponse(int(status_line.split(" ")[1]), parsed, body)


async def test_the_page_and_its_assets_are_served_with_their_types_and_cache_headers(
    server: ChatServer,
) -> None:
    port = admin_port(server)
    page = await http_get(port, "/")
    assert page.status == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.body == (STATIC / "index.html").read_bytes()
    assert page.headers["cache-control"] == "no-cache"
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert page.headers["x-content-type-options"] == "nosniff"

    for name, content_type in [
        ("app.js", "text/javascript; charset=utf-8"),
        ("style.css", "text/css; charset=utf-8"),
    ]:
        asset = await http_get(port, f"/static/{name}")
        assert asset.status == 200
        assert asset.headers["content-type"] == content_type
        assert asset.body == (STATIC / name).read_bytes()
        # Revalidated with its ETag: an unchanged file costs a 304 without a body.
        etag = asset.headers["etag"]
        again = await http_get(port, f"/static/{name}", headers={"If-None-Match": etag})
        assert again.status == 304
        assert again.body == b""
        assert again.headers["etag"] == etag

    head = await http_get(port, "/", method="HEAD")
    assert head.status == 200
    assert head.body == b""
    assert int(head.headers["content-length"]) == len(page.body)


async def test_config_json_tells_the_page_where_the_websocket_listener_is(
    server: ChatServer,
) -> None:
    response = await http_get(admin_port(server), "/config.json")
    assert response.status == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    config = json.loads(response.body)
    assert config["ws_port"] == server.port != admin_port(server)
    assert config["ws_path"] == "/ws"
    assert config["ws_url"] == server.url
    assert config["auth"] == "none"


@pytest.mark.parametrize(
    "path",
    [
        "/static/",
        "/static/missing.js",
        "/static/../_admin.py",
        "/static/..%2f_admin.py",
        "/static/%2e%2e/_admin.py",
        "/static/..",
        "/static/.hidden.js",
        "/static/sub/app.js",
        "/static//etc/passwd",
        "/static/__init__.py",
        "/static/app.js/",
        "/index.html/",
        "/app.js",
    ],
)
async def test_static_paths_outside_the_page_files_answer_404(
    server: ChatServer, path: str
) -> None:
    response = await http_get(admin_port(server), path)
    assert response.status == 404
    assert b"import" not in response.body


async def test_post_to_the_page_answers_405(server: ChatServer) -> None:
    response = await http_get(admin_port(server), "/", method="POST")
    assert response.status == 405


def test_every_animation_stops_for_readers_who_ask_for_reduced_motion() -> None:
    css = re.sub(r"/\*.*?\*/", "", (STATIC / "style.css").read_text(), flags=re.S)
    head, _, reduced = css.partition("@media (prefers-reduced-motion: reduce) {")
    assert reduced, "style.css has no prefers-reduced-motion block"
    block = reduced[: reduced.index("\n}\n")]
    # Inside the block: only "animation: none" for the animated elements.
    assert re.fullmatch(r"\s*[.\w\s,-]+\{\s*animation: none !important;\s*\}\s*", block), block
    stopped = {name.strip() for name in block.split("{")[0].split(",")}
    animated = re.findall(r"([^{}]+)\{[^{}]*\banimation: (?!none)", head)
    assert animated
    for selectors in animated:
        for selector in selectors.split(","):
            # The same elements, whatever their state: attribute selectors aside.
            assert re.sub(r"\[[^\]]*\]", "", selector).strip() in stopped, selector.strip()


# -- the page in a browser ------------------------------------------------------------


@requires_chromium
async def test_a_message_shows_the_nested_agent_steps_live_and_the_markdown_answer(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        server = await start_test_server(nursery)
        async with open_browser(tmp_path) as page:
            await load_chat(page, server)
            assert "alice" in await page.text("#conn-state")

            run_id = await send_message(page, COST_QUESTION)
            assert await wait_run_status(page, run_id, "completed", "failed") == "completed"
            run = run_selector(run_id)

            # One nested timeline: the supervisor holds its five steps, in order.
            done = "completed"
            assert await step_tree(page, run_id) == [
                [
                    "supervisor",
                    done,
                    [
                        ["triage", done, []],
                        ["data", done, []],
                        ["optimization", done, []],
                        ["actions", done, []],
                        ["reporting", done, []],
                    ],
                ]
            ]
            # Every event of the run is on the page: one node per agent_started (closed by
            # its closing event), per thinking, per tool call (closed by tool_completed).
            counts = await page.evaluate(
                f"""(() => {{ const r = document.querySelector({json.dumps(run)});
                    const count = (selector) => r.querySelectorAll(selector).length;
                    return [count('li.agent'), count('li.thinking'), count('li.tool'),
                            count('li.tool[data-status="completed"]')]; }})()"""
            )
            agents, thoughts, tools, tools_done = counts
            assert tools_done == tools >= 4
            assert 2 * agents + thoughts + 2 * tools == server.statistics().events_sent_total
            assert nonzero(server.statistics().runs_total) == {"completed": 1}

            # Thinking text, tool parameters and timings are shown.
            timeline = await page.text(f"{run} .timeline")
            assert "Plan: triage the request" in timeline
            extract = f'{run} li.tool[data-tool="extract_entities"]'
            parameters = await page.evaluate(
                f"[...document.querySelectorAll({json.dumps(extract + ' dl.params > *')})]"
                ".map((e) => e.textContent)"
            )
            assert parameters == ["text", COST_QUESTION]
            assert (await page.text(f"{extract} .duration")).endswith(" ms")
            assert '"models":["gpt-4o","gpt-4o-mini"]' in await page.text(f"{extract} .tool-result")
            assert await page.evaluate(
                f"""[...document.querySelectorAll({json.dumps(run + " li.agent .duration")})]
                     .every((d) => / (ms|s)$/.test(d.textContent))"""
            )

            # The answer is Markdown rendered as elements.
            answer = f"{run} .answer-body"
            headings = await page.evaluate(
                f"[...document.querySelectorAll({json.dumps(answer + ' h4, ' + answer + ' h5')})]"
                ".map((h) => h.tagName + ' ' + h.textContent)"
            )
            assert headings[:3] == ["H4 Cost optimisation", "H5 What you told us", "H5 Figures"]
            assert await page.evaluate(
                f"document.querySelector({json.dumps(answer + ' strong')}).textContent"
            ) == ("medium")
            codes = await page.evaluate(
                f"[...document.querySelectorAll({json.dumps(answer + ' code')})]"
                ".map((c) => c.textContent)"
            )
            assert "gpt-4o" in codes
            links = await page.evaluate(
                f"""[...document.querySelectorAll({json.dumps(answer + " a")})]
                    .map((a) => [a.href, a.rel, a.target])"""
            )
            assert ["https://openai.com/api/pricing/", "noopener noreferrer", "_blank"] in links
            assert "**" not in await page.text(answer)
            assert page.errors == []


@requires_chromium
async def test_stop_button_cancels_a_slow_run(nursery: trio.Nursery, tmp_path: Path) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        # The supervisor sleeps 1 s right after its agent_started.
        server = await start_test_server(nursery, faults=(FaultSpec.parse("supervisor:slow:1"),))
        async with open_browser(tmp_path) as page:
            await load_chat(page, server)

            run_id = await send_message(page, "How do I cut my latency below 200 ms?")
            run = run_selector(run_id)
            await page.wait_for(
                f"document.querySelector({json.dumps(run + ' li.agent[data-agent=supervisor]')})"
            )
            assert await page.evaluate(
                f"document.querySelector({json.dumps(run)}).dataset.status"
            ) == ("running")
            await page.click(f"{run} button.stop")

            assert await wait_run_status(page, run_id, "cancelled", "completed", "failed") == (
                "cancelled"
            )
            assert await step_tree(page, run_id) == [["supervisor", "cancelled", []]]
            assert "CANCELLED" in await page.text(f"{run} .answer")
            assert await page.evaluate(
                f"document.querySelector({json.dumps(run + ' button.stop')}) === null"
            )
            assert nonzero(server.statistics().runs_total) == {"cancelled": 1}
            assert page.errors == []


INJECTED = '<script>window.__pwned = "script"</script><img src=x onerror="window.__pwned = 1">'


class HtmlProbeAgent(BaseAgent):
    """Puts HTML into every field the page shows: thinking, tool parameters, answer, error."""

    name = "html_probe"
    top_level = True

    async def execute(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        await self.think(f"thinking {INJECTED}", progress=50)
        await self.use_tool("extract_entities", text=f"tool {INJECTED}")
        if "fail" in self.context.request:
            raise RuntimeError(f"error {INJECTED}")
        answer = (
            f"## Heading {INJECTED}\n\n"
            f"- item **bold {INJECTED}** and `code {INJECTED}`\n"
            f"- [javascript link](javascript:window.__pwned=2) [data link](data:text/html,x)\n"
            f"- [safe link](https://example.com/docs?a=1)\n\n"
            f"```html\n{INJECTED}\n```\n\n"
            f"answer {INJECTED}"
        )
        return {"answer": answer}


@requires_chromium
async def test_html_in_agent_and_user_text_is_shown_as_text_never_as_markup(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    registry = default_registry()
    registry.register(HtmlProbeAgent)
    with trio.fail_after(TEST_TIMEOUT):
        server = await start_test_server(nursery, registry=registry)
        async with open_browser(tmp_path) as page:
            await load_chat(page, server, "user_id=mallory&agent=html_probe")

            answered = await send_message(page, f"user {INJECTED}")
            assert await wait_run_status(page, answered, "completed", "failed") == "completed"
            failed = await send_message(page, f"please fail {INJECTED}")
            assert await wait_run_status(page, failed, "completed", "failed") == "failed"

            # Nothing became an element or ran: the page's own script is the only one.
            injected = await page.evaluate(
                """({scripts: [...document.scripts].map((s) => s.getAttribute('src')),
                     images: document.querySelectorAll('img, iframe, object, embed').length,
                     handlers: document.querySelectorAll('[onerror], [onclick], [onload]').length,
                     pwned: window.__pwned ?? null})"""
            )
            assert injected == {
                "scripts": ["/static/app.js"],
                "images": 0,
                "handlers": 0,
                "pwned": None,
            }
            # Only the http(s) link became a link, opened without an opener.
            links = await page.evaluate(
                "[...document.querySelectorAll('main a')]"
                ".map((a) => [a.href, a.rel, a.textContent])"
            )
            assert links == [["https://example.com/docs?a=1", "noopener noreferrer", "safe link"]]

            # ... and every piece of it is visible as text where it was sent.
            answered_text = await page.text(run_selector(answered))
            for label in ("user", "thinking", "tool", "Heading", "bold", "code", "answer"):
                assert f"{label} {INJECTED}" in answered_text, label
            assert "[javascript link](javascript:window.__pwned=2)" in answered_text
            failed_text = await page.text(run_selector(failed))
            assert f"RuntimeError: error {INJECTED}" in failed_text
            code_block = await page.evaluate(
                "document.querySelector('main pre.md-code code').textContent"
            )
            assert code_block == INJECTED
            assert page.errors == []


@requires_chromium
async def test_markdown_renderer_builds_elements_for_the_supported_subset(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    cases = {
        "# Title": [["H3", ["Title"]]],
        "**bold** _it_ *it* `x < y`": [
            [
                "P",
                [
                    ["STRONG", ["bold"]],
                    " ",
                    ["EM", ["it"]],
                    " ",
                    ["EM", ["it"]],
                    " ",
                    ["CODE", ["x < y"]],
                ],
            ]
        ],
        "snake_case_name and 2 * 3 * 4": [["P", ["snake_case_name and 2 * 3 * 4"]]],
        "- a\n- b\n  - c\n\n1. one\n2. two": [
            ["UL", [["LI", ["a"]], ["LI", ["b", ["UL", [["LI", ["c"]]]]]]]],
            ["OL", [["LI", ["one"]], ["LI", ["two"]]]],
        ],
        "3. three\n   _note_": [["OL", [["LI", ["three", ["BR", []], ["EM", ["note"]]]]]]],
        "see https://example.com/x.": [["P", ["see ", ["A", ["https://example.com/x"]], "."]]],
        "[x](javascript:alert(1)) [y](https://a.example/)": [
            ["P", ["[x](javascript:alert(1)) ", ["A", ["y"]]]]
        ],
        "```\n<b>**no**</b>\n```": [["PRE", [["CODE", ["<b>**no**</b>"]]]]],
        "> quoted **text**": [["BLOCKQUOTE", [["P", ["quoted ", ["STRONG", ["text"]]]]]]],
        "a\\*b\\*c\n\n---": [["P", ["a*b*c"]], ["HR", []]],
        "`unclosed and **unclosed": [["P", ["`unclosed and **unclosed"]]],
    }
    with trio.fail_after(TEST_TIMEOUT):
        server = await start_test_server(nursery)
        async with open_browser(tmp_path) as page:
            await page.goto(f"http://127.0.0.1:{admin_port(server)}/?autoconnect=0")
            rendered = await page.evaluate(
                f"""(() => {{
                  const tree = (node) => node.nodeType === Node.TEXT_NODE ? node.data
                    : [node.tagName, [...node.childNodes].map(tree)];
                  const merge = (nodes) => nodes.reduce((out, n) => {{
                    if (typeof n === 'string' && typeof out[out.length - 1] === 'string')
                      out[out.length - 1] += n; else out.push(n); return out; }}, []);
                  const norm = (t) => typeof t === 'string' ? t : [t[0], merge(t[1].map(norm))];
                  const cases = {json.dumps(list(cases))};
                  return cases.map((md) => merge([...window.chatPage.renderMarkdown(md).childNodes]
                    .map(tree).map(norm)));
                }})()"""
            )
            for (markdown, expected), got in zip(cases.items(), rendered, strict=True):
                assert got == expected, markdown
            assert page.errors == []


@requires_chromium
async def test_an_error_message_for_an_unknown_agent_is_shown_on_its_run(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        server = await start_test_server(nursery)
        async with open_browser(tmp_path) as page:
            await load_chat(page, server)
            await page.set_value("agent-name", "no_such_agent")

            run_id = await send_message(page, "hello")
            assert await wait_run_status(page, run_id, "rejected", "running") == "rejected"
            shown = await page.text(f"{run_selector(run_id)} .error-box")
            assert shown.startswith("AGENT_NOT_FOUND: ")
            assert "no_such_agent" in shown
            # The connection stays open and usable.
            assert await page.evaluate("document.body.dataset.connection") == "connected"
            await page.set_value("agent-name", "supervisor")
            next_run = await send_message(page, "How do I cut my latency below 200 ms?")
            assert await wait_run_status(page, next_run, "completed", "failed") == "completed"
            assert nonzero(server.statistics().protocol_errors_total) == {"AGENT_NOT_FOUND": 1}
            assert page.errors == []


@requires_chromium
async def test_a_close_is_shown_with_its_code_and_reason_and_the_page_reconnects_with_backoff(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        first = await start_test_server(nursery)
        async with open_browser(tmp_path) as page:
            await load_chat(page, first)

            await first.drain()  # closes the page's connection with 1001 and stops listening
            close = await page.wait_for(
                "document.querySelector('.notice[data-code=\"1001\"]')?.innerText"
            )
            assert "1001" in close
            assert "server shutting down" in close  # the server's close reason
            # The first retry finds nobody listening; the second waits longer.
            await page.wait_for("document.querySelector('.notice[data-code=\"1006\"]')")
            state = await page.wait_for(
                """document.body.dataset.connection === 'reconnecting'
                   && document.getElementById('conn-text').textContent.includes('attempt 2')
                   && document.getElementById('conn-text').textContent"""
            )
            assert state.startswith("reconnecting in ")

            # A server comes back on the same port: the page reconnects by itself.
            # (Without an admin listener of its own, it must be told that the
            # page, served by the first one, is an allowed origin.)
            second = await start_test_server(
                nursery,
                port=first.port,
                admin_port=None,
                allowed_origins=(f"http://127.0.0.1:{admin_port(first)}",),
            )
            await page.wait_for("document.body.dataset.connection === 'connected'", within=15)
            assert second.statistics().connections_active == 1
            run_id = await send_message(page, "How do I cut my latency below 200 ms?")
            assert await wait_run_status(page, run_id, "completed", "failed") == "completed"
            # The only errors logged are the refused connection attempts (and perhaps a
            # late favicon request to the first server's admin listener, gone too).
            assert any("WebSocket connection to" in error for error in page.errors)
            network = ("WebSocket connection to", "Failed to load resource: net::")
            assert all(error.startswith(network) for error in page.errors), page.errors


JWT_SECRET = "a-test-secret-of-at-least-thirty-two-bytes"


@requires_chromium
async def test_with_jwt_auth_the_page_waits_for_a_token_and_sends_it_as_a_subprotocol(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    token = jwt.encode(
        {"sub": "carol", "exp": int(time.time()) + 600}, JWT_SECRET, algorithm="HS256"
    )
    with trio.fail_after(TEST_TIMEOUT):
        server = await start_test_server(nursery, auth="jwt", jwt_secret=JWT_SECRET)
        async with open_browser(tmp_path) as page:
            await page.goto(f"http://127.0.0.1:{admin_port(server)}/?user_id=mallory")
            # /config.json says auth is jwt: no connection attempt without a token.
            await page.wait_for(
                "document.getElementById('conn-text').textContent.includes('token')"
            )
            assert await page.evaluate("document.body.dataset.connection") == "idle"
            assert server.statistics().connections_total == 0

            await page.set_value("token", token)
            await page.click("#connect")
            await page.wait_for("document.body.dataset.connection === 'connected'")
            # The user is the token's subject; the user_id field was not sent.
            assert "connected as carol" in await page.text("#conn-state")
            # The token went as the jwt-auth + jwt.<token> subprotocols (the server
            # selected jwt-auth), not in the URL, where proxies would log it.
            assert await page.evaluate("window.chatPage.app.ws.protocol") == "jwt-auth"
            url = await page.evaluate("window.chatPage.app.ws.url")
            assert token not in url
            assert "token=" not in url
            assert "user_id=" not in url
            run_id = await send_message(page, "How do I cut my latency below 200 ms?")
            assert await wait_run_status(page, run_id, "completed", "failed") == "completed"
            # The token is not shown where the URL is.
            assert token not in await page.evaluate("document.body.innerText")
            assert page.errors == []


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


#: JavaScript: the page's width, and what scrolls or is cut off sideways (an ellipsis is
#: clipping on purpose).
SIDEWAYS = """(() => {
  const sideways = [...document.querySelectorAll('*')].filter((e) => {
    const style = getComputedStyle(e);
    return e.scrollWidth > e.clientWidth + 1 && e.clientWidth > 1
      && ['auto', 'scroll', 'hidden'].includes(style.overflowX)
      && style.textOverflow !== 'ellipsis';
  });
  return {viewport: innerWidth, page: document.documentElement.scrollWidth,
          sideways: sideways.map((e) => e.tagName + '.' + e.className)};
})()"""


@requires_chromium
async def test_screenshots_at_desktop_and_phone_widths_without_horizontal_scrolling(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """Checks the layout at both widths (and the phone's thread drawer); writes the PNGs
    under docs/ with UPDATE_SCREENSHOTS=1."""
    with trio.fail_after(TEST_TIMEOUT):
        server = await start_test_server(nursery)
        # Two earlier conversations, so the thread list has something to show.
        async with open_chat_client(server, user_id="alice") as alice:
            await alice.run("Why do we get 429s from the OpenAI API?")
            await alice.run("How do I cut my latency below 200 ms?")
        async with open_browser(tmp_path) as page:
            # The drawer slides in at once: the screenshot shows where it ends.
            await page.send(
                "Emulation.setEmulatedMedia",
                features=[{"name": "prefers-reduced-motion", "value": "reduce"}],
            )
            shots = {}
            for name, width, height, scale in [("desktop", 1280, 900, 1), ("phone", 390, 844, 2)]:
                await page.send(
                    "Emulation.setDeviceMetricsOverride",
                    width=width,
                    height=height,
                    deviceScaleFactor=scale,
                    mobile=name == "phone",
                )
                await load_chat(page, server)
                await page.click("#new-chat")  # the phone's reload reopened the desktop's thread
                run_id = await send_message(page, COST_QUESTION)
                assert await wait_run_status(page, run_id, "completed", "failed") == "completed"
                await page.wait_for(
                    f"document.querySelectorAll('#thread-list > li').length === "
                    f"{3 if name == 'desktop' else 4}"
                )
                # Nothing scrolls or is cut off sideways, with the connection panel open or closed.
                for panel_open in ("true", "false"):
                    await page.evaluate(f"document.getElementById('settings').open = {panel_open}")
                    layout = await page.evaluate(SIDEWAYS)
                    assert layout == {"viewport": width, "page": width, "sideways": []}
                # Desktop: the thread list is a sidebar; phone: a drawer, closed.
                visibility, left, right = await page.evaluate(
                    """(() => { const threads = document.getElementById('threads');
                        const box = threads.getBoundingClientRect();
                        return [getComputedStyle(threads).visibility, box.left, box.right]; })()"""
                )
                if name == "desktop":
                    assert (visibility, left) == ("visible", 0)
                else:
                    assert (visibility, right) == ("hidden", 0)
                # Show the run from its top: the question, the steps, the start of the answer.
                await page.evaluate(
                    f"""(() => {{
                      const run = document.querySelector({json.dumps(run_selector(run_id))});
                      const log = document.getElementById('log');
                      log.scrollTop = run.offsetTop - log.offsetTop - 8;
                      run.querySelector('.timeline').scrollTop = 0;
                    }})()"""
                )
                await page.evaluate("new Promise((r) => requestAnimationFrame(() => r(true)))")
                shot = await page.screenshot()
                assert png_size(shot) == (width * scale, height * scale)
                shots[name] = shot

            # The phone's drawer: opened by the menu button, over the conversation.
            await page.click("#drawer-toggle")
            await page.wait_for(
                "getComputedStyle(document.getElementById('threads')).visibility === 'visible'"
            )
            assert await page.evaluate(
                "document.getElementById('drawer-toggle').getAttribute('aria-expanded')"
            ) == ("true")
            assert await page.evaluate("document.activeElement.id") == "new-chat"
            assert await page.evaluate(SIDEWAYS) == {"viewport": 390, "page": 390, "sideways": []}
            await page.evaluate("new Promise((r) => requestAnimationFrame(() => r(true)))")
            shots["phone-threads"] = await page.screenshot()
            # Escape closes it; so does choosing a thread.
            await page.evaluate(
                "document.dispatchEvent(new KeyboardEvent('keydown', {key: 'Escape'}))"
            )
            assert await page.evaluate("document.body.dataset.drawer") == "closed"
            await page.click("#drawer-toggle")
            await page.click("#thread-list > li:last-child button")
            assert await page.evaluate("document.body.dataset.drawer") == "closed"
            await page.wait_for("document.querySelector('#log > article.run')")
            assert page.errors == []
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        for name, shot in shots.items():
            (SCREENSHOTS / f"chat-{name}.png").write_bytes(shot)
