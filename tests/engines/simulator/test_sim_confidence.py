"""The skill model's logprobs tell of an answer's correctness, as much as `logprob_noise` lets them; and one
call draws n samples, each answered on its own."""

from __future__ import annotations

from engines.simulator.arithmetic import final_answer, generate_tasks
from gateway.deliberation.confidence import score_samples

from .sim_support import SimFactory, fast


async def _scored(sim_factory: SimFactory, noise: float) -> list[tuple[float, bool]]:
    """(confidence of one sample, whether it is right) for every sample of 40 tasks x 5 samples."""
    sim = await sim_factory(fast(logprob_noise=noise))
    scored = []
    for task in generate_tasks(40, seed=5, difficulty=3):
        reply = await sim.chat(
            messages=[{"role": "user", "content": task.question}], n=5, logprobs=True, max_tokens=200
        )
        assert reply.status_code == 200, reply.text
        choices = reply.json()["choices"]
        assert [choice["index"] for choice in choices] == [0, 1, 2, 3, 4]
        for choice in choices:
            score = score_samples([choice], structured=False).score
            scored.append((score, final_answer(choice["message"]["content"]) == str(task.answer)))
    return scored


def _auroc(scored: list[tuple[float, bool]]) -> float:
    right = [score for score, correct in scored if correct]
    wrong = [score for score, correct in scored if not correct]
    assert right and wrong, "the fast profile answers some tasks right and some wrong"
    return sum((r > w) + 0.5 * (r == w) for r in right for w in wrong) / (len(right) * len(wrong))


async def test_confidence_tells_right_from_wrong_less_as_the_noise_grows(sim_factory: SimFactory) -> None:
    clear, default, blurred = [_auroc(await _scored(sim_factory, noise)) for noise in (0.0, 1.0, 20.0)]
    assert clear > 0.95  # the only blur left: each token's own draw
    assert 0.75 < default < clear  # informative, but imperfectly
    assert 0.3 < blurred < 0.7  # noise drowns the signal


async def test_the_same_request_gets_the_same_samples(sim_factory: SimFactory) -> None:
    sim = await sim_factory(fast())
    task = generate_tasks(1, seed=9)[0]
    messages = [{"role": "user", "content": task.question}]
    first = (await sim.chat(messages=messages, n=3, logprobs=True)).json()
    again = (await sim.chat(messages=messages, n=3, logprobs=True)).json()
    assert first["choices"] == again["choices"]
    assert all(choice["logprobs"]["content"] for choice in first["choices"])
