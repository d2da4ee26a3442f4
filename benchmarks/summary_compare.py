"""Comparing a summary.json against a reference one: counts exactly, floats within a relative tolerance.

The rule (issue 15, "analysis at scale"): the same keys everywhere; ints, bools, strings and nulls equal exactly
(an int must stay an int: counts are exact); floats within REL_TOL relative, or ABS_TOL absolute near zero (a
reference float may come back as an int of that value); lists element by element, of the same length. Keys that
legitimately differ between two analyses of the same run folder are skipped by their exact key path (VOLATILE).

Used by benchmarks/analysis_speed.py (--check-reference) and tests/test_analysis_reference.py; it imports nothing
of the project.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

REL_TOL = 1e-9
ABS_TOL = 1e-12

#: key paths whose values may differ between two analyses of the same records, with the reason why; skipped.
#: Found by analysing one run folder twice, copied to two different folders (and from two working directories), and
#: diffing the summaries: they were byte-identical (no absolute paths, no wall-clock times: billing.ledger.source
#: is the scenario's `ledger.file` as written), so nothing is skipped. Add a path here only with such a reason.
VOLATILE: dict[tuple[Any, ...], str] = {}


def _where(path: tuple[Any, ...]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".") or "(top)"


def _short(v: Any) -> str:
    text = json.dumps(v, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


#: the keys each summary version added (analysis/report.py SUMMARY_VERSION), as key paths, "*" standing for any one
#: key (a group's name): a summary of an earlier version lacks them, and a comparison with one lists them instead
#: of counting them
ADDED_BY_VERSION: dict[int, tuple[tuple[str, ...], ...]] = {
    4: (("timing",),
        *((*where, key) for where in (("metrics", "overall"), ("metrics", "groups", "*"))
          for key in ("itl_per_request_p50_ms", "itl_per_request_p99_ms", "itl_per_request_max_ms",
                      "summary_timing_calls"))),
}


def _matches(path: tuple[Any, ...], pattern: tuple[str, ...]) -> bool:
    """Whether a key path is the pattern's, "*" matching any one key."""
    return len(path) == len(pattern) and all(p == "*" or p == k for k, p in zip(path, pattern, strict=True))


def differences(ref: Any, new: Any, rel_tol: float = REL_TOL, abs_tol: float = ABS_TOL,
                skip: dict[tuple[Any, ...], str] | None = None, limit: int | None = None,
                added: list[str] | None = None, may_add: tuple[tuple[str, ...], ...] = ()) -> list[str]:
    """Every difference between the reference and the new document (one line each, at most `limit`), under the
    comparison rule above; key paths in `skip` (default VOLATILE) are not compared. A key only the new document
    has whose path is one of `may_add` (a later summary version's keys, as ADDED_BY_VERSION) is put in `added` (a
    list) instead of counted as a difference."""
    skip = VOLATILE if skip is None else skip
    out: list[str] = []

    def walk(a: Any, b: Any, path: tuple[Any, ...]) -> None:
        if limit is not None and len(out) >= limit:
            return
        if path in skip:
            return
        at = _where(path)
        if isinstance(a, dict):
            if not isinstance(b, dict):
                out.append(f"{at}: reference is an object, new is {_short(b)}")
                return
            for k in a:
                if k not in b:
                    out.append(f"{at}: key {k!r} missing from the new summary")
            for k in b:
                if k not in a:
                    if added is not None and any(_matches((*path, k), pat) for pat in may_add):
                        added.append(_where((*path, k)))
                    else:
                        out.append(f"{at}: new key {k!r} not in the reference")
            for k in a:
                if k in b:
                    walk(a[k], b[k], (*path, k))
        elif isinstance(a, list):
            if not isinstance(b, list):
                out.append(f"{at}: reference is a list, new is {_short(b)}")
                return
            if len(a) != len(b):
                out.append(f"{at}: {len(a)} items in the reference, {len(b)} in the new summary")
            for i, (x, y) in enumerate(zip(a, b, strict=False)):
                walk(x, y, (*path, i))
        elif isinstance(a, bool) or a is None or isinstance(a, str):
            if type(a) is not type(b) or a != b:
                out.append(f"{at}: reference {_short(a)}, new {_short(b)}")
        elif isinstance(a, int):
            if type(b) is not int or a != b:
                out.append(f"{at}: count: reference {_short(a)}, new {_short(b)}")
        elif isinstance(a, float):
            if isinstance(b, bool) or not isinstance(b, int | float):
                out.append(f"{at}: reference {_short(a)}, new {_short(b)}")
            elif math.isnan(a) or math.isnan(b):
                if not (math.isnan(a) and math.isnan(b)):
                    out.append(f"{at}: reference {a!r}, new {b!r}")
            elif not math.isclose(a, b, rel_tol=rel_tol, abs_tol=abs_tol):
                r = abs(a - b) / max(abs(a), abs(b))
                out.append(f"{at}: reference {a!r}, new {b!r} (relative difference {r:.3g})")
        elif a != b:
            out.append(f"{at}: reference {_short(a)}, new {_short(b)}")

    walk(ref, new, ())
    return out


def compare_files(ref_path: str | Path, new_path: str | Path, limit: int | None = 20,
                  added: list[str] | None = None) -> list[str]:
    """differences() between two summary.json files. With `added` (a list) and a reference of an earlier summary
    version, the `version` itself and the keys the later versions added (ADDED_BY_VERSION; put in `added`) are not
    differences."""
    ref = json.loads(Path(ref_path).read_text())
    new = json.loads(Path(new_path).read_text())
    earlier = added is not None and isinstance(ref, dict) and isinstance(new, dict) \
        and isinstance(ref.get("version"), int) and isinstance(new.get("version"), int) \
        and ref["version"] < new["version"]
    if not earlier:
        return differences(ref, new, limit=limit)
    may_add = tuple(p for v, pats in ADDED_BY_VERSION.items() if ref["version"] < v <= new["version"] for p in pats)
    return differences(ref, new, limit=limit, skip={**VOLATILE, ("version",): "the summary versions differ"},
                       added=added, may_add=may_add)
