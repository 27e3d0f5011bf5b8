import pytest

from engines import SSEDecoder

# three events with a comment before, between and inside them, and one event of two data lines
STREAM = b': keep-alive\n\ndata: {"a":1}\n\n: note\ndata: one\ndata:two\n\nevent: x\ndata: [DONE]\n\n'
EVENTS = [b'{"a":1}', b"one\ntwo", b"[DONE]"]
# what engines send: one-line data events only (read in a few passes over the bytes), one of them empty,
# one with "data: " inside its JSON
DATA_ONLY = b'data: {"a":1}\n\ndata: {"t":"\\n\\ndata: x"}\n\ndata: \n\ndata: [DONE]\n\n'
DATA_EVENTS = [b'{"a":1}', b'{"t":"\\n\\ndata: x"}', b"", b"[DONE]"]


def test_events_split_across_chunks_are_reassembled() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b'data: {"a":') == []
    assert decoder.feed(b'1}\n\ndata: {"b":2}\n') == [b'{"a":1}']
    assert decoder.feed(b"\ndata: [DONE]\n\n") == [b'{"b":2}', b"[DONE]"]
    assert decoder.pending == b""


def test_crlf_multiline_data_and_comments() -> None:
    decoder = SSEDecoder()
    events = decoder.feed(b": keep-alive\r\n\r\ndata: one\r\ndata:two\r\n\r\nevent: x\ndata: 3\n\n")
    assert events == [b"one\ntwo", b"3"]


@pytest.mark.parametrize("line_end", [b"\n", b"\r\n", b"\r"], ids=["lf", "crlf", "cr"])
@pytest.mark.parametrize(
    ("whole", "expected"),
    [
        (STREAM, EVENTS),
        (DATA_ONLY, DATA_EVENTS),
        (DATA_ONLY + STREAM + DATA_ONLY, DATA_EVENTS + EVENTS + DATA_EVENTS),
    ],
    ids=["fields", "data-only", "mixed"],
)
def test_every_split_into_three_chunks_gives_the_events_of_the_whole(
    line_end: bytes, whole: bytes, expected: list[bytes]
) -> None:
    stream = whole.replace(b"\n", line_end)
    assert SSEDecoder().feed(stream) == expected
    for i in range(len(stream) + 1):
        for j in range(i, len(stream) + 1):
            decoder = SSEDecoder()
            events = [e for chunk in (stream[:i], stream[i:j], stream[j:]) for e in decoder.feed(chunk)]
            assert (events, decoder.pending) == (expected, b""), f"split at {i} and {j}"


@pytest.mark.parametrize("line_end", [b"\n", b"\r\n", b"\r"], ids=["lf", "crlf", "cr"])
def test_one_byte_at_a_time_gives_each_event_as_its_blank_line_arrives(line_end: bytes) -> None:
    stream = STREAM.replace(b"\n", line_end)
    decoder = SSEDecoder()
    blank_line_begun = line_end + line_end[:1]
    events = []
    for i in range(len(stream)):
        completed = decoder.feed(stream[i : i + 1])
        if completed:  # given out on the blank line's first byte, not held back until the next chunk
            assert stream[: i + 1].endswith(blank_line_begun), f"event given out at byte {i}"
        events += completed
    assert events == EVENTS


def test_unterminated_event_stays_pending() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b'data: {"cut": tr') == []
    assert decoder.pending == b'data: {"cut": tr'
