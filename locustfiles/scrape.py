"""Metrics in: the scenario's `scrape:` targets read as Prometheus text at start, periodically and at stop."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import gevent
import httpx
from prometheus_client.parser import text_string_to_metric_families

from .profile import ProfileError, Secret

#: The environment variable `ttbench run` sets to the URL of the simulator it started.
SIM_URL_ENV = "TTBENCH_SIM_URL"
SCRAPE_FILE = "scrape.jsonl"
#: Only the classic text format: OpenMetrics is not asked for.
ACCEPT = "text/plain;version=0.0.4;q=1,*/*;q=0.1"
ERROR_MAX = 300


def _value(v: float) -> float | str:
    """A sample's value for JSON: non-finite values as Prometheus writes them."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return v


def parse_exposition(text: str) -> tuple[list[list[Any]], dict[str, str]]:
    """Prometheus text as ([[sample name, {labels}, value], ...], {family and sample names: the family's type})."""
    samples: list[list[Any]] = []
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        types.setdefault(family.name, family.type)
        for s in family.samples:
            samples.append([s.name, dict(s.labels), _value(float(s.value))])
            types.setdefault(s.name, family.type)
    return samples, types


class Target:
    """One scrape target: its name, resolved URL and headers (values kept as Secrets, read at each scrape)."""

    def __init__(self, name: str, url: str, headers: Mapping[str, Secret]) -> None:
        self.name = name
        self.url = url
        self.headers = dict(headers)


class Scraper:
    """Reads each target at start(), every `every_s` seconds in a greenlet, and at stop(); appends scrape.jsonl.

    A failing target is a line with `ok: false` and a one-line error; it never stops the run. Header values
    are never written anywhere (an error that quotes one has it replaced by `[redacted]`).
    """

    def __init__(self, spec: dict[str, Any], out_dir: str | Path, verify: bool = True,
                 env: Mapping[str, str] | None = None, timeout_s: float | None = None) -> None:
        self.every_s = float(spec.get("every_s", 5.0))
        self.path = Path(out_dir) / SCRAPE_FILE
        self.timeout_s = timeout_s if timeout_s is not None else max(1.0, min(10.0, self.every_s))
        self.verify = verify
        env = os.environ if env is None else env
        self.targets: list[Target] = []
        self.skipped: list[str] = []
        for t in spec.get("targets") or []:
            url = t["url"]
            if url == "sim":
                base = env.get(SIM_URL_ENV)
                if not base:
                    self.skipped.append(t["name"])
                    print(f"ttbench: warning: scrape target {t['name']}: url 'sim' but {SIM_URL_ENV} is not set "
                          "(no simulator started by `ttbench run`); skipped", file=sys.stderr, flush=True)
                    continue
                url = base.rstrip("/") + "/metrics"
            self.targets.append(Target(t["name"], url, t.get("headers") or {}))
        self.scrapes = 0
        self._greenlet: gevent.Greenlet | None = None
        self._client: httpx.Client | None = None

    @property
    def running(self) -> bool:
        """Whether the periodic greenlet is alive."""
        return self._greenlet is not None and not self._greenlet.dead

    def start(self) -> None:
        """Read every target now, before returning, then spawn the periodic greenlet (no-op if running)."""
        if self.running or not self.targets:
            return
        self.scrape_all("start")  # the baseline: taken before test_start returns, so before any user's call
        self._greenlet = gevent.spawn(self._loop)

    def stop(self) -> None:
        """End the greenlet and read every target once more (only after a start)."""
        if self._greenlet is None:
            return
        self._greenlet.kill(block=True)
        self._greenlet = None
        self.scrape_all("stop")
        if self._client is not None:
            self._client.close()
            self._client = None

    def _loop(self) -> None:
        while True:
            gevent.sleep(self.every_s)
            self.scrape_all("periodic")

    def scrape_all(self, phase: str) -> list[dict[str, Any]]:
        """Read every target once and append a line per target; returns the lines."""
        lines = [self.scrape(t, phase) for t in self.targets]
        with open(self.path, "a", encoding="utf-8") as f:
            for line in lines:
                f.write(json.dumps(line, separators=(",", ":")) + "\n")
        self.scrapes += 1
        return lines

    def scrape(self, target: Target, phase: str) -> dict[str, Any]:
        """One read of one target: its samples, or ok false and a one-line error."""
        t = time.time()
        line: dict[str, Any] = {"target": target.name, "t": t, "phase": phase, "ok": False, "error": None,
                                "duration_ms": None, "samples": [], "types": {}}
        values: list[str] = []
        try:
            headers = {"Accept": ACCEPT}
            for name, secret in target.headers.items():
                value = secret.value()
                values.append(value)
                headers[name] = value
            if self._client is None:
                self._client = httpx.Client(verify=self.verify, timeout=self.timeout_s, follow_redirects=False)
            resp = self._client.get(target.url, headers=headers)
            if resp.status_code != 200:
                raise ScrapeError(f"HTTP {resp.status_code}")
            line["samples"], line["types"] = parse_exposition(resp.text)
            line["ok"] = True
        except gevent.GreenletExit:
            raise
        except ScrapeError as exc:
            line["error"] = str(exc)
        except ProfileError as exc:
            line["error"] = _one_line(str(exc), values)
        except Exception as exc:  # noqa: BLE001  # any failure of a target is recorded, never fatal
            line["error"] = _one_line(f"{type(exc).__name__}: {exc}", values)
        line["duration_ms"] = round((time.time() - t) * 1000, 3)
        return line


class ScrapeError(Exception):
    """A target answered, but not with metrics."""


def _one_line(text: str, secrets: list[str]) -> str:
    """An error message on one line, at most ERROR_MAX characters, with any header value redacted."""
    for s in secrets:
        if s:
            text = text.replace(s, "[redacted]")
    text = " ".join(text.split())
    return text[:ERROR_MAX] or "error"
