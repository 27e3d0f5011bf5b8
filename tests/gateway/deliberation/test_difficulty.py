"""The `auto` tier's difficulty score: cues, length and reasoning effort, each named in the reasons."""

from __future__ import annotations

import pytest

from gateway.deliberation.difficulty import Difficulty, score
from gateway.settings import AutoTierSettings

WORD_PROBLEM = (
    "A bag holds 5 red and 7 blue marbles. First I draw one marble, then another without putting the first"
    " back. What is the probability that both are red? Explain step by step."
)
STACK_TRACE = """My script crashes, here is the stack trace:

Traceback (most recent call last):
  File "app.py", line 3, in <module>
    print(items[3])
IndexError: list index out of range
"""


def user(content: object) -> dict[str, object]:
    return {"role": "user", "content": content}


def test_a_greeting_is_fast() -> None:
    result = score([user("hi")], None)
    assert result.tier == "fast"
    assert result.reasons == ()
    assert result.score == pytest.approx(0.15 * 2 / 1000)


def test_a_multi_step_math_word_problem_is_deliberate() -> None:
    result = score([user(WORD_PROBLEM)], None)
    assert result.tier == "deliberate"
    assert result.reasons[:2] == ("math", "multi_step")
    assert result.score == pytest.approx(0.35 + 0.25 + 0.15 * len(WORD_PROBLEM) / 1000)


def test_code_with_a_stack_trace_is_code() -> None:
    result = score([user(STACK_TRACE)], "medium")
    assert "code" in result.reasons
    assert "math" not in result.reasons


@pytest.mark.parametrize(
    ("text", "cue"),
    [
        ("Calculate 15% of 80", "math"),
        ("solve 2x + 3 = 7", "math"),
        ("what is the integral of x^2", "math"),
        ("How many primes are below 100?", "math"),
        ("```python\nprint(1)\n```", "code"),
        ("def f(x): return x", "code"),
        ("Write a SQL query for the top customers", "code"),
        ("a regex for emails please", "code"),
        ("there is a bug in my function", "code"),
        ("Prove that there are infinitely many primes", "multi_step"),
        ("Explain why the sky is blue", "multi_step"),
        ("Compare Rust and Go for servers", "multi_step"),
        ("First boil the water, then add the pasta", "multi_step"),
        ("Requirements:\n1. fast\n2. cheap\n3. good", "multi_step"),
        ("SOLVE IT", "math"),  # any case, at the very start
        ("(probability)", "math"),
        ("x^2", "math"),
        ("\\frac{1}{2}", "math"),
        ("IndexError: list index out of range", "code"),
        ("SELECT name FROM users", "code"),
        ("import os\nprint(os.sep)", "code"),
        ("at com.acme.Main(Main.java:12)", "code"),
    ],
)
def test_cues(text: str, cue: str) -> None:
    assert cue in score(text, None).reasons


@pytest.mark.parametrize(
    "text",
    [
        "hi",
        "Tell me a joke about cats",
        "What is the capital of France?",
        "Meet me on 2024-01-05 at noon",
        "How do we resolve this dispute?",  # not "solve"
        "Please select one from the list",  # not SQL
        "First we went home, and after a long and quiet walk by the river we then ate",  # too far apart
    ],
)
def test_no_cues(text: str) -> None:
    assert score(text, None).reasons == ()


@pytest.mark.parametrize(("where", "found"), [("start", True), ("middle", False), ("end", True)])
def test_cues_are_looked_for_at_the_ends_of_a_long_message(where: str, found: bool) -> None:
    filler = "Here is some context about the situation that matters. " * 40
    cue = " Calculate the total. "
    text = {"start": cue + filler + filler, "middle": filler + cue + filler, "end": filler + filler + cue}[
        where
    ]
    assert ("math" in score([user(text)], None).reasons) is found


def test_the_cue_window_is_shared_by_the_parts_of_the_last_message() -> None:
    filler = {"type": "text", "text": "Some context. " * 100}
    cue = {"type": "text", "text": "Calculate the total."}
    assert "math" in score([user([cue, filler])], None).reasons
    assert "math" not in score([user([filler, cue])], None).reasons


