"""Self-consistency: k samples from one engine call (`n=k`; vLLM reads the prompt once a sample), their final
answers extracted and normalised, a majority vote; the winning sample is returned and the agreement ratio
is the confidence. Adaptive (the level's `adaptive`): the samples come in waves, until the stopping rule
(`adaptive.settled`) says the samples left could hardly change the vote. What is compared (`answer_key`):
a sample's tool calls (function names and canonical JSON arguments) when it made any; its content as
canonical JSON when the request asked for JSON (`response_format` json_object or json_schema); else its
final answer, as `vote.extract_answer` reads it."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.deliberation.adaptive import settled
from gateway.deliberation.run import Run, Sample
from gateway.deliberation.strategy import Engine
from gateway.deliberation.toolcalls import calls_key
from gateway.deliberation.vote import extract_answer, tally

__all__ = ["SelfConsistency", "answer_key", "wants_json"]


class SelfConsistency:
    def prepare(self, run: Run) -> None:
        pass  # the runner asks the engine for every sample of every choice in one call

    async def refine(self, run: Run, engine: Engine) -> None:
        structured = wants_json(run.body)
        plan = run.plan
        while plan.adaptive:  # waves until every choice's vote is settled (or has all its samples)
            wanted = {}
            for k, group in enumerate(run.groups()):
                answers = [answer_key(sample, structured) for sample in group]
                if not settled(answers, plan.samples, plan.stop_confidence):
                    wanted[k] = min(plan.wave, plan.samples - len(group))
            if not wanted:
                break
            await engine.draw(run, wanted)
        run.votes, run.winners = [], []
        for group in run.groups():  # a vote per choice, over its own samples
            result = tally([answer_key(sample, structured) for sample in group])
            run.votes.append(result)
            run.winners.append(group[result.winner].index)


def wants_json(body: dict[str, Any]) -> bool:
    response_format = body.get("response_format")
    return isinstance(response_format, dict) and response_format.get("type") in ("json_object", "json_schema")


def answer_key(sample: Sample, structured: bool) -> str | None:
    """What a sample's answer is, for the vote; None: it has none."""
    if sample.tool_calls:
        return calls_key(sample.tool_calls)
    if structured:
        try:
            return "json:" + orjson.dumps(orjson.loads(sample.content), option=orjson.OPT_SORT_KEYS).decode()
        except orjson.JSONDecodeError:
            return None  # not JSON: no answer of the asked shape
    return extract_answer(sample.content)
