"""Idempotency-Key handling: fingerprints, in-flight marks, stored 2xx responses on disk, expiry."""

from __future__ import annotations

import hashlib
import pickle
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any

MAX_KEY_LENGTH = 255
SWEEP_EVERY_S = 1.0  # expired responses are deleted (and recent ones written) at most this often
FLUSH_AT = 256  # recent responses held in memory before they are written in one transaction


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


def _scope_id(scope: tuple[str, ...]) -> bytes:
    """The stored name of a scope: a hash (the scope holds the API key, which is never written anywhere)."""
    return hashlib.sha256("\x00".join(scope).encode()).digest()


class IdempotencyStore:
    """Keys scoped by (API key, method, path, Idempotency-Key): marks of requests in flight in memory, completed
    responses in an SQLite file (or ":memory:"), deleted `ttl_s` after they were stored. Completed responses are
    written a batch at a time (at most FLUSH_AT of them, or a second's, wait in memory)."""

    def __init__(self, ttl_s: float, path: str = ":memory:") -> None:
        self.ttl_s = ttl_s
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=OFF")  # a cache of answers: nothing to recover after a crash
        self.db.execute("PRAGMA synchronous=OFF")
        self.db.execute("CREATE TABLE IF NOT EXISTS done (scope BLOB PRIMARY KEY, fp TEXT, stored_at REAL,"
                        " response BLOB)")
        self.db.execute("CREATE INDEX IF NOT EXISTS done_at ON done (stored_at)")
        self._in_flight: dict[tuple[str, ...], str] = {}
        #: responses completed since the last flush, by scope id: (fingerprint, stored_at, response)
        self._recent: dict[bytes, tuple[str, float, StoredResponse]] = {}
        self._swept = 0.0

    def begin(self, scope: tuple[str, ...], fp: str) -> tuple[str, StoredResponse | None]:
        """Classify a request: 'new', 'replay', 'mismatch' (422) or 'in_flight' (409)."""
        now = time.time()
        self._sweep(now)
        sid = _scope_id(scope)
        recent = self._recent.get(sid)
        if recent is not None:
            if now - recent[1] <= self.ttl_s:
                return ("replay", recent[2]) if recent[0] == fp else ("mismatch", None)
        else:
            row = self.db.execute("SELECT fp, stored_at, response FROM done WHERE scope = ?", (sid,)).fetchone()
            if row is not None and now - row[1] <= self.ttl_s:
                return ("replay", pickle.loads(row[2])) if row[0] == fp else ("mismatch", None)
        running = self._in_flight.get(scope)
        if running is not None:
            return ("in_flight", None) if running == fp else ("mismatch", None)
        self._in_flight[scope] = fp
        return "new", None

    def complete(self, scope: tuple[str, ...], stored: StoredResponse) -> None:
        """Store a completed 2xx response under the scope."""
        fp = self._in_flight.pop(scope, None)
        if fp is not None:
            self._recent[_scope_id(scope)] = (fp, stored.stored_at, stored)
            if len(self._recent) >= FLUSH_AT:
                self._flush()

    def _flush(self) -> None:
        """Write the responses completed since the last flush to the database, in one transaction."""
        if not self._recent:
            return
        rows = [(sid, fp, at, pickle.dumps(stored, protocol=pickle.HIGHEST_PROTOCOL))
                for sid, (fp, at, stored) in self._recent.items()]
        self.db.execute("BEGIN")
        try:
            self.db.executemany("INSERT OR REPLACE INTO done VALUES (?, ?, ?, ?)", rows)
        finally:
            self.db.execute("COMMIT")
        self._recent.clear()

    def abandon(self, scope: tuple[str, ...]) -> None:
        """Forget an in-flight mark without storing anything (the attempt failed)."""
        self._in_flight.pop(scope, None)

    def _sweep(self, now: float) -> None:
        """Delete the responses stored longer than the TTL ago."""
        if now - self._swept >= SWEEP_EVERY_S:
            self._swept = now
            self._flush()
            self.db.execute("DELETE FROM done WHERE stored_at < ?", (now - self.ttl_s,))

    def __len__(self) -> int:
        """Completed responses held for replay (expired ones included until the next sweep)."""
        self._flush()
        return self.db.execute("SELECT COUNT(*) FROM done").fetchone()[0]

    def close(self) -> None:
        """Close the database."""
        self.db.close()
