"""The key store on real SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest

from gateway.budgets import Budget
from gateway.database import Database, DatabaseError
from gateway.keys import UNCHANGED, KeyStore, KeyStoreConflict, KeyStoreNotFound
from gateway.limits.quota import Quota


@pytest.fixture
async def store(database: Database) -> KeyStore:
    store = KeyStore(database)
    await store.migrate()
    await store.create_tenant("acme", "Acme Corp")
    return store


async def test_migrate_is_idempotent(database: Database) -> None:
    store = KeyStore(database)
    await store.migrate()
    await store.migrate()
    rows = await database.fetch_all("SELECT component, version FROM schema_migrations ORDER BY version")
    assert rows == [{"component": "keys", "version": version} for version in (1, 2, 3)]


# -- tenants ----------------------------------------------------------------------------------------
async def test_tenants(store: KeyStore) -> None:
    beta = await store.create_tenant("beta_2")
    assert beta.name == "beta_2"  # the id, when no name is given
    assert beta.created_at.tzinfo is UTC
    assert [(tenant.id, tenant.name) for tenant in await store.list_tenants()] == [
        ("acme", "Acme Corp"),
        ("beta_2", "beta_2"),
    ]
    assert (await store.list_tenants())[1] == beta
    with pytest.raises(KeyStoreConflict, match="acme"):
        await store.create_tenant("acme", "again")


@pytest.mark.parametrize("tenant_id", ["", "Acme", "-acme", "_acme", "a b", "a" * 65, "ac.me", "ácme"])
async def test_tenant_ids_are_slugs(store: KeyStore, tenant_id: str) -> None:
    with pytest.raises(ValueError, match="tenant id"):
        await store.create_tenant(tenant_id)


# -- keys -------------------------------------------------------------------------------------------
async def test_create_get_and_list_keys(store: KeyStore) -> None:
    expires = datetime(2040, 1, 2, 3, 4, 5, 678901, tzinfo=timezone(timedelta(hours=-5)))
    key, full = await store.create_key(
        "acme",
        name="ci",
        tiers=["fast", "deliberate"],
        models=["qwen3-8b"],
        quotas={"fast": Quota(rpm=60)},
        expires_at=expires,
    )
    assert full.startswith(f"tg-{key.id}-")
    assert key.masked == f"tg-{key.id}-****"
    assert (key.tenant_id, key.name, key.revoked, key.last_used_at) == ("acme", "ci", False, None)
    assert key.tiers == {"fast", "deliberate"}
    assert key.models == frozenset({"qwen3-8b"})
    assert key.expires_at == expires
    assert key.expires_at is not None
    assert key.expires_at.tzinfo is UTC
    assert await store.get_key(key.id) == key
    assert await store.get_key("nosuchkey234") is None

    await store.create_tenant("other")
    other, _ = await store.create_key("other", tiers=["fast"])
    assert other.models is None  # every model
    assert other.expires_at is None
    assert [k.id for k in await store.list_keys()] == [key.id, other.id]
    assert await store.list_keys("acme") == [key]
    assert await store.list_keys("nobody") == []


async def test_key_ids_are_unique(store: KeyStore) -> None:
    keys = [await store.create_key("acme", tiers=["fast"]) for _ in range(30)]
    assert len({key.id for key, _ in keys}) == len({full for _, full in keys}) == 30


async def test_a_key_needs_a_known_tenant(store: KeyStore) -> None:
    with pytest.raises(KeyStoreNotFound, match="nobody"):
        await store.create_key("nobody", tiers=["fast"])
    assert await store.list_keys() == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"tiers": "fast"}, "not the string"),
        ({"tiers": []}, "at least one"),
        ({"tiers": ["fast", ""]}, "non-empty"),
        ({"models": []}, "at least one"),
        ({"models": "qwen3-8b"}, "not the string"),
        ({"quotas": {"deliberate": Quota(rpm=1)}}, "does not have"),
        ({"quotas": {"fast": {"rpm": 1}}}, "must be a Quota"),
        ({"expires_at": datetime(2040, 1, 1)}, "timezone-aware"),
        ({"name": None}, "string"),
    ],
)
async def test_invalid_keys_are_refused(store: KeyStore, change: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {"tiers": ["fast"], **change}
    with pytest.raises(ValueError, match=message):
        await store.create_key("acme", **arguments)  # type: ignore[arg-type]
    assert await store.list_keys() == []


async def test_only_a_hash_of_the_secret_is_stored(store: KeyStore, database: Database) -> None:
    key, full = await store.create_key("acme", tiers=["fast"])
    secret = full.split("-", 2)[2]
    row = await database.fetch_one("SELECT * FROM api_keys WHERE id = ?", (key.id,))
    assert row is not None
    assert bytes(row["secret_sha256"]) == hashlib.sha256(secret.encode()).digest()
    for value in row.values():
        stored = bytes(value) if isinstance(value, bytes | memoryview) else str(value).encode()
        assert secret.encode() not in stored
        assert full.encode() not in stored
    found = await store.lookup(key.id)
    assert found == (key, hashlib.sha256(secret.encode()).digest())
    assert await store.lookup("nosuchkey234") is None
    assert secret not in repr(key)
    assert secret not in repr((key, full))


async def test_quotas_round_trip(store: KeyStore) -> None:
    quotas = {"fast": Quota(rpm=600, tpm=100_000), "deliberate": Quota(tpm=5_000), "batch": Quota(rpm=1)}
    key, _ = await store.create_key("acme", tiers=["fast", "deliberate", "batch", "free"], quotas=quotas)
    for loaded in (key, await store.get_key(key.id)):
        assert loaded is not None
        assert dict(loaded.quotas) == quotas
        assert loaded.quota_for("free") == Quota()
        assert loaded.quota_for("free").unlimited
        with pytest.raises(TypeError):
            loaded.quotas["fast"] = Quota()  # type: ignore[index]


# -- changes ----------------------------------------------------------------------------------------
async def test_update_key(store: KeyStore) -> None:
    key, _ = await store.create_key(
        "acme",
        tiers=["fast", "deliberate"],
        models=["a"],
        quotas={"fast": Quota(rpm=1), "deliberate": Quota(rpm=2)},
        expires_at=datetime(2040, 1, 1, tzinfo=UTC),
    )
    renamed = await store.update_key(key.id, name="renamed")
    assert renamed == replace(key, name="renamed")

    # narrowing tiers drops the quotas of the tiers taken away
    narrowed = await store.update_key(key.id, tiers=["fast"])
    assert (narrowed.tiers, dict(narrowed.quotas)) == (frozenset({"fast"}), {"fast": Quota(rpm=1)})
    assert narrowed.models == frozenset({"a"})  # models and expiry untouched unless given
    assert narrowed.expires_at == datetime(2040, 1, 1, tzinfo=UTC)

    opened = await store.update_key(key.id, models=None, expires_at=None, quotas={})
    assert (opened.models, opened.expires_at, dict(opened.quotas)) == (None, None, {})
    assert await store.get_key(key.id) == opened
    unchanged = await store.update_key(key.id, models=UNCHANGED, expires_at=UNCHANGED)
    assert unchanged == opened

    with pytest.raises(ValueError, match="does not have"):
        await store.update_key(key.id, quotas={"deliberate": Quota(rpm=5)})
    with pytest.raises(KeyStoreNotFound):
        await store.update_key("nosuchkey234", name="x")
    assert await store.get_key(key.id) == opened


async def test_revoke_key(store: KeyStore) -> None:
    key, _ = await store.create_key("acme", tiers=["fast"])
    revoked = await store.revoke_key(key.id)
    assert revoked.revoked
    assert revoked == replace(key, revoked=True)
    assert await store.revoke_key(key.id) == revoked  # again: no change
    assert await store.get_key(key.id) == revoked
    with pytest.raises(KeyStoreNotFound):
        await store.revoke_key("nosuchkey234")


async def test_record_use_is_one_batch_that_only_moves_forward(store: KeyStore) -> None:
    first, _ = await store.create_key("acme", tiers=["fast"])
    second, _ = await store.create_key("acme", tiers=["fast"])
    early = datetime(2030, 1, 1, 12, tzinfo=UTC)
    late = early + timedelta(minutes=5)
    await store.record_use({first.id: late, second.id: early, "nosuchkey234": late})
    await store.record_use({first.id: early})  # an older flush from a slower replica
    await store.record_use({})
    used = {key.id: key.last_used_at for key in await store.list_keys()}
    assert used == {first.id: late, second.id: early}
    with pytest.raises(ValueError, match="timezone-aware"):
        await store.record_use({first.id: datetime(2030, 1, 1)})


# -- budgets ----------------------------------------------------------------------------------------
async def test_budgets_are_set_changed_listed_and_deleted(store: KeyStore) -> None:
    key, _ = await store.create_key("acme", tiers=["fast"])
    await store.create_tenant("other")
    other, _ = await store.create_key("other", tiers=["fast"])
    assert await store.list_budgets() == []
    await store.set_budget(Budget("tenant", "acme", "monthly", 25_000_000))
    await store.set_budget(Budget("key", key.id, "daily", 1_000_000))
    await store.set_budget(Budget("key", other.id, "total", 7))
    await store.set_budget(Budget("tenant", "acme", "monthly", 30_000_000))  # a new limit, not a second one
    assert await store.list_budgets("acme") == [
        Budget("tenant", "acme", "monthly", 30_000_000),
        Budget("key", key.id, "daily", 1_000_000),
    ]
    assert len(await store.list_budgets()) == 3
    assert await store.delete_budget("key", key.id, "daily") is True
    assert await store.delete_budget("key", key.id, "daily") is False
    assert await store.list_budgets("acme") == [Budget("tenant", "acme", "monthly", 30_000_000)]


async def test_a_budget_needs_its_tenant_or_key(store: KeyStore) -> None:
    with pytest.raises(KeyStoreNotFound):
        await store.set_budget(Budget("tenant", "ghost", "daily", 1))
    with pytest.raises(KeyStoreNotFound):
        await store.set_budget(Budget("key", "nokey", "daily", 1))
    with pytest.raises(ValueError, match="period"):
        await store.delete_budget("tenant", "acme", "weekly")  # type: ignore[arg-type]
    assert await store.list_budgets() == []


async def test_a_key_authenticates_with_its_budgets_and_its_tenants(store: KeyStore) -> None:
    key, _ = await store.create_key("acme", tiers=["fast"])
    sibling, _ = await store.create_key("acme", tiers=["fast"])
    await store.set_budget(Budget("tenant", "acme", "total", 100))
    await store.set_budget(Budget("key", key.id, "daily", 10))
    await store.set_budget(Budget("key", sibling.id, "daily", 20))
    found = await store.lookup(key.id)
    assert found is not None
    assert found[0].budgets == (Budget("tenant", "acme", "total", 100), Budget("key", key.id, "daily", 10))


INSERT_BUDGET = (
    "INSERT INTO budgets (scope, subject, period, tenant_id, limit_micros, created_at, updated_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)


async def test_a_budget_limit_is_whole_micros_in_the_database(store: KeyStore, database: Database) -> None:
    key, _ = await store.create_key("acme", tiers=["fast"])
    now = datetime.now(UTC)
    if database.dialect == "sqlite":  # (PostgreSQL's BIGINT takes 1.5 as 2: Budget refuses floats before it)
        with pytest.raises(DatabaseError):
            await database.execute(
                INSERT_BUDGET,
                ("key", key.id, "daily", "acme", 1.5, now, now),
            )
    with pytest.raises(DatabaseError):
        await database.execute(
            INSERT_BUDGET,
            ("key", key.id, "weekly", "acme", 1, now, now),
        )


# -- priority classes and concurrency caps ------------------------------------------------------------
async def test_a_tenants_priority_class_is_stored_changed_and_read_with_its_keys(store: KeyStore) -> None:
    assert (await store.get_tenant("acme")).priority_class == "standard"  # type: ignore[union-attr]
    gold = await store.create_tenant("gold", priority_class="premium")
    assert gold.priority_class == "premium" and await store.get_tenant("gold") == gold
    key, _ = await store.create_key("acme", tiers=["fast"])
    assert key.priority_class == "standard"
    changed = await store.update_tenant("acme", priority_class="premium")
    assert (changed.name, changed.priority_class) == ("Acme Corp", "premium")  # the name is left alone
    # every read of a key carries its tenant's class: what the authenticator and the admin API see
    found = await store.lookup(key.id)
    assert found is not None and found[0].priority_class == "premium"
    assert (await store.get_key(key.id)).priority_class == "premium"  # type: ignore[union-attr]
    assert [k.priority_class for k in await store.list_keys("acme")] == ["premium"]
    assert {t.id: t.priority_class for t in await store.list_tenants()} == {
        "acme": "premium",
        "gold": "premium",
    }
    renamed = await store.update_tenant("acme", name="Acme")
    assert (renamed.name, renamed.priority_class) == ("Acme", "premium")
    with pytest.raises(ValueError, match="priority class"):
        await store.update_tenant("acme", priority_class="gold")
    with pytest.raises(ValueError, match="priority class"):
        await store.create_tenant("other", priority_class="platinum")
    with pytest.raises(KeyStoreNotFound):
        await store.update_tenant("ghost", priority_class="premium")
    assert await store.get_tenant("ghost") is None


async def test_a_keys_max_concurrent_is_stored_and_changed(store: KeyStore) -> None:
    key, _ = await store.create_key("acme", tiers=["fast"], quotas={"fast": Quota(rpm=5)}, max_concurrent=3)
    assert key.max_concurrent == 3
    found = await store.lookup(key.id)
    assert found is not None and found[0].max_concurrent == 3
    changed = await store.update_key(key.id, max_concurrent=1)
    assert changed.max_concurrent == 1 and changed.quotas == {"fast": Quota(rpm=5)}  # the rest unchanged
    assert (await store.update_key(key.id, name="x")).max_concurrent == 1  # not given: unchanged
    assert (await store.update_key(key.id, max_concurrent=None)).max_concurrent is None  # no cap
    assert (await store.get_key(key.id)).max_concurrent is None  # type: ignore[union-attr]
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="max_concurrent"):
            await store.update_key(key.id, max_concurrent=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_concurrent"):
        await store.create_key("acme", tiers=["fast"], max_concurrent=0)


async def test_the_database_refuses_a_class_or_cap_the_store_would_not_write(
    store: KeyStore, database: Database
) -> None:
    key, _ = await store.create_key("acme", tiers=["fast"])
    with pytest.raises(DatabaseError):
        await database.execute("UPDATE tenants SET priority_class = 'gold' WHERE id = 'acme'")
    with pytest.raises(DatabaseError):
        await database.execute("UPDATE api_keys SET max_concurrent = 0 WHERE id = ?", (key.id,))
