"""Stored responses in both dialects: a conversation is the chain of turns back through previous_id, each
tenant sees only its own, and a deleted or expired response is gone - from every conversation too."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.database import Database
from gateway.responses.store import ResponseStore


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def turn(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}, {"role": "assistant", "content": text.upper()}]


async def save(store: ResponseStore, tenant: str, response_id: str, previous: str | None, text: str) -> None:
    response = {"id": response_id, "previous_response_id": previous, "output": text}
    await store.save(tenant, response, [{"id": f"in_{response_id}", "type": "message"}], turn(text))


async def test_a_conversation_is_the_chain_of_turns(database: Database) -> None:
    clock = Clock()
    store = ResponseStore(database, retention_s=100, clock=clock)
    await save(store, "acme", "resp_1", None, "one")
    await save(store, "acme", "resp_2", "resp_1", "two")
    await save(store, "acme", "resp_3", "resp_2", "three")
    assert await store.conversation("acme", "resp_3") == [*turn("one"), *turn("two"), *turn("three")]
    assert await store.conversation("acme", "resp_2") == [*turn("one"), *turn("two")]
    stored = await store.get("acme", "resp_2")
    assert stored is not None and stored.response["output"] == "two"
    assert stored.input_items == [{"id": "in_resp_2", "type": "message"}]

    # another tenant: as unknown, for every read and for delete
    assert await store.get("globex", "resp_3") is None
    assert await store.conversation("globex", "resp_3") is None
    assert await store.delete("globex", "resp_3") is False

    # a deleted response leaves every conversation it was in: no other row kept a copy of its text
    assert await store.delete("acme", "resp_2") is True
    assert await store.get("acme", "resp_2") is None and await store.delete("acme", "resp_2") is False
    assert await store.conversation("acme", "resp_3") == turn("three")

    # past the retention: gone for reads, then purged from the table by a later save
    clock.now += 101
    assert await store.get("acme", "resp_3") is None and await store.conversation("acme", "resp_3") is None
    await save(store, "acme", "resp_4", None, "four")
    rows = await database.fetch_all("SELECT id FROM stored_responses ORDER BY id")
    assert [row["id"] for row in rows] == ["resp_4"]


async def test_concurrent_saves_are_committed_together_and_each_waits_for_its_own(database: Database) -> None:
    store = ResponseStore(database, retention_s=100)
    await asyncio.gather(*(save(store, "acme", f"resp_{i}", None, str(i)) for i in range(50)))
    rows = await database.fetch_all("SELECT COUNT(*) AS n FROM stored_responses")
    assert int(rows[0]["n"]) == 50  # each save returned only once its row was in


async def test_a_failed_commit_fails_every_save_waiting_for_it(database: Database) -> None:
    store = ResponseStore(database, retention_s=100)
    await save(store, "acme", "resp_1", None, "one")
    with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
        await asyncio.gather(
            save(store, "acme", "resp_2", None, "two"), save(store, "acme", "resp_1", None, "again")
        )
    await save(store, "acme", "resp_3", None, "three")  # the writer goes on
    assert await store.get("acme", "resp_3") is not None
