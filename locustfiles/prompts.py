"""Prompts of a target token length, calibrated from the usage the target returns."""

from __future__ import annotations

import random

WORDS = (
    "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa "
    "quebec romeo sierra tango uniform victor whiskey xray yankee zulu river stone cloud paper window "
    "garden silver orange purple yellow marble copper forest island canyon harbor meadow summit valley"
).split()


class Calibrator:
    """Learns tokens per prompt word from (words sent, input tokens reported) pairs."""

    def __init__(self, initial_tokens_per_word: float = 1.5) -> None:
        self.words = 0
        self.tokens = 0.0
        self.initial = initial_tokens_per_word

    @property
    def tokens_per_word(self) -> float:
        """The current estimate (the initial guess until usage has been seen)."""
        if self.words < 20:
            return self.initial
        return self.tokens / self.words

    def update(self, words: int, input_tokens: int) -> None:
        """Add one observation."""
        if words > 0 and input_tokens > 0:
            self.words += words
            self.tokens += input_tokens

    def words_for(self, tokens: int) -> int:
        """How many words should give about `tokens` input tokens."""
        return max(1, round(tokens / self.tokens_per_word))


def make_prompt(rng: random.Random, words: int) -> str:
    """A prompt of `words` seeded words: the words `rng.choice(WORDS)` draws, one call each, drawn faster."""
    if not WORDS or type(rng)._randbelow is not random.Random._randbelow_with_getrandbits:  # type: ignore[attr-defined]
        return " ".join(rng.choice(WORDS) for _ in range(words))
    n = len(WORDS)
    k = n.bit_length()
    bits = rng.getrandbits
    out = []
    for _ in range(words):  # random.Random._randbelow_with_getrandbits, written out
        r = bits(k)
        while r >= n:
            r = bits(k)
        out.append(WORDS[r])
    return " ".join(out)
