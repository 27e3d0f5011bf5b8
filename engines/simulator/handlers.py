"""The endpoints of vLLM's OpenAI-compatible server, each a function of the engine and an exchange."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import orjson
from prometheus_client import CONTENT_TYPE_LATEST

from engines.simulator.asgi import Exchange, run_until_disconnect
from engines.simulator.config import SimulatorConfig
from engines.simulator.constrained import Writer
from engines.simulator.engine import Engine, Job
from engines.simulator.errors import SimulatedDrop, SimulatorError
from engines.simulator.faults import FAULT_HEADER, Fault
from engines.simulator.plan import ChoicePlan, InlineThinking, Sampling
from engines.simulator.protocol import ChatRequest, CompletionRequest, TokenizeRequest, parse
from engines.simulator.responses import ChunkEncoder, Kind, build_usage, chat_completion, text_completion
from engines.simulator.streaming import serve_stream
from engines.simulator.structured import structured_writer
from engines.simulator.tokenizer import THINK_OPEN, Prompt, render_chat, render_completion
from engines.simulator.tools import tool_writer

__all__ = [
    "Handler",
    "chat_completions",
    "completions",
    "health",
    "load",
    "metrics",
    "models",
    "tokenize",
    "version",
]

Handler = Callable[[Engine, Exchange], Awaitable[None]]


async def chat_completions(engine: Engine, x: Exchange) -> None:
    fault = _admission(engine, x)
    request = parse(ChatRequest, x.body)
    request.check()
    model = _model(engine, request.model)
    if request.continue_final_message and request.add_generation_prompt:
        raise SimulatorError(
            400, "Cannot set both `continue_final_message` and `add_generation_prompt` to True."
        )
    prompt = render_chat(
        engine.tokenizer,
        request.messages,
        add_generation_prompt=request.add_generation_prompt,
        continue_final_message=request.continue_final_message,
        tools=request.tools,
    )
    config = engine.config
    # A continued assistant message inside an open <think> goes on thinking, whatever the kwargs say.
    thinks = config.reasoning and (
        prompt.continuation == "reasoning" or (prompt.continuation == "none" and request.enable_thinking)
    )
    writer = _writer(request)
    # Guided decoding constrains a model without a reasoning parser from its first token: no inline thinking.
    inline = _inline_thinking(config, request, prompt) if writer is None else "no"
    # choices answered: all of `n`, unless the engine is configured to drop some (max_choices)
    answered = min(request.n, config.max_choices) if config.max_choices else request.n
    budget = request.thinking_token_budget
    if budget is not None:  # as vLLM: a total, the reasoning already in a continued message included
        budget = max(0, budget - prompt.carried_reasoning)
    sampling = Sampling(
        cap=_token_cap(engine, len(prompt.tokens), request.token_cap, "messages"),
        n=answered,
        seed=request.seed,
        reasoning=thinks or inline != "no",
        # A plain model knows nothing of a thinking budget (nor of enable_thinking): it follows the prompt.
        thinking_budget=budget if inline == "no" and config.honours_thinking_budget else None,
        stop=request.stop_strings(),
        ignore_eos=request.ignore_eos,
        fresh_start=prompt.continuation == "none",
        inline_thinking=inline,
        writer=writer,
        logprobs=(request.top_logprobs or 0) if request.logprobs else None,
        logprob_mean=fault.logprob_mean or config.logprob_mean,
        logprob_noise=config.logprob_noise,
    )
    plans = engine.planner.plan(prompt, model, sampling)
    cached = engine.prefix_cache.admit(model, prompt.tokens)
    job = engine.job(model, plans, len(prompt.tokens), cached, fault, n=answered, priority=request.priority)
    await _serve(engine, x, job, "chat", request, fault)


def _writer(request: ChatRequest) -> Writer | None:
    """What writes the content of a constrained request: its tool calls, else its structured output."""
    if request.tools is None and request.response_format is None and request.structured_outputs is None:
        return None  # the common case, at the cost of three comparisons
    return tool_writer(request) or structured_writer(request)


def _inline_thinking(config: SimulatorConfig, request: ChatRequest, prompt: Prompt) -> InlineThinking:
    """How a plain model (no native reasoning) thinks in its content. Any plain model goes on inside a
    `<think>` that the continued assistant message left open: it continues the text it is given. One that
    follows a chain-of-thought instruction (`follows_thinking_prompt`) also opens `<think>` itself when a
    system or developer message names it. A closed `<think>` leaves only the answer to write."""
    if config.reasoning:
        return "no"
    if prompt.continuation == "reasoning":
        return "inside"
    if (
        config.follows_thinking_prompt
        and prompt.continuation == "none"
        and any(
            message.role in ("system", "developer") and THINK_OPEN in message.text()
            for message in request.messages
        )
    ):
        return "open"
    return "no"


async def completions(engine: Engine, x: Exchange) -> None:
    fault = _admission(engine, x)
    request = parse(CompletionRequest, x.body)
    request.check()
    model = _model(engine, request.model)
    plans: list[ChoicePlan] = []
    prompt_tokens = cached = 0
    prompts = request.prompts()
    if not prompts:
        raise SimulatorError(400, "The prompt cannot be empty.")
    for i, raw in enumerate(prompts):
        prompt = render_completion(engine.tokenizer, raw)
        if not prompt.tokens:
            raise SimulatorError(400, "The decoder prompt cannot be empty")
        sampling = Sampling(
            cap=_token_cap(engine, len(prompt.tokens), request.max_tokens, "prompt"),
            n=request.n,
            seed=request.seed,
            stop=request.stop_strings(),
            ignore_eos=request.ignore_eos,
            fresh_start=False,  # a completion continues the prompt's text
            logprobs=request.logprobs,
            logprob_mean=fault.logprob_mean or engine.config.logprob_mean,
            logprob_noise=engine.config.logprob_noise,
        )
        # Choices of a batch are numbered prompt by prompt, n each, as in vLLM.
        plans += engine.planner.plan(prompt, model, sampling, first_index=i * request.n)
        prompt_tokens += len(prompt.tokens)
        cached += engine.prefix_cache.admit(model, prompt.tokens)
    job = engine.job(model, plans, prompt_tokens, cached, fault, n=request.n, priority=request.priority)
    await _serve(engine, x, job, "completion", request, fault)


async def _serve(
    engine: Engine, x: Exchange, job: Job, kind: Kind, request: ChatRequest | CompletionRequest, fault: Fault
) -> None:
    stream, include_usage = request.stream is True, request.include_usage
    config = engine.config
    request_id = engine.request_id()
    created = int(time.time())
    report_reasoning = kind == "chat" and config.reasoning and config.report_reasoning_tokens
    reasoning_field = config.reasoning_field if kind == "chat" and config.reasoning else None
    usage = build_usage(job.prompt_tokens, job.cached_tokens, job.plans, report_reasoning)
    engine.in_flight += 1
    try:
        if stream:
            # with continuous usage every chunk carries the prompt and its choice's tokens so far
            continuous = job.prompt_tokens if request.continuous_usage else None
            encoder = ChunkEncoder(
                kind, request_id, created, job.model, include_usage, reasoning_field, continuous
            )
            await serve_stream(
                x,
                job,
                encoder,
                usage if include_usage else None,
                roles=kind == "chat",
                die_after=fault.die_after,
            )
            return
        if job.instant and job.try_admit_now():
            job.finish_now()
            job.close()
        elif not await run_until_disconnect(x, _run(job)):
            return  # the client is gone: nobody to answer
        if kind == "chat":
            body = chat_completion(request_id, created, job.model, job.plans, usage, reasoning_field)
        else:
            body = text_completion(request_id, created, job.model, job.plans, usage)
        if fault.die_after is not None:
            await x.start(200, b"application/json")
            await x.write(body[: len(body) // 2])
            raise SimulatedDrop("injected fault: die-after")
        await x.respond(200, body)
    finally:
        engine.in_flight -= 1


async def _run(job: Job) -> None:
    """A non-streaming job in simulated time: the same steps as a stream, with nobody to send them to."""
    try:
        await job.admit()
        while not job.done:
            job.next_step()
            pause = job.pause()
            if pause > 0:
                await asyncio.sleep(pause)
    finally:
        job.close()


def _admission(engine: Engine, x: Exchange) -> Fault:
    """Faults and health come first: an overloaded or dead engine does not read the request."""
    try:
        fault = engine.faults.decide(x.header(FAULT_HEADER))
    except ValueError as exc:
        raise SimulatorError(400, str(exc)) from None
    if fault.status is not None:
        raise SimulatorError(
            fault.status,
            f"Injected fault: status {fault.status}.",
            retry_after_s=engine.faults.retry_after(fault),
        )
    if not engine.healthy:
        raise SimulatorError(503, "The engine is not healthy.", retry_after_s=engine.config.retry_after_s)
    return fault


def _model(engine: Engine, name: str | None) -> str:
    if name is None:
        return engine.config.models[0]
    if name not in engine.config.models:
        raise SimulatorError(404, f"The model `{name}` does not exist.")
    return name


def _token_cap(engine: Engine, prompt_tokens: int, max_tokens: int | None, what: str) -> int:
    """The most tokens a choice may generate, with vLLM's errors when the context is too small."""
    limit = engine.config.max_model_len
    if prompt_tokens >= limit:
        raise SimulatorError(
            400,
            f"This model's maximum context length is {limit} tokens. However, your request has "
            f"{prompt_tokens} input tokens. Please reduce the length of the input {what}.",
        )
    if max_tokens is None:
        return limit - prompt_tokens
    if prompt_tokens + max_tokens > limit:
        raise SimulatorError(
            400,
            f"This model's maximum context length is {limit} tokens. However, you requested "
            f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the {what}, {max_tokens} in the "
            f"completion). Please reduce the length of the {what} or completion.",
        )
    return max_tokens


