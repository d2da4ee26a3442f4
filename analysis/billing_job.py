"""The billing audit in a helper process, beside the metrics: audit_batches over the run's columnar copy."""

from __future__ import annotations

import pickle
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ttformats.prices import PriceSheet

from . import columnar
from .billing import Policy
from .billing_stream import AUDIT_COLUMNS, LedgerStream, audit_batches
from .helper import start as start_helper
from .load import InputError, LoadReport

BATCH_ROWS = 65_536  # records read at a time
#: Below this many records the audit runs here when asked: a helper's start (a Python importing pandas and pyarrow,
#: about 1.5 s) costs more than the audit of a small run.
HELPER_MIN_ROWS = 50_000


def audit_run(run_dir: str | Path, ledger: LedgerStream, prices: PriceSheet, policy: Policy,
              lost_workers: set[int], col: columnar.Columnar | None = None) -> dict[str, Any]:
    """audit_batches over the records of a run folder (its columnar copy, or `col`) and a ledger."""
    if col is not None:
        return audit_batches(lambda: (b.frame for b in col.batches(list(AUDIT_COLUMNS), BATCH_ROWS)), ledger,
                             prices, policy, lost_workers)
    with columnar.ensure(run_dir, LoadReport()) as own:
        return audit_run(run_dir, ledger, prices, policy, lost_workers, own)


class AuditJob:
    """audit_run in a helper process on the second CPU, started now, its result taken later (result()); where no
    helper can run, or it dies, the audit runs here when the result is asked for."""

    def __init__(self, run_dir: Path, ledger: LedgerStream, prices: PriceSheet, policy: Policy,
                 lost_workers: set[int], col: columnar.Columnar) -> None:
        self.args = (run_dir, ledger, prices, policy, lost_workers)
        self.col = col
        self.folder = tempfile.mkdtemp(prefix="ttbench-audit-")
        self.out = Path(self.folder) / "result.pickle"
        spec = Path(self.folder) / "spec.pickle"
        spec.write_bytes(pickle.dumps(self.args, protocol=pickle.HIGHEST_PROTOCOL))
        self.proc = (start_helper("billing_job", "_main", str(spec), str(self.out))
                     if col.shared and col.rows >= HELPER_MIN_ROWS else None)

    def result(self) -> dict[str, Any]:
        """The audit's result (an InputError of the ledger is raised here)."""
        try:
            if self.proc is not None:
                self.proc.wait()
                try:
                    kind, value = pickle.loads(self.out.read_bytes())
                except (OSError, pickle.UnpicklingError, EOFError, ValueError):
                    kind, value = None, None
                if kind == "ok":
                    return value
                if kind == "input":
                    raise InputError(value)
            return audit_run(*self.args, col=self.col)
        finally:
            self.close()

    def close(self) -> None:
        """Stop the helper, if it still runs, and remove its files."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


def _main(argv: list[str]) -> None:
    """The helper process: audit_run of a pickled spec (argv[0]), its result pickled to argv[1]."""
    args = pickle.loads(Path(argv[0]).read_bytes())
    try:
        out: tuple[str, Any] = ("ok", audit_run(*args))
    except InputError as exc:
        out = ("input", str(exc))
    tmp = Path(argv[1] + ".tmp")
    tmp.write_bytes(pickle.dumps(out, protocol=pickle.HIGHEST_PROTOCOL))
    tmp.replace(argv[1])



