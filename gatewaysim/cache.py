"""A prefix cache: conversation prefixes seen before prefill faster and are billed at the cached rate."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any


def segment(role: str, texts: list[str]) -> str:
    """One message of a conversation as the cache sees it."""
    return role + "\x1e" + "\x1f".join(texts)


@dataclass
class Lookup:
    """What the cache served for one request."""

    cached_tokens: int = 0
    write_tokens: int = 0


class PrefixCache:
    """LRU over prefix hashes at message boundaries, with a size limit in tokens, per model."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.enabled = bool(spec.get("enabled", True))
        self.size_tokens = int(spec.get("size_tokens", 2_000_000))
        self.min_tokens = int(spec.get("min_tokens", 32))
        self.prefill_factor = float(spec.get("prefill_factor", 0.1))
        self._entries: OrderedDict[str, int] = OrderedDict()
        self._used = 0
        self.hits = 0
        self.lookups = 0
        self.evictions = 0

    @staticmethod
    def prefixes(model: str, segments: list[tuple[str, int]]) -> list[tuple[str, int]]:
        """(hash of the conversation up to and including message i, its cumulative tokens)."""
        h = hashlib.blake2b(model.encode(), digest_size=16)
        out, total = [], 0
        for seg, tokens in segments:
            h.update(b"\x00" + seg.encode())
            total += tokens
            out.append((h.copy().hexdigest(), total))
        return out

    def lookup_and_store(self, model: str, segments: list[tuple[str, int]], input_tokens: int) -> Lookup:
        """Serve the longest cached prefix (except the last message), then cache every prefix of this request."""
        if not self.enabled or len(segments) < 1:
            return Lookup()
        self.lookups += 1
        prefs = self.prefixes(model, segments)
        served = 0
        for key, tokens in prefs[:-1]:  # the newest message is never served from cache
            if key in self._entries:
                served = tokens
                self._entries.move_to_end(key)
        if served:
            self.hits += 1
        written = 0
        for key, tokens in prefs:
            if tokens < self.min_tokens or key in self._entries:
                continue
            self._entries[key] = tokens
            self._used += tokens
            written = tokens
        while self._used > self.size_tokens and self._entries:
            _, tokens = self._entries.popitem(last=False)
            self._used -= tokens
            self.evictions += 1
        served = min(served, input_tokens)
        return Lookup(cached_tokens=served if served >= self.min_tokens else 0,
                      write_tokens=max(0, min(written, input_tokens) - served))

    def snapshot(self) -> dict[str, Any]:
        """Counters for the admin API."""
        return {"entries": len(self._entries), "tokens": self._used, "hits": self.hits,
                "lookups": self.lookups, "evictions": self.evictions}
