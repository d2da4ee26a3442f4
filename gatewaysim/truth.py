"""The truth log: what really happened to every request, by request id."""

from __future__ import annotations

import json
from typing import IO, Any


class Truth:
    """Per-request truth entries, kept in memory and optionally appended to a JSONL file."""

    def __init__(self, path: str | None = None) -> None:
        self.entries: dict[str, dict[str, Any]] = {}
        self._file: IO[str] | None = open(path, "a", encoding="utf-8") if path else None  # noqa: SIM115

    def open(self, request_id: str, **fields: Any) -> dict[str, Any]:
        """Start the entry of a request as it is received."""
        entry: dict[str, Any] = {
            "request_id": request_id,
            "client_attempt_id": None,
            "received": None,
            "endpoint": None,
            "model": None,
            "stream": False,
            "dry_run": False,
            "idempotency_key": None,
            "replay_of": None,
            "status": None,
            "headers_sent": None,
            "chunk_times": [],
            "chunk_tokens": [],
            "last_byte": None,
            "queue_ms": None,
            "fault": None,
            "fault_detail": None,
            "expected_error_kind": None,
            "billing_error": None,
            "outcome": "open",
            "usage": None,
            "images_requested": None,
            "images_returned": None,
            "fair_amount": None,
            "charged_amount": "0",
        }
        entry.update(fields)
        self.entries[request_id] = entry
        return entry

    def close(self, entry: dict[str, Any]) -> None:
        """Mark an entry finished and append it to the file, if any."""
        if self._file is not None:
            self._file.write(json.dumps(entry, separators=(",", ":")) + "\n")
            self._file.flush()

    def export_jsonl(self) -> str:
        """All entries as JSON Lines, in the order requests arrived."""
        return "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in self.entries.values())
