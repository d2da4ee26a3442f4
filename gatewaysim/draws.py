"""Seeded draws: every random choice is a function of (seed, stream, key), never of arrival order."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable
from typing import Any


def uniform(seed: int, stream: str, key: str) -> float:
    """A uniform number in [0, 1) determined by (seed, stream, key)."""
    digest = hashlib.blake2b(f"{seed}\x1f{stream}\x1f{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def rng(seed: int, stream: str, key: str) -> random.Random:
    """A random generator seeded by (seed, stream, key)."""
    digest = hashlib.blake2b(f"{seed}\x1f{stream}\x1f{key}".encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "big"))


class Planter:
    """Chooses at most one kind (a fault or a planted billing error) per attempt.

    Quota kinds come first: with probability `quota_rate` an attempt gets one of the
    quota kinds that apply to it and still have quota left (picked by a second draw).
    Otherwise, with probability `rate`, it gets one of the weighted kinds that apply to
    it, chosen by weight. Every draw is a function of (seed, stream, key).
    """

    def __init__(self, seed: int, stream: str, section: dict[str, Any], kinds: tuple[str, ...]) -> None:
        self.seed = seed
        self.stream = stream
        self.kinds = kinds
        self.rate = float(section["rate"])
        self.weights = {k: float(w) for k, w in section["weights"].items() if w > 0}
        self.quota_rate = float(section["quota_rate"])
        self.remaining = {k: int(q) for k, q in section["quota"].items() if q > 0}
        self.planted: dict[str, int] = {}

    @property
    def active(self) -> bool:
        """Whether anything can be planted at all."""
        return any(v > 0 for v in self.remaining.values()) or (self.rate > 0 and bool(self.weights))

    def choose(self, key: str, applicable: Iterable[str]) -> str | None:
        """The kind planted on the attempt with this key, or None."""
        if not self.active:
            return None
        apply = set(applicable)
        quota = [k for k in self.kinds if self.remaining.get(k, 0) > 0 and k in apply]
        if quota and uniform(self.seed, self.stream + ":quota", key) < self.quota_rate:
            kind = quota[int(uniform(self.seed, self.stream + ":pick", key) * len(quota))]
            self.remaining[kind] -= 1
            return self._count(kind)
        weighted = [(k, self.weights[k]) for k in self.kinds if k in apply and k in self.weights]
        total = sum(w for _, w in weighted)
        if total <= 0 or self.rate <= 0:
            return None
        u = uniform(self.seed, self.stream, key)
        if u >= self.rate:
            return None
        edge = 0.0
        for kind, w in weighted:
            edge += self.rate * w / total
            if u < edge:
                return self._count(kind)
        return self._count(weighted[-1][0])

    def _count(self, kind: str) -> str:
        self.planted[kind] = self.planted.get(kind, 0) + 1
        return kind
