"""The gateway's affinity key (engines/affinity.py): which fields decide it, and what of the prompt."""

from __future__ import annotations

from typing import Any

from engines.affinity import PREFIX_CHARS, affinity_key

SYSTEM = "You are the support assistant of ACME. Answer from the manual. " * 40  # ~2.5 KB


def chat(*messages: tuple[str, Any], **extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": r, "content": c} for r, c in messages], **extra}


def test_prompt_cache_key_then_user_then_the_prompt_prefix() -> None:
    body = chat(("system", SYSTEM), ("user", "hi"), user="alice", prompt_cache_key="tenant-7")
    assert affinity_key(body, chat=True) == "k:tenant-7"
    del body["prompt_cache_key"]
    assert affinity_key(body, chat=True) == "u:alice"
    del body["user"]
    key = affinity_key(body, chat=True)
    assert key is not None and key.startswith("p:")
    assert affinity_key({**body, "prompt_cache_key": "", "user": None}, chat=True) == key  # empty: ignored


def test_a_shared_system_prompt_shares_the_key_whatever_follows() -> None:
    one = affinity_key(chat(("system", SYSTEM), ("user", "What is the warranty?")), chat=True)
    two = affinity_key(
        chat(("system", SYSTEM), ("user", "How do I reset it?"), ("assistant", "...")), chat=True
    )
    other = affinity_key(
        chat(("system", "Another persona. " + SYSTEM), ("user", "What is the warranty?")), chat=True
    )
    assert one == two != other


def test_a_short_system_prompt_keys_on_the_first_user_message_too() -> None:
    a = chat(("system", "Be brief."), ("user", "Tell me about Lisbon."))
    b = chat(("system", "Be brief."), ("user", "Tell me about Porto."))
    a_later = chat(
        *[(m["role"], m["content"]) for m in a["messages"]], ("assistant", "It is..."), ("user", "More")
    )
    assert affinity_key(a, chat=True) != affinity_key(b, chat=True)
    assert affinity_key(a, chat=True) == affinity_key(a_later, chat=True)  # a conversation keeps its key


def test_only_the_first_kilobyte_counts() -> None:
    head = "x" * PREFIX_CHARS
    assert affinity_key(chat(("system", head + "tail one")), chat=True) == affinity_key(
        chat(("system", head + "tail two")), chat=True
    )
    split = chat(("system", head[:600]), ("user", head[600:] + "different"))
    assert affinity_key(split, chat=True) == affinity_key(chat(("system", head)), chat=True)


def test_content_parts_and_odd_bodies() -> None:
    parts = [{"type": "text", "text": SYSTEM}, {"type": "image_url", "image_url": {"url": "data:..."}}]
    assert affinity_key(chat(("system", parts)), chat=True) == affinity_key(
        chat(("system", SYSTEM)), chat=True
    )
    assert affinity_key({"model": "m"}, chat=True) is None
    assert affinity_key({"messages": "nope"}, chat=True) is None
    assert affinity_key({"messages": [None, {"content": None}, {"content": ""}]}, chat=True) is None
    assert affinity_key({"messages": [{"content": "\ud800 lone surrogate"}]}, chat=True) is not None


def test_completions_prompts() -> None:
    text = affinity_key({"prompt": SYSTEM + "one"}, chat=False)
    assert text is not None and text == affinity_key({"prompt": SYSTEM + "two"}, chat=False)
    assert affinity_key({"prompt": [SYSTEM + "a", "b"]}, chat=False) == text  # a batch: its first prompt
    tokens = affinity_key({"prompt": list(range(300))}, chat=False)
    assert tokens is not None and tokens == affinity_key({"prompt": [*range(256), 9, 9]}, chat=False)
    assert affinity_key({"prompt": ""}, chat=False) is None
    assert affinity_key({"prompt": []}, chat=False) is None
    assert affinity_key({"prompt": 3}, chat=False) is None
