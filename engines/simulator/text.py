"""Deterministic text: a tape of token pieces drawn once from the config seed, read at offsets
derived from each request. Reading a slice costs next to nothing, which keeps the hot path fast."""

from __future__ import annotations

import random

__all__ = ["WORDS", "TextSource"]

# Words of at most 6 letters, so each one is exactly one token of the simulator's tokenizer and
# re-tokenizing generated text gives back the number of tokens reported in usage.
_VOCABULARY = (  # noqa: SIM905 - a word list reads better as text
    "the of and to in is it that for on was with as be by at this are from or have an they which "
    "one you had not but all were can her there we been has when who will more no if out so said "
    "what up its about into than them only other new some could time these two may then do first "
    "any my now such like our over man me even most made after also did many before must back years "
    "where much your way well down should each just those people how too little state good very make "
    "world still own see men work long get here both life being under never day same know while last "
    "might us great old year off come since go came right used take three few house use during place "
    "around home small found went say part once high upon school every does got left number course "
    "until always away fact though water less public put think almost hand enough far took head yet "
    "better set told night end why called eyes find going look asked later knew point next city give "
    "group young days let room side given order second rather per face among form often things early "
    "white case become large big need four within felt along saw best ever least power light thing "
    "family want mind area others done turned open kind began door help means sense whole matter "
    "itself name action hands local show five gave today either across taken past quite seen having "
    "body word half really field words tell shall money period held keep sure free seems real behind "
    "air making whose heard ago became moment study known result street reason change south "
    "board job west close turn love true court force full seem plan answer check value system"
).split()
WORDS = tuple(dict.fromkeys(w for w in _VOCABULARY if len(w) <= 6))
_CAPITALIZED = tuple(w.capitalize() for w in WORDS)


class TextSource:
    """Sentences of plain words as token pieces (" word", ",", "."); any run of them reads as text."""

    __slots__ = ("_starts", "_tape")

    def __init__(self, seed: int, size: int = 16384) -> None:
        rng = random.Random(seed)
        tape: list[str] = []
        starts: list[int] = []
        while len(tape) < size:
            starts.append(len(tape))
            length = rng.randint(5, 16)
            tape.append(" " + rng.choice(_CAPITALIZED))
            for i in range(1, length):
                tape.append(" " + rng.choice(WORDS))
                if i < length - 1 and rng.random() < 0.1:
                    tape.append(",")
            tape.append(".")
        self._tape = tuple(tape[:size])
        self._starts = tuple(starts)

    def __len__(self) -> int:
        return len(self._tape)

    def take(self, offset: int, count: int) -> list[str]:
        """`count` pieces from the beginning of sentence number `offset` (any int, taken modulo the
        number of sentences), wrapping around the tape."""
        tape = self._tape
        start = self._starts[offset % len(self._starts)]
        end = start + count
        if end <= len(tape):
            return list(tape[start:end])
        pieces = list(tape[start:])
        while len(pieces) < count:
            pieces += tape[: count - len(pieces)]
        return pieces
