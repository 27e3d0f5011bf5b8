from engines import ReplicaState, choose_replica


def state(outstanding: int = 0, healthy: bool | None = True, ejected_until: float = 0.0) -> ReplicaState:
    return ReplicaState(outstanding, healthy, ejected_until)


def test_least_outstanding_wins() -> None:
    assert choose_replica([state(3), state(1), state(2)], now=0.0) == 1


def test_ties_rotate_with_start() -> None:
    states = [state(), state(), state()]
    assert [choose_replica(states, 0.0, start=turn) for turn in range(4)] == [0, 1, 2, 0]


def test_unhealthy_ejected_and_excluded_are_skipped() -> None:
    states = [state(healthy=False), state(ejected_until=10.0), state(5), state(9)]
    assert choose_replica(states, now=5.0) == 2
    assert choose_replica(states, now=5.0, exclude={2}) == 3
    assert choose_replica(states, now=11.0) == 1  # the cool-down is over


def test_unknown_health_is_routable_and_none_when_nothing_is() -> None:
    assert choose_replica([state(healthy=None)], now=0.0) == 0
    assert choose_replica([state(healthy=False)], now=0.0) is None


# ----------------------------------------------------------------------- load-aware routing and affinity

import math  # noqa: E402
import random  # noqa: E402

from engines import HashRing, RoutingPolicy, choose  # noqa: E402
from engines.routing import key_point, score  # noqa: E402

NOW = 1000.0
TIERGATE = RoutingPolicy()


def stats(
    outstanding: int = 0, waiting: float = 0.0, kv: float = 0.0, age: float = 0.0, healthy: bool | None = True
) -> ReplicaState:
    return ReplicaState(
        outstanding, healthy, 0.0, running=0.0, waiting=waiting, kv_usage=kv, stats_at=NOW - age
    )


def test_without_stats_or_key_tiergate_is_least_outstanding() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        states = [
            state(rng.randrange(4), rng.choice([True, None, False]), rng.choice([0.0, 0.0, NOW + 1]))
            for _ in range(rng.randrange(1, 6))
        ]
        exclude = {i for i in range(len(states)) if rng.random() < 0.2}
        start = rng.randrange(10)
        assert choose(states, NOW, exclude=exclude, start=start) == choose_replica(
            states, NOW, exclude=exclude, start=start
        )


def test_engine_queue_and_kv_steer_away() -> None:
    assert choose([stats(2, waiting=4), stats(3)], NOW) == 1  # 2 + 4 waiting > 3
    assert choose([stats(2, waiting=0.5), stats(3)], NOW) == 0
    assert choose([stats(1, kv=0.9), stats(2, kv=0.1)], NOW) == 1  # 1 + 3.6 > 2 + 0.4
    assert score(stats(2, waiting=3, kv=0.5), NOW, TIERGATE) == 2 + 3 * 1.0 + 0.5 * 4.0
    heavier = RoutingPolicy(wait_weight=3.0)
    assert score(stats(2, waiting=3), NOW, heavier) == 11.0


def test_stale_stats_are_ignored() -> None:
    busy_but_old = stats(1, waiting=50, kv=1.0, age=5.01)
    assert score(busy_but_old, NOW, TIERGATE) == 1.0
    assert choose([busy_but_old, stats(2)], NOW) == 0  # least-outstanding again
    assert choose([stats(1, waiting=50, age=4.9), stats(2)], NOW) == 1  # still fresh
    never = ReplicaState(1, True, 0.0)
    assert score(never, NOW, TIERGATE) == 1.0
    assert choose([busy_but_old, stats(2)], NOW, policy=RoutingPolicy(stale_after_s=60)) == 1


