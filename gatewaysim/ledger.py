"""The billing ledger: one SQLite row per hold, release and charge."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import time
from decimal import Decimal
from typing import Any

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
    """Append-only billing rows in SQLite, exported in time order."""

    def __init__(self, path: str = ":memory:") -> None:
        self.path = path
        try:
            self.db = sqlite3.connect(path, check_same_thread=False)
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

    def export_jsonl(self) -> str:
        """The ledger as JSON Lines."""
        return "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in self.rows())

    def export_csv(self) -> str:
        """The ledger as CSV with a header row."""
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows())
        return buf.getvalue()

    def close(self) -> None:
        """Commit and close the database."""
        self.flush()
        self.db.close()
