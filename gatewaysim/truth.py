"""The truth log: what really happened to every request, by request id."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import IO, Any
from urllib.parse import unquote_plus

from multidict import CIMultiDictProxy

from ttformats.jsonline import json_line

#: Request headers the truth never records: credentials, then hop-by-hop and transport ones.
DROPPED_HEADERS = frozenset((
    "authorization", "x-api-key", "x-goog-api-key", "api-key", "ocp-apim-subscription-key", "proxy-authorization",
    "cookie", "host", "content-length", "connection", "accept-encoding", "transfer-encoding",
))
HEADER_VALUE_MAX = 200
#: The short marker a load generator puts in a prompt to join its attempt to the upstream requests it caused.
MARKER_RE = re.compile(rb"\[ttb:[0-9a-f]{4,32}\]")


def client_headers(headers: CIMultiDictProxy[str]) -> dict[str, str]:
    """The request's headers by lower-case name, minus DROPPED_HEADERS, each value cut to 200 characters.

    A header sent more than once keeps its values joined by ", " (as HTTP folds them).
    """
    out: dict[str, str] = {}
    for name, value in headers.items():
        low = name.lower()
        if low in DROPPED_HEADERS:
            continue
        if low in out:
            value = out[low] + ", " + value
        out[low] = value[:HEADER_VALUE_MAX]
    return out


def redacted_query(query_string: str) -> str:
    """The raw query string with the value of every `key` parameter replaced by `[redacted]`."""
    if "=" not in query_string:
        return query_string
    parts = query_string.split("&")
    for i, part in enumerate(parts):
        name = part.split("=", 1)[0]
        if name == "key" or unquote_plus(name) == "key":
            parts[i] = name + "=[redacted]"
    return "&".join(parts)


def find_marker(body: bytes) -> str | None:
    """The first `[ttb:<hex>]` marker in a request body, if any."""
    m = MARKER_RE.search(body)
    return m.group(0).decode() if m else None


class Truth:
    """Per-request truth entries: those in flight in memory, finished ones appended to a JSONL file as they finish."""

    def __init__(self, path: str) -> None:
        self.path = path
        #: Entries of requests still in flight, by request id (finished ones are only in the file).
        self.open_entries: dict[str, dict[str, Any]] = {}
        self._file: IO[str] = open(path, "a", encoding="utf-8")  # noqa: SIM115
        self._start = os.path.getsize(path)  # a file that had entries before holds them before this instance's

    def open(self, request_id: str, **fields: Any) -> dict[str, Any]:
        """Start the entry of a request as it is received."""
        entry: dict[str, Any] = {
            "request_id": request_id,
            "client_attempt_id": None,
            "marker": None,
            "received": None,
            "method": None,
            "path": None,
            "query": None,
            "client_headers": None,
            "traceparent": None,
            "endpoint": None,
            "model": None,
            "tenant": None,
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
            "limit": None,
        }
        entry.update(fields)
        self.open_entries[request_id] = entry
        return entry

    def close(self, entry: dict[str, Any]) -> None:
        """Mark an entry finished: append it to the file and forget it."""
        if self.open_entries.pop(entry["request_id"], None) is None:
            return  # closed before
        self._file.write(json_line(entry))
        self._file.flush()

    def chunks(self, size: int = 1 << 20) -> Iterator[bytes]:
        """Every entry as JSON Lines: the finished ones in the order they finished, then those still in flight."""
        self._file.flush()
        left = os.path.getsize(self.path) - self._start
        in_flight = "".join(map(json_line, self.open_entries.values()))
        with open(self.path, "rb") as f:
            f.seek(self._start)
            while left > 0:
                data = f.read(min(size, left))
                if not data:
                    break
                left -= len(data)
                yield data
        if in_flight:
            yield in_flight.encode()

    def close_file(self) -> None:
        """Close the file (entries still in flight are left out of it)."""
        self._file.close()
