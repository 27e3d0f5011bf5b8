from engines import SSEDecoder


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


def test_unterminated_event_stays_pending() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b'data: {"cut": tr') == []
    assert decoder.pending == b'data: {"cut": tr'
