"""Tenants at run time: each one's key, label, workload, spend cap, and whether the gateway ended its quota."""

from __future__ import annotations

import os
import random
import sys
from bisect import bisect
from itertools import accumulate
from typing import TYPE_CHECKING, Any

from ttformats.prices import PriceSheet

from .spend import SpendCap
from .workload import Workload

if TYPE_CHECKING:
    from .prompts import Calibrator
    from .scenario import Scenario, TenantSpec


class TenantError(ValueError):
    """A tenant's key is missing: one line naming the scenario, the tenant and the variable."""


class Tenant:
    """One tenant of this process: key (never written anywhere), label, own workload, spend cap."""

    def __init__(self, spec: TenantSpec, api_key: str, workload: Workload | None, spend: SpendCap) -> None:
        self.spec = spec
        self.label = spec.label
        self.api_key = api_key
        self.workload = workload          # None: the scenario's
        self.spend = spend
        self.quota_refused: str | None = None  # the gateway's quota refusal that ended this tenant's calls
        self._said_cap = False

    def may_start(self) -> bool:
        """Whether a call of this tenant may start (its spend cap and the gateway's quota allow it)."""
        if self.quota_refused is not None:
            return False
        if self.spend.exceeded:
            if not self._said_cap:
                self._said_cap = True
                print(f"ttbench: tenant {self.label}: {self.spend.reason}: no more calls for it", file=sys.stderr,
                      flush=True)
            return False
        return True

    def account(self, rec: dict[str, Any]) -> None:
        """A record of this tenant: its spend, and a quota refusal ends its calls (said once)."""
        self.spend.add(rec)
        if rec.get("refusal") == "quota" and self.quota_refused is None:
            self.quota_refused = rec.get("error") or f"HTTP {rec.get('status')}"
            print(f"ttbench: tenant {self.label}: the gateway refused for quota ({self.quota_refused}): no more calls "
                  "for it", file=sys.stderr, flush=True)


class Tenants:
    """This process's tenants, by label; draws one by weight for a call without its own arrivals."""

    def __init__(self, scenario: Scenario, rng: random.Random, calibrator: Calibrator, prices: PriceSheet | None,
                 share: float, need_keys: bool) -> None:
        self.items: list[Tenant] = []
        self.by_label: dict[str, Tenant] = {}
        for spec in scenario.tenants:
            key = os.environ.get(spec.api_key_env, "")
            if need_keys and not key:
                raise TenantError(f"{scenario.path}: tenants: environment variable {spec.api_key_env} of tenant "
                                  f"{spec.label!r} is not set")
            workload = Workload(scenario, rng, calibrator, spec.mix) if spec.mix is not None else None
            cap = SpendCap(prices, spec.spend_max, spec.spend_max_tokens, spec.spend_max_images, share=share)
            t = Tenant(spec, key, workload, cap)
            self.items.append(t)
            self.by_label[spec.label] = t
        shared = [t for t in self.items if t.spec.arrivals is None]
        self._shared = shared
        self._cum = list(accumulate(t.spec.weight for t in shared))

    def __bool__(self) -> bool:
        return bool(self.items)

    def pick(self, rng: random.Random) -> Tenant | None:
        """A tenant without its own arrivals, drawn by weight (None: there are no tenants)."""
        if not self._shared or self._cum[-1] <= 0:
            return None
        return self._shared[bisect(self._cum, rng.random() * self._cum[-1])]

    def keys(self) -> list[str]:
        """Every tenant's key (for redaction)."""
        return [t.api_key for t in self.items if t.api_key]

    def set_share(self, share: float) -> None:
        """Hold `share` of every tenant's caps (a worker's lease of the run's caps)."""
        for t in self.items:
            t.spend.set_share(share)

    def account(self, rec: dict[str, Any]) -> None:
        """Fold a record into its tenant's spend and quota state."""
        label = rec.get("tenant")
        if label is not None and label in self.by_label:
            self.by_label[label].account(rec)
