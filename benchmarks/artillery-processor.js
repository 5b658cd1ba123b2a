// Artillery processor for artillery.yml: one chat run, read to its final event.
//
// Artillery's built-in ws `send`/`wait` steps expect one reply per message; a
// run streams dozens of events, so this function takes over the socket for the
// run, records time to agent_started and to the final event, and fails the
// virtual user on an error_message frame or a run that does not complete.
"use strict";

const RUN_TIMEOUT_MS = 60000;
const DEFAULT_REQUEST =
  "We send 40M input and 10M output tokens a month to gpt-4o and p95 latency " +
  "is 1200 ms. How much would switching to gpt-4o-mini save?";

async function chatRun(context, events) {
  const ws = context.ws;
  const started = Date.now();
  const request = context.vars.request || DEFAULT_REQUEST;
  await new Promise((resolve, reject) => {
    let sawStart = false;
    const finish = (err) => {
      clearTimeout(timer);
      ws.onmessage = undefined;
      return err ? reject(err) : resolve();
    };
    const timer = setTimeout(
      () => finish(new Error("no final event within 60 s")),
      RUN_TIMEOUT_MS,
    );
    ws.onmessage = (event) => {
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch (_err) {
        return finish(new Error("a frame that is not JSON"));
      }
      if (frame.type === "error_message") {
        events.emit("counter", `chat.errors.${frame.error_code}`, 1);
        return finish(new Error(frame.error_code));
      }
      if (!sawStart && frame.type === "agent_started") {
        sawStart = true;
        events.emit("histogram", "chat.ms_to_agent_started", Date.now() - started);
      }
      if (frame.final === true) {
        const status = frame.data && frame.data.status;
        events.emit("histogram", "chat.ms_to_final_event", Date.now() - started);
        events.emit("counter", `chat.runs.${status}`, 1);
        return finish(status === "completed" ? undefined : new Error(`run ended ${status}`));
      }
      return undefined;
    };
    ws.send(
      JSON.stringify({
        type: "user_message",
        message_id: `art-${Math.random().toString(36).slice(2)}`,
        payload: { content: request },
      }),
    );
  });
}

module.exports = { chatRun };
