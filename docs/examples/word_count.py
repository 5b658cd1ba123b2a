"""A complete example plug-in: one top-level agent and one tool.

Serve it with ``python -m server --plugin docs.examples.word_count`` and
start it from a client with
``{"type": "start_agent", "payload": {"agent_name": "word_count", "user_request": "..."}}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agents import AgentClassRegistry, BaseAgent, ChatMessage, Tool, ToolRegistry


def count_words(text: str, min_length: int = 1) -> dict[str, Any]:
    """The tool's function: plain, synchronous, easy to test on its own."""
    words = [w for w in text.split() if len(w.strip(".,;:!?")) >= min_length]
    longest = max(words, key=len) if words else ""
    return {"words": len(words), "longest": longest}


COUNT_WORDS = Tool(
    name="count_words",
    description="Count the words of a text (optionally only those of a minimum length).",
    parameters={
        "type": "object",
        "properties": {
            "text": {"type": "string", "description": "the text to count"},
            "min_length": {"type": "integer", "description": "ignore shorter words"},
        },
        "required": ["text"],
    },
    func=count_words,
)


class WordCountAgent(BaseAgent):
    """Counts the words of a request, reuses triage, and answers in one sentence."""

    name = "word_count"
    top_level = True  # clients may start it with start_agent
    description = "Counts the words of a request and says what the request is about."

    async def execute(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        text = self.context.request
        await self.think("Counting the words", progress=10)
        counted = await self.use_tool("count_words", text=text)
        if not counted.ok:  # a failed tool call is a result, not an exception
            raise RuntimeError(f"could not count: {counted.error}")
        # Another agent as a step of this one: a fresh triage instance, its own
        # events, its own time limit. A failure raises AgentError (catch it to
        # degrade; let it go to fail this agent with the same status).
        triage = await self.run_agent("triage", {"request": text})
        draft = (
            f"Your message has {counted.value['words']} words; the longest is "
            f'"{counted.value["longest"]}". It is about {triage["category"]}.'
        )
        # Language work goes through the server's model provider. The offline
        # provider returns the draft; a real model would rewrite it. Streamed
        # text becomes agent_thinking events, at most one per 50 ms.
        async with self.thoughts() as sink:
            answer = await self.model.chat(
                [
                    ChatMessage("system", "Rewrite the draft as one friendly sentence."),
                    ChatMessage("user", f"Draft:\n{draft}"),
                ],
                on_delta=sink.add,
            )
        return {"words": counted.value["words"], "answer": answer.text}


def register(agents: AgentClassRegistry, tools: ToolRegistry) -> None:
    """The plug-in hook ``python -m server --plugin MODULE`` calls at start-up."""
    agents.register(WordCountAgent)
    tools.register(COUNT_WORDS)
