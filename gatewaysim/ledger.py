"""The billing ledger: one SQLite row per hold, release and charge."""

from __future__ import annotations

import csv
import io
import sqlite3
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any
from urllib.parse import quote

from ttformats.jsonline import json_line
from ttformats.prices import Usage

COLUMNS = (
    "time",
    "type",
    "request_id",
    "idempotency_key",
    "client_attempt_id",
    "endpoint",
    "model",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "images",
    "amount",
    "currency",
)


def format_amount(amount: Decimal) -> str:
    """An exact decimal string without exponent (e.g. '0.00000245')."""
    text = format(amount, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


class LedgerError(ValueError):
    """A ledger file that cannot be used: the message names the file and the problem."""


class Ledger:
    """Append-only billing rows in SQLite (a file, or ":memory:"), exported in time order."""

    def __init__(self, path: str = ":memory:") -> None:
        self.path = path
        try:
            self.db = sqlite3.connect(path, check_same_thread=False)
            if path != ":memory:":  # readers (a download) never block the writer, nor it them
                self.db.execute("PRAGMA journal_mode=WAL")
                # no sync at each commit (a crash of the simulator loses nothing committed; a crash of the
                # machine may lose the last commits), else a busy run waits on the disk twice a second
                self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS ledger (seq INTEGER PRIMARY KEY AUTOINCREMENT, time REAL, type TEXT,"
                " request_id TEXT, idempotency_key TEXT, client_attempt_id TEXT, endpoint TEXT, model TEXT,"
                " input_tokens INTEGER, output_tokens INTEGER, cached_input_tokens INTEGER,"
                " cache_write_tokens INTEGER, images INTEGER, amount TEXT, currency TEXT)"
            )
            self.db.commit()
            have = {row[1] for row in self.db.execute("PRAGMA table_info(ledger)")}
        except sqlite3.Error as exc:
            raise LedgerError(f"{path}: cannot open the ledger: {exc}") from None
        missing = [c for c in COLUMNS if c not in have]
        if missing:  # no migrations: a file from an older simulator is refused, not altered
            self.db.close()
            raise LedgerError(f"{path}: the ledger file has no column {missing[0]!r} (written by an older "
                              "simulator); use a new file")
        self._pending = 0
        #: Money charged through this instance (charge rows added since it started).
        self.charged = Decimal(0)

    def add(
        self,
        kind: str,
        request_id: str,
        idempotency_key: str | None,
        endpoint: str,
        model: str,
        usage: Usage,
        amount: Decimal,
        currency: str,
        at: float | None = None,
        client_attempt_id: str | None = None,
    ) -> None:
        """Append one row: kind is 'hold', 'release' or 'charge'."""
        self.db.execute(
            "INSERT INTO ledger (time, type, request_id, idempotency_key, client_attempt_id, endpoint, model,"
            " input_tokens, output_tokens, cached_input_tokens, cache_write_tokens, images, amount, currency)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                time.time() if at is None else at,
                kind,
                request_id,
                idempotency_key,
                client_attempt_id,
                endpoint,
                model,
                usage.input_tokens,
                usage.output_tokens,
                usage.cached_input_tokens,
                usage.cache_write_tokens,
                usage.images,
                format_amount(amount),
                currency,
            ),
        )
        if kind == "charge":
            self.charged += amount
        self._pending += 1
        if self._pending >= 500:
            self.flush()

    def flush(self) -> None:
        """Commit pending rows."""
        if self._pending:
            self.db.commit()
            self._pending = 0

    def rows(self) -> list[dict[str, Any]]:
        """All rows in time order."""
        self.flush()
        cur = self.db.execute(f"SELECT {', '.join(COLUMNS)} FROM ledger ORDER BY time, seq")
        return [dict(zip(COLUMNS, row, strict=True)) for row in cur]

    def batches(self, size: int = 5000) -> Iterator[list[dict[str, Any]]]:
        """Every row in time order, `size` at a time, as of the first batch; a file's are read by a connection of
        their own (the iterator may be advanced in another thread)."""
        self.flush()
        if self.path == ":memory:":
            return iter([self.rows()])
        return self._read(size)

    def _read(self, size: int) -> Iterator[list[dict[str, Any]]]:
        db = sqlite3.connect(f"file:{quote(self.path)}?mode=ro", uri=True, check_same_thread=False)
        try:
            cur = db.execute(f"SELECT {', '.join(COLUMNS)} FROM ledger ORDER BY time, seq")
            while rows := cur.fetchmany(size):
                yield [dict(zip(COLUMNS, row, strict=True)) for row in rows]
        finally:
            db.close()

    def close(self) -> None:
        """Commit and close the database."""
        self.flush()
        self.db.close()


def jsonl(rows: list[dict[str, Any]]) -> str:
    """Ledger rows as JSON Lines."""
    return "".join(map(json_line, rows))


def csv_header() -> str:
    """The CSV header row of a ledger export."""
    return ",".join(COLUMNS) + "\n"


def csv_rows(rows: list[dict[str, Any]]) -> str:
    """Ledger rows as CSV lines (no header)."""
    buf = io.StringIO()
    csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n").writerows(rows)
    return buf.getvalue()
