"""From what a request did (`Exchange`) to the plain usage record that pricing rates and the ledger keeps.

Counts come from the engine's usage whenever it arrived. When it did not (a stream cut by the client or by
the engine), the prompt and the generated text are counted by the engine's own tokenizer (`/tokenize`) when it
answers, else locally - about four characters a token, the prompt from the request's size - and the record is
marked `estimated` either way; a request that generated nothing
counts nothing. Many vLLM releases omit `completion_tokens_details.reasoning_tokens` (and vLLM 0.32 reports 0
when the `<think>` was in the prompt): the reasoning share of the completion is then split by the share of
reasoning text (and marked estimated). Reasoning tokens stay a
subset of completion tokens, cached tokens a subset of prompt tokens: nothing is ever counted twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from engines import StreamTally
from gateway.accounting.exchange import Exchange
from pricing import Cascade, Depth, UsageRecord

__all__ = [
    "COUNT_TIMEOUT_S",
    "Counted",
    "generated_chars",
    "generated_estimate",
    "prompt_estimate",
    "usage_record",
]

_CHARS_PER_TOKEN = 4
_BYTES_PER_TOKEN = 4
COUNT_TIMEOUT_S = 1.0  # how long a record may wait for the engine's token counts before it estimates


def prompt_estimate(size_bytes: int) -> int:
    """A prompt's tokens from the size of the request that carried it, when no tokenizer answers."""
    return size_bytes // _BYTES_PER_TOKEN


def generated_estimate(chars: int) -> int:
    """Generated tokens from their characters, rounded up, when no tokenizer answers."""
    return -(-chars // _CHARS_PER_TOKEN)


@dataclass(frozen=True, slots=True)
class Counted:
    """Exact token counts of a cut request from the engine's own tokenizer (its `/tokenize`)."""

    prompt: int
    content: int
    reasoning: int


def usage_record(
    exchange: Exchange,
    depth: Depth | None = None,
    counted: Counted | None = None,
    cascade: Cascade | None = None,
) -> UsageRecord:
    """The request's record. A cascade's exchange is its last stage's: an escalated one's fast stage (in
    `cascade`) is added to it."""
    content_chars, reasoning_chars = generated_chars(exchange)
    usage = exchange.usage
    if usage is not None:
        prompt, cached, completion = usage.prompt_tokens, usage.cached_tokens, usage.completion_tokens
        reasoning = usage.reasoning_tokens
        estimated = exchange.estimated
        if reasoning is None or (reasoning == 0 and reasoning_chars > 0):
            # missing, or vLLM's 0 for reasoning that began in the prompt: split by the text
            generated = content_chars + reasoning_chars
            reasoning = round(completion * reasoning_chars / generated) if generated else 0
            estimated = estimated or reasoning_chars > 0
    elif counted is not None and (content_chars or reasoning_chars):
        prompt, cached = counted.prompt, 0
        completion, reasoning = counted.content + counted.reasoning, counted.reasoning
        estimated = True  # exact counts of the text, but the engine's own usage never arrived
    elif content_chars or reasoning_chars:
        prompt = prompt_estimate(exchange.body_size)
        cached = 0
        completion = generated_estimate(content_chars + reasoning_chars)
        reasoning = generated_estimate(reasoning_chars)
        estimated = True
    else:  # nothing was generated: nothing is counted
        prompt = cached = completion = reasoning = 0
        estimated = False
    if cascade is not None and cascade.escalated:
        prompt += cascade.fast_prompt_tokens
        cached = min(cached, prompt - cascade.fast_prompt_tokens) + cascade.fast_cached_tokens
        completion += cascade.fast_completion_tokens
    started = datetime.fromtimestamp(exchange.started_at, UTC)
    first = exchange.first_token_s
    return UsageRecord(
        request_id=exchange.request_id,
        tenant=exchange.tenant,
        key_id=exchange.key_id,
        tier=exchange.tier.value,
        model=exchange.model,
        served_model=exchange.served_model,
        replica=exchange.replica,
        endpoint=exchange.endpoint,
        prompt_tokens=prompt,
        cached_tokens=min(cached, prompt),
        completion_tokens=completion,
        reasoning_tokens=min(reasoning, completion),
        estimated=estimated,
        depth=depth if depth is not None else Depth(),
        outcome=exchange.outcome.value,
        streamed=exchange.streamed,
        started_at=started,
        first_token_at=started + timedelta(seconds=first) if first is not None else None,
        ended_at=started + timedelta(seconds=exchange.duration_s),
        cascade=cascade,
        priority_class=exchange.priority_class,
    )


def generated_chars(exchange: Exchange) -> tuple[int, int]:
    """Characters of content and of reasoning the request generated, over all choices."""
    if exchange.tally is not None:
        return exchange.tally.generated_chars
    if exchange.reply is not None:
        tally = StreamTally()
        tally.observe_reply(exchange.reply)
        return tally.generated_chars
    return 0, 0
