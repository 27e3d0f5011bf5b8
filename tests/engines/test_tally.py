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


def test_a_stream_taken_in_by_reads_is_tallied_as_event_by_event() -> None:
    """The relay's way (each read's events at once, `observe_all`) and the readers' way (`observe`) agree,
    whatever the reads' sizes, with blocks completed inside a read and across reads."""
    payloads: list[dict[str, object]] = [{"choices": [{"index": 0, "delta": {"role": "assistant"}}]}]
    for i in range(700):
        delta = {"content": f"c{i} "} if i % 4 else {"reasoning_content": f"t{i}"}
        payloads.append({"choices": [{"index": i % 3, "delta": delta, "finish_reason": None}]})
    payloads.append({"choices": [{"index": 2, "delta": {}, "finish_reason": "stop"}]})
    payloads.append({"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 700}})
    one_by_one = StreamTally()
    for payload in payloads:
        one_by_one.observe(payload)
    for size in (1, 2, 63, 64, 65, 700, 1000):
        by_reads = StreamTally()
        for start in range(0, len(payloads), size):
            by_reads.observe_all(payloads[start : start + size])
        assert by_reads == one_by_one, f"reads of {size}"
    for index in range(3):
        assert one_by_one.text(index) == "".join(f"c{i} " for i in range(index, 700, 3) if i % 4)
        assert one_by_one.reasoning_text(index) == "".join(f"t{i}" for i in range(index, 700, 3) if not i % 4)
    assert (one_by_one.content_deltas, one_by_one.reasoning_deltas) == (525, 175)
    assert one_by_one.finish_reasons == {2: "stop"}
    for index, parts in one_by_one.content.items():  # held in blocks of 64 pieces, and the pieces after them
        pieces = sum(1 for i in range(index, 700, 3) if i % 4)
        assert len(parts) == pieces // 64 + pieces % 64 < pieces
