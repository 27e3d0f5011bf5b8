"""Key material: the format, the hash, the masked repr."""

from __future__ import annotations

import hashlib
import hmac
import json
import re

import pytest

from gateway.keys.material import IssuedKey, hash_secret, new_key, new_key_id, parse_key, secret_matches

SECRET = "A" * 42 + "-"  # 43 urlsafe-base64 characters; a secret may hold a dash


def test_new_keys_have_the_documented_shape() -> None:
    ids = {new_key_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(re.fullmatch(r"[a-z2-7]{12}", key_id) for key_id in ids)
    issued, digest = new_key("abcdefghijkl")
    assert re.fullmatch(r"tg-abcdefghijkl-[A-Za-z0-9_-]{43}", issued)
    parsed = parse_key(issued)
    assert parsed is not None
    assert parsed[0] == "abcdefghijkl"
    assert digest == hashlib.sha256(parsed[1].encode()).digest()


def test_a_secret_may_contain_dashes() -> None:
    assert parse_key(f"tg-abcdefghijkl-{SECRET}") == ("abcdefghijkl", SECRET)
    assert parse_key(f"tg-abcdefghijkl--{SECRET[:-1]}") == ("abcdefghijkl", "-" + SECRET[:-1])


@pytest.mark.parametrize(
    "presented",
    [
        "tg",
        "tg-",
        "tg-abcdefghijkl",
        "tg-abcdefghijkl-",
        f"sk-abcdefghijkl-{SECRET}",
        f"TG-abcdefghijkl-{SECRET}",
        f"tg-ABCDEFGHIJKL-{SECRET}",
        f"tg-abcdefghijk-{SECRET}",  # id one short
        f"tg-abcdefghijkl-{SECRET}A",  # secret one long
        f"tg-abcdefghijkl-{SECRET[:-1]}=",
        f"Bearer tg-abcdefghijkl-{SECRET}",
        f" tg-abcdefghijkl-{SECRET}",
    ],
)
def test_anything_else_is_malformed(presented: str) -> None:
    assert parse_key(presented) is None


def test_the_hash_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)  # what `material` calls
    stored = hash_secret(SECRET)
    assert secret_matches(SECRET, stored)
    assert not secret_matches(SECRET[:-1] + "B", stored)
    assert calls == [(stored, stored), (hash_secret(SECRET[:-1] + "B"), stored)]


def test_an_issued_key_is_a_str_with_a_masked_repr() -> None:
    issued, _ = new_key("abcdefghijkl")
    secret = issued.split("-", 2)[2]
    assert isinstance(issued, str)
    assert str(issued) == f"{issued}" == issued  # what the caller prints or sends, once
    assert json.loads(json.dumps({"secret": issued})) == {"secret": str(issued)}
    for shown in (repr(issued), repr((issued,)), f"{issued!r}", "%r" % (issued,)):  # noqa: UP031
        assert secret not in shown
        assert "tg-abcdefghijkl-****" in shown
    assert repr(IssuedKey("garbage")) == "'tg-****'"
