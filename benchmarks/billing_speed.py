"""How fast the billing audit runs at scale: analysis.billing.audit against analysis.billing_stream.audit_batches.

For each --records size, a synthetic chat-mix run (benchmarks/analysis_speed.write_run: records.jsonl, and
ledger.csv with one charge per successful call plus billing errors planted at random, and prices.yaml) is
generated, and the audit's columns of its records are written once as a columnar copy on disk (pickled frames of
--batch rows, read back as audit_batches reads its pieces). Then, each in a child process of its own:

  audit          today's audit(): load_records and load_ledger first (not timed), then audit() (timed);
  audit_batches  audit_batches() over the copy and a LedgerStream of ledger.csv (timed whole: reading included);
  read           reading the copy alone (what the pieces cost by themselves).

It prints the time, the CPU time and the peak resident memory of each (VmHWM; for audit_batches also its helper
processes, from getrusage(RUSAGE_CHILDREN)), and checks that both give the same result (json-identical).

With --replicas R, the copy and the ledger are made of R copies of the generated run with every id suffixed by
the copy's number (-r0, -r1, ...): a run R times as big whose findings are exactly R times the original's (checked),
for sizes audit() cannot hold (10,000,000 records: --records 1000000 --replicas 10 --skip-audit).

Usage:
    python benchmarks/billing_speed.py [--records 200000 1000000] [--replicas 1] [--skip-audit] [--batch 200000]
                                       [--seed 1] [--keep] [--out DIR] [--workers N]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, positive_int  # noqa: E402

IDS = ("call_id", "attempt_id", "request_id", "idempotency_key", "original_request_id")
LEDGER_IDS = (2, 3, 4)  # request_id, idempotency_key, client_attempt_id in the simulator's CSV columns


def _hwm() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def write_copy(run: Path, out: Path, replicas: int, batch: int) -> dict[str, Any]:
    """The audit's columns of run/records.jsonl as pickled frames in out/, and out/ledger.csv (R copies)."""
    from analysis.billing_stream import AUDIT_COLUMNS
    from analysis.records import load_records

    out.mkdir(parents=True, exist_ok=True)
    att = load_records(run / "records.jsonl")
    att = att[[c for c in AUDIT_COLUMNS if c in att.columns]].copy()
    n = 0
    for r in range(replicas):
        rep = att.copy()
        if replicas > 1:
            for c in IDS:
                rep[c] = rep[c] + f"-r{r}"  # a missing id stays missing
        for i in range(0, len(rep), batch):
            with open(out / f"att-{n:05d}.pickle", "wb") as f:
                pickle.dump(rep.iloc[i:i + batch].copy(), f, protocol=pickle.HIGHEST_PROTOCOL)
            n += 1
    if replicas == 1:
        shutil.copyfile(run / "ledger.csv", out / "ledger.csv")
    else:
        lines = (run / "ledger.csv").read_text().splitlines()
        with open(out / "ledger.csv", "w") as f:
            f.write(lines[0] + "\n")
            rows = [line.split(",") for line in lines[1:]]
            for r in range(replicas):
                for x in rows:
                    y = list(x)
                    for k in LEDGER_IDS:
                        if y[k]:
                            y[k] += f"-r{r}"
                    f.write(",".join(y) + "\n")
    shutil.copyfile(run / "prices.yaml", out / "prices.yaml")
    return {"records": len(att) * replicas, "batches": n}


def child(mode: str, folder: str, workers: int | None) -> int:
    """One measurement (in its own process); prints a JSON line."""
    from analysis.billing import Policy, audit
    from analysis.billing_stream import LedgerStream, audit_batches
    from ttformats.prices import load_price_sheet

    d = Path(folder)
    files = sorted(d.glob("att-*.pickle"))
    sheet = load_price_sheet(d / "prices.yaml")
    tt_sim = {"default_columns": {"attempt_id": "client_attempt_id"}}

    def batches():
        for p in files:
            with open(p, "rb") as f:
                yield pickle.load(f)

    out: dict[str, Any] = {"mode": mode}
    if mode == "read":
        t0, c0 = time.perf_counter(), time.process_time()
        rows = sum(len(df) for df in batches())
        out.update(rows=rows)
    elif mode == "audit":
        import pandas as pd

        from analysis.ledger import load_ledger

        att = pd.concat(list(batches()), ignore_index=True)
        charges = load_ledger(d / "ledger.csv", **tt_sim)
        t0, c0 = time.perf_counter(), time.process_time()
        result = audit(att, charges, sheet, Policy(), set())
    else:
        stats: dict[str, Any] = {}
        t0, c0 = time.perf_counter(), time.process_time()
        result = audit_batches(batches, LedgerStream(d / "ledger.csv", **tt_sim), sheet, Policy(), set(),
                               workers=workers, stats=stats)
        out["stats"] = {k: round(v, 3) if isinstance(v, float) else v for k, v in stats.items()}
    out.update(wall_s=time.perf_counter() - t0, cpu_s=time.process_time() - c0, hwm=_hwm(),
               children_hwm=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)
    if mode != "read":
        with open(d / f"result-{mode}.json", "w") as f:
            json.dump(result, f, default=str)
        out["counts"] = result["counts"]
    print(json.dumps(out))
    return 0


