"""Chain-of-thought for models without native reasoning: the model is told to think between the
delimiters before answering; the runner splits its text (see splitter.py), so the client sees `reasoning`
and `content` as from a reasoning model, and the floor and cap apply the same way.

With `prefill_thinking` (the default) the model's turn is also begun for it, `think_open` and a newline, and
the engine continues that turn: small instruct models often answer at once whatever the instruction says,
and a turn that starts inside the reasoning leaves them nothing to do but reason first."""

from __future__ import annotations

from typing import Any

from gateway.deliberation.run import Run
from gateway.deliberation.strategy import Engine

__all__ = ["PromptedReasoning"]


class PromptedReasoning:
    def prepare(self, run: Run) -> None:
        s = run.settings
        if s.prefill_thinking:
            run.opening = f"{s.think_open}\n"
        instruction = (
            f"Before answering, think step by step between {s.think_open} and {s.think_close}."
            f" Then, after {s.think_close}, give your final answer."
        )
        messages: list[Any] = list(run.body.get("messages") or [])
        if messages and isinstance(messages[0], dict) and messages[0].get("role") in ("system", "developer"):
            first = dict(messages[0])
            if isinstance(first.get("content"), str):
                first["content"] = f"{first['content']}\n\n{instruction}"
                messages[0] = first
                run.body["messages"] = messages
                return
        run.body["messages"] = [{"role": "system", "content": instruction}, *messages]

    async def refine(self, run: Run, engine: Engine) -> None:
        pass  # the split happens as the text arrives
