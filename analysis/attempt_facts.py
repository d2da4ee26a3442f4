"""Run-wide facts about the attempt records that the trust checks and the harness figures need, from batches."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import exact
from .callscan import CallIndex, Source, index_calls
from .exact import GroupedQuantiles

#: failed attempts the gateway may have billed before the failure (a retry of them should get the replay)
MAYBE_BILLED_KINDS = ("truncated", "reset", "timeout", "stream_error", "protocol", "http_5xx")
UNBILLED_5XX = (503, 529)  # overloaded / unavailable: refused before any work
COLUMNS = ["call_id", "attempt", "final", "t_start", "status", "endpoint", "request_id", "replayed",
           "schedule_lag_ms", "error_kind", "sent", "turn", "tenant"]


@dataclass
class AttemptFacts:
    """Counts over every attempt record."""

    rows: int = 0
    answered: int = 0  # got response headers (model listings aside)
    answered_with_id: int = 0
    replayed_any: bool = False
    first_attempt_calls: int = 0  # distinct call ids with a first attempt
    maybe_billed_retried_calls: int = 0  # retried after a failure that may have been billed
    lag: dict[str, float] | None = None  # schedule lag: p50, p99, max (ms)
    turns: bool = False  # some record is a turn of a conversation
    tenants: bool = False  # some record names its tenant


def _maybe_billed(f: pd.DataFrame) -> np.ndarray:
    kind = f["error_kind"]
    status = pd.to_numeric(f["status"], errors="coerce")
    maybe = kind.isin(MAYBE_BILLED_KINDS) & f["sent"].astype(bool)
    maybe &= ~(kind.eq("http_5xx") & status.isin(UNBILLED_5XX))
    return maybe.to_numpy(dtype=bool)


class FactsScan:
    """The facts, gathered from attempt batches as another pass reads them (batch()), or by a pass of their own
    (attempt_facts)."""

    def __init__(self, idx: CallIndex) -> None:
        self.idx = idx
        self.out = AttemptFacts()
        self.lag = GroupedQuantiles(pcts=(50, 99), direct=idx.rows <= exact.DIRECT_ROWS)
        self.multi_first: set[str] = set()
        self.multi_rows: list[pd.DataFrame] = []
        self.fed = False  # some pass gave batch() its batches

    def read(self, source: Source) -> None:
        """batch() over a pass of its own."""
        for b in source(COLUMNS):
            f = b.frame
            has_id = f["call_id"].notna().to_numpy()
            multi = np.zeros(len(f), dtype=bool)
            multi[has_id] = self.idx.is_multi(f.loc[has_id, "call_id"])
            self.batch(f, multi)

    def batch(self, f: pd.DataFrame, multi: np.ndarray) -> None:
        """One batch of attempt records (COLUMNS at least) and which of them are of multi-attempt calls."""
        out = self.out
        self.fed = True
        out.rows += len(f)
        answered = f["status"].notna() & f["endpoint"].ne("models")
        out.answered += int(answered.sum())
        out.answered_with_id += int((answered & f["request_id"].notna()).sum())
        out.replayed_any = out.replayed_any or bool(f["replayed"].fillna(False).astype(bool).any())
        self.lag.add(0, f["schedule_lag_ms"].to_numpy(dtype=np.float64))
        out.turns = out.turns or bool(f["turn"].notna().any())
        out.tenants = out.tenants or bool(f["tenant"].notna().any())
        has_id = f["call_id"].notna().to_numpy()
        first = (f["attempt"] == 1).to_numpy()
        out.first_attempt_calls += int((first & has_id & ~multi).sum())
        if (multi & first).any():
            self.multi_first.update(f.loc[multi & first, "call_id"].tolist())
        if multi.any():
            self.multi_rows.append(f.loc[multi, ["call_id", "attempt", "error_kind", "status", "sent"]])

    def finish(self, source: Source) -> AttemptFacts:
        """The facts, once every batch went through batch() (`source` for the schedule lag's second pass, which a
        run of more than DIRECT_ROWS records needs)."""
        out = self.out
        out.first_attempt_calls += len(self.multi_first)
        if self.multi_rows:
            att = pd.concat(self.multi_rows, ignore_index=True)
            maybe = _maybe_billed(att)
            if maybe.any():
                last = att.groupby("call_id")["attempt"].transform("max")
                out.maybe_billed_retried_calls = int(att.loc[maybe & (att["attempt"] < last).to_numpy(), "call_id"]
                                                     .nunique())
        lag = self.lag
        lag.start_second_pass()
        if not lag.direct:
            for b in source(["schedule_lag_ms"]):
                lag.add(0, b.frame["schedule_lag_ms"].to_numpy(dtype=np.float64))
        d = lag.dist(0)
        if d["n"]:
            out.lag = {"p50": d["p50"], "p99": d["p99"], "max": d["max"]}
        return out


def attempt_facts(source: Source, idx: CallIndex | None = None) -> AttemptFacts:
    """The facts, in a pass of their own over a few columns (and a second for the schedule lag's percentiles, in
    a run of more than DIRECT_ROWS records)."""
    idx = idx or index_calls(source, 0.0)
    scan = FactsScan(idx)
    scan.read(source)
    return scan.finish(source)


def facts_of(att: pd.DataFrame) -> AttemptFacts:
    """The facts of an attempt frame held in memory."""
    from .callscan import frame_batches

    return attempt_facts(frame_batches(att, max(len(att), 1), chunks=False))