def measure(mode: str, folder: Path, workers: int | None) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", mode, str(folder)]
    if workers is not None:
        cmd += ["--workers", str(workers)]
    res = subprocess.run(cmd, cwd=str(ROOT), capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _mib(b: float) -> str:
    return f"{b / 2**20:,.0f} MiB"


def main(argv: list[str] | None = None) -> int:
    """Generate, measure in children, print."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--records", type=positive_int, nargs="+", default=[200_000, 1_000_000])
    parser.add_argument("--replicas", type=positive_int, default=1)
    parser.add_argument("--skip-audit", action="store_true", help="do not run today's audit() (too big for it)")
    parser.add_argument("--batch", type=positive_int, default=200_000, help="rows per piece of the copy")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, help="audit_batches' workers (default: its own choice)")
    parser.add_argument("--out", type=Path, help="generate into this folder and keep it")
    parser.add_argument("--keep", action="store_true", help="keep the generated folders")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.child[0], args.child[1], args.workers)
    from analysis_speed import write_run

    base = args.out or Path(tempfile.mkdtemp(prefix="billing_speed_"))
    rc = 0
    try:
        for n in args.records:
            run = base / f"run-{n}"
            if not (run / "ledger.csv").exists():
                print(f"generating {n:,} records in {run} ...", file=sys.stderr, flush=True)
                write_run(run, n, 3600.0, args.seed)
            copy = base / f"copy-{n}x{args.replicas}"
            if not (copy / "ledger.csv").exists():
                print(f"writing the columnar copy {copy} ...", file=sys.stderr, flush=True)
                write_copy(run, copy, args.replicas, args.batch)
            total = n * args.replicas
            read = measure("read", copy, None)
            stream = measure("audit_batches", copy, args.workers)
            print(f"\n{total:,} records ({n:,} x {args.replicas}), ledger.csv "
                  f"{(copy / 'ledger.csv').stat().st_size / 2**20:,.0f} MiB, load average "
                  f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
            print(f"  reading the copy      {read['wall_s']:7.2f} s   (CPU {read['cpu_s']:.2f} s)   peak "
                  f"{_mib(read['hwm'])}")
            st = stream["stats"]
            for unit in ("s", "cpu"):
                st[f"partitions_{unit}"] = sum(st.get(f"{k}_{unit}", 0.0) for k in (
                    "partitions", "p_group", "p_charges", "p_common", "p_exact"))
            print(f"  audit_batches         {stream['wall_s']:7.2f} s   (CPU {stream['cpu_s']:.2f} s in the main "
                  f"process)   peak {_mib(stream['hwm'])}, helpers' peak {_mib(stream['children_hwm'])}")
            print("                        " + ", ".join(f"{k} {st[k + '_s']:.1f} s (CPU {st[k + '_cpu']:.1f})"
                                                       for k in ("records", "ledger", "side", "partitions")
                                                       if k + "_s" in st)
                  + f"; K={st.get('partitions')}, per-call path {st.get('exact_calls'):,} calls")
            if not args.skip_audit:
                old = measure("audit", copy, None)
                print(f"  audit()               {old['wall_s']:7.2f} s   (CPU {old['cpu_s']:.2f} s)   peak "
                      f"{_mib(old['hwm'])} (the whole frames loaded)")
                same = (copy / "result-audit.json").read_text() == (copy / "result-audit_batches.json").read_text()
                print(f"  same result           {'yes' if same else 'NO'}")
                rc |= 0 if same else 1
            elif args.replicas > 1:
                single = base / f"copy-{n}x1"
                if not (single / "ledger.csv").exists():
                    write_copy(run, single, 1, args.batch)
                one = measure("audit_batches", single, args.workers)
                same = all(stream["counts"][k] == args.replicas * one["counts"][k] for k in one["counts"])
                print(f"  findings {args.replicas} x those of one copy: {'yes' if same else 'NO'}")
                rc |= 0 if same else 1
    finally:
        if not (args.keep or args.out):
            shutil.rmtree(base, ignore_errors=True)
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
