// The chat page of trio-agent-server: one WebSocket, runs shown live as nested timelines.
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

  /** One run: a card with its user message, header, nested timeline and answer. */
  class Run {
    constructor(app, { runId, messageId, text, agentName }) {
      this.app = app;
      this.runId = runId;
      this.messageId = messageId;
      this.status = "sending";
      this.sentAt = performance.now();
      this.startTime = null; // server timestamp (ms) of the first event
      this.lastSeq = 0;
      this.stack = []; // open agent nodes, innermost last
      this.tools = new Map();
      this.finalMs = null;

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
      this.timeline = h("section", "timeline", h("h2", "section-title", "Steps"), this.steps);
      this.answer = h("div", "answer-body md", h("p", "muted placeholder", "Waiting for the answer…"));
      this.answerSection = h("section", "answer", h("h2", "section-title", "Answer"), this.answer);
      this.errors = h("div", "run-errors");

      const you = h("div", "bubble user");
      you.append(h("span", "who", "You"), h("p", "user-text", text));
      this.agentLabel = h("span", "run-agent", agentName);
      const head = h(
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
      this.node = h("article", "run", you, head, this.errors, h("div", "run-body", this.timeline, this.answerSection));
      this.node.dataset.runId = runId;
      this.node.dataset.status = "sending";
    }

    get running() {
      return this.status === "sending" || this.status === "running";
    }

    setStatus(status) {
      this.status = status;
      this.node.dataset.status = status;
      setBadge(this.badge, status);
      if (!this.running) {
        this.stopButton.remove();
        this.progress.hidden = true;
      }
    }

    stop() {
      if (!this.running) return;
      if (this.app.send({ type: "stop_agent", payload: { run_id: this.runId } }, this)) {
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
      if (this.status === "sending") {
        this.setStatus("rejected");
        this.answer.replaceChildren(h("p", "muted", "The server did not start this run."));
      } else {
        this.stopButton.disabled = !this.running;
        this.stopButton.textContent = "Stop";
      }
    }

    /** The connection closed before the final event: the server cancels such runs silently. */
    lose(code) {
      if (!this.running) return;
      this.setStatus("lost");
      for (const node of this.stack) node.close("lost", null);
      this.stack = [];
      this.answer.replaceChildren(
        h("p", "muted", `The connection closed (${code}) before this run ended; the server cancelled it.`),
      );
    }

    handle(event) {
      if (event.seq !== this.lastSeq + 1) {
        this.errors.append(h("p", "warning", `Event seq ${event.seq} after ${this.lastSeq}: events were lost.`));
      }
      this.lastSeq = event.seq;
      if (this.startTime === null) {
        this.startTime = Date.parse(event.timestamp);
        this.agentLabel.textContent = event.agent_name;
        this.setStatus("running");
      }
      const data = event.data && typeof event.data === "object" ? event.data : {};
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
    return box;
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
      this.runs = new Map();
      this.byMessage = new Map();
      this.threadId = null;
      this.counter = 0;
      this.tag = Math.random().toString(36).slice(2, 8);
      this.user = null;
      this.config = null;

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
      const auto = params.get("autoconnect");
      if (auto === "1" || (auto !== "0" && !jwt)) this.connect();
      else this.setState("idle", jwt ? "not connected: enter a token" : "not connected");
    }

    setState(state, text) {
      document.body.dataset.connection = state;
      $("conn-state").dataset.state = state;
      $("conn-text").textContent = text;
      $("reconnect-now").hidden = state !== "reconnecting";
      $("disconnect").disabled = state === "idle" || state === "disconnected";
      this.updateSend();
    }

    updateSend() {
      const open = this.ws !== null && this.ws.readyState === WebSocket.OPEN && this.user !== null;
      $("send").disabled = !open || this.message.value.trim() === "";
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
      if (!token && user) url.searchParams.set("user_id", user);
      return url;
    }

    connect() {
      const url = this.targetUrl();
      if (url === null) {
        this.notice("error", "The server URL must start with ws:// or wss://.");
        return;
      }
      stored("chat.user_id", $("user-id").value.trim());
      this.want = true;
      this.clearRetry();
      if (this.ws !== null) {
        const old = this.ws;
        this.ws = null;
        old.onclose = null;
        old.close(1000, "reconnecting");
        this.loseRuns(1000);
      }
      this.open(url);
    }

    open(url) {
      $("settings-summary").textContent = `· ${url.toString()}`;
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
      this.loseRuns(event.code);
      const reason = event.reason ? `; reason: “${event.reason}”` : "";
      const text = `Connection closed with code ${event.code}, ${closeMeaning(event.code)}${reason}.`;
      const note = this.notice("close", wasConnected ? text : `Could not connect. ${text}`);
      note.dataset.code = String(event.code);
      if (this.want) this.scheduleRetry();
      else this.setState("disconnected", `disconnected (${event.code})`);
    }

    loseRuns(code) {
      for (const run of this.runs.values()) run.lose(code);
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
      this.open(url);
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
      else if (frame.type === "error_message") this.onError(frame);
      else if (frame.type === "system_message") this.onSystem(frame);
      this.scroll(stick);
    }

    onSystem(frame) {
      const data = frame.data || {};
      if (data.event !== "connection_established") return;
      this.user = String(data.user_id);
      this.attempt = 0;
      this.setState("connected", `connected as ${this.user}`);
      this.notice("info", `Connected as ${this.user} (connection ${data.connection_id}).`);
      $("settings").open = false;
      $("settings-summary").textContent = `· ${this.user}`;
      this.updateSend();
    }

    onRunEvent(event) {
      let run = this.runs.get(event.run_id);
      if (!run && event.data && this.byMessage.has(event.data.message_id)) {
        run = this.byMessage.get(event.data.message_id);
      }
      if (!run) {
        run = this.addRun({
          runId: String(event.run_id),
          messageId: null,
          text: String((event.data && event.data.user_request) || "(a run started elsewhere)"),
          agentName: String(event.agent_name),
        });
      }
      if (this.threadId === null && typeof event.thread_id === "string") this.threadId = event.thread_id;
      run.handle(event);
    }

    onError(frame) {
      const run = frame.message_id ? this.byMessage.get(frame.message_id) : undefined;
      if (run) {
        run.rejectWith(frame);
        return;
      }
      const note = this.notice("error", "");
      note.append(errorBox(frame));
    }

    addRun(spec) {
      const run = new Run(this, spec);
      this.runs.set(run.runId, run);
      if (spec.messageId) this.byMessage.set(spec.messageId, run);
      $("empty").hidden = true;
      this.log.append(run.node);
      return run;
    }

    /** Send a frame with a fresh message_id (errors about it go to `run`); false if closed. */
    send(frame, run) {
      if (this.ws === null || this.ws.readyState !== WebSocket.OPEN) {
        this.notice("error", "Not connected: the message was not sent.");
        return false;
      }
      this.counter += 1;
      const messageId = `m-${this.tag}-${this.counter}`;
      if (run) this.byMessage.set(messageId, run);
      this.ws.send(JSON.stringify({ ...frame, message_id: messageId }));
      return true;
    }

    sendMessage() {
      const text = this.message.value;
      if (text.trim() === "" || $("send").disabled) return;
      this.counter += 1;
      const runId = `web-${this.tag}-${this.counter}`;
      const agentName = $("agent-name").value.trim() || "supervisor";
      const payload = { user_request: text, agent_name: agentName, run_id: runId };
      if (this.threadId) payload.thread_id = this.threadId;
      const run = this.addRun({ runId, messageId: null, text, agentName });
      if (!this.send({ type: "start_agent", payload }, run)) {
        run.setStatus("rejected");
        return;
      }
      this.message.value = "";
      this.updateSend();
      this.scroll(true);
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
