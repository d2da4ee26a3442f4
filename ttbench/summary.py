"""The few lines `ttbench run` and `ttbench report` print when the analysis is done."""

from __future__ import annotations

import sys


def print_summary(summary: dict, run_dir: str) -> None:
    """A few headline lines on stdout, warnings and breached gates on stderr."""
    for w in summary.get("warnings", []):
        print(f"ttbench: warning: {w}", file=sys.stderr)
    h = summary.get("harness") or {}
    if h.get("bottleneck_warning"):
        print(f"ttbench: {h['bottleneck_warning']}", file=sys.stderr)
    o = (summary.get("metrics") or {}).get("overall")
    if o:
        def num(v: object, spec: str) -> str:
            return format(v, spec) if isinstance(v, int | float) and v == v else "-"

        t = o.get("ttft_ms") or {}
        ttft = "-" if t.get("p50") is None else f"{num(t['p50'], '.0f')}/{num(t.get('p95'), '.0f')} ms"
        print(f"calls {o.get('calls', 0)}  ok {o.get('successes', 0)}  error rate {num(o.get('error_rate'), '.3f')}  "
              f"req/s {num(o.get('requests_per_s'), '.2f')}  TTFT p50/p95 {ttft}  "
              f"goodput share {num(o.get('goodput_share'), '.3f')}")
    b = summary.get("billing")
    if b and b.get("accuracy") is not None:
        found = ", ".join(f"{k} {v}" for k, v in b["counts"].items() if v) or "none"
        print(f"billing accuracy {b['accuracy']:.4f}  findings: {found}")
    c = summary.get("capacity")
    if c:
        print(f"max sustainable throughput {c['max_sustainable_rps']} req/s")
    for g in summary.get("gates", []):
        if not g["ok"]:
            why = f": {g['reason']}" if g.get("reason") else ""
            print(f"ttbench: gate breached: {g['gate']} = {g['value']} ({g['sense']} {g['threshold']}){why}",
                  file=sys.stderr)
    print(f"report: {run_dir}/report.html, {run_dir}/summary.json")