def test_round_robin_ignores_load_but_not_health() -> None:
    rr = RoutingPolicy(mode="round_robin")
    states = [state(9), state(0), state(healthy=False)]
    assert [choose(states, NOW, policy=rr, start=turn) for turn in range(4)] == [0, 1, 0, 0]
    lo = RoutingPolicy(mode="least_outstanding")
    assert choose([stats(1, waiting=9), stats(2)], NOW, policy=lo) == 0  # engine stats unused


RING = HashRing(["http://a", "http://b", "http://c", "http://d"])


def owner(key: str, states: list[ReplicaState], ring: HashRing = RING) -> int | None:
    return choose(states, NOW, affinity=key_point(key), ring=ring)


def test_the_same_key_goes_to_the_same_replica_while_loads_are_balanced() -> None:
    idle = [stats() for _ in range(4)]
    owners = {f"p:{i}": owner(f"p:{i}", idle) for i in range(400)}
    for start in range(4):  # the tie rotation does not move a key
        assert all(
            choose(idle, NOW, affinity=key_point(k), ring=RING, start=start) == o for k, o in owners.items()
        )
    spread = [list(owners.values()).count(i) for i in range(4)]
    assert min(spread) > 50, spread  # keys spread over the ring
    loaded = [stats(3), stats(3), stats(4), stats(3)]  # within the bound: keys stay put
    assert all(owner(k, loaded) == o for k, o in owners.items())


def test_bounded_loads_keep_a_hot_key_within_c_times_the_average() -> None:
    policy = RoutingPolicy(load_factor=1.25)
    loads = [0, 0, 0, 0]
    for n in range(1, 201):
        index = choose(
            [stats(load) for load in loads], NOW, policy=policy, affinity=key_point("hot"), ring=RING
        )
        assert index is not None
        loads[index] += 1  # nothing finishes
        assert max(loads) <= math.ceil(1.25 * n / 4), (n, loads)
    home = owner("hot", [stats() for _ in range(4)])
    assert home is not None and loads[home] == max(loads)  # the owner takes all it may, then the ring's next
    assert min(loads) > 0


def test_bounded_loads_count_the_engine_queue() -> None:
    key = "p:42"
    home = owner(key, [stats() for _ in range(4)])
    assert home is not None
    states = [stats(2) for _ in range(4)]
    states[home] = stats(2, waiting=6)  # its score: 8, the average 3.5 + 1 -> bound ceil(1.25 * 4.5) = 6
    moved = owner(key, states)
    assert moved is not None and moved != home


def test_an_unhealthy_or_removed_replica_moves_only_its_own_keys() -> None:
    idle = [stats() for _ in range(4)]
    keys = [f"u:{i}" for i in range(300)]
    before = {k: owner(k, idle) for k in keys}
    victim = 2
    down = list(idle)
    down[victim] = stats(healthy=False)
    after = {k: owner(k, down) for k in keys}
    assert all(after[k] != victim for k in keys)
    assert all(after[k] == before[k] for k in keys if before[k] != victim)  # the others stay
    assert any(before[k] == victim for k in keys)
    # excluded (failover) works the same way
    assert all(
        choose(idle, NOW, affinity=key_point(k), ring=RING, exclude={victim}) == after[k] for k in keys
    )
    # a pool rebuilt without the replica: the survivors keep their keys
    names = ["http://a", "http://b", "http://c", "http://d"]
    smaller = HashRing([n for i, n in enumerate(names) if i != victim])
    renamed = [n for i, n in enumerate(names) if i != victim]
    for k in keys:
        if before[k] != victim:
            index = owner(k, [stats() for _ in range(3)], smaller)
            assert index is not None and renamed[index] == names[before[k] or 0]


def test_affinity_needs_a_matching_ring_and_routable_replicas() -> None:
    assert choose([stats()] * 3, NOW, affinity=key_point("x"), ring=RING) in (0, 1, 2)  # size mismatch: score
    assert owner("x", [stats(healthy=False)] * 4) is None
    assert key_point("p:1") == key_point("p:1") and 0 <= key_point("p:1") < 2**32
