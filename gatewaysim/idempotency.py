"""Idempotency-Key handling: fingerprints, in-flight marks, stored 2xx responses, expiry."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

MAX_KEY_LENGTH = 255


@dataclass
class StoredResponse:
    """A completed 2xx response, kept for replay."""

    status: int
    headers: dict[str, str]
    body: bytes | None
    frames: list[bytes] | None
    request_id: str
    usage: dict[str, Any] = field(default_factory=dict)
    stored_at: float = field(default_factory=time.time)


def normalize_key(raw: str) -> str:
    """Strip one pair of surrounding quotes (RFC sf-string form) and whitespace."""
    key = raw.strip()
    if len(key) >= 2 and key[0] == key[-1] == '"':
        key = key[1:-1]
    return key


def fingerprint(body: bytes, dry_run: bool) -> str:
    """Fingerprint of the request body; the dry-run flag is part of it."""
    h = hashlib.sha256(body)
    h.update(b"\x00dry" if dry_run else b"\x00real")
    return h.hexdigest()


class IdempotencyStore:
    """Keys scoped by (API key, method, path, Idempotency-Key)."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._done: dict[tuple[str, ...], tuple[str, StoredResponse]] = {}
        self._in_flight: dict[tuple[str, ...], str] = {}

    def begin(self, scope: tuple[str, ...], fp: str) -> tuple[str, StoredResponse | None]:
        """Classify a request: 'new', 'replay', 'mismatch' (422) or 'in_flight' (409)."""
        done = self._done.get(scope)
        if done is not None and time.time() - done[1].stored_at > self.ttl_s:
            del self._done[scope]
            done = None
        if done is not None:
            return ("replay", done[1]) if done[0] == fp else ("mismatch", None)
        running = self._in_flight.get(scope)
        if running is not None:
            return ("in_flight", None) if running == fp else ("mismatch", None)
        self._in_flight[scope] = fp
        return "new", None

    def complete(self, scope: tuple[str, ...], stored: StoredResponse) -> None:
        """Store a completed 2xx response under the scope."""
        fp = self._in_flight.pop(scope, None)
        if fp is not None:
            self._done[scope] = (fp, stored)

    def abandon(self, scope: tuple[str, ...]) -> None:
        """Forget an in-flight mark without storing anything (the attempt failed)."""
        self._in_flight.pop(scope, None)

    def __len__(self) -> int:
        return len(self._done)
