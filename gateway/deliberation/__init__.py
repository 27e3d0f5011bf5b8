"""The deliberate tier's promise: a minimum reasoning depth per answer (budget forcing), a cap, several
samples voted on (self-consistency), and chain-of-thought for plain models - each a strategy
(`strategy.py`), run by `Deliberator` over the deliberate pool, metered into the request's usage record."""

from gateway.deliberation.consistency import wants_json
from gateway.deliberation.plan import DepthPlan, DepthUnreachable, plan_for
from gateway.deliberation.respond import Chunks, completion_body, logprobs, progress_fields, usage_body
from gateway.deliberation.run import Run, Sample
from gateway.deliberation.runner import Deliberator, Listener

__all__ = [
    "Chunks",
    "Deliberator",
    "DepthPlan",
    "DepthUnreachable",
    "Listener",
    "Run",
    "Sample",
    "completion_body",
    "logprobs",
    "plan_for",
    "progress_fields",
    "usage_body",
    "wants_json",
]
