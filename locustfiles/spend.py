"""The spend cap: money, tokens and images estimated from the price sheet and the usage returned."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

from ttformats.prices import PriceSheet, Usage

if TYPE_CHECKING:
    from .scenario import Scenario


def unpriced_models(scenario: Scenario, prices: PriceSheet) -> list[str]:
    """Models the scenario may call that the price sheet does not price (the spend cap could not count them)."""
    names: list[str] = []
    for m in scenario.all_mix:
        if m.endpoint != "models":
            names += [name for name, w in m.models if w > 0]
    if scenario.trace is not None:
        names += list(scenario.trace.models.values())
    return sorted({n for n in names if n not in prices.models})


class SpendCap:
    """Tracks this process's estimated spend; `exceeded` turns true once any cap is reached.

    A worker's cap is its lease: the share of the run's caps the master has granted it so far (`grant`).
    """

    def __init__(self, prices: PriceSheet | None, max_money: float | None, max_tokens: int | None,
                 max_images: int | None, share: float = 1.0) -> None:
        self.prices = prices
        self.caps = (max_money, max_tokens, max_images)
        self.share = 0.0
        self.set_share(share)
        self.money = Decimal(0)
        self.tokens = 0
        self.images = 0
        self.reason: str | None = None

    def add(self, record: dict[str, Any]) -> None:
        """Account one attempt's usage: successes (a dry run the gateway ignored included) and failed attempts
        whose usage arrived before they failed (billed, then lost); estimates and replays cost nothing."""
        if record.get("replayed") or (record.get("dry_run") and not record.get("dry_run_ignored")):
            return
        if not record.get("ok") and not (record.get("usage") and record.get("sent", True)):
            return
        usage = record.get("usage") or {}
        images = record.get("images_returned") or 0
        self.tokens += int(usage.get("input") or 0) + int(usage.get("output") or 0)
        self.images += images
        if self.prices is not None:
            self.money += self.prices.cost(record["model"], Usage(
                input_tokens=int(usage.get("input") or 0), output_tokens=int(usage.get("output") or 0),
                cached_input_tokens=int(usage.get("cached_input") or 0),
                cache_write_tokens=int(usage.get("cache_write") or 0), images=images,
                image_size=record.get("image_size") or "auto", image_quality=record.get("image_quality") or "auto"))
        self._check()

    @property
    def capped(self) -> bool:
        """Whether any cap is set."""
        return any(c is not None for c in self.caps)

    def set_share(self, share: float) -> None:
        """Hold `share` of the run's caps (1.0: all of them)."""
        max_money, max_tokens, max_images = self.caps
        self.share = share
        self.max_money = Decimal(str(max_money)) * Decimal(str(share)) if max_money is not None else None
        self.max_tokens = max_tokens * share if max_tokens is not None else None
        self.max_images = max_images * share if max_images is not None else None
        self.reason = None
        if hasattr(self, "money"):
            self._check()

    def _check(self) -> None:
        if self.max_money is not None and self.money >= self.max_money:
            self.reason = f"spend cap reached: {self.money:.6f} >= {self.max_money}"
        elif self.max_tokens is not None and self.tokens >= self.max_tokens:
            self.reason = f"token cap reached: {self.tokens} >= {self.max_tokens:g}"
        elif self.max_images is not None and self.images >= self.max_images:
            self.reason = f"image cap reached: {self.images} >= {self.max_images:g}"

    @property
    def exceeded(self) -> bool:
        """Whether a cap has been reached."""
        return self.reason is not None


class SpendPool:
    """The master's side of the run's one spend cap: shares of it leased to workers as they spend."""

    def __init__(self) -> None:
        self.granted = 0.0

    def lease(self, workers: int) -> float:
        """The share to grant one request: half of what is left split over the workers (0 once all is leased)."""
        left = 1.0 - self.granted
        if left <= 1e-6:
            return 0.0
        n = left if left <= 0.002 else max(0.002, left / (2 * max(1, workers)))
        n = min(n, left)
        self.granted += n
        return n
