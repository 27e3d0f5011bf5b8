"""Arithmetic tasks and the skill model: deeper reasoning buys accuracy, measurably and deterministically."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import pytest

from engines.simulator import Tokenizer, profile
from engines.simulator.arithmetic import (
    Task,
    evaluate,
    final_answer,
    find_marker,
    find_task,
    generate_tasks,
)
from engines.simulator.skill import p_correct

from .sim_support import Sim, SimFactory, deliberate, fast, sse_events

TOKENIZER = Tokenizer()
LONG = {"reasoning_tokens_range": (1500, 2000), "short_reasoning_rate": 0.0}
ANSWER = re.compile(r"The answer is (\d+)\.$")


def _user(task: Task) -> list[dict[str, str]]:
    return [{"role": "user", "content": task.question}]


async def _answer(sim: Sim, task: Task, **body: Any) -> tuple[str | None, int, dict[str, Any]]:
    """(the final answer, the reasoning tokens, the message) of one chat request about `task`."""
    body.setdefault("messages", _user(task))
    response = await sim.chat(**body)
    assert response.status_code == 200, response.text
    payload = response.json()
    message = payload["choices"][0]["message"]
    reasoning = payload["usage"]["completion_tokens_details"]["reasoning_tokens"]
    return final_answer(message["content"] or ""), reasoning, message


async def _accuracy(sim: Sim, tasks: list[Task], **body: Any) -> tuple[float, float]:
    """(share of right answers, mean p_correct of the reasoning the choices did)."""
    right = 0
    expected = 0.0
    for task in tasks:
        answer, reasoning, _ = await _answer(sim, task, **body)
        right += answer == str(task.answer)
        expected += p_correct(sim.app.config, reasoning)
    return right / len(tasks), expected / len(tasks)


def test_tasks_are_deterministic_and_their_answers_right() -> None:
    for difficulty in (1, 2, 3, 4):
        tasks = generate_tasks(60, seed=3, difficulty=difficulty)
        assert tasks == generate_tasks(60, seed=3, difficulty=difficulty)
        assert tasks != generate_tasks(60, seed=4, difficulty=difficulty)
        for task in tasks:
            text, marker = task.question.rsplit("\n", 1)
            assert text.endswith("?") and "[task:" not in text
            expression = re.fullmatch(r"\[task: ([0-9+\-*() ]+)\]", marker)
            assert expression, marker
            assert sum(expression.group(1).count(op) for op in "+-*") == difficulty
            assert task.answer == evaluate(expression.group(1)) == find_task(task.question)
            assert task.answer >= 0
    assert len({task.question for task in generate_tasks(100, seed=0)}) > 90  # varied
    with pytest.raises(ValueError, match="difficulty"):
        generate_tasks(1, difficulty=5)


def test_find_task_reads_the_last_well_formed_marker() -> None:
    assert find_task("no task here") is None
    assert find_task("[task: 2 + 3 * 4]") == 14
    assert find_task("[task:(2 + 3) * 4]") == 20
    assert find_task("first [task: 1 + 1]\nthen [task: 10 - 4 - 3]") == 3
    assert find_task("[task: 7 * 6] and a broken [task: 1 + ] and [task: 2 ** 3]") == 42
    assert find_task("[task: ((1 + 2)) * (3 - 1)]") == 6
    assert find_task("[task: ]") is None
    for bad in ("1 +", "(1", "1)", "1 / 2", "-1", "1 2", "__import__('os')"):
        with pytest.raises(ValueError, match="expression"):
            evaluate(bad)
    # The tempting wrong answer forgets the last step, and is never the right one.
    marker = find_marker("[task: 37 + 12 * 8 - 15]")
    assert marker is not None and (marker.answer, marker.tempting) == (118, 133)
    marker = find_marker("[task: 5 * 1]")
    assert marker is not None and marker.tempting not in (marker.answer, None)
    assert final_answer("Thinking. The answer is 12. No: The answer is 13.") == "13"
    assert final_answer("The answer is") is None


async def test_an_answer_ends_with_the_answer_sentence(sim_factory: SimFactory) -> None:
    sim = await sim_factory(deliberate())
    task = generate_tasks(1, seed=5)[0]
    response = await sim.chat(messages=_user(task))
    payload = response.json()
    message, usage = payload["choices"][0]["message"], payload["usage"]
    assert ANSWER.search(message["content"]), message["content"]
    assert "The answer is" not in message["reasoning"]
    assert usage["completion_tokens"] == TOKENIZER.count(message["reasoning"]) + TOKENIZER.count(
        message["content"]
    )
    # The same request gets the same answer; a stream says the same as the whole body.
    assert (await sim.chat(messages=_user(task))).json()["choices"] == payload["choices"]
    events = sse_events((await sim.chat(messages=_user(task), stream=True)).content)
    streamed = "".join(e["choices"][0]["delta"].get("content") or "" for e in events[1:-1])
    assert streamed == message["content"]
    # Too few tokens for the whole answer: a prefix of it, cut for length.
    reasoning = usage["completion_tokens_details"]["reasoning_tokens"]
    cut = await sim.chat(messages=_user(task), max_tokens=reasoning + 3)
    choice = cut.json()["choices"][0]
    assert choice["finish_reason"] == "length"
    assert message["content"].startswith(choice["message"]["content"]) and not ANSWER.search(
        choice["message"]["content"]
    )


async def test_longer_reasoning_buys_accuracy(sim_factory: SimFactory) -> None:
    sim = await sim_factory(deliberate(**LONG))
    tasks = generate_tasks(300, seed=11, difficulty=3)
    short, short_p = await _accuracy(sim, tasks, thinking_token_budget=16)
    long, long_p = await _accuracy(sim, tasks)
    assert short_p == pytest.approx(p_correct(sim.app.config, 16))
    assert abs(short - short_p) < 0.08 and abs(long - long_p) < 0.05, (short, short_p, long, long_p)
    assert long - short >= 0.25
    # The same choice only gains from more reasoning: each right short answer stays right.
    for task in tasks[:60]:
        short_answer, _, _ = await _answer(sim, task, thinking_token_budget=16)
        if short_answer == str(task.answer):
            assert (await _answer(sim, task))[0] == short_answer


async def test_no_reasoning_answers_at_the_base_skill(sim: Sim) -> None:
    """The completions endpoint (no reasoning there) answers a task in a raw prompt too."""
    tasks = generate_tasks(300, seed=12)
    right = 0
    for task in tasks:
        response = await sim.client.post("/v1/completions", json={"prompt": task.question + "\n"})
        text = response.json()["choices"][0]["text"]
        assert ANSWER.search(text), text
        right += final_answer(text) == str(task.answer)
    assert abs(right / len(tasks) - sim.app.config.skill_base) < 0.08


async def test_a_reasoning_continuation_reasons_more_and_counts_the_carried(sim_factory: SimFactory) -> None:
    sim = await sim_factory(deliberate(short_reasoning_rate=0.0))
    carried = "<think>\n" + " ".join(["step"] * 800) + ". Wait"
    carried_tokens = TOKENIZER.count(carried.split("<think>", 1)[1])
    tasks = generate_tasks(150, seed=13)
    fresh = continued = 0
    for task in tasks:
        answer, _, _ = await _answer(sim, task, thinking_token_budget=16)
        fresh += answer == str(task.answer)
        response = await sim.chat(
            messages=[*_user(task), {"role": "assistant", "content": carried}],
            continue_final_message=True,
            add_generation_prompt=False,
            thinking_token_budget=16 + carried_tokens,  # a total, as vLLM's: what was carried counts
        )
        payload = response.json()
        message, usage = payload["choices"][0]["message"], payload["usage"]
        # A new stretch of reasoning (only it is completion), then the answer.
        assert message["reasoning"].startswith(" ")
        assert usage["completion_tokens_details"]["reasoning_tokens"] == 16
        assert usage["completion_tokens"] == 16 + TOKENIZER.count(message["content"])
        continued += final_answer(message["content"]) == str(task.answer)
    expected = p_correct(sim.app.config, 16 + 801)  # 800 steps and "Wait"; the dot is a token too
    assert abs(fresh / len(tasks) - p_correct(sim.app.config, 16)) < 0.1
    assert abs(continued / len(tasks) - expected) < 0.1
    assert continued - fresh >= 0.3 * len(tasks)


async def test_a_closed_think_is_answered_on_the_reasoning_it_carries(sim_factory: SimFactory) -> None:
    sim = await sim_factory(deliberate())
    tasks = generate_tasks(150, seed=14)
    shares = []
    for steps in (0, 1200):
        closed = "<think>\n" + " ".join(["step"] * steps) + "\n</think>\n\n"
        right = 0
        for task in tasks:
            answer, reasoning, message = await _answer(
                sim,
                task,
                messages=[*_user(task), {"role": "assistant", "content": closed}],
                continue_final_message=True,
                add_generation_prompt=False,
            )
            assert reasoning == 0 and message["reasoning"] is None
            right += answer == str(task.answer)
        shares.append(right / len(tasks))
    assert abs(shares[0] - sim.app.config.skill_base) < 0.1
    assert abs(shares[1] - p_correct(sim.app.config, 1200)) < 0.08
    assert shares[1] - shares[0] >= 0.4


async def test_n_samples_are_independent_and_wrong_in_different_ways(sim_factory: SimFactory) -> None:
    sim = await sim_factory(deliberate())
    tasks = generate_tasks(60, seed=15)
    singles = votes = varied = tempting = wrong = 0
    for task in tasks:
        response = await sim.chat(messages=_user(task), n=5, thinking_token_budget=0)
        answers = [final_answer(c["message"]["content"]) for c in response.json()["choices"]]
        assert all(a is not None for a in answers)
        singles += answers.count(str(task.answer))
        votes += Counter(answers).most_common(1)[0][0] == str(task.answer)
        misses = [a for a in answers if a != str(task.answer)]
        varied += len(set(misses)) >= 2
        marker = find_marker(task.question)
        assert marker is not None
        tempting += misses.count(str(marker.tempting))
        wrong += len(misses)
    assert abs(singles / (5 * len(tasks)) - sim.app.config.skill_base) < 0.08
    assert varied >= len(tasks) // 3  # wrong answers often differ ...
    assert 0.25 <= tempting / wrong <= 0.55  # ... yet many share the tempting one
    assert votes / len(tasks) > singles / (5 * len(tasks))  # so a majority vote helps, imperfectly
    assert votes < len(tasks)


async def test_early_stopping_draws_short_reasoning(sim_factory: SimFactory) -> None:
    assert profile("deliberate").short_reasoning_rate == 0.3
    sim = await sim_factory(deliberate())
    lengths = []
    for seed in range(300):
        payload = (await sim.chat(seed=seed)).json()
        lengths.append(payload["usage"]["completion_tokens_details"]["reasoning_tokens"])
    short = sum(16 <= n <= 64 for n in lengths)
    assert all(16 <= n <= 64 or 96 <= n <= 640 for n in lengths)
    assert 0.2 <= short / len(lengths) <= 0.4


async def test_without_a_task_the_text_is_the_usual_text(sim_factory: SimFactory) -> None:
    sim = await sim_factory(fast())
    for content in ("Explain speculative decoding.", "A broken marker [task: 1 +] is no task."):
        message = (await sim.chat(messages=[{"role": "user", "content": content}])).json()["choices"][0]
        assert "The answer is" not in message["message"]["content"]


def test_skill_config_is_validated() -> None:
    with pytest.raises(ValueError, match="skill_base must be <= skill_max"):
        profile("fast", skill_base=0.9, skill_max=0.5)
    with pytest.raises(ValueError, match="skill_scale_tokens"):
        profile("fast", skill_scale_tokens=0)
    with pytest.raises(ValueError, match="short_reasoning_range"):
        profile("fast", short_reasoning_range=(0, 4))
    with pytest.raises(ValueError, match="short_reasoning_rate"):
        profile("fast", short_reasoning_rate=1.5)
