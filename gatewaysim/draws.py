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

    The unit interval is cut into one slice per kind: weighted kinds share `rate`
    among the kinds that apply to the attempt; each quota kind gets `quota_rate`
    and is chosen only while its quota lasts. The attempt's draw picks the slice.
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
        return bool(self.remaining) or (self.rate > 0 and bool(self.weights))

    def choose(self, key: str, applicable: Iterable[str]) -> str | None:
        """The kind planted on the attempt with this key, or None."""
        if not self.active:
            return None
        apply = [k for k in self.kinds if k in set(applicable)]
        u = uniform(self.seed, self.stream, key)
        edge = 0.0
        for kind in self.kinds:  # quota kinds first, in a fixed order
            if kind in self.remaining:
                edge += self.quota_rate
                if u < edge:
                    if kind in apply and self.remaining[kind] > 0:
                        self.remaining[kind] -= 1
                        return self._count(kind)
                    return None
        total_w = sum(w for k, w in self.weights.items() if k in apply and k not in self.remaining)
        if total_w <= 0:
            return None
        for kind in apply:
            w = self.weights.get(kind, 0.0)
            if w <= 0 or kind in self.remaining:
                continue
            edge += self.rate * w / total_w
            if u < edge:
                return self._count(kind)
        return None

    def _count(self, kind: str) -> str:
        self.planted[kind] = self.planted.get(kind, 0) + 1
        return kind