async def models(engine: Engine, x: Exchange) -> None:
    config = engine.config
    created = int(time.time())
    cards = [
        {
            "id": name,
            "object": "model",
            "created": created,
            "owned_by": "vllm",
            "root": name,
            "parent": None,
            "max_model_len": config.max_model_len,
        }
        for name in config.models
    ]
    await x.respond(200, orjson.dumps({"object": "list", "data": cards}))


async def health(engine: Engine, x: Exchange) -> None:
    await x.respond(200 if engine.healthy else 503, b"")


async def tokenize(engine: Engine, x: Exchange) -> None:
    request = parse(TokenizeRequest, x.body)
    if request.model is not None:
        _model(engine, request.model)
    if request.messages is not None:
        prompt = render_chat(
            engine.tokenizer,
            request.messages,
            add_generation_prompt=request.add_generation_prompt and not request.continue_final_message,
            continue_final_message=request.continue_final_message,
            tools=request.tools,
        )
    elif request.prompt is not None:
        prompt = render_completion(engine.tokenizer, request.prompt)
    else:
        raise SimulatorError(400, "Either `prompt` or `messages` is required.")
    tokens = engine.tokenizer.token_ids(prompt.tokens)
    body = {
        "count": len(tokens),
        "max_model_len": engine.config.max_model_len,
        "tokens": tokens,
        "token_strs": None,
    }
    await x.respond(200, orjson.dumps(body))


async def version(engine: Engine, x: Exchange) -> None:
    await x.respond(200, orjson.dumps({"version": engine.config.version}))


async def load(engine: Engine, x: Exchange) -> None:
    await x.respond(200, orjson.dumps({"server_load": engine.in_flight}))


async def metrics(engine: Engine, x: Exchange) -> None:
    await x.respond(200, engine.metrics.exposition(), CONTENT_TYPE_LATEST.encode())
