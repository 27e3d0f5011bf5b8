"""What a gateway's door did, read from its /metrics: its limit, what it let in, what it refused and why."""

from __future__ import annotations

import httpx

__all__ = ["door_metrics", "refusals"]

_WATCHED = ("tiergate_door_", "tiergate_event_loop_", "tiergate_tier_", "tiergate_gateway_wait_")


def door_metrics(url: str) -> dict[str, float]:
    """The door's, the loop's and the tier queues' metrics now (none on a tree without them)."""
    text = httpx.get(url + "/metrics", timeout=30).text
    found = {}
    for line in text.splitlines():
        if line.startswith(_WATCHED):
            name, _, value = line.rpartition(" ")
            found[name] = float(value)
    return found


def refusals(url: str) -> dict[str, float]:
    """The door's refusals so far by reason (`limit`, `loop_lag`, `shortage`); empty where a tree counts none
    or /metrics does not answer."""
    try:
        found = door_metrics(url)
    except httpx.HTTPError:
        return {}
    out = {}
    for name, value in found.items():
        if name.startswith("tiergate_door_refusals_total") and 'reason="' in name:
            out[name.split('reason="', 1)[1].split('"', 1)[0]] = value
    return out
