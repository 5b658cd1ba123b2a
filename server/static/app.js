// The chat page of trio-agent-server: one WebSocket, runs shown live as nested timelines.
//
// Threads (protocol v1.1): the sidebar lists the user's threads (list_threads, paged);
// opening one shows its runs from history (get_thread) and follows it
// (subscribe_thread), so a run started in another tab shows here live and can be
// stopped from here. Every run card tracks the last seq it received; after a
// reconnection (with the session's resume_token when the server offers
// session_resume) each unfinished run asks for exactly the events after that seq
// (resume_run). The page never drops or merges events: the server sends each once.
//
// Safety rule of this file: text that comes from the server (agent names,
// thinking, tool parameters and results, answers, error messages) or from the
// user is only ever put into the page with textContent / createTextNode.
// Nothing here assigns innerHTML or outerHTML, calls insertAdjacentHTML or
// document.write, or sets an event-handler attribute. The Markdown renderer
// builds elements one by one; links are made only for http(s) URLs.
"use strict";

(() => {
  const RUN_EVENTS = new Set([
    "agent_started",
    "agent_thinking",
    "tool_executing",
    "tool_completed",
    "agent_completed",
    "agent_error",
  ]);
  const CLOSE_MEANINGS = {
    1000: "normal closure",
    1001: "going away: the server is shutting down",
    1002: "protocol error",
    1003: "unsupported data: a binary frame",
    1005: "no status code",
    1006: "abnormal closure, no close frame: refused, rejected handshake or network",
    1007: "invalid frame payload",
    1008: "policy violation",
    1009: "message too big",
    1011: "internal server error",
    1012: "service restart",
    1013: "try again later: slow consumer",
    1015: "TLS handshake failure",
  };
  const BACKOFF_FIRST_MS = 500;
  const BACKOFF_MAX_MS = 30000;
  const LONG_THOUGHT_CHARS = 400;
  const LONG_THOUGHT_LINES = 4;

  // -- DOM helpers ---------------------------------------------------------------

  const $ = (id) => document.getElementById(id);

  /** createElement with a class name and children (strings become text nodes). */
  function h(tag, className, ...children) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      node.append(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return node;
  }

  function badge(status) {
    const node = h("span", "badge", status);
    node.dataset.status = status;
    return node;
  }

  function setBadge(node, status) {
    node.textContent = status;
    node.dataset.status = status;
  }

  function formatMs(ms) {
    if (typeof ms !== "number" || !Number.isFinite(ms)) return "";
    if (ms < 10) return `${ms.toFixed(ms > 0 ? 1 : 0)} ms`;
    if (ms < 1000) return `${Math.round(ms)} ms`;
    if (ms < 60000) return `${(ms / 1000).toFixed(2)} s`;
    return `${Math.floor(ms / 60000)} min ${Math.round((ms % 60000) / 1000)} s`;
  }

  function json(value, indent) {
    try {
      const text = JSON.stringify(value, null, indent);
      return text === undefined ? String(value) : text;
    } catch (_error) {
      return String(value);
    }
  }

  /** Read (or write, given a value) a remembered setting; storage may be unavailable. */
  function stored(key, value) {
    try {
      if (value === undefined) return localStorage.getItem(key);
      localStorage.setItem(key, value);
    } catch (_error) {
      // private mode or storage disabled: nothing is remembered
    }
    return null;
  }

  /** The tab's own storage (it survives a reload, not the tab): the session's resume token. */
  function tabStored(key, value) {
    try {
      if (value === undefined) return sessionStorage.getItem(key);
      if (value === null) sessionStorage.removeItem(key);
      else sessionStorage.setItem(key, value);
    } catch (_error) {
      // storage disabled: a reload starts a new session
    }
    return null;
  }

  function closeMeaning(code) {
    return CLOSE_MEANINGS[code] || (code >= 4000 ? "application-defined" : "unknown code");
  }

  // -- Markdown (a safe subset, rendered to DOM nodes) ---------------------------

  const LIST_ITEM = /^( {0,12})([-*+]|\d{1,9}[.)])(?:[ \t]+(.*))?$/;
  const HEADING = /^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$/;
  const FENCE = /^ {0,3}(`{3,}|~{3,})(.*)$/;
  const RULE = /^ {0,3}([-*_])([ \t]*\1){2,}[ \t]*$/;
  const QUOTE = /^ {0,3}> ?(.*)$/;
  const SAFE_URL = /^https?:\/\/[^\s<>"]+$/i;
  const BARE_URL = /^https?:\/\/[^\s<>"'()[\]{}`]+/i;
  const MAX_DEPTH = 12;

  /** Render Markdown text as a DocumentFragment, never parsing HTML. */
  function renderMarkdown(text) {
    const fragment = document.createDocumentFragment();
    for (const node of parseBlocks(String(text).replace(/\r\n?/g, "\n").split("\n"), 0)) {
      fragment.append(node);
    }
    return fragment;
  }

  function isBlank(line) {
    return line.trim() === "";
  }

  function startsBlock(line) {
    return (
      HEADING.test(line) || FENCE.test(line) || RULE.test(line) || QUOTE.test(line) || LIST_ITEM.test(line)
    );
  }

  function parseBlocks(lines, depth) {
    const nodes = [];
    let i = 0;
    while (i < lines.length) {
      const line = lines[i];
      if (isBlank(line)) {
        i += 1;
        continue;
      }
      let m;
      if ((m = FENCE.exec(line))) {
        const marker = m[1];
        const body = [];
        i += 1;
        while (i < lines.length && !lines[i].trim().startsWith(marker)) {
          body.push(lines[i]);
          i += 1;
        }
        i += 1; // the closing fence (or the end)
        const code = h("code", null, body.join("\n"));
        const lang = m[2].trim().split(/\s+/)[0];
        if (lang) code.dataset.lang = lang;
        nodes.push(h("pre", "md-code", code));
        continue;
      }
      if ((m = HEADING.exec(line))) {
        const level = Math.min(6, m[1].length + 2); // inside a card: # is an h3
        nodes.push(renderInline(m[2], h(`h${level}`, "md-heading"), depth));
        i += 1;
        continue;
      }
      if (RULE.test(line)) {
        nodes.push(h("hr"));
        i += 1;
        continue;
      }
      if (QUOTE.test(line)) {
        const body = [];
        while (i < lines.length && (m = QUOTE.exec(lines[i]))) {
          body.push(m[1]);
          i += 1;
        }
        const quote = h("blockquote");
        if (depth < MAX_DEPTH) quote.append(...parseBlocks(body, depth + 1));
        else quote.append(body.join("\n"));
        nodes.push(quote);
        continue;
      }
      if (LIST_ITEM.test(line)) {
        i = parseList(lines, i, nodes, depth);
        continue;
      }
      const para = [];
      while (i < lines.length && !isBlank(lines[i]) && !(para.length && startsBlock(lines[i]))) {
        para.push(lines[i].trim());
        i += 1;
      }
      nodes.push(renderInlineLines(para, h("p"), depth));
    }
    return nodes;
  }

  function parseList(lines, start, nodes, depth) {
    const first = LIST_ITEM.exec(lines[start]);
    const indent = first[1].length;
    const ordered = /\d/.test(first[2]);
    const list = h(ordered ? "ol" : "ul", "md-list");
    if (ordered) {
      const number = parseInt(first[2], 10);
      if (number !== 1 && Number.isSafeInteger(number)) list.start = number;
    }
    let i = start;
    while (i < lines.length) {
      const m = LIST_ITEM.exec(lines[i]);
      if (!m || m[1].length !== indent || /\d/.test(m[2]) !== ordered) break;
      const contentColumn = indent + m[2].length + 1;
      const body = [m[3] || ""];
      i += 1;
      while (i < lines.length) {
        const line = lines[i];
        const lead = line.length - line.trimStart().length;
        if (isBlank(line)) {
          // A blank line ends the item unless indented content follows it.
          let j = i + 1;
          while (j < lines.length && isBlank(lines[j])) j += 1;
          if (j < lines.length && lines[j].length - lines[j].trimStart().length >= contentColumn) {
            for (; i < j; i += 1) body.push("");
            continue;
          }
          break;
        }
        if (lead >= contentColumn || (lead > indent && LIST_ITEM.test(line))) {
          body.push(line.slice(Math.min(lead, contentColumn)));
        } else if (!startsBlock(line)) {
          body.push(line.trim()); // a lazy continuation line
        } else {
          break;
        }
        i += 1;
      }
      const item = h("li");
      if (depth >= MAX_DEPTH) {
        item.append(body.join("\n"));
      } else {
        const blocks = parseBlocks(body, depth + 1);
        // A tight item (one paragraph, perhaps a nested list) shows its text without <p>.
        if (blocks.length && blocks[0].tagName === "P" && !body.includes("")) {
          item.append(...blocks[0].childNodes, ...blocks.slice(1));
        } else {
          item.append(...blocks);
        }
      }
      list.append(item);
      while (i < lines.length && isBlank(lines[i])) {
        const next = lines.slice(i).find((line) => !isBlank(line));
        const n = next === undefined ? null : LIST_ITEM.exec(next);
        if (!n || n[1].length !== indent) break;
        i += 1;
      }
    }
    nodes.push(list);
    return i;
  }

  function renderInlineLines(lines, parent, depth) {
    lines.forEach((line, index) => {
      if (index) parent.append(h("br"));
      renderInline(line, parent, depth);
    });
    return parent;
  }

  /** Append the inline Markdown of `text` to `parent`: code, bold, italic, links. */
  function renderInline(text, parent, depth) {
    if (depth > MAX_DEPTH) {
      parent.append(text);
      return parent;
    }
    let plain = "";
    const flush = () => {
      if (plain) parent.append(plain);
      plain = "";
    };
    let i = 0;
    while (i < text.length) {
      const c = text[i];
      if (c === "\\" && i + 1 < text.length && /[!-/:-@[-`{-~]/.test(text[i + 1])) {
        plain += text[i + 1];
        i += 2;
        continue;
      }
      if (c === "`") {
        const ticks = /^`+/.exec(text.slice(i))[0];
        const end = text.indexOf(ticks, i + ticks.length);
        if (end > i + ticks.length - 1) {
          flush();
          parent.append(h("code", "md-inline-code", text.slice(i + ticks.length, end).trim() || " "));
          i = end + ticks.length;
          continue;
        }
        plain += ticks;
        i += ticks.length;
        continue;
      }
      if ((c === "*" || c === "_") && text[i + 1] === c) {
        const marker = c + c;
        const end = text.indexOf(marker, i + 2);
        if (end > i + 2 && !/\s/.test(text[i + 2]) && !/\s/.test(text[end - 1]) && flanks(text, i, end + 2, c)) {
          flush();
          parent.append(renderInline(text.slice(i + 2, end), h("strong"), depth + 1));
          i = end + 2;
          continue;
        }
        plain += marker;
        i += 2;
        continue;
      }
      if (c === "*" || c === "_") {
        const end = text.indexOf(c, i + 1);
        if (end > i + 1 && !/\s/.test(text[i + 1]) && !/\s/.test(text[end - 1]) && flanks(text, i, end + 1, c)) {
          flush();
          parent.append(renderInline(text.slice(i + 1, end), h("em"), depth + 1));
          i = end + 1;
          continue;
        }
        plain += c;
        i += 1;
        continue;
      }
      if (c === "[") {
        const link = /^\[([^\]\n]{1,500})\]\(([^()\s]{1,2000})\)/.exec(text.slice(i));
        if (link && SAFE_URL.test(link[2])) {
          flush();
          parent.append(renderInline(link[1], anchor(link[2]), depth + 1));
          i += link[0].length;
          continue;
        }
      }
      if ((c === "h" || c === "H") && (i === 0 || !/[A-Za-z0-9]/.test(text[i - 1]))) {
        const bare = BARE_URL.exec(text.slice(i));
        if (bare) {
          const url = bare[0].replace(/[.,;:!?]+$/, "");
          flush();
          parent.append(anchor(url, url));
          i += url.length;
          continue;
        }
      }
      plain += c;
      i += 1;
    }
    flush();
    return parent;
  }

  /** `_x_` and `__x__` only between non-word characters (snake_case stays as it is). */
  function flanks(text, open, after, marker) {
    if (marker !== "_") return true;
    const before = open > 0 ? text[open - 1] : " ";
    const next = after < text.length ? text[after] : " ";
    return !/[A-Za-z0-9]/.test(before) && !/[A-Za-z0-9]/.test(next);
  }

  function anchor(url, label) {
    const a = h("a", "md-link", label || null);
    a.href = url; // checked: http(s) only
    a.target = "_blank";
    a.rel = "noopener noreferrer";
    return a;
  }

  // -- runs ------------------------------------------------------------------------

  /** What an error code means for the person at the page, beyond the server's text. */
  const ERROR_HINTS = {
    THREAD_BUSY:
      "This thread has a run in progress (perhaps in another tab or window): wait for it to end, " +
      "or stop it, then try again.",
    THREAD_NOT_FOUND: "This thread does not exist any more: it may have been deleted.",
    STORE_UNAVAILABLE: "The server cannot reach its history store just now: try again in a moment.",
    TOO_MANY_RUNS: "Too many runs are in progress on this connection: wait for one to end.",
  };

  /** One run: a card with its user message, header, nested timeline and answer. */
  class Run {
    constructor(app, { runId, threadId, text, agentName, sortKey }) {
      this.app = app;
      this.runId = runId;
      this.threadId = threadId;
      // Cards are kept in the order the runs started (ISO timestamps sort as text).
      this.sortKey = sortKey || new Date().toISOString();
      // Runs that started in the same millisecond keep the order the page
      // learnt them in (App.place): a later run gets a larger tie.
      this.tie = app.nextTie();
      this.status = "sending";
      this.ended = false; // its final event has arrived
      this.receiving = false; // the open socket delivers its events (started, resumed or followed)
      this.seen = []; // the seq of every event received, in order: nothing is dropped or merged
      this.sentAt = performance.now();
      this.startTime = null; // server timestamp (ms) of the first event received
      this.lastSeq = 0;
      this.stack = []; // open agent nodes, innermost last
      this.tools = new Map();
      this.finalMs = null;
      this.messageIds = new Set(); // requests about this run (start, stop, resume)
      this.via = null; // how its events reach this socket: "start", "resume" or "subscription"
      this.replaying = false; // its timeline is being read back on request ("Show all events")

      this.badge = badge("sending");
      this.elapsed = h("span", "elapsed muted", "");
      this.progress = h("progress", "run-progress");
      this.progress.max = 100;
      this.progress.hidden = true;
      this.stopButton = h("button", "stop small danger", "Stop");
      this.stopButton.type = "button";
      this.stopButton.addEventListener("click", () => this.stop());
      const idLabel = h("code", "run-id muted", runId);
      idLabel.title = "run id";

      this.steps = h("ol", "steps");
      this.stepsButton = null;
      this.timeline = h("section", "timeline", h("h3", "section-title", "Steps"), this.steps);
      this.answer = h("div", "answer-body md", h("p", "muted placeholder", "Waiting for the answer…"));
      this.answerSection = h("section", "answer", h("h3", "section-title", "Answer"), this.answer);
      this.errors = h("div", "run-errors");
      this.note = h("p", "run-note", "");
      this.note.hidden = true;

      const you = h("div", "bubble user");
      this.userText = h("p", "user-text", text);
      you.append(h("span", "who", "You"), this.userText);
      this.agentLabel = h("span", "run-agent", agentName);
      this.head = h(
        "header",
        "run-head",
        this.badge,
        this.agentLabel,
        idLabel,
        this.elapsed,
        this.progress,
        h("span", "spacer"),
        this.stopButton,
      );
      this.node = h(
        "article",
        "run",
        you,
        this.head,
        this.note,
        this.errors,
        h("div", "run-body", this.timeline, this.answerSection),
      );
      this.node.dataset.runId = runId;
      this.node.dataset.status = "sending";
    }

    get running() {
      return this.status === "sending" || this.status === "running";
    }

    /** Whether a new connection should ask for its missing events (resume_run). */
    get unfinished() {
      return !this.ended && this.status !== "rejected";
    }

    setStatus(status) {
      this.status = status;
      this.node.dataset.status = status;
      setBadge(this.badge, status);
      if (this.running) {
        if (!this.stopButton.isConnected) {
          this.stopButton.disabled = false;
          this.stopButton.textContent = "Stop";
          this.head.append(this.stopButton);
        }
      } else {
        this.stopButton.remove();
        this.progress.hidden = true;
      }
    }

    setNote(text, kind) {
      this.note.textContent = text;
      this.note.hidden = !text;
      this.note.dataset.kind = kind || "info";
    }

    stop() {
      if (!this.running) return;
      if (this.app.request({ type: "stop_agent", payload: { run_id: this.runId } }, { run: this })) {
        this.stopButton.disabled = true;
        this.stopButton.textContent = "Stopping…";
      }
    }

    tick(now) {
      if (this.finalMs !== null) this.elapsed.textContent = formatMs(this.finalMs);
      else if (this.running) this.elapsed.textContent = formatMs(now - this.sentAt);
    }

    offset(event) {
      const at = Date.parse(event.timestamp);
      if (this.startTime === null || !Number.isFinite(at)) return "";
      const ms = at - this.startTime; // server timestamps have whole milliseconds
      return ms < 1000 ? `+${Math.round(ms)} ms` : `+${formatMs(ms)}`;
    }

    /** Attach an error_message about this run's own frames (start or stop). */
    rejectWith(frame) {
      this.errors.append(errorBox(frame));
      if (this.status === "sending" && this.lastSeq === 0) {
        this.setStatus("rejected");
        this.answer.replaceChildren(h("p", "muted", "The server did not start this run."));
      } else {
        this.stopButton.disabled = !this.running;
        this.stopButton.textContent = "Stop";
      }
    }

    /** Show a run read from the thread's history (get_thread), unless its events say more. */
    showRecord(info) {
      if (typeof info.user_request === "string") this.userText.textContent = info.user_request;
      if (typeof info.agent_name === "string") this.agentLabel.textContent = info.agent_name;
      if (typeof info.started_at === "string") this.sortKey = info.started_at;
      if (this.lastSeq > 0 || this.ended) return;
      const status = String(info.status || "running");
      if (status === "running") {
        this.setStatus("running");
        return;
      }
      this.setStatus(status);
      this.ended = true; // its outcome is known: nothing to resume
      const started = Date.parse(info.started_at);
      const ended = Date.parse(info.ended_at);
      if (Number.isFinite(started) && Number.isFinite(ended)) this.finalMs = ended - started;
      this.tick(performance.now());
      if (typeof info.answer === "string" && info.answer) {
        this.answer.replaceChildren(renderMarkdown(info.answer));
      } else {
        this.answer.replaceChildren(h("p", null, `The run ended with status ${status}.`));
      }
      const count = typeof info.last_seq === "number" ? info.last_seq : 0;
      if (count > 0 && this.stepsButton === null) {
        this.stepsButton = h("button", "small secondary show-steps", `Show all ${count} events`);
        this.stepsButton.type = "button";
        this.stepsButton.addEventListener("click", () => {
          this.stepsButton.disabled = true;
          this.stepsButton.textContent = "Loading…";
          this.replaying = true;
          if (!this.app.resume(this)) {
            this.replaying = false;
            this.stepsButton.disabled = false;
            this.stepsButton.textContent = `Show all ${count} events`;
          }
        });
        this.steps.append(h("li", "steps-placeholder", this.stepsButton));
      }
    }

    /** The socket closed before the final event and the page will reconnect and resume. */
    interrupt() {
      this.receiving = false;
      if (!this.unfinished) return;
      this.node.dataset.link = "interrupted";
      this.setNote(
        this.lastSeq
          ? `The connection dropped after event ${this.lastSeq}: the run is resumed from there on reconnection.`
          : "The connection dropped: the run is looked up again on reconnection.",
        "warning",
      );
    }

    /** The user disconnected before the final event; a later connection looks it up again. */
    lose(code) {
      this.receiving = false;
      if (!this.running) return;
      this.setStatus("lost");
      this.node.dataset.link = "interrupted";
      this.setNote(
        `The connection closed (${code}) before this run ended: the server cancels such runs. ` +
          "Connect again to see how it ended.",
        "warning",
      );
    }

    /** run_resumed: the events after data.after_seq follow (then the live ones, if live). */
    resumed(data) {
      this.node.dataset.link = "resumed";
      const after = Number(data.after_seq) || 0;
      if (after > 0) {
        const live = data.live ? "then live" : `the run ended ${String(data.status)}`;
        this.setNote(`Resumed after event ${after}: the missed events follow (${live}).`, "info");
      } else {
        this.setNote("", "info");
      }
      if (!data.live && Number(data.last_seq) <= this.lastSeq && !this.ended) {
        // Nothing more will come: the record is all there is.
        this.ended = true;
        this.receiving = false;
        this.setStatus(String(data.status));
      }
    }

    /** resume_run answered RUN_NOT_FOUND: the server never started it. */
    notFound() {
      this.receiving = false;
      this.ended = true;
      this.setStatus("lost");
      this.setNote("The server has no record of this run: the connection dropped before it started.", "warning");
      if (this.lastSeq === 0) this.answer.replaceChildren(h("p", "muted", "This run never started."));
    }

    handle(event) {
      this.seen.push(event.seq);
      if (event.seq !== this.lastSeq + 1) {
        this.errors.append(h("p", "warning", `Event seq ${event.seq} after ${this.lastSeq}: events were lost.`));
      }
      this.lastSeq = event.seq;
      const data = event.data && typeof event.data === "object" ? event.data : {};
      if (this.startTime === null) {
        this.startTime = Date.parse(event.timestamp);
        if (event.seq === 1) {
          this.agentLabel.textContent = event.agent_name;
          if (typeof data.user_request === "string") this.userText.textContent = data.user_request;
        }
        if (this.stepsButton !== null) {
          this.stepsButton.parentElement.remove();
          this.stepsButton = null;
        }
      }
      if (this.status === "sending" || this.status === "lost") this.setStatus("running");
      if (this.node.dataset.link === "interrupted") this.node.dataset.link = "resumed";
      const box = this.timeline;
      const stick = box.scrollHeight - box.scrollTop - box.clientHeight < 24;
      this.apply(event, data);
      if (stick) box.scrollTop = box.scrollHeight; // follow the run while it is watched
      if (event.final) this.finish(event, data);
    }

    apply(event, data) {
      switch (event.type) {
        case "agent_started": {
          const node = new AgentNode(event, this.offset(event));
          (this.stack.length ? this.stack[this.stack.length - 1].items : this.steps).append(node.node);
          this.stack.push(node);
          break;
        }
        case "agent_thinking": {
          const owner = this.openAgent(event.agent_name);
          owner.addThinking(data, this.offset(event));
          if (typeof data.progress_percentage === "number" && owner === this.stack[0]) {
            this.progress.hidden = false;
            this.progress.value = data.progress_percentage;
          }
          break;
        }
        case "tool_executing": {
          const tool = new ToolNode(data, this.offset(event));
          this.tools.set(data.tool_call_id, tool);
          this.openAgent(event.agent_name).items.append(tool.node);
          break;
        }
        case "tool_completed": {
          let tool = this.tools.get(data.tool_call_id);
          if (!tool) {
            tool = new ToolNode(data, this.offset(event));
            this.openAgent(event.agent_name).items.append(tool.node);
          }
          tool.complete(data);
          this.tools.delete(data.tool_call_id);
          break;
        }
        case "agent_completed":
        case "agent_error": {
          let index = this.stack.length - 1;
          while (index >= 0 && this.stack[index].name !== event.agent_name) index -= 1;
          if (index < 0) break;
          const node = this.stack[index];
          this.stack.length = index;
          node.close(event.type === "agent_completed" ? "completed" : data.status || "failed", data);
          break;
        }
        default:
          break;
      }
    }

    openAgent(name) {
      for (let i = this.stack.length - 1; i >= 0; i -= 1) {
        if (this.stack[i].name === name) return this.stack[i];
      }
      if (this.stack.length) return this.stack[this.stack.length - 1];
      const stray = new AgentNode({ agent_name: name, data: {} }, "");
      this.steps.append(stray.node);
      this.stack.push(stray);
      return stray;
    }

    finish(event, data) {
      this.ended = true;
      this.receiving = false;
      this.finalMs = typeof data.execution_time_ms === "number" ? data.execution_time_ms : null;
      this.setStatus(event.type === "agent_completed" ? "completed" : data.status || "failed");
      this.tick(performance.now());
      const result = data.result;
      if (event.type === "agent_completed") {
        const parts = [];
        if (result && typeof result === "object" && result.degraded) {
          const failed = Array.isArray(result.failed_steps) ? result.failed_steps.map(String).join(", ") : "";
          parts.push(h("p", "warning", `Degraded answer${failed ? `: ${failed} did not complete` : ""}.`));
        }
        if (result && typeof result === "object" && typeof result.answer === "string") {
          parts.push(renderMarkdown(result.answer));
        } else {
          parts.push(h("pre", "json", json(result, 2)));
        }
        this.answer.replaceChildren(...parts);
      } else {
        const error = data.error && typeof data.error === "object" ? data.error : {};
        const box = h(
          "div",
          "error-box",
          h("strong", null, String(error.code || "ERROR")),
          ": ",
          String(error.message || `run ${this.status}`),
        );
        this.answer.replaceChildren(h("p", null, `The run ended with status ${this.status}.`), box);
      }
      this.app.runEnded(this);
    }
  }
  /** One agent step: its thinking, tool calls and inner agents, nested. */
  class AgentNode {
    constructor(event, offset) {
      this.name = String(event.agent_name);
      this.badge = badge("running");
      this.duration = h("span", "duration muted", "");
      const summary = h(
        "summary",
        "agent-head",
        h("span", "agent-name", this.name),
        this.badge,
        this.duration,
        offset ? h("span", "offset muted", offset) : null,
      );
      this.items = h("ol", "items");
      const data = event.data || {};
      const details = h("details", null, summary);
      details.open = true;
      if (typeof data.message === "string" && data.message && data.message !== `${this.name} started`) {
        details.append(h("p", "agent-message muted", data.message));
      }
      details.append(this.items);
      this.node = h("li", "agent", details);
      this.node.dataset.agent = this.name;
      this.node.dataset.status = "running";
    }

    addThinking(data, offset) {
      const item = h("li", "thinking");
      const step = typeof data.step_number === "number" ? `#${data.step_number}` : "…";
      item.append(h("span", "step muted", step), thought(String(data.reasoning ?? "")));
      if (offset) item.append(h("span", "offset muted", offset));
      this.items.append(item);
    }

    close(status, data) {
      this.node.dataset.status = status;
      setBadge(this.badge, status);
      if (data && typeof data.execution_time_ms === "number") {
        this.duration.textContent = formatMs(data.execution_time_ms);
      }
      const error = data && data.error && typeof data.error === "object" ? data.error : null;
      if (error) {
        this.items.append(h("li", "agent-error error-box", h("strong", null, String(error.code)), ": ", String(error.message)));
      }
    }
  }

  /** A thought; a long one (a streamed draft) folds to its first line. */
  function thought(text) {
    const lines = text.split("\n");
    if (text.length <= LONG_THOUGHT_CHARS && lines.length <= LONG_THOUGHT_LINES) {
      return h("p", "thought", text);
    }
    const first = lines.find((line) => line.trim() !== "") || "";
    const head = first.length > 100 ? `${first.slice(0, 100)}…` : first;
    const fold = h("details", "thought long", h("summary", null, `${head} `, h("span", "muted", `(${lines.length} lines)`)));
    fold.append(h("p", "thought-full", text));
    return fold;
  }

  /** One tool call: name, parameters, then status, time and result. */
  class ToolNode {
    constructor(data, offset) {
      this.badge = badge("running");
      this.time = h("span", "duration muted", "");
      const head = h(
        "div",
        "tool-head",
        h("span", "kind", "tool"),
        h("span", "tool-name", String(data.tool_name)),
        this.badge,
        this.time,
        offset ? h("span", "offset muted", offset) : null,
      );
      this.node = h("li", "tool", head);
      this.node.dataset.tool = String(data.tool_name);
      this.node.dataset.status = "running";
      if (data.parameters !== undefined) this.node.append(parameterList(data.parameters));
    }

    complete(data) {
      const status = String(data.status || "completed");
      this.node.dataset.status = status;
      setBadge(this.badge, status);
      this.time.textContent = formatMs(data.execution_time_ms);
      const text = json(data.result, 2);
      const preview = json(data.result).slice(0, 90);
      const result = h("details", "tool-result", h("summary", null, `result ${preview}${preview.length >= 90 ? "…" : ""}`));
      result.append(h("pre", "json", text));
      this.node.append(result);
    }
  }

  /** Tool parameters as name / value pairs; strings as they are, other values as JSON. */
  function parameterList(parameters) {
    if (!parameters || typeof parameters !== "object" || Array.isArray(parameters)) {
      return h("pre", "json params", json(parameters, 2));
    }
    const list = h("dl", "params");
    for (const [name, value] of Object.entries(parameters)) {
      list.append(h("dt", null, name), h("dd", null, typeof value === "string" ? value : json(value)));
    }
    return list;
  }

  function errorBox(frame) {
    const box = h(
      "div",
      "error-box",
      h("strong", "error-code", String(frame.error_code || "ERROR")),
      ": ",
      h("span", "error-text", String(frame.error_message || "")),
    );
    if (frame.details && typeof frame.details === "object" && Object.keys(frame.details).length) {
      box.append(h("code", "error-details", json(frame.details)));
    }
    const hint = ERROR_HINTS[frame.error_code];
    if (hint) box.append(h("p", "error-hint", hint));
    return box;
  }

  // -- threads --------------------------------------------------------------------------

  const REPLY_TYPES = new Set([
    "threads",
    "thread",
    "thread_renamed",
    "thread_deleted",
    "run_resumed",
    "thread_subscribed",
    "thread_unsubscribed",
  ]);
  const THREADS_PAGE = 20;
  const RUNS_PAGE = 20;
  const THREAD_HASH = /^#thread=([A-Za-z0-9_.:-]{1,128})$/;

  /** A fresh thread id, as unguessable as the server's own. */
  function newThreadId() {
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return `t-${Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("")}`;
  }

  function threadFromHash() {
    const m = THREAD_HASH.exec(location.hash);
    return m ? m[1] : null;
  }

  /** The server's default title: the request's first line, at most 80 characters. */
  function defaultTitle(text) {
    const line = text.trim().split("\n")[0].trim();
    return line.length > 80 ? line.slice(0, 80) : line;
  }

  /** A thread's time in the list: the hour today, else the day. */
  function formatWhen(iso) {
    const at = new Date(iso);
    if (!Number.isFinite(at.getTime())) return "";
    if (at.toDateString() === new Date().toDateString()) {
      return at.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    }
    return at.toLocaleDateString([], { day: "numeric", month: "short", year: "2-digit" });
  }

  // -- the application ---------------------------------------------------------------

  class ChatApp {
    constructor() {
      this.ws = null;
      this.want = false; // whether we should be connected (reconnect after a close)
      this.attempt = 0;
      this.retryTimer = null;
      this.countdownTimer = null;
      this.retryAt = 0;
      this.runs = new Map(); // run id -> Run: the open thread's, and any whose events still arrive
      this.ties = { newest: 0, oldest: 0 }; // see nextTie
      this.pending = new Map(); // message_id -> what to do with its reply or error
      this.threadId = null; // the open thread; null: a new chat, not sent yet
      this.threadKnown = false; // the open thread exists on the server
      this.threadTitle = "New chat";
      this.subscribed = null; // the thread this socket follows (subscribe_thread)
      this.olderCursor = null; // get_thread's cursor to earlier runs
      this.threadsCursor = null; // list_threads' cursor to older threads
      this.features = new Set();
      this.resumeToken = null;
      this.counter = 0;
      this.tag = Math.random().toString(36).slice(2, 8);
      this.user = null;
      this.config = null;
      this.lastSent = null; // the id of the run sent last (for the console and the tests)
      this.connectionId = null;

      this.log = $("log");
      this.form = $("connect-form");
      this.composer = $("composer");
      this.message = $("message");
      this.form.addEventListener("submit", (event) => {
        event.preventDefault();
        this.connect();
      });
      $("disconnect").addEventListener("click", () => this.disconnect());
      $("reconnect-now").addEventListener("click", () => this.retryNow());
      this.composer.addEventListener("submit", (event) => {
        event.preventDefault();
        this.sendMessage();
      });
      this.message.addEventListener("keydown", (event) => {
        if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
          event.preventDefault();
          this.sendMessage();
        }
      });
      this.message.addEventListener("input", () => this.updateSend());
      $("new-chat").addEventListener("click", () => this.newChat());
      $("more-threads").addEventListener("click", () => this.moreThreads());
      $("earlier-runs").addEventListener("click", () => this.earlierRuns());
      $("drawer-toggle").addEventListener("click", () => this.toggleDrawer(document.body.dataset.drawer !== "open"));
      $("scrim").addEventListener("click", () => this.toggleDrawer(false));
      $("drawer-close").addEventListener("click", () => this.toggleDrawer(false));
      document.addEventListener("keydown", (event) => {
        if (event.key === "Escape" && document.body.dataset.drawer === "open") this.toggleDrawer(false);
      });
      $("rename-thread").addEventListener("click", () => this.openRename());
      $("rename-form").addEventListener("submit", (event) => {
        event.preventDefault();
        this.submitRename();
      });
      $("rename-cancel").addEventListener("click", () => $("rename-dialog").close());
      $("delete-thread").addEventListener("click", () => this.openDelete());
      $("delete-form").addEventListener("submit", (event) => {
        event.preventDefault();
        this.confirmDelete();
      });
      $("delete-cancel").addEventListener("click", () => $("delete-dialog").close());
      window.addEventListener("hashchange", () => {
        const id = threadFromHash();
        if (id !== null && id !== this.threadId && this.isOpen()) this.openThread(id);
      });
      setInterval(() => {
        const now = performance.now();
        for (const run of this.runs.values()) if (run.running) run.tick(now);
      }, 200);
    }

    async init() {
      const params = new URLSearchParams(location.search);
      try {
        const response = await fetch("/config.json", { cache: "no-store" });
        if (response.ok) this.config = await response.json();
      } catch (_error) {
        this.config = null; // opened from a file or another server: use the defaults
      }
      const scheme = location.protocol === "https:" ? "wss" : "ws";
      const host = location.hostname || "127.0.0.1";
      const port = this.config && this.config.ws_port ? this.config.ws_port : 8765;
      const path = this.config && this.config.ws_path ? this.config.ws_path : "/ws";
      $("server-url").value = params.get("server") || `${scheme}://${host}:${port}${path}`;
      $("user-id").value = params.get("user_id") ?? stored("chat.user_id") ?? "";
      if (params.get("agent")) $("agent-name").value = params.get("agent");
      const jwt = this.config && this.config.auth === "jwt";
      if (jwt) $("token").placeholder = "required: this server uses --auth jwt";
      this.updateThreadBar();
      const auto = params.get("autoconnect");
      if (auto === "1" || (auto !== "0" && !jwt)) this.connect({ resume: true });
      else this.setState("idle", jwt ? "not connected: enter a token" : "not connected");
    }

    setState(state, text) {
      document.body.dataset.connection = state;
      $("conn-state").dataset.state = state;
      $("conn-text").textContent = text;
      $("reconnect-now").hidden = state !== "reconnecting";
      $("disconnect").disabled = state === "idle" || state === "disconnected";
      this.updateSend();
      this.updateThreadBar();
    }

    isOpen() {
      return this.ws !== null && this.ws.readyState === WebSocket.OPEN && this.user !== null;
    }

    threadsOn() {
      return this.features.has("threads");
    }

    updateSend() {
      $("send").disabled = !this.isOpen() || this.message.value.trim() === "";
    }

    targetUrl() {
      const raw = $("server-url").value.trim();
      let url;
      try {
        url = new URL(raw);
      } catch (_error) {
        return null;
      }
      if (url.protocol !== "ws:" && url.protocol !== "wss:") return null;
      const token = $("token").value.trim();
      const user = $("user-id").value.trim();
      // A token never goes in the URL (proxies and servers log URLs): open() sends it
      // as a subprotocol. A token pasted into the server URL is dropped too.
      url.searchParams.delete("token");
      url.searchParams.delete("user_id");
      url.searchParams.delete("resume");
      if (!token && user) url.searchParams.set("user_id", user);
      return url;
    }

    /** Connect as the form says; `resume`: take over this tab's session (after a reload). */
    connect({ resume = false } = {}) {
      const url = this.targetUrl();
      if (url === null) {
        this.notice("error", "The server URL must start with ws:// or wss://.");
        return;
      }
      stored("chat.user_id", $("user-id").value.trim());
      this.want = true;
      // A reload takes the tab's session over (its runs go on); the Connect button starts anew.
      this.resumeToken = resume ? tabStored("chat.resume") : null;
      this.clearRetry();
      if (this.ws !== null) {
        const old = this.ws;
        this.ws = null;
        old.onclose = null;
        old.close(1000, "reconnecting");
        this.closed(1000);
      }
      this.open(url, this.resumeToken);
    }

    open(url, resumeToken) {
      $("settings-summary").textContent = `· ${url.toString()}`;
      // Session resume: the token of the dropped session takes it over (never shown).
      if (resumeToken) url.searchParams.set("resume", resumeToken);
      // Browsers cannot set an Authorization header on a WebSocket; the protocol's
      // other way is the subprotocol pair jwt-auth + jwt.<token> (the server selects jwt-auth).
      const token = $("token").value.trim();
      const protocols = token ? ["jwt-auth", `jwt.${token}`] : [];
      this.setState("connecting", this.attempt ? `reconnecting (attempt ${this.attempt})…` : "connecting…");
      let ws;
      try {
        ws = new WebSocket(url.toString(), protocols);
      } catch (error) {
        this.notice("error", `Cannot connect: ${error.message}`);
        this.setState("disconnected", "not connected");
        return;
      }
      this.ws = ws;
      this.user = null;
      ws.onmessage = (event) => {
        if (this.ws === ws) this.onFrame(event.data);
      };
      ws.onclose = (event) => {
        if (this.ws === ws) this.onClose(event);
      };
    }

    disconnect() {
      this.want = false;
      this.clearRetry();
      if (this.ws !== null) this.ws.close(1000, "user disconnected");
      else this.setState("disconnected", "disconnected");
    }

    onClose(event) {
      this.ws = null;
      const wasConnected = this.user !== null;
      this.user = null;
      this.closed(event.code);
      const reason = event.reason ? `; reason: “${event.reason}”` : "";
      const text = `Connection closed with code ${event.code}, ${closeMeaning(event.code)}${reason}.`;
      const note = this.notice("close", wasConnected ? text : `Could not connect. ${text}`);
      note.dataset.code = String(event.code);
      if (this.want) this.scheduleRetry();
      else this.setState("disconnected", `disconnected (${event.code})`);
    }

    /** The socket is gone: its requests get no answer and its runs stop arriving. */
    closed(code) {
      this.pending.clear();
      this.subscribed = null;
      for (const run of this.runs.values()) {
        run.messageIds.clear();
        if (this.want && code !== 1000) run.interrupt();
        else run.lose(code);
      }
    }

    scheduleRetry() {
      const base = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** this.attempt);
      const delay = Math.round(base * (0.8 + Math.random() * 0.4));
      this.attempt += 1;
      this.retryAt = performance.now() + delay;
      this.retryTimer = setTimeout(() => this.retryNow(), delay);
      const show = () => {
        const left = Math.max(0, (this.retryAt - performance.now()) / 1000);
        this.setState("reconnecting", `reconnecting in ${left.toFixed(left < 10 ? 1 : 0)} s (attempt ${this.attempt})`);
      };
      show();
      this.countdownTimer = setInterval(show, 100);
    }

    clearRetry() {
      clearTimeout(this.retryTimer);
      clearInterval(this.countdownTimer);
      this.retryTimer = null;
      this.countdownTimer = null;
    }

    retryNow() {
      this.clearRetry();
      const url = this.targetUrl();
      if (url === null || !this.want) return;
      this.open(url, this.resumeToken);
    }

    onFrame(text) {
      let frame;
      try {
        frame = JSON.parse(text);
      } catch (_error) {
        this.notice("error", "The server sent a frame that is not JSON.");
        return;
      }
      if (!frame || typeof frame !== "object") return;
      const stick = this.atBottom();
      if (RUN_EVENTS.has(frame.type)) this.onRunEvent(frame);
      else if (REPLY_TYPES.has(frame.type)) this.onReply(frame);
      else if (frame.type === "error_message") this.onError(frame);
      else if (frame.type === "system_message") this.onSystem(frame);
      this.scroll(stick);
    }

    onSystem(frame) {
      const data = frame.data || {};
      if (data.event !== "connection_established") return;
      this.user = String(data.user_id);
      this.connectionId = String(data.connection_id);
      this.features = new Set(Array.isArray(data.features) ? data.features.map(String) : []);
      this.resumeToken =
        this.features.has("session_resume") && typeof data.resume_token === "string" ? data.resume_token : null;
      tabStored("chat.resume", this.resumeToken);
      this.attempt = 0;
      this.setState("connected", `connected as ${this.user}`);
      const resumed = data.resumed === true;
      this.notice(
        "info",
        resumed
          ? `Reconnected as ${this.user}: the session was resumed (connection ${data.connection_id}).`
          : `Connected as ${this.user} (connection ${data.connection_id}).`,
      );
      $("settings").open = false;
      $("settings-summary").textContent = `· ${this.user}`;
      $("threads").dataset.available = String(this.threadsOn());
      this.updateSend();
      this.afterConnect();
    }

    /** A new socket: list the threads, catch up on the runs shown, follow the open thread. */
    afterConnect() {
      // Runs of other threads are not on the page: their record is in the history.
      for (const [id, run] of this.runs) if (run.threadId !== this.threadId) this.runs.delete(id);
      if (!this.threadsOn()) return;
      this.refreshThreads();
      if (this.threadId === null) {
        const fromHash = threadFromHash();
        const id = fromHash ?? stored(`chat.thread.${this.user}`);
        if (id) this.openThread(id, { quiet: fromHash === null });
        return;
      }
      // Each run shown unfinished: exactly the events after the last seq it got.
      for (const run of this.runs.values()) if (run.unfinished && !run.receiving) this.resume(run);
      if (this.threadKnown) this.loadThread();
      this.updateThreadBar();
    }

    /** Send a frame with a fresh message_id; its reply or error goes to `handlers`. */
    request(frame, handlers = {}) {
      if (!this.isOpen()) {
        this.notice("error", "Not connected: the message was not sent.");
        return false;
      }
      this.counter += 1;
      const messageId = `m-${this.tag}-${this.counter}`;
      this.pending.set(messageId, handlers);
      if (handlers.run) handlers.run.messageIds.add(messageId);
      this.ws.send(JSON.stringify({ ...frame, message_id: messageId }));
      return true;
    }

    settle(messageId) {
      const handlers = messageId ? this.pending.get(messageId) : undefined;
      if (handlers === undefined) return undefined;
      this.pending.delete(messageId);
      if (handlers.run) handlers.run.messageIds.delete(messageId);
      return handlers;
    }

    onReply(frame) {
      const handlers = this.settle(frame.message_id);
      if (handlers && handlers.reply) handlers.reply(frame.data && typeof frame.data === "object" ? frame.data : {});
    }

    onError(frame) {
      const handlers = this.settle(frame.message_id);
      if (handlers && handlers.error) {
        handlers.error(frame);
        return;
      }
      if (handlers && handlers.run) {
        handlers.run.rejectWith(frame);
        return;
      }
      const note = this.notice("error", "");
      note.append(errorBox(frame));
    }

    onRunEvent(event) {
      let run = this.runs.get(event.run_id);
      if (!run) {
        if (event.thread_id !== this.threadId) return; // a thread no longer open
        const data = event.data && typeof event.data === "object" ? event.data : {};
        // A run started elsewhere (another tab) on the thread this socket follows.
        run = new Run(this, {
          runId: String(event.run_id),
          threadId: String(event.thread_id),
          text: String(data.user_request ?? "(a run started in another tab or window)"),
          agentName: String(event.agent_name),
          sortKey: String(event.timestamp),
        });
        run.receiving = true;
        run.via = "subscription";
        this.runs.set(run.runId, run);
        this.place(run);
      }
      run.handle(event);
      if (event.seq === 1 && run.threadId === this.threadId) {
        // A new run on the open thread: the list shows it running (and a new thread at all).
        if (!this.threadKnown) this.threadCreated();
        else if (!event.replay) this.refreshThreads();
      }
    }

    /** A run's final event arrived. */
    runEnded(run) {
      for (const id of run.messageIds) this.pending.delete(id);
      run.messageIds.clear();
      if (run.replaying) run.replaying = false;
      else if (run.threadId === this.threadId) this.refreshThreads();
    }

    addRun(spec) {
      const run = new Run(this, spec);
      this.runs.set(run.runId, run);
      this.place(run);
      return run;
    }

    /** A tie-breaker for a new Run: larger than any so far, or (older: true) smaller. */
    nextTie(older = false) {
      return older ? --this.ties.oldest : ++this.ties.newest;
    }

    /** Put a run's card in the log, in the order the runs started. */
    place(run) {
      const node = run.node;
      node.dataset.sortKey = run.sortKey;
      node.dataset.tie = String(run.tie);
      let before = null;
      for (const other of this.log.querySelectorAll(":scope > article.run")) {
        if (other === node) continue;
        const key = other.dataset.sortKey;
        if (key > run.sortKey || (key === run.sortKey && Number(other.dataset.tie) > run.tie)) {
          before = other;
          break;
        }
      }
      if (before !== null) this.log.insertBefore(node, before);
      else this.log.append(node);
      $("empty").hidden = true;
    }

    sendMessage() {
      const text = this.message.value;
      if (text.trim() === "" || $("send").disabled) return;
      if (this.threadId === null) {
        // A new chat: the first run creates the thread with this id.
        this.threadId = newThreadId();
        this.threadKnown = false;
        this.setThreadTitle(defaultTitle(text));
      }
      this.counter += 1;
      const runId = `web-${this.tag}-${this.counter}`;
      const agentName = $("agent-name").value.trim() || "supervisor";
      const payload = { user_request: text, agent_name: agentName, run_id: runId, thread_id: this.threadId };
      const run = this.addRun({ runId, threadId: this.threadId, text, agentName });
      this.lastSent = runId;
      if (!this.request({ type: "start_agent", payload }, { run })) {
        run.setStatus("rejected");
        return;
      }
      run.receiving = true;
      run.via = "start";
      this.message.value = "";
      this.updateSend();
      this.scroll(true);
    }

    /** Ask for a run's events after the last one shown (all of them for a new card). */
    resume(run) {
      run.receiving = true;
      run.via = "resume";
      const sent = this.request(
        { type: "resume_run", payload: { run_id: run.runId, after_seq: run.lastSeq } },
        {
          run,
          reply: (data) => run.resumed(data),
          error: (frame) => {
            const details = frame.details && typeof frame.details === "object" ? frame.details : {};
            if (frame.error_code === "RUN_NOT_FOUND") {
              run.notFound();
            } else if (frame.error_code === "FORMAT_ERROR" && details.field === "payload.run_id") {
              // This socket receives that run's events already (it followed it first).
            } else {
              run.receiving = false;
              run.errors.append(errorBox(frame));
            }
          },
        },
      );
      if (!sent) run.receiving = false;
      return sent;
    }

    // -- threads ----------------------------------------------------------------------

    refreshThreads() {
      if (!this.threadsOn() || !this.isOpen()) return;
      const shown = $("thread-list").children.length;
      const limit = Math.min(100, Math.max(THREADS_PAGE, shown));
      this.request(
        { type: "list_threads", payload: { limit } },
        { reply: (data) => this.showThreads(data, false), error: (frame) => this.showAlert(errorBox(frame)) },
      );
    }

    moreThreads() {
      if (this.threadsCursor === null) return;
      this.request(
        { type: "list_threads", payload: { limit: THREADS_PAGE, cursor: this.threadsCursor } },
        { reply: (data) => this.showThreads(data, true), error: (frame) => this.showAlert(errorBox(frame)) },
      );
    }

    showThreads(data, append) {
      const list = $("thread-list");
      if (!append) list.replaceChildren();
      const known = new Set(Array.from(list.children, (li) => li.dataset.threadId));
      for (const info of Array.isArray(data.threads) ? data.threads : []) {
        // A thread updated between two pages moves up: keep its first place.
        if (!info || known.has(String(info.thread_id))) continue;
        known.add(String(info.thread_id));
        list.append(this.threadItem(info));
      }
      this.threadsCursor = typeof data.next_cursor === "string" ? data.next_cursor : null;
      $("more-threads").hidden = this.threadsCursor === null;
      $("threads-empty").hidden = list.children.length > 0;
      this.markCurrent();
    }

    threadItem(info) {
      const id = String(info.thread_id);
      const title = String(info.title || id);
      const when = h("time", "thread-when", formatWhen(info.updated_at));
      if (typeof info.updated_at === "string") when.dateTime = info.updated_at;
      const count = Number(info.run_count) || 0;
      const meta = h("span", "thread-meta muted", when, ` · ${count} ${count === 1 ? "run" : "runs"}`);
      if (info.last_status) meta.append(" ", badge(String(info.last_status)));
      const button = h("button", "thread-open", h("span", "thread-name", title), meta);
      button.type = "button";
      button.title = title;
      button.addEventListener("click", () => this.openThread(id));
      const item = h("li", "thread-item", button);
      item.dataset.threadId = id;
      item.dataset.title = title;
      if (this.threadId === id && this.threadKnown) this.setThreadTitle(title);
      return item;
    }

    threadItemOf(id) {
      return Array.from($("thread-list").children).find((li) => li.dataset.threadId === id) || null;
    }

    markCurrent() {
      for (const item of $("thread-list").children) {
        const current = item.dataset.threadId === this.threadId;
        item.classList.toggle("current", current);
        if (current) item.firstElementChild.setAttribute("aria-current", "page");
        else item.firstElementChild.removeAttribute("aria-current");
      }
    }

    /** Show a thread: its record (runs newest first, paged), then follow it live. */
    openThread(id, { quiet = false } = {}) {
      this.toggleDrawer(false);
      if (id === this.threadId && this.threadKnown) return;
      this.leaveThread();
      this.threadId = id;
      this.threadKnown = true; // until the server says otherwise
      this.remember(id);
      const item = this.threadItemOf(id);
      this.setThreadTitle(item ? item.dataset.title : "…");
      this.markCurrent();
      this.loadThread(quiet);
    }

    loadThread(quiet = false) {
      if (!this.isOpen() || !this.threadsOn() || this.threadId === null) return;
      const id = this.threadId;
      this.log.dataset.loading = "true";
      const loaded = () => {
        if (this.threadId === id) this.log.dataset.loading = "false";
      };
      this.request(
        { type: "get_thread", payload: { thread_id: id, limit: RUNS_PAGE } },
        {
          reply: (data) => {
            this.showThread(data, false);
            loaded();
          },
          error: (frame) => {
            loaded();
            this.threadError(frame, id, quiet);
          },
        },
      );
      this.subscribe();
    }

    subscribe() {
      if (!this.features.has("subscriptions") || this.subscribed === this.threadId) return;
      const id = this.threadId;
      this.subscribed = id;
      this.request(
        { type: "subscribe_thread", payload: { thread_id: id } },
        {
          reply: (data) => this.onSubscribed(data),
          error: (frame) => {
            if (this.subscribed === id) this.subscribed = null;
            // A missing thread is reported once, by get_thread.
            if (frame.error_code !== "THREAD_NOT_FOUND") this.showAlert(errorBox(frame));
          },
        },
      );
    }

    onSubscribed(data) {
      if (data.thread_id !== this.threadId) return;
      const runId = data.running_run_id;
      if (typeof runId !== "string") return;
      // A run already in progress is not sent by the subscription: catch up on it.
      let run = this.runs.get(runId);
      if (run !== undefined && (run.receiving || !run.unfinished)) return;
      if (run === undefined) {
        run = this.addRun({ runId, threadId: this.threadId, text: "(a run in progress)", agentName: "" });
        run.setStatus("running");
      }
      this.resume(run);
    }

    earlierRuns() {
      if (this.olderCursor === null || this.threadId === null) return;
      const id = this.threadId;
      $("earlier-runs").disabled = true;
      this.request(
        { type: "get_thread", payload: { thread_id: id, limit: RUNS_PAGE, cursor: this.olderCursor } },
        { reply: (data) => this.showThread(data, true), error: (frame) => this.threadError(frame, id, false) },
      );
    }

    showThread(data, older) {
      if (data.thread_id !== this.threadId) return; // another thread was opened meanwhile
      this.threadKnown = true;
      if (typeof data.title === "string") this.setThreadTitle(data.title);
      // The page lists runs newest first. A first page is taken oldest first, so
      // that each run is newer than the one before; an earlier page newest first,
      // each older than everything shown (the tie-breakers of equal start times).
      const infos = Array.isArray(data.runs) ? data.runs : [];
      for (const info of older ? infos : [...infos].reverse()) {
        if (!info || typeof info.run_id !== "string") continue;
        let run = this.runs.get(info.run_id);
        if (run === undefined) {
          run = new Run(this, {
            runId: info.run_id,
            threadId: this.threadId,
            text: String(info.user_request ?? ""),
            agentName: String(info.agent_name ?? ""),
            sortKey: String(info.started_at ?? ""),
          });
          if (older) run.tie = this.nextTie(true);
          this.runs.set(run.runId, run);
        }
        run.showRecord(info);
        this.place(run);
        if (info.status === "running" && run.unfinished && !run.receiving) this.resume(run);
      }
      if (!older || this.olderCursor !== null) {
        this.olderCursor = typeof data.next_cursor === "string" ? data.next_cursor : null;
      }
      const earlier = $("earlier-runs");
      earlier.hidden = this.olderCursor === null;
      earlier.disabled = false;
      this.log.prepend(earlier);
      if (!older) this.scroll(true);
      this.updateThreadBar();
    }

    threadError(frame, id, quiet) {
      if (frame.error_code !== "THREAD_NOT_FOUND") {
        this.showAlert(errorBox(frame));
        return;
      }
      const item = this.threadItemOf(id);
      if (item) item.remove();
      if (this.threadId !== id) return;
      this.newChat();
      if (!quiet) {
        this.showAlert(
          h("span", null, `There is no thread ${id} for ${this.user}: it was deleted, or it is another user's.`),
        );
      }
    }

    /** The first event of a new chat's first run: the thread exists now. */
    threadCreated() {
      this.threadKnown = true;
      this.remember(this.threadId);
      this.subscribe();
      this.refreshThreads();
      this.updateThreadBar();
    }

    /** Clear the log for another thread; keep only the runs whose events still arrive here. */
    leaveThread() {
      if (this.subscribed !== null && this.isOpen()) {
        const id = this.subscribed;
        this.request({ type: "unsubscribe_thread", payload: { thread_id: id } }, {});
      }
      this.subscribed = null;
      for (const [id, run] of this.runs) {
        run.node.remove();
        if (run.via === "subscription") run.receiving = false; // the unsubscription ends those
        if (!(run.receiving && run.unfinished)) this.runs.delete(id);
      }
      for (const node of Array.from(this.log.children)) {
        if (node.id !== "earlier-runs" && node.id !== "empty") node.remove();
      }
      this.olderCursor = null;
      this.log.dataset.loading = "false";
      $("earlier-runs").hidden = true;
      $("empty").hidden = false;
      this.hideAlert();
    }

    newChat() {
      this.leaveThread();
      this.threadId = null;
      this.threadKnown = false;
      this.setThreadTitle("New chat");
      this.remember(null);
      this.markCurrent();
      this.toggleDrawer(false);
      this.message.focus();
    }

    /** The open thread goes in the URL fragment (reload) and in storage (the next visit). */
    remember(id) {
      const hash = id === null ? "" : `#thread=${id}`;
      if (location.hash !== hash) history.replaceState(null, "", `${location.pathname}${location.search}${hash}`);
      if (this.user !== null) {
        try {
          if (id === null) localStorage.removeItem(`chat.thread.${this.user}`);
          else localStorage.setItem(`chat.thread.${this.user}`, id);
        } catch (_error) {
          // storage disabled: the fragment is enough for a reload
        }
      }
    }

    setThreadTitle(title) {
      this.threadTitle = title;
      $("thread-title").textContent = title;
      document.title = this.threadId === null ? "Agent chat · trio-agent-server" : `${title} · Agent chat`;
      this.updateThreadBar();
    }

    updateThreadBar() {
      const usable = this.threadKnown && this.isOpen() && this.threadsOn();
      $("rename-thread").disabled = !usable;
      $("delete-thread").disabled = !usable;
      $("thread-bar").dataset.thread = this.threadId === null ? "none" : this.threadKnown ? "known" : "new";
    }

    openRename() {
      if (!this.threadKnown) return;
      const input = $("rename-input");
      input.value = this.threadTitle;
      $("rename-dialog").showModal();
      input.select();
    }

    submitRename() {
      const title = $("rename-input").value.trim();
      if (!title) return;
      $("rename-dialog").close();
      const id = this.threadId;
      this.request(
        { type: "rename_thread", payload: { thread_id: id, title } },
        {
          reply: (data) => {
            const item = this.threadItemOf(String(data.thread_id));
            if (item) {
              item.dataset.title = String(data.title);
              item.querySelector(".thread-name").textContent = String(data.title);
              item.firstElementChild.title = String(data.title);
            }
            if (data.thread_id === this.threadId) this.setThreadTitle(String(data.title));
            this.hideAlert();
          },
          error: (frame) => this.showAlert(errorBox(frame)),
        },
      );
    }

    openDelete() {
      if (!this.threadKnown) return;
      $("delete-text").textContent =
        `“${this.threadTitle}” and all its runs, with their answers and events, will be deleted for good.`;
      $("delete-dialog").showModal();
      $("delete-cancel").focus();
    }

    confirmDelete() {
      $("delete-dialog").close();
      const id = this.threadId;
      this.request(
        { type: "delete_thread", payload: { thread_id: id } },
        {
          reply: (data) => {
            const item = this.threadItemOf(String(data.thread_id));
            if (item) item.remove();
            $("threads-empty").hidden = $("thread-list").children.length > 0;
            if (data.thread_id === this.threadId) this.newChat();
            this.notice("info", `Thread “${item ? item.dataset.title : data.thread_id}” deleted.`);
            this.refreshThreads();
          },
          error: (frame) => this.showAlert(errorBox(frame)),
        },
      );
    }

    showAlert(content) {
      const alert = $("thread-alert");
      const dismiss = h("button", "small secondary", "Dismiss");
      dismiss.type = "button";
      dismiss.addEventListener("click", () => this.hideAlert());
      alert.replaceChildren(h("span", "alert-body", content), dismiss);
      alert.hidden = false;
    }

    hideAlert() {
      $("thread-alert").hidden = true;
      $("thread-alert").replaceChildren();
    }

    toggleDrawer(open) {
      const was = document.body.dataset.drawer === "open";
      document.body.dataset.drawer = open ? "open" : "closed";
      $("drawer-toggle").setAttribute("aria-expanded", String(open));
      $("scrim").hidden = !open;
      if (open && !was) $("new-chat").focus();
      if (!open && was) $("drawer-toggle").focus();
    }

    notice(kind, text) {
      const stick = this.atBottom();
      const last = this.log.lastElementChild;
      if (text && last && last.dataset.kind === kind && last.dataset.text === text) {
        // The same notice again (a server that stays down): count it instead of repeating it.
        const count = Number(last.dataset.count || "1") + 1;
        last.dataset.count = String(count);
        last.textContent = `${text} (×${count})`;
        return last;
      }
      const note = h("p", `notice ${kind}`, text);
      note.dataset.kind = kind;
      note.dataset.text = text;
      this.log.append(note);
      this.scroll(stick);
      return note;
    }

    atBottom() {
      return this.log.scrollHeight - this.log.scrollTop - this.log.clientHeight < 48;
    }

    scroll(stick) {
      if (stick) this.log.scrollTop = this.log.scrollHeight;
    }
  }

  const app = new ChatApp();
  // For the console and the browser tests; the page itself does not use it.
  window.chatPage = Object.freeze({ app, renderMarkdown });
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", () => app.init());
  else app.init();
})();
