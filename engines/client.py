"""The one narrow interface between the gateway and an engine replica."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias

from engines.usage import StreamTally, Usage

__all__ = [
    "TEMPLATE_FIELDS",
    "EngineClient",
    "EngineReply",
    "EngineStream",
    "Headers",
    "StreamEvent",
    "Timeouts",
]

# more headers for one engine call, sent as given (the gateway's W3C trace context: `traceparent`...)
Headers = Sequence[tuple[bytes, bytes]]

# the fields of a chat request that shape how its messages are rendered into a prompt: a token count of
# those messages (`EngineClient.count_tokens`) takes them from the request it counts
TEMPLATE_FIELDS = ("add_generation_prompt", "continue_final_message", "tools", "chat_template_kwargs")


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect_s: float = 3.0
    first_token_s: float = 60.0  # a stream's first event; includes queueing in the engine
    idle_s: float = 30.0  # the longest silence between two events of a stream
    total_s: float = 600.0  # a whole non-streaming response


@dataclass(frozen=True, slots=True)
class EngineReply:
    payload: dict[str, Any]
    usage: Usage | None
    replica: str


# (data, payload): an event's JSON exactly as the engine sent it, and its decoding. A plain tuple: one is made
# for every token of every stream, and a named tuple's constructor (Python code) costs ten times as much
StreamEvent: TypeAlias = tuple[bytes, dict[str, Any]]


class EngineStream(Protocol):
    """An open stream whose first event has arrived. Iterate it for events; always `aclose()` it."""

    replica: str
    usage: Usage | None
    usage_chunks: int  # events so far with a `usage` field and no choices: the usage chunk, as a rule
    tally: StreamTally

    def __aiter__(self) -> EngineStream: ...

    async def __anext__(self) -> StreamEvent: ...

    async def batch(self) -> list[StreamEvent]:
        """Every event already in hand at once (waiting for one if none is); [] once the stream has ended."""
        ...

    async def aclose(self) -> None: ...


class EngineClient(Protocol):
    """One replica of an engine. Errors are raised from the `engines._exceptions` tree."""

    url: str

    async def complete(
        self, path: str, payload: bytes, *, request_id: str, headers: Headers = ()
    ) -> EngineReply: ...

    async def stream(
        self, path: str, payload: bytes, *, request_id: str, headers: Headers = ()
    ) -> EngineStream: ...

    async def health(self) -> bool:
        """Whether the replica says it is healthy. Raises `LocalOverload` when this process could not ask."""
        ...

    async def metrics_text(self) -> str | None:
        """The engine's Prometheus `/metrics` text; None when it cannot be had (any failure)."""
        ...

    async def count_tokens(
        self,
        model: str,
        *,
        prompt: str | None = None,
        messages: Any = None,
        template: Mapping[str, Any] | None = None,
    ) -> int | None:
        """Tokens of a text (or of chat messages, template included) by the engine's own tokenizer;
        None when the engine cannot tell. `template`: how the messages were rendered for the engine call
        counted (its `add_generation_prompt`, `continue_final_message`, `tools`, `chat_template_kwargs`),
        so that a continued assistant turn is counted as the engine read it."""
        ...
