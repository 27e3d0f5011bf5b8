"""Self-consistency voting: final answers read from constructed samples, normalised, counted."""

from __future__ import annotations

import pytest

from gateway.deliberation.vote import Vote, extract_answer, vote


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        # explicit statements
        ("Adding them up we get 40, plus 2. The answer is 42.", "42"),
        ("First 12, then 30.\n\nFinal answer: 42", "42"),
        ("The answer is 42. Check: 6 * 7 = 42, and 41 + 1 = 42 too; 3 tries.", "42"),
        ("**Answer:** 3/4", "3/4"),
        ("**Final Answer:** $1,234.50", "1234.5"),
        ("So the answer is: there are 12 apples in the basket, since 3 boxes hold 4 each.", "12"),
        ("We need x. The answer is x = 5.", "5"),
        ("The answer is 2^10 = 1024.", "1024"),
        ("The answer is\n\n  7\n\nand that is all.", "7"),
        ("The answer is Paris.", "paris"),
        ('Final answer: "New  York."', "new york"),
        ("The answer is $\\frac{3}{4}$.", "3/4"),
        ("The answer isn't obvious, but after 3 tries it is 9", "9"),
        # boxed, preferred over anything else
        ("Working: 5 + 12 = 17, so \\boxed{17}. Check: 20.", "17"),
        ("The answer is 16. Hmm, no: $\\boxed{17}$", "17"),
        ("\\boxed{16} Wait, let me redo this: \\boxed{\\frac{3", "16"),  # the last one cut short
        ("\\boxed{\\frac{1}{2}}", "1/2"),
        ("\\boxed{\\text{Paris}}", "paris"),
        ("\\boxed{x = 5}", "5"),
        ("\\boxed{x^2 + 1}", "x^2+1"),
        ("\\boxed{90^\\circ}", "90"),
        ("\\boxed{45\\%}", "45%"),
        ("\\boxed{(B)}", "B"),
        ("\\boxed{\\{1, 2\\}}", "\\{1,2\\}"),
        ("\\boxed{1, 2}", "1 2"),
        # the last number
        ("There were 3 cats and 1,234 dogs", "1234"),
        ("It costs $3.50", "3.5"),
        ("roughly 2.0", "2"),
        ("a change of +7", "7"),
        ("it fell to -3 degrees", "-3"),
        ("from 10 - 5", "5"),
        ("x=-5", "-5"),
        ("it is \u22123", "-3"),
        ("exactly -0.0", "0"),
        ("about 45% of them", "45%"),
        ("about 45 % of them", "45%"),
        ("three quarters, or 3 / 4", "3/4"),
        ("the 007 file", "7"),
        ("point .5", "0.5"),
        # option letters
        ("Final answer: (B)", "B"),
        ("The answer is (b) because it is the only even one.", "B"),
        ("The answer is B. The others are wrong.", "B"),
        ("Answer: option c", "C"),
        ("B)", "B"),
        ("(d)", "D"),
        ("Option B is correct", "B"),
        ("a", "A"),
        # short texts
        ("  'Paris!'  ", "paris"),
        ("Blue   whale.", "blue whale"),
        ("A cat", "a cat"),
    ],
)
def test_extract_answer(text: str, answer: str) -> None:
    assert extract_answer(text) == answer


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "!!!",
        "This is a long explanation without any figure or explicit final statement at all, none whatsoever.",
        "\\boxed{} and nothing else to go on in this rather long text without any figure in it at all",
    ],
)
def test_extract_answer_none(text: str) -> None:
    assert extract_answer(text) is None


def test_equal_answers_in_different_formats_compare_equal() -> None:
    formats = [
        "The answer is 1,234.",
        "\\boxed{1234}",
        "Final answer: $1,234.00",
        "so we get 1234.0",
        "+1234",
    ]
    assert {extract_answer(text) for text in formats} == {"1234"}
    letters = ["Final answer: (B)", "B)", "The answer is option b.", "\\boxed{B}", "**Answer:** B"]
    assert {extract_answer(text) for text in letters} == {"B"}


def test_majority_wins_with_exact_agreement() -> None:
    result = vote(["The answer is 7.", "So 42", "\\boxed{42}", "Final answer: 42.0", "It is 9"])
    assert result == Vote(winner=1, answer="42", agreement=0.6, counts=(("42", 3), ("7", 1), ("9", 1)))


def test_the_winner_is_the_first_sample_giving_the_winning_answer() -> None:
    result = vote(["(A)", "The answer is C.", "Answer: A", "\\boxed{C}", "Final answer: (c)"])
    assert (result.winner, result.answer, result.agreement) == (1, "C", 0.6)
    assert result.counts == (("C", 3), ("A", 2))


def test_a_tie_goes_to_the_answer_given_first() -> None:
    result = vote(
        ["Thinking aloud with no figure, no statement, nothing at all to vote on here.", "5", "6", "6", "5"]
    )
    assert (result.winner, result.answer, result.agreement) == (1, "5", 0.4)
    assert result.counts == (("5", 2), ("6", 2))
    reversed_order = vote(["6", "5", "5", "6"])
    assert (reversed_order.winner, reversed_order.answer) == (0, "6")


def test_samples_without_an_answer_never_win() -> None:
    silent = "A long reply that never states an answer of any kind and has no figure in it at all."
    result = vote([silent, silent, silent, "The answer is 3."])
    assert (result.winner, result.answer, result.agreement) == (3, "3", 0.25)
    assert result.counts == (("3", 1),)


def test_no_answers_at_all() -> None:
    silent = "A long reply that never states an answer of any kind and has no figure in it at all."
    assert vote([silent, "", "!!!"]) == Vote(winner=0, answer=None, agreement=0.0, counts=())


def test_a_single_sample() -> None:
    assert vote(["\\boxed{17}"]) == Vote(winner=0, answer="17", agreement=1.0, counts=(("17", 1),))


def test_an_empty_sequence_is_refused() -> None:
    with pytest.raises(ValueError):
        vote([])
