"""The deliberate profile: reasoning before content, its fields, budgets and continuation."""

from __future__ import annotations

from typing import Any

from engines.simulator import Tokenizer

from .sim_support import MESSAGES, Sim, SimFactory, deliberate, sse_events

TOKENIZER = Tokenizer()


async def _message(sim: Sim, **body: Any) -> tuple[dict[str, Any], dict[str, Any], str | None]:
    response = await sim.chat(**body)
    assert response.status_code == 200, response.text
    payload = response.json()
    choice = payload["choices"][0]
    return choice["message"], payload["usage"], choice["finish_reason"]


async def test_reasoning_comes_first_and_is_a_subset_of_completion(sim_factory: SimFactory) -> None:
    sim = await sim_factory(deliberate())
    message, usage, finish = await _message(sim)
    reasoning_tokens = TOKENIZER.count(message["reasoning"])
    assert 96 <= reasoning_tokens <= 640
    assert message["content"]
    assert finish == "stop"
    assert usage["completion_tokens_details"] == {"reasoning_tokens": reasoning_tokens}
    assert usage["completion_tokens"] == reasoning_tokens + TOKENIZER.count(message["content"])
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_reasoning_content_field_and_unreported_reasoning_tokens(sim_factory: SimFactory) -> None:
    sim = await sim_factory(deliberate(reasoning_field="reasoning_content", report_reasoning_tokens=False))
    message, usage, _ = await _message(sim)
    assert message["reasoning_content"] and "reasoning" not in message
    assert "completion_tokens_details" not in usage
    events = sse_events((await sim.chat(stream=True)).content)
    deltas = [e["choices"][0]["delta"] for e in events[1:-1]]
    assert "".join(d.get("reasoning_content", "") for d in deltas) == message["reasoning_content"]
    assert all("reasoning" not in d for d in deltas)


async def test_stream_sends_reasoning_deltas_then_content(sim_factory: SimFactory) -> None:
    sim = await sim_factory(deliberate())
    message, _, _ = await _message(sim)
    events = sse_events((await sim.chat(stream=True)).content)
    deltas = [e["choices"][0]["delta"] for e in events[1:-1]]
    kinds = [("r" if "reasoning" in d else "") + ("c" if "content" in d else "") for d in deltas]
    first_content = kinds.index("c")
    assert set(kinds[:first_content]) == {"r"} and set(kinds[first_content:]) == {"c"}
    assert "".join(d.get("reasoning", "") for d in deltas) == message["reasoning"]
    assert "".join(d.get("content", "") for d in deltas) == message["content"]


async def test_thinking_token_budget_caps_reasoning(sim_factory: SimFactory) -> None:
    sim = await sim_factory(deliberate())
    message, usage, finish = await _message(sim, thinking_token_budget=10)
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 10
    assert TOKENIZER.count(message["reasoning"]) == 10
    assert message["content"] and finish == "stop"


async def test_enable_thinking_false_skips_reasoning(sim_factory: SimFactory) -> None:
    sim = await sim_factory(deliberate())
    message, usage, _ = await _message(sim, chat_template_kwargs={"enable_thinking": False})
    assert message["reasoning"] is None
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 0
    assert TOKENIZER.count(message["content"]) == usage["completion_tokens"]


async def test_max_tokens_inside_reasoning_leaves_no_content(sim_factory: SimFactory) -> None:
    sim = await sim_factory(deliberate())
    message, usage, finish = await _message(sim, max_completion_tokens=20)
    assert finish == "length"
    assert message["content"] is None
    assert usage["completion_tokens"] == usage["completion_tokens_details"]["reasoning_tokens"] == 20


async def test_continuing_an_open_think_goes_on_reasoning(sim_factory: SimFactory) -> None:
    sim = await sim_factory(deliberate())
    partial = {"role": "assistant", "content": "<think>\nLet me count the ways. Wait"}
    message, usage, _ = await _message(
        sim,
        messages=[*MESSAGES, partial],
        continue_final_message=True,
        add_generation_prompt=False,
        thinking_token_budget=30,
    )
    assert message["reasoning"].startswith(" ")  # it continues the text, it does not start anew
    # as vLLM, the budget is a total: the reasoning already in the message counts against it
    carried = TOKENIZER.count(partial["content"].split("<think>", 1)[1])
    assert 0 < carried < 30
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 30 - carried
    assert message["content"]
    # A closed think (or none) is continued as the answer, without more reasoning.
    closed = {"role": "assistant", "content": "<think>\nDone.\n</think>\n\nThe answer is"}
    message, usage, _ = await _message(
        sim, messages=[*MESSAGES, closed], continue_final_message=True, add_generation_prompt=False
    )
    assert message["reasoning"] is None and message["content"]
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 0


async def test_continue_with_generation_prompt_is_refused_like_vllm(sim_factory: SimFactory) -> None:
    sim = await sim_factory(deliberate())
    partial = {"role": "assistant", "content": "<think>\nHmm"}
    response = await sim.chat(messages=[*MESSAGES, partial], continue_final_message=True)
    assert response.status_code == 400
    assert "continue_final_message" in response.json()["error"]["message"]
