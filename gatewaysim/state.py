"""The simulator's state: configuration, tenants, capacity pools, idempotency store, ledger, truth."""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from typing import Any

from .billing import Biller
from .cache import PrefixCache
from .capacity import ModelPool, partition
from .config import FAULT_KINDS, SimConfig
from .draws import Planter
from .idempotency import IdempotencyStore
from .ledger import Ledger
from .limits import TenantLimits
from .metrics import SimCounters
from .truth import Truth

DEFAULT_API_KEY = "tt-sim-local-key"
DEFAULT_ADMIN_TOKEN = "tt-sim-admin"


class Gateway:
    """Everything one simulator instance knows."""

    def __init__(self, config: SimConfig, api_key: str = DEFAULT_API_KEY, admin_token: str = DEFAULT_ADMIN_TOKEN,
                 ledger_path: str | None = None, truth_path: str | None = None) -> None:
        self.config = config
        self.api_key = api_key
        self.admin_token = admin_token
        self.limits = TenantLimits(config, api_key)
        self.pools = {name: ModelPool(name, spec) for name, spec in config.models.items()}
        #: Partitioned slots: a pool per (model, tenant label), sized by the tenant's share.
        self.tenant_pools: dict[tuple[str, str], ModelPool] = {}
        if self.limits.partitioned:
            for label, share in self.limits.shares().items():
                for name, spec in config.models.items():
                    self.tenant_pools[(name, label)] = ModelPool(name, partition(spec, share))
        self.caches = {name: PrefixCache(config.section("cache")) for name in config.models}
        #: A temporary folder for what has no file of its own: the ledger, the truth, stored responses.
        self.folder = tempfile.mkdtemp(prefix="gatewaysim-")
        self._cleanup = weakref.finalize(self, shutil.rmtree, self.folder, True)
        self.idempotency = IdempotencyStore(float(config.section("idempotency")["ttl_s"]),
                                            os.path.join(self.folder, "idempotency.sqlite"))
        self.ledger = Ledger(ledger_path or config.section("ledger")["path"]
                             or os.path.join(self.folder, "ledger.sqlite"))
        self.truth = Truth(truth_path or config.section("truth")["path"] or os.path.join(self.folder, "truth.jsonl"))
        self.faults = Planter(config.seed, "fault", config.section("faults"), FAULT_KINDS)
        self.biller = Biller(config.prices, self.ledger, self.truth, config.seed, config.section("billing_errors"))
        self.served: dict[str, int] = {}
        #: What /metrics counts of finished requests (by endpoint and status, tokens).
        self.counters = SimCounters()
        #: Server-side state a dialect keeps across requests (e.g. stored responses), by endpoint name.
        self.dialect_state: dict[str, Any] = {}

    def close(self) -> None:
        """Commit and close the ledger, the truth and stored responses; remove the temporary folder."""
        self.ledger.close()
        self.truth.close_file()
        self.idempotency.close()
        self._cleanup()

    def pool_for(self, model: str, tenant: str | None) -> ModelPool:
        """The slot pool a tenant's call to a model takes a slot from."""
        if tenant is not None and (model, tenant) in self.tenant_pools:
            return self.tenant_pools[(model, tenant)]
        return self.pools[model]
