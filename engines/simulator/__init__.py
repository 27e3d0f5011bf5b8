"""A vLLM-compatible inference server without a GPU, standing in for an engine pool in demos,
tests and benchmarks.

    app = create_simulator_app(profile("fast", zero_latency=True))
    uvicorn.run(app, port=8001)

It serves vLLM's OpenAI-compatible routes (`/v1/chat/completions`, `/v1/completions`, `/v1/models`,
`/health`, `/tokenize`, `/version`, `/load`, `/metrics`) with vLLM's body shapes, errors and metric
names. Text is deterministic: the same request (messages, `seed` field or none, model, config seed)
always gets the same output, and a lower `max_tokens` gets a prefix of it. Token counts come from one
tokenizer, so usage, `/tokenize` and re-tokenizing the output agree. Reasoning tokens are counted
within completion tokens: completion_tokens = tokens(reasoning text) + tokens(content).

Per-request failure injection, header `x-sim-fault` (items separated by `,` or `;`):

    status=<400..599>     answer this error at once, vLLM-shaped; 429 and 503 carry `retry-after`
    retry-after=<int s>   the `retry-after` value of that error (default: config.retry_after_s)
    die-after=<int n>     streaming: send n SSE events (the role chunk counts), then drop the TCP
                          connection without ending the chunked body; the client sees the stream
                          cut (httpx: RemoteProtocolError "incomplete chunked read"). Non-streaming:
                          headers and half the JSON body, then the same drop.
    stall=<float s>       sleep s seconds before the first token (after the response headers)
    stall-mid=<float s>   sleep s seconds after the first token step was sent
    logprob-mean=<float>  not a fault: the mean logprob of the request's tokens (config.logprob_mean)

The header applies to `/v1/chat/completions` and `/v1/completions`; config rates (`error_rate`,
`die_after_chunks_rate`, `stall_seconds` with `stall_rate`) inject the same faults at random, from
a generator seeded by config.seed. A dropped stream is counted as an aborted request (below); a dropped
non-streaming response had finished generating and counts by its own finish reason.

A client that disconnects mid-request cancels it at once (its sleep is cancelled, so within one
inter-token interval at worst) and its running slot is freed. As in vLLM 0.32, an abort is counted in no
counter of its own: `vllm:request_success_total{finished_reason="abort"}` exists and stays 0, the prompt
counts only once the first token is out, the tokens generated until the abort count, and the request leaves
`vllm:num_requests_running`. Zero-latency requests never sleep and simply complete. With
`stream_options.continuous_usage_stats` (and `include_usage`) every chunk carries the prompt and its choice's
tokens so far, as vLLM's do.

Tools (vLLM with the hermes tool parser), structured output (`response_format`, `structured_outputs`) and
logprobs are served in vLLM 0.32's shapes; docs/simulator.md says when the model calls a tool, what it writes
and how confident it is.

A prompt holding a `[task: <expression>]` marker (`generate_tasks` writes such word problems) is
answered by a skill model instead: a short text ending in `The answer is <N>.`, right with a
probability that grows with the choice's reasoning tokens (see `engines/simulator/skill.py`).

With `follows_thinking_prompt` (the `plain` profile), a model without a reasoning parser that is told in a
system or developer message to think between `<think>` and `</think>` does so in its content:
`<think>{reasoning}</think>\n\n{answer}`, with no reasoning tokens reported (docs/simulator.md). Any model
without a reasoning parser, following such instructions or not, continues an assistant message that opened
`<think>` and left it open (`continue_final_message`) by reasoning on, then closing it and answering.
"""

from engines.simulator.app import SimulatorApp, create_simulator_app
from engines.simulator.arithmetic import Task, final_answer, find_task, generate_tasks
from engines.simulator.asgi import ASGIApp
from engines.simulator.config import PROFILES, ReasoningField, SimulatorConfig, profile
from engines.simulator.faults import Fault, parse_fault
from engines.simulator.tokenizer import Tokenizer

__all__ = [
    "PROFILES",
    "ASGIApp",
    "Fault",
    "ReasoningField",
    "SimulatorApp",
    "SimulatorConfig",
    "Task",
    "Tokenizer",
    "create_simulator_app",
    "final_answer",
    "find_task",
    "generate_tasks",
    "parse_fault",
    "profile",
]
