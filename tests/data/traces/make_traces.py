"""Writes the small sample traces in every supported format (tests/data/traces/) and the shipped
example (scenarios/traces/azure-sample.csv). Deterministic: `python tests/data/traces/make_traces.py`.

Arrivals: Poisson background traffic plus a few bursts (about 14 arrivals in 0.4 s); timestamps are distinct at millisecond
resolution. Input tokens are log-normal (40..2500), output tokens log-normal (2..120).
"""

from __future__ import annotations

import csv
import json
import math
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent.parent


def arrivals(rng: random.Random, span_s: float, rate: float, bursts: int, burst_n: int) -> list[float]:
    """Sorted arrival times (s), distinct at 1 ms: Poisson at `rate` plus `bursts` bursts of `burst_n`."""
    ts: list[float] = []
    t = rng.uniform(0.0, 0.05)
    while t < span_s:
        ts.append(t)
        t += rng.expovariate(rate)
    for b in range(bursts):
        at = span_s * (b + 0.5) / bursts + rng.uniform(-0.3, 0.3)
        ts += [at + rng.uniform(0.0, 0.4) for _ in range(burst_n)]
    ms = sorted(round(x * 1000) for x in ts if 0 <= x < span_s)
    out: list[int] = []
    for m in ms:  # distinct milliseconds
        out.append(max(m, out[-1] + 1) if out else m)
    return [m / 1000 for m in out]


def tokens(rng: random.Random, median: float, sigma: float, lo: int, hi: int) -> int:
    return max(lo, min(hi, round(rng.lognormvariate(math.log(median), sigma))))


def rows(seed: int, span_s: float = 6.0, rate: float = 8.0, bursts: int = 3, burst_n: int = 14) -> list[dict]:
    rng = random.Random(seed)
    return [{"t": t, "in": tokens(rng, 250, 0.9, 40, 2500), "out": tokens(rng, 24, 0.7, 2, 120)}
            for t in arrivals(rng, span_s, rate, bursts, burst_n)]


def azure_stamp(t0: datetime, t: float) -> str:
    d = t0 + timedelta(seconds=t)
    return d.strftime("%Y-%m-%d %H:%M:%S.") + f"{d.microsecond:06d}0"  # 7 digits, as the Azure traces


def write_azure(path: Path, data: list[dict]) -> None:
    t0 = datetime(2023, 11, 16, 18, 15, 46, 680590, tzinfo=UTC)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["TIMESTAMP", "ContextTokens", "GeneratedTokens"])
        for r in data:
            w.writerow([azure_stamp(t0, r["t"]), r["in"], r["out"]])


def write_mooncake(path: Path, data: list[dict], seed: int) -> None:
    rng = random.Random(seed)
    with open(path, "w") as f:
        for r in data:
            blocks = math.ceil(r["in"] / 512)
            hashes = [rng.randrange(10_000) for _ in range(blocks)]
            f.write(json.dumps({"timestamp": round(r["t"] * 1000), "input_length": r["in"],
                                "output_length": r["out"], "hash_ids": hashes}) + "\n")


def write_burstgpt(path: Path, data: list[dict], seed: int) -> None:
    rng = random.Random(seed)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Timestamp", "Model", "Request tokens", "Response tokens", "Total tokens", "Log Type"])
        for i, r in enumerate(data):
            model = "GPT-4" if rng.random() < 0.3 else "ChatGPT"
            out = 0 if i in (7, 40) else r["out"]  # BurstGPT's failed requests have 0 response tokens
            log = "API log" if rng.random() < 0.5 else "Conversation log"
            w.writerow([f"{r['t']:.3f}", model, r["in"], out, r["in"] + out, log])


ENDPOINT_MODELS = {"chat": "gpt-4o-mini", "messages": "claude-3-5-sonnet", "gemini": "gemini-2.5-flash"}


def write_generic_jsonl(path: Path, data: list[dict], seed: int) -> None:
    rng = random.Random(seed)
    with open(path, "w") as f:
        for r in data:
            api = rng.choices(list(ENDPOINT_MODELS), weights=[3, 1, 1])[0]
            f.write(json.dumps({"arrival_ms": round(r["t"] * 1000, 3), "prompt": r["in"], "completion": r["out"],
                                "model_name": ENDPOINT_MODELS[api], "api": api}) + "\n")


def write_generic_csv(path: Path, data: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["when_s", "in_tok", "out_tok"])
        for r in data:
            w.writerow([f"{r['t']:.3f}", r["in"], r["out"]])


def main() -> None:
    write_azure(HERE / "azure.csv", rows(11))
    write_mooncake(HERE / "mooncake.jsonl", rows(12), 12)
    write_burstgpt(HERE / "burstgpt.csv", rows(13), 13)
    write_generic_jsonl(HERE / "generic.jsonl", rows(14), 14)
    write_generic_csv(HERE / "generic.csv", rows(15))
    (ROOT / "scenarios" / "traces").mkdir(exist_ok=True)
    write_azure(ROOT / "scenarios" / "traces" / "azure-sample.csv", rows(21, span_s=30.0, rate=6.0, bursts=4,
                                                                         burst_n=20))


if __name__ == "__main__":
    main()
