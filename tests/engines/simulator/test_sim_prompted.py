"""A plain instruct model (no reasoning parser) told to think between <think> and </think>: it reasons in
its content, then answers; continuations go on thinking or only answer; the skill model applies alike."""

from __future__ import annotations

import re
from typing import Any

import pytest

from engines.simulator import Tokenizer, final_answer, generate_tasks
from engines.simulator.arithmetic import Task
from engines.simulator.skill import p_correct

from .sim_support import MESSAGES, Sim, SimFactory, deliberate, fast, plain, sse_events

TOKENIZER = Tokenizer()
# What the gateway's prompted chain-of-thought adds (gateway/deliberation/prompted.py).
INSTRUCTION = (
    "Before answering, think step by step between <think> and </think>."
    " Then, after </think>, give your final answer."
)
INSTRUCTED = [{"role": "system", "content": INSTRUCTION}, MESSAGES[1]]
SHAPE = re.compile(r"<think>(?P<reasoning>[^<]+)</think>\n\n(?P<answer>\S[^<]*)", re.DOTALL)
CONTINUE: dict[str, Any] = {"continue_final_message": True, "add_generation_prompt": False}


async def _choice(sim: Sim, **body: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    response = await sim.chat(**body)
    assert response.status_code == 200, response.text
    payload = response.json()
    return payload["choices"][0], payload["usage"]


def _instructed(task: Task) -> list[dict[str, str]]:
    return [{"role": "system", "content": INSTRUCTION}, {"role": "user", "content": task.question}]


async def test_instructed_content_thinks_then_answers(sim_factory: SimFactory) -> None:
    sim = await sim_factory(plain(short_reasoning_rate=0.0))
    choice, usage = await _choice(sim, messages=INSTRUCTED)
    message = choice["message"]
    content = message["content"]
    shape = SHAPE.fullmatch(content)
    assert shape, content
    assert content.count("<think>") == 1 and content.count("</think>") == 1
    assert "reasoning" not in message and "reasoning_content" not in message
    assert 96 <= TOKENIZER.count(shape["reasoning"]) <= 640  # the reasoning model's length rules
    assert choice["finish_reason"] == "stop"
    # Everything is completion; a server without a reasoning parser reports no reasoning tokens.
    assert usage["completion_tokens"] == TOKENIZER.count(content)
    assert "completion_tokens_details" not in usage
    # Deterministic, and a stream says the same, one token per delta (the delimiters in pieces).
    assert (await _choice(sim, messages=INSTRUCTED))[0] == choice
    events = sse_events((await sim.chat(messages=INSTRUCTED, stream=True)).content)
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    deltas = [e["choices"][0]["delta"] for e in events[1:-1]]
    assert all(set(d) == {"content"} for d in deltas)
    pieces = [d["content"] for d in deltas]
    assert "".join(pieces) == content
    assert pieces[:3] == ["<", "think", ">"] and len(pieces) == usage["completion_tokens"]
    assert events[-2]["choices"][0]["finish_reason"] == "stop" and events[-1] == "[DONE]"


async def test_the_instruction_may_sit_in_any_system_or_developer_message(sim_factory: SimFactory) -> None:
    sim = await sim_factory(plain())
    for messages in (
        [{"role": "system", "content": f"You are a helpful assistant.\n\n{INSTRUCTION}"}, MESSAGES[1]],
        [{"role": "developer", "content": INSTRUCTION}, MESSAGES[1]],
        [MESSAGES[0], {"role": "system", "content": [{"type": "text", "text": INSTRUCTION}]}, MESSAGES[1]],
    ):
        content = (await _choice(sim, messages=messages))[0]["message"]["content"]
        assert SHAPE.fullmatch(content), content


async def test_without_the_instruction_nothing_changes(sim_factory: SimFactory) -> None:
    plain_sim = await sim_factory(plain())
    fast_sim = await sim_factory(fast(num_speculative_tokens=0))
    # No instruction, or "<think>" only in a user message: the usual text.
    for messages in (MESSAGES, [{"role": "user", "content": "Write <think> tags for me."}]):
        assert await _choice(plain_sim, messages=messages) == await _choice(fast_sim, messages=messages)
    # A model that does not follow it, or a native reasoner (which thinks in its own way): as before.
    off = await sim_factory(fast(num_speculative_tokens=0, follows_thinking_prompt=False))
    assert await _choice(off, messages=INSTRUCTED) == await _choice(fast_sim, messages=INSTRUCTED)
    assert "<think>" not in (await _choice(off, messages=INSTRUCTED))[0]["message"]["content"]
    native = await sim_factory(deliberate(follows_thinking_prompt=True))
    reference = await sim_factory(deliberate())
    thought = await _choice(native, messages=INSTRUCTED)
    assert thought[0]["message"]["reasoning"] and "<think>" not in thought[0]["message"]["content"]
    assert thought == await _choice(reference, messages=INSTRUCTED)


async def test_thinking_knobs_are_ignored_and_the_cap_cuts_the_whole_text(sim_factory: SimFactory) -> None:
    sim = await sim_factory(plain())
    choice, usage = await _choice(sim, messages=INSTRUCTED)
    # A plain model knows no thinking budget nor enable_thinking: it follows the prompt.
    for extra in ({"thinking_token_budget": 5}, {"chat_template_kwargs": {"enable_thinking": False}}):
        assert (await _choice(sim, messages=INSTRUCTED, **extra))[0] == choice
    content = choice["message"]["content"]
    for cap in (2, 10, usage["completion_tokens"] - 1):
        cut, cut_usage = await _choice(sim, messages=INSTRUCTED, max_tokens=cap)
        assert cut["finish_reason"] == "length" and cut_usage["completion_tokens"] == cap
        assert content.startswith(cut["message"]["content"]) and cut["message"]["content"] != content
    # A stop string applies to the whole text, the reasoning included, as on any plain model.
    stopped, _ = await _choice(sim, messages=INSTRUCTED, stop=["</think>"])
    assert stopped["message"]["content"] == content[: content.index("</think>")]
    assert (stopped["finish_reason"], stopped["stop_reason"]) == ("stop", "</think>")


async def test_an_open_think_goes_on_reasoning_then_closes_and_answers(sim_factory: SimFactory) -> None:
    sim = await sim_factory(plain(short_reasoning_rate=0.0))
    so_far = "<think>Let me see. The crates first.\nWait"
    messages = [*INSTRUCTED, {"role": "assistant", "content": so_far}]
    choice, usage = await _choice(sim, messages=messages, **CONTINUE)
    content = choice["message"]["content"]
    more, answer = content.split("</think>\n\n")
    assert more.startswith(" ") and "<think>" not in content and content.count("</think>") == 1
    assert 96 <= TOKENIZER.count(more) <= 640 and answer and answer == answer.lstrip()
    assert usage["completion_tokens"] == TOKENIZER.count(content) and "completion_tokens_details" not in usage
    # Streamed alike.
    events = sse_events((await sim.chat(messages=messages, stream=True, **CONTINUE)).content)
    assert "".join(e["choices"][0]["delta"].get("content") or "" for e in events[1:-1]) == content
    # It goes on even without the instruction: it follows the block its own message opened.
    alone = [MESSAGES[1], {"role": "assistant", "content": so_far}]
    assert "</think>\n\n" in (await _choice(sim, messages=alone, **CONTINUE))[0]["message"]["content"]


async def test_a_model_that_ignores_the_instruction_still_continues_an_open_think(
    sim_factory: SimFactory,
) -> None:
    sim = await sim_factory(plain(follows_thinking_prompt=False, short_reasoning_rate=0.0))
    told = (await _choice(sim, messages=INSTRUCTED))[0]["message"]["content"]
    assert "think>" not in told  # it answers at once, the instruction notwithstanding
    begun = [*INSTRUCTED, {"role": "assistant", "content": "<think>\n"}]
    content = (await _choice(sim, messages=begun, **CONTINUE))[0]["message"]["content"]
    more, answer = content.split("</think>\n\n")
    assert 96 <= TOKENIZER.count(more) <= 640 and answer and "<think>" not in content


async def test_a_closed_think_gets_only_the_answer(sim_factory: SimFactory) -> None:
    sim = await sim_factory(plain())
    messages = [*INSTRUCTED, {"role": "assistant", "content": "<think>Short and sweet.</think>\n\n"}]
    choice, usage = await _choice(sim, messages=messages, **CONTINUE)
    content = choice["message"]["content"]
    assert "think>" not in content and content.startswith(" ") and choice["finish_reason"] == "stop"
    assert usage["completion_tokens"] == TOKENIZER.count(content)


async def _accuracy(sim: Sim, tasks: list[Task], so_far: str | None = None) -> tuple[float, float]:
    """(share of right answers, mean p_correct of the reasoning in the content, carried included)."""
    right = 0
    expected = 0.0
    for task in tasks:
        messages: list[dict[str, str]] = _instructed(task)
        if so_far is not None:
            messages.append({"role": "assistant", "content": so_far})
        choice, _ = await _choice(sim, messages=messages, **(CONTINUE if so_far is not None else {}))
        content = choice["message"]["content"]
        reasoning, answer = ((so_far or "") + content).split("</think>")
        assert answer.startswith("\n\n") and "think>" not in answer
        right += final_answer(answer) == str(task.answer)
        expected += p_correct(sim.app.config, TOKENIZER.count(reasoning.removeprefix("<think>")))
    return right / len(tasks), expected / len(tasks)


async def test_more_reasoning_buys_accuracy(sim_factory: SimFactory) -> None:
    tasks = generate_tasks(200, seed=21, difficulty=3)
    short_sim = await sim_factory(plain(reasoning_tokens_range=(16, 16), short_reasoning_rate=0.0))
    long_sim = await sim_factory(plain(reasoning_tokens_range=(1500, 2000), short_reasoning_rate=0.0))
    short, short_p = await _accuracy(short_sim, tasks)
    long, long_p = await _accuracy(long_sim, tasks)
    assert short_p == pytest.approx(p_correct(short_sim.app.config, 16))
    assert abs(short - short_p) < 0.1 and abs(long - long_p) < 0.07, (short, short_p, long, long_p)
    assert long - short >= 0.25
    # The reasoning carried in a continued open <think> counts too.
    carried, carried_p = await _accuracy(short_sim, tasks, "<think>" + " ".join(["step"] * 800) + "\nWait")
    assert carried_p == pytest.approx(p_correct(short_sim.app.config, 16 + 801))
    assert abs(carried - carried_p) < 0.1 and carried - short >= 0.25, (carried, short)
