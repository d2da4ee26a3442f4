"""Reading a billing ledger (CSV, JSON Lines or a JSON array; any column mapping) into charge rows."""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .load import InputError

if TYPE_CHECKING:
    import pandas as pd

LEDGER_COLUMNS = ("time", "type", "request_id", "idempotency_key", "attempt_id", "upstream_request_id", "endpoint",
                  "model", "input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens", "images",
                  "amount", "currency")
#: a charge joins a call by one of these (at least one must be a column of the ledger)
LEDGER_JOIN_COLUMNS = ("request_id", "attempt_id", "idempotency_key")
#: other names a column mapping may use for a canonical column
LEDGER_ALIASES = {"client_attempt_id": "attempt_id"}
LEDGER_TOKEN_COLUMNS = ("input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens", "images")


def _dec(value: Any, where: str) -> Decimal:
    try:
        if isinstance(value, bool) or value is None:
            raise InvalidOperation
        out = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        raise InputError(f"{where}: not an amount: {value!r}") from None
    if not out.is_finite():
        raise InputError(f"{where}: not an amount: {value!r}")
    return out


def _count(value: Any, where: str) -> int | None:
    """A token or image count cell: a whole number (or empty)."""
    if value is None or value == "":
        return None
    try:
        if isinstance(value, bool):
            raise ValueError
        f = float(value)
        if f != f or f in (float("inf"), float("-inf")) or f != int(f) or f < 0:
            raise ValueError
        return int(f)
    except (TypeError, ValueError):
        raise InputError(f"{where}: not a token count: {value!r}") from None


def _ledger_rows(name: str, text: str, fmt: str) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
    """(where each row is, the row) and the column names, from CSV, JSON Lines or a JSON array."""
    if fmt == "csv":
        reader = csv.DictReader(io.StringIO(text))
        rows = []
        while True:
            try:
                r = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                raise InputError(f"{name}: line {reader.line_num}: not CSV: {exc}") from None
            rows.append((f"line {reader.line_num}", r))
        return rows, list(reader.fieldnames or [])
    stripped = text.lstrip()
    items: Any = None
    if fmt == "json" or stripped.startswith("["):
        try:
            items = json.loads(text)
        except ValueError:
            raise InputError(f"{name}: not a JSON document") from None
    elif stripped.startswith("{"):  # one object wrapping the list ({"data": [...]}), or JSON Lines
        try:
            doc = json.loads(text)
        except ValueError:
            doc = None
        if isinstance(doc, dict) and isinstance(doc.get("data"), list):
            items = doc["data"]
    if items is not None:
        if isinstance(items, dict) and isinstance(items.get("data"), list):
            items = items["data"]
        if not isinstance(items, list):
            raise InputError(f"{name}: expected a JSON list of charge objects")
        out = []
        for i, obj in enumerate(items):
            if not isinstance(obj, dict):
                raise InputError(f"{name}: item {i + 1}: expected a JSON object")
            out.append((f"item {i + 1}", obj))
    else:
        out = []
        for i, line in enumerate(text.splitlines()):
            if line.strip():
                try:
                    obj = json.loads(line)
                except ValueError:
                    raise InputError(f"{name}: line {i + 1}: not JSON") from None
                if not isinstance(obj, dict):
                    raise InputError(f"{name}: line {i + 1}: expected a JSON object")
                out.append((f"line {i + 1}", obj))
    return out, sorted({k for _, r in out for k in r})


def load_ledger(source: str | Path, fmt: str | None = None, columns: dict[str, str] | None = None,
                charge_type: str | list[str] | tuple[str, ...] | None = "charge", text: str | None = None, *,
                default_columns: dict[str, str] | None = None, charge_if_amount: bool = False,
                amount_scale: Decimal = Decimal(1)) -> pd.DataFrame:
    """A billing ledger (CSV, JSON Lines or a JSON array) as charge rows in the canonical LEDGER_COLUMNS.

    `columns` (canonical -> source) must all be in the file; `default_columns` (a named mapping's) are used where
    the file has them; any other canonical column reads the column of its own name. Rows whose `type` holds one of
    `charge_type` (None: any), or have no type, are charges; so is any row with a non-zero amount when
    `charge_if_amount`. Amounts are multiplied by `amount_scale`."""
    name = str(source)
    if text is None:
        try:
            text = Path(source).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"{name}: cannot read the ledger: {getattr(exc, 'strerror', None) or exc}") from None
    if fmt in (None, "auto"):
        first = text.lstrip()[:1]
        fmt = "csv" if name.endswith(".csv") or (first not in "{[" and "," in text.split("\n", 1)[0]) else "jsonl"
    if fmt not in ("csv", "jsonl", "json"):
        raise InputError(f"{name}: ledger format: expected csv, jsonl or json, got {fmt!r}")
    mapping = {LEDGER_ALIASES.get(k, k): v for k, v in (columns or {}).items()}
    default_columns = {LEDGER_ALIASES.get(k, k): v for k, v in (default_columns or {}).items()}
    for canon in [*mapping, *default_columns]:
        if canon not in LEDGER_COLUMNS:
            raise InputError(f"{name}: ledger column mapping: unknown column {canon!r} "
                             f"(known: {', '.join(LEDGER_COLUMNS)})")
    raw_rows, header = _ledger_rows(name, text, fmt)
    have = set(header)
    source_of = {}
    for c in LEDGER_COLUMNS:
        default = default_columns.get(c)
        if c in mapping:
            source_of[c] = mapping[c]
        elif default is not None and (default in have or c not in have):
            source_of[c] = default
        else:
            source_of[c] = c
    if raw_rows and source_of["amount"] not in have:
        raise InputError(f"{name}: the ledger has no column {source_of['amount']!r} (for amount)")
    for canon, src in mapping.items():
        if raw_rows and src not in have:
            raise InputError(f"{name}: the ledger has no column {src!r} (mapped to {canon})")
    if raw_rows and not any(source_of[c] in have for c in LEDGER_JOIN_COLUMNS):
        raise InputError(f"{name}: the ledger has none of the columns "
                         + ", ".join(f"{source_of[c]!r} (for {c})" for c in LEDGER_JOIN_COLUMNS)
                         + ": a charge needs one to join a call")
    kinds = None if charge_type is None else {str(charge_type)} if isinstance(charge_type, str) else \
        {str(k) for k in charge_type}
    rows = []
    for where, r in raw_rows:
        row = {c: r.get(source_of[c]) for c in LEDGER_COLUMNS}
        typed = row["type"] is not None and row["type"] != "" and kinds is not None
        is_charge = not typed or str(row["type"]) in kinds
        if not is_charge and not charge_if_amount:
            continue
        if not is_charge and row["amount"] in (None, ""):
            continue
        row["amount"] = _dec(row["amount"], f"{name}: {where}: {source_of['amount']}") * amount_scale
        if not is_charge and row["amount"] == 0:
            continue
        for c in LEDGER_TOKEN_COLUMNS:
            row[c] = _count(row[c], f"{name}: {where}: {source_of[c]}")
        for c in ("request_id", "idempotency_key", "attempt_id", "upstream_request_id"):
            row[c] = None if row[c] in (None, "") else str(row[c])
        rows.append(row)
    import pandas as pd  # here: checking a scenario's ledger settings needs no pandas

    return pd.DataFrame(rows, columns=LEDGER_COLUMNS)
