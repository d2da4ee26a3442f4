"""Metrics in: what the run's `scrape.jsonl` says per target — counters' deltas and gauges' ranges."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: At most this many series per target in the summary; the rest are summed into one row per metric.
MAX_SERIES = 50
#: Different error messages kept per target.
MAX_ERRORS = 5
Key = tuple[str, tuple[tuple[str, str], ...]]


def _kind(name: str, family_type: str | None) -> str | None:
    """counter (deltas make sense), gauge (a level), or None (a sample to leave out: a `_created` time)."""
    if name.endswith("_created") and family_type in ("counter", "histogram", "summary"):
        return None
    if family_type == "counter":
        return "counter"
    if family_type == "histogram":
        return "counter" if name.endswith(("_bucket", "_count", "_sum")) else "gauge"
    if family_type == "summary":
        return "counter" if name.endswith(("_count", "_sum")) else "gauge"
    if family_type in ("gauge", "gaugehistogram", "info", "stateset"):
        return "gauge"
    return "counter" if name.endswith("_total") else "gauge"


def _read(path: Path) -> list[dict[str, Any]]:
    lines = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except ValueError:
            continue  # a line cut by a crash
        if isinstance(obj, dict) and isinstance(obj.get("target"), str):
            lines.append(obj)
    return lines


def _counter(points: list[tuple[int, float]]) -> tuple[float, int]:
    """(increase, resets) over (scrape index, value) points; a series absent from scrape 0 started at 0."""
    total, resets = 0.0, 0
    prev: float | None = None
    for i, v in points:
        if prev is None:
            total += v if i > 0 else 0.0
        elif v >= prev:
            total += v - prev
        else:  # a reset: the counter went down, so it counts from 0 again
            total += v
            resets += 1
        prev = v
    return total, resets


def _gauge(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"min": None, "mean": None, "max": None, "last": None, "n": 0}
    return {"min": min(values), "mean": sum(values) / len(values), "max": max(values), "last": values[-1],
            "n": len(values)}


def _target(lines: list[dict[str, Any]], max_series: int) -> dict[str, Any]:
    """The summary of one target's lines (in time order)."""
    ok = [ln for ln in lines if ln.get("ok")]
    errors: dict[str, int] = {}
    for ln in lines:
        if not ln.get("ok"):
            err = str(ln.get("error") or "error")
            if err in errors or len(errors) < MAX_ERRORS:
                errors[err] = errors.get(err, 0) + 1
    kinds: dict[str, str] = {}
    points: dict[Key, list[tuple[int, float]]] = {}
    for i, ln in enumerate(ok):
        types = ln.get("types") or {}
        for sample in ln.get("samples") or []:
            name, labels, value = sample[0], sample[1] or {}, sample[2]
            if not isinstance(value, int | float) or isinstance(value, bool):
                continue  # NaN and infinities are written as text: no arithmetic on them
            kind = _kind(name, types.get(name))
            if kind is None:
                continue
            kinds.setdefault(name, kind)
            points.setdefault((name, tuple(labels.items())), []).append((i, float(value)))
    series = []
    for (name, labels), pts in points.items():
        row: dict[str, Any] = {"metric": name, "labels": dict(labels), "type": kinds[name]}
        if kinds[name] == "counter":
            row["delta"], row["resets"] = _counter(pts)
            row["nonzero"] = row["delta"] != 0 or any(v != 0 for _, v in pts)
        else:
            row.update(_gauge([v for _, v in pts]))
            row["nonzero"] = any(v != 0 for _, v in pts)
        series.append((row, pts))
    total = len(series)
    note = None
    if total > max_series:  # keep the series that moved or hold a value, in the target's order; sum the rest
        order = sorted(range(total), key=lambda k: (not series[k][0]["nonzero"], k))
        keep = sorted(order[:max_series])
        rest = [series[k] for k in order[max_series:]]
        kept = [series[k][0] for k in keep]
        kept += _summed(rest, len(ok))
        note = (f"{total - max_series} of {total} series summed into one row per metric "
                f"(at most {max_series} kept; the ones that moved or hold a value first)")
    else:
        kept = [row for row, _ in series]
    for row in kept:
        row.pop("nonzero", None)
    return {
        "scrapes": len(lines), "ok": len(ok), "failed": len(lines) - len(ok),
        "errors": errors,
        "first_t": ok[0]["t"] if ok else None, "last_t": ok[-1]["t"] if ok else None,
        "span_s": (ok[-1]["t"] - ok[0]["t"]) if ok else None,
        "phases": sorted({str(ln.get("phase")) for ln in ok if ln.get("phase")}),
        "series_total": total, "series": kept, "note": note,
    }