def test_a_cue_counts_once() -> None:
    once = score("calculate this", None)
    many = score("calculate, compute and solve: how many? 1 + 1 = 2", None)
    assert many.score - once.score == pytest.approx(
        0.15 * (len("calculate, compute and solve: how many? 1 + 1 = 2") - 14) / 1000
    )


def test_high_effort_pushes_a_simple_prompt_over() -> None:
    for effort in ("high", "xhigh"):
        result = score([user("hi")], effort)
        assert result.tier == "deliberate"
        assert result.reasons == (f"effort {effort}",)


def test_low_effort_pulls_a_math_prompt_under() -> None:
    assert score([user(WORD_PROBLEM)], "medium").tier == "deliberate"
    for effort in ("none", "minimal", "low"):
        result = score([user(WORD_PROBLEM)], effort)
        assert result.tier == "fast"
        assert result.reasons[-1] == f"effort {effort}"
        assert "math" in result.reasons


def test_length_is_continuous_and_capped() -> None:
    assert score("x " * 250, None).score == pytest.approx(0.15 * 0.5)
    long = score("x " * 1150, None)
    assert long.score == pytest.approx(0.15 * 2)
    assert long.reasons == ("length 2.3k chars",)
    assert score("x " * 5000, None).score == long.score


def test_the_rest_of_the_conversation_adds_half_its_length_and_no_cues() -> None:
    history: list[dict[str, object]] = [
        {"role": "system", "content": "You are helpful. " * 20},
        user("Solve step by step: 3 + 4 = ?" + " pad" * 100),
        {"role": "assistant", "content": "It is 7." + " pad" * 100},
        user("thanks"),
    ]
    rest = sum(len(str(message["content"])) for message in history[:-1])
    result = score(history, None)
    assert result.reasons == ()
    assert result.score == pytest.approx(0.15 * (len("thanks") + 0.5 * rest) / 1000)
    assert result.tier == "fast"


def test_a_conversation_without_a_user_message_only_has_length() -> None:
    result = score([{"role": "system", "content": "Solve step by step: calculate 3 + 4"}], None)
    assert result.reasons == ()
    assert result.score == pytest.approx(0.15 * 0.5 * 35 / 1000)


def test_content_as_a_list_of_parts() -> None:
    parts = [
        {"type": "text", "text": "Here is a picture of my homework."},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA" * 500}},
        {"type": "text", "text": "Calculate the probability, then explain why."},
    ]
    result = score([user(parts)], None)
    assert result.reasons == ("math", "multi_step")
    assert result.tier == "deliberate"
    chars = len("Here is a picture of my homework.") + len("Calculate the probability, then explain why.")
    assert result.score == pytest.approx(0.6 + 0.15 * chars / 1000)


@pytest.mark.parametrize("content", ["", None, [], [{"type": "image_url", "image_url": {"url": "x"}}]])
def test_empty_content(content: object) -> None:
    assert score([user(content)], None) == Difficulty(score=0.0, tier="fast", reasons=())


def test_no_messages() -> None:
    assert score([], None) == Difficulty(score=0.0, tier="fast", reasons=())
    assert score("", None) == Difficulty(score=0.0, tier="fast", reasons=())


def test_a_completions_prompt_as_a_list() -> None:
    assert score(["hi", WORD_PROBLEM], None) == score([user("hi"), user(WORD_PROBLEM)], None)  # type: ignore[list-item]
    assert score([[1, 2, 3], 7], None) == Difficulty(score=0.0, tier="fast", reasons=())  # type: ignore[list-item]


def test_a_plain_string_is_the_last_user_message() -> None:
    assert score(WORD_PROBLEM, None) == score([user(WORD_PROBLEM)], None)


def test_weights_are_configurable() -> None:
    strict = AutoTierSettings(math=0.6, threshold=0.55)
    assert score("calculate 2 + 2", None, strict).tier == "deliberate"
    assert score("calculate 2 + 2", None).tier == "fast"
    assert score("hi", "high", AutoTierSettings(effort_high=0.2)).tier == "fast"
