"""A stream's tally keeps every choice's text exactly, in blocks (not a string per token)."""

from __future__ import annotations

from engines import StreamTally


def test_interleaved_choices_keep_their_text_exactly_in_few_strings() -> None:
    tally = StreamTally()
    for i in range(1000):
        reasoning = f"r{i}" if i % 3 == 0 else None
        tally.observe({"choices": [{"index": i % 2, "delta": {"content": f"{i} ", "reasoning": reasoning}}]})
    tally.observe({"choices": [{"index": 1, "delta": {}, "finish_reason": "length"}]})
    assert tally.text(0) == "".join(f"{i} " for i in range(0, 1000, 2))
    assert tally.text(1) == "".join(f"{i} " for i in range(1, 1000, 2))
    thought = [
        "".join(f"r{n}" for n in range(start, 1000, 6)) for start in (0, 3)
    ]  # even, odd multiples of 3
    assert [tally.reasoning_text(0), tally.reasoning_text(1)] == thought
    assert (tally.content_deltas, tally.reasoning_deltas, tally.finish_reasons) == (1000, 334, {1: "length"})
    chars = sum(len(f"{i} ") for i in range(1000)), sum(len(f"r{n}") for n in range(0, 1000, 3))
    assert tally.generated_chars == chars
    assert len(tally.content[0]) < 500 / 8  # 500 deltas held as a few blocks
