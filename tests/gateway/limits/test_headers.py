"""OpenAI's x-ratelimit-* headers, written as the OpenAI SDK and clients expect them."""

from __future__ import annotations

import pytest

from gateway.limits import Admission, Window
from gateway.limits.window import format_duration


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0s"),
        (0.006, "6ms"),
        (0.999, "999ms"),
        (1.0, "1s"),
        (1.5, "1.5s"),
        (8.572, "8.572s"),
        (59.99, "59.99s"),
        (60.0, "1m0s"),
        (90.0, "1m30s"),
        (360.0, "6m0s"),
        (3600.5, "1h0m0.5s"),
    ],
)
def test_durations_are_written_like_go_durations(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_an_admitted_request_reports_both_dimensions_in_openai_order() -> None:
    admission = Admission(
        allowed=True,
        requests=Window(limit=60, remaining=59, reset_s=1.0),
        tokens=Window(limit=150000, remaining=149000, reset_s=0.4),
        retry_after_s=None,
        reservation=None,
    )
    assert admission.headers() == [
        (b"x-ratelimit-limit-requests", b"60"),
        (b"x-ratelimit-limit-tokens", b"150000"),
        (b"x-ratelimit-remaining-requests", b"59"),
        (b"x-ratelimit-remaining-tokens", b"149000"),
        (b"x-ratelimit-reset-requests", b"1s"),
        (b"x-ratelimit-reset-tokens", b"400ms"),
    ]


@pytest.mark.parametrize(
    ("retry_after_s", "seconds", "ms"),
    [(0.2, b"1", b"200"), (2.0, b"2", b"2000"), (8.572, b"9", b"8572"), (0.0001, b"1", b"1")],
)
def test_a_refusal_says_when_to_retry_rounded_up(retry_after_s: float, seconds: bytes, ms: bytes) -> None:
    admission = Admission(
        allowed=False,
        requests=None,
        tokens=Window(limit=1000, remaining=10, reset_s=59.4),
        retry_after_s=retry_after_s,
        reservation=None,
    )
    assert admission.headers() == [
        (b"x-ratelimit-limit-tokens", b"1000"),
        (b"x-ratelimit-remaining-tokens", b"10"),
        (b"x-ratelimit-reset-tokens", b"59.4s"),
        (b"retry-after", seconds),
        (b"retry-after-ms", ms),
    ]


def test_no_limits_no_headers() -> None:
    assert Admission(True, None, None, None, None).headers() == []