def _summed(rest: list[tuple[dict[str, Any], list[tuple[int, float]]]], scrapes: int) -> list[dict[str, Any]]:
    """The left-over series, one row per metric: counters' deltas added, gauges added scrape by scrape."""
    by_metric: dict[str, list[tuple[dict[str, Any], list[tuple[int, float]]]]] = {}
    for row, pts in rest:
        by_metric.setdefault(row["metric"], []).append((row, pts))
    out = []
    for name, group in by_metric.items():
        kind = group[0][0]["type"]
        row: dict[str, Any] = {"metric": name, "labels": {"series": f"{len(group)} others summed"}, "type": kind,
                               "summed": len(group)}
        if kind == "counter":
            row["delta"] = sum(r["delta"] for r, _ in group)
            row["resets"] = sum(r["resets"] for r, _ in group)
        else:
            per_scrape: dict[int, float] = {}
            for _, pts in group:
                for i, v in pts:
                    per_scrape[i] = per_scrape.get(i, 0.0) + v
            row.update(_gauge([per_scrape[i] for i in sorted(per_scrape) if i < scrapes]))
        out.append(row)
    return out


def scrape_summary(run_dir: str | Path, max_series: int = MAX_SERIES) -> dict[str, Any] | None:
    """Per scrape target of the run: scrapes ok and failed, counters' deltas, gauges' min/mean/max/last."""
    path = Path(run_dir) / "scrape.jsonl"
    if not path.is_file():
        return None
    lines = _read(path)
    if not lines:
        return None
    by_target: dict[str, list[dict[str, Any]]] = {}
    for ln in sorted(lines, key=lambda ln: float(ln.get("t") or 0)):
        by_target.setdefault(ln["target"], []).append(ln)
    return {"max_series": max_series,
            "targets": {name: _target(tl, max_series) for name, tl in by_target.items()}}


def _num(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return f"{int(v):,}"
    if isinstance(v, float):
        return f"{v:,.6g}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def _labels(labels: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in labels.items()) or "–"


def scrape_table(summary: dict[str, Any] | None) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) for the report: the targets, then one table per target that answered."""
    if not summary or not summary.get("targets"):
        return []
    targets = summary["targets"]
    out: list[tuple[str, list[str], list[list[str]]]] = [(
        "Scraped metrics: targets", ["target", "scrapes ok / total", "span", "series", "errors", "note"],
        [[name, f"{t['ok']} / {t['scrapes']}", "–" if t["span_s"] is None else f"{t['span_s']:.1f} s",
          _num(t["series_total"]),
          "; ".join(f"{e} (x{n})" for e, n in t["errors"].items()) or "–", t["note"] or "–"]
         for name, t in targets.items()])]
    for name, t in targets.items():
        if not t["series"]:
            continue
        rows = []
        for s in t["series"]:
            if s["type"] == "counter":
                resets = f" ({s['resets']} resets)" if s.get("resets") else ""
                rows.append([s["metric"], _labels(s["labels"]), "counter", _num(s["delta"]) + resets,
                             "–", "–", "–", "–"])
            else:
                rows.append([s["metric"], _labels(s["labels"]), "gauge", "–", _num(s["min"]), _num(s["mean"]),
                             _num(s["max"]), _num(s["last"])])
        out.append((f"Scraped metrics: {name}", ["metric", "labels", "type", "increase over the run", "min",
                                                 "mean", "max", "last"], rows))
    return out
