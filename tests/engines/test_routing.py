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
