"""A worker's records on their way to the master: shipped in bounded batches with at most a few unacknowledged at a
time, so the master's queue stays short (its heartbeats and its clock are never starved); what the master cannot
take yet waits on the worker, counted, past a bound in a spill file on the worker's disk. Nothing is dropped, and
the calls never wait for it."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections import deque
from collections.abc import Callable
from typing import IO, Any

from ttformats.jsonline import json_line

#: Records in one message: the master's work per message stays a small part of a second.
MAX_BATCH = 200
#: Batches shipped and not yet acknowledged by the master, until the master says otherwise (`window`).
MAX_UNACKED = 2
#: The master keeps about this much of its own work queued over all its workers: enough that it never waits for a
#: round trip, little enough that a heartbeat queued behind it is read in time (Locust's liveness is 3 s).
QUEUE_S = 1.0


def window(workers: int, s_per_record: float) -> int:
    """The unacknowledged batches the master allows each of `workers` workers, given its own time per record."""
    return max(1, min(16, int(QUEUE_S / (max(s_per_record, 1e-6) * MAX_BATCH * max(1, workers)))))
#: Records waiting in memory before they go to the spill file.
MAX_HELD = 50_000


class Shipper:
    """A worker's record path to the master (the same calls as RecordSink: add, flush, close, written)."""

    def __init__(self, ship: Callable[[list[dict[str, Any]], dict[str, int]], None], max_batch: int = MAX_BATCH,
                 max_unacked: int = MAX_UNACKED, max_held: int = MAX_HELD, spill_dir: str | None = None) -> None:
        self.ship = ship  # sends one message: a batch (maybe empty) and this shipper's counts
        self.max_batch, self.max_unacked, self.max_held = max_batch, max_unacked, max_held
        self.spill_dir = spill_dir
        self._buffer: deque[dict[str, Any]] = deque()
        self._spill_path: str | None = None
        self._spill_out: IO[str] | None = None
        self._spill_in: IO[str] | None = None
        self._spill_unread = 0
        self._own_dir: str | None = None
        self.unacked = 0    # batches shipped, not yet acknowledged
        self.written = 0    # records shipped
        self.acked = 0      # records the master acknowledged
        self.held_peak = 0  # the most records waiting here at once, after a flush
        self.spilled = 0    # records that went through the spill file
        self.closed = False
        self.left_behind: str | None = None  # where records that never reached the master are, if any

    def pending(self) -> int:
        """Records not shipped yet (in memory and in the spill file)."""
        return len(self._buffer) + self._spill_unread

    def counts(self) -> dict[str, int]:
        """What the master is told with every message."""
        return {"pending": self.pending(), "held_peak": self.held_peak, "spilled": self.spilled,
                "shipped": self.written}

    def add(self, record: dict[str, Any]) -> None:
        """Queue one record (after close: straight to the file of records left behind)."""
        if self.closed and self.left_behind is not None:
            with open(self.left_behind, "a", encoding="utf-8") as f:
                f.write(json_line(record))
            return
        self._buffer.append(record)
        if self.closed:
            self._leave_behind()
        elif len(self._buffer) > self.max_held:
            self._spill()

    def on_ack(self, records: int, window: int | None = None) -> None:
        """The master took a batch (and says how many may be on their way to it): ship the next ones that wait."""
        self.unacked = max(0, self.unacked - 1)
        self.acked += records
        if window is not None:
            self.max_unacked = max(1, window)
        if self.pending() and not self.closed:
            self.flush()

    def flush(self, always: bool = False) -> None:
        """Ship what waits, as far as the unacknowledged window allows (`always`: a message even with no records,
        for the worker's state)."""
        sent = False
        while self.unacked < self.max_unacked:
            batch = self._next_batch()
            if not batch:
                break
            self.unacked += 1
            self.written += len(batch)
            self.ship(batch, self.counts())
            sent = True
        self.held_peak = max(self.held_peak, self.pending())
        if always and not sent:
            self.ship([], self.counts())
        if not self._spill_unread and self._spill_path is not None and self._spill_out is not None:
            self._drop_spill()

    def close(self) -> None:
        """Last shipment; what the master can no longer take is written to a file on this worker, loudly."""
        self.flush()
        self.closed = True
        if self.pending():
            self._leave_behind()

    # the spill file ---------------------------------------------------------------------------
    def _open_spill(self) -> IO[str]:
        if self._spill_out is None:
            if self.spill_dir is None:
                self._own_dir = tempfile.mkdtemp(prefix="ttbench-spill-")
            folder = self.spill_dir or self._own_dir
            assert folder is not None
            os.makedirs(folder, exist_ok=True)
            self._spill_path = os.path.join(folder, f"records-spill-{os.getpid()}.jsonl")
            self._spill_out = open(self._spill_path, "a", encoding="utf-8")  # noqa: SIM115
            self._spill_in = open(self._spill_path, encoding="utf-8")  # noqa: SIM115
        return self._spill_out

    def _spill(self) -> None:
        out = self._open_spill()
        n = len(self._buffer)
        out.write("".join(map(json_line, self._buffer)))
        out.flush()
        self._buffer.clear()
        self._spill_unread += n
        self.spilled += n

    def _next_batch(self) -> list[dict[str, Any]]:
        if self._spill_unread:  # the spill file holds the oldest records
            assert self._spill_in is not None
            batch = []
            while self._spill_unread and len(batch) < self.max_batch:
                batch.append(json.loads(self._spill_in.readline()))
                self._spill_unread -= 1
            return batch
        n = min(self.max_batch, len(self._buffer))
        return [self._buffer.popleft() for _ in range(n)]

    def _drop_spill(self) -> None:
        for f in (self._spill_out, self._spill_in):
            if f is not None:
                f.close()
        self._spill_out = self._spill_in = None
        if self._spill_path is not None:
            try:
                os.remove(self._spill_path)
            except OSError:
                pass
        self._spill_path = None
        if self._own_dir is not None:
            shutil.rmtree(self._own_dir, ignore_errors=True)
            self._own_dir = None

    def _leave_behind(self) -> None:
        """Everything still pending, in order, into the spill file, which then stays; said on stderr."""
        if self._buffer:
            self._spill()
        if self._spill_out is not None:
            self._spill_out.flush()
        n = self._spill_unread
        if not n:
            return
        # the unread tail of the spill file is what never reached the master: keep exactly that
        assert self._spill_in is not None and self._spill_path is not None
        rest = self._spill_in.read()
        for f in (self._spill_out, self._spill_in):
            if f is not None:
                f.close()
        self._spill_out = self._spill_in = None
        path = self._spill_path
        with open(path, "w", encoding="utf-8") as f:
            f.write(rest)
        self._spill_path, self._own_dir = None, None  # kept: the user needs it
        self._spill_unread = 0
        self.left_behind = path
        print(f"ttbench: warning: {n} records never reached the master; they are in {path} (append them to the run's "
              "records.jsonl)", file=sys.stderr, flush=True)
