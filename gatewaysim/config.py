"""The simulator's behaviour model: one YAML file merged over the shipped defaults."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from ttformats.buckets import ACCOUNTING
from ttformats.prices import PriceError, PriceSheet, load_price_sheet
from ttformats.yamlfile import YamlFileError, read_yaml

DEFAULTS_DIR = Path(__file__).parent / "defaults"
DEFAULT_CONFIG = DEFAULTS_DIR / "sim.yaml"

FAULT_KINDS = (
    "server_error",
    "rate_limited",
    "reset",
    "disconnect_midstream",
    "stream_error",
    "malformed_chunk",
    "stall",
    "fewer_images",
    "disconnect_after_billing",
)
BILLING_ERROR_KINDS = (
    "double_charge",
    "missing_charge",
    "dry_run_billed",
    "failed_billed",
    "amount_mismatch",
    "token_mismatch",
    "image_count_mismatch",
    "unknown_request",
    "cache_discount_missing",
)
LIMIT_ERROR_KINDS = ("remaining_stuck", "reset_wrong")
MODEL_KINDS = ("chat", "embedding", "image")
SLOT_MODES = ("shared", "partitioned")
#: The fields of one `keys:` entry.
KEY_FIELDS = ("tenant", "rpm", "tpm", "concurrency", "budget", "slot_share", "advertise")
#: The limits a tenant has once, whichever of its keys states them (advertise.* included).
TENANT_FIELDS = ("rpm", "tpm", "concurrency", "budget", "slot_share", "advertise.rpm", "advertise.tpm")
#: The `keys:` entry that stands for the gateway's own `--api-key` key, and that key's tenant label.
GATEWAY_KEY = "default"
#: Paths no `routes:` entry may start with, besides the dialects' own routes.
RESERVED_PREFIXES = ("/_sim/",)


class ConfigError(ValueError):
    """A bad simulator configuration: the message names the file, key and problem."""


@dataclass
class SimConfig:
    """The resolved simulator configuration."""

    raw: dict[str, Any]
    prices: PriceSheet
    source: str

    @property
    def seed(self) -> int:
        """The seed every draw derives from."""
        return int(self.raw["seed"])

    @property
    def models(self) -> dict[str, dict[str, Any]]:
        """Per-model settings with the kind defaults filled in."""
        return self.raw["models"]

    def section(self, name: str) -> dict[str, Any]:
        """One top-level section (faults, billing_errors, idempotency, ...)."""
        return self.raw[name]


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return "null"


def _check_like(where: str, key: str, value: Any, default: Any) -> None:
    """Raise unless value has the type of the default value."""
    if default is None:
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{where}: {key}: expected a string or null, got {_type_name(value)}")
        return
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int | float):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif isinstance(default, str):
        ok = isinstance(value, str) or (key == "prices" and isinstance(value, dict))
    elif isinstance(default, dict):
        ok = isinstance(value, dict)
    elif isinstance(default, list):
        ok = isinstance(value, list)
    else:
        ok = True
    if not ok:
        raise ConfigError(f"{where}: {key}: expected {_type_name(default)}, got {_type_name(value)}")
    if isinstance(default, int | float) and not isinstance(default, bool) and value < 0:
        raise ConfigError(f"{where}: {key}: must not be negative, got {value}")


def _merge(where: str, path: str, base: dict[str, Any], over: dict[str, Any], free: bool) -> dict[str, Any]:
    """Merge over into base; unknown keys are errors unless the mapping is free-form."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        dotted = f"{path}.{key}" if path else str(key)
        if key not in base:
            if free:
                out[key] = value
                continue
            raise ConfigError(f"{where}: {dotted}: unknown key")
        _check_like(where, dotted, value, base[key])
        if isinstance(base[key], dict) and isinstance(value, dict) and key not in ("weights", "quota", "keys"):
            out[key] = _merge(where, dotted, base[key], value, free=key in ("models", "routes") or path == "models")
        else:
            out[key] = value
    return out


def _read_yaml(path: Path, what: str) -> dict[str, Any]:
    try:
        data = read_yaml(path, what)
    except YamlFileError as exc:
        raise ConfigError(str(exc)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {_type_name(data)}")
    return data


def _check_planting(where: str, name: str, section: dict[str, Any], kinds: tuple[str, ...]) -> None:
    for sub in ("weights", "quota"):
        for kind, value in section[sub].items():
            if kind not in kinds:
                raise ConfigError(
                    f"{where}: {name}.{sub}.{kind}: unknown kind (known: {', '.join(kinds)})"
                )
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"{where}: {name}.{sub}.{kind}: expected a non-negative number")
            if sub == "quota" and int(value) != value:
                raise ConfigError(f"{where}: {name}.quota.{kind}: expected a whole number, got {value}")
    statuses = section.get("server_error_statuses")
    if statuses is not None and (not statuses or not all(isinstance(s, int) and 500 <= s <= 599 for s in statuses)):
        raise ConfigError(f"{where}: {name}.server_error_statuses: expected a non-empty list of 5xx statuses")
    if section["rate"] > 1:
        raise ConfigError(f"{where}: {name}.rate: must be between 0 and 1, got {section['rate']}")
    if section["rate"] > 0 and not any(w > 0 for w in section["weights"].values()):
        raise ConfigError(f"{where}: {name}.weights: rate is {section['rate']} but no kind has a weight")
    if section["quota_rate"] > 1:
        raise ConfigError(f"{where}: {name}.quota_rate: must be between 0 and 1, got {section['quota_rate']}")


def _resolve_models(where: str, raw: dict[str, Any]) -> None:
    resolved: dict[str, dict[str, Any]] = {}
    for name, spec in raw["models"].items():
        if not isinstance(spec, dict):
            raise ConfigError(f"{where}: models.{name}: expected a mapping")
        kind = spec.get("kind", "chat")
        if kind not in MODEL_KINDS:
            raise ConfigError(f"{where}: models.{name}.kind: unknown kind {kind!r} (known: chat, embedding, image)")
        base = dict(raw["defaults"][kind])
        base["kind"] = kind
        base["owned_by"] = "tt-gateway"
        model = _merge(where, f"models.{name}", base, spec, free=False)
        if model.get("slots", 1) < 1:
            raise ConfigError(f"{where}: models.{name}.slots: must be at least 1")
        if kind == "chat":
            if model["decode_tokens_per_s"] <= 0:
                raise ConfigError(f"{where}: models.{name}.decode_tokens_per_s: must be positive")
            if not 0 <= model["slowdown_at_full"] < 1:
                raise ConfigError(f"{where}: models.{name}.slowdown_at_full: must be in [0, 1)")
            for rng in ("output_tokens", "reasoning_tokens"):
                lo, hi = model[rng].get("min"), model[rng].get("max")
                if not isinstance(lo, int) or not isinstance(hi, int) or not 1 <= lo <= hi:
                    raise ConfigError(f"{where}: models.{name}.{rng}: expected 1 <= min <= max integers")
        resolved[name] = model
    if not resolved:
        raise ConfigError(f"{where}: models: at least one model is needed")
    raw["models"] = resolved


def _check_routes(where: str, routes: dict[str, Any]) -> None:
    """Each key a configurable dialect's endpoint; each path exact, not taken by a built-in route or another entry."""
    from .dialects import builtin_routes, configurable  # the registry imports the app's modules: import late

    known = configurable()
    builtin = builtin_routes()
    exact = {r.path for r in builtin if r.exact}
    prefixes = RESERVED_PREFIXES + tuple(r.prefix for r in builtin if not r.exact)
    seen: dict[str, str] = {}
    for endpoint, paths in routes.items():
        if endpoint not in known:
            raise ConfigError(f"{where}: routes.{endpoint}: unknown key (known: {', '.join(known)})")
        if not isinstance(paths, list):
            raise ConfigError(f"{where}: routes.{endpoint}: expected a list, got {_type_name(paths)}")
        for i, path in enumerate(paths):
            key = f"routes.{endpoint}[{i}]"
            if not isinstance(path, str):
                raise ConfigError(f"{where}: {key}: expected a string, got {_type_name(path)}")
            if not path.startswith("/") or any(c in path for c in "{}?#% \t\r\n") or "//" in path:
                raise ConfigError(f"{where}: {key}: expected an exact path starting with '/' (no {{}}, ?, #, % "
                                  f"or spaces), got {path!r}")
            if path in exact or path.startswith(prefixes) or path.rstrip("/") in ("/_sim", "/metrics"):
                raise ConfigError(f"{where}: {key}: {path} is a built-in route of the simulator")
            if path in seen:
                raise ConfigError(f"{where}: {key}: {path} is already listed under {seen[path]}")
            seen[path] = key

def _whole(where: str, key: str, value: Any, low: int) -> int | None:
    """An optional whole number of at least `low` (null: unlimited)."""
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or int(value) != value or value < low:
        raise ConfigError(f"{where}: {key}: expected a whole number of at least {low} or null, got {value!r}")
    return int(value)


def _budget(where: str, key: str, value: Any) -> str | None:
    """An optional spend budget (a number, or a decimal string), kept as an exact decimal string."""
    if value is None:
        return None
    try:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise InvalidOperation
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise ConfigError(f"{where}: {key}: expected an amount (a number) or null, got {value!r}") from None
    if not amount.is_finite() or amount < 0:
        raise ConfigError(f"{where}: {key}: expected a non-negative amount, got {value!r}")
    return str(amount)


def _check_keys(where: str, keys: dict[Any, Any]) -> dict[str, dict[str, Any]]:
    """Each `keys:` entry with every field present (null: not set); a bad one is a ConfigError naming it."""
    out: dict[str, dict[str, Any]] = {}
    for key, entry in keys.items():
        name = f"keys.{key}"
        if not isinstance(key, str) or not key or key != key.strip():
            raise ConfigError(f"{where}: {name}: an API key must be a non-empty string without surrounding spaces")
        entry = {} if entry is None else entry
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: {name}: expected a mapping, got {_type_name(entry)}")
        for field in entry:
            if field not in KEY_FIELDS:
                raise ConfigError(f"{where}: {name}.{field}: unknown key (known: {', '.join(KEY_FIELDS)})")
        tenant = entry.get("tenant")
        if tenant is not None and (not isinstance(tenant, str) or not tenant.strip()):
            raise ConfigError(f"{where}: {name}.tenant: expected a non-empty string or null, got {tenant!r}")
        share = entry.get("slot_share")
        if share is not None and (not isinstance(share, int | float) or isinstance(share, bool)
                                  or not 0 < share <= 1):
            raise ConfigError(f"{where}: {name}.slot_share: expected a number in (0, 1] or null, got {share!r}")
        advertise = entry.get("advertise") or {}
        if not isinstance(advertise, dict):
            raise ConfigError(f"{where}: {name}.advertise: expected a mapping, got {_type_name(advertise)}")
        for field in advertise:
            if field not in ("rpm", "tpm"):
                raise ConfigError(f"{where}: {name}.advertise.{field}: unknown key (known: rpm, tpm)")
        out[key] = {
            "tenant": tenant,
            "rpm": _whole(where, f"{name}.rpm", entry.get("rpm"), 1),
            "tpm": _whole(where, f"{name}.tpm", entry.get("tpm"), 1),
            "concurrency": _whole(where, f"{name}.concurrency", entry.get("concurrency"), 1),
            "budget": _budget(where, f"{name}.budget", entry.get("budget")),
            "slot_share": share,
            "advertise": {"rpm": _whole(where, f"{name}.advertise.rpm", advertise.get("rpm"), 1),
                          "tpm": _whole(where, f"{name}.advertise.tpm", advertise.get("tpm"), 1)},
        }
    return out


def resolve_tenants(where: str, keys: dict[str, dict[str, Any]],
                    api_key: str | None) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    """The tenant label of every valid API key, and each tenant's limits (its keys' fields, merged)."""
    # `keys` is the checked `keys:` section; its entry `default` is the gateway's own key (`api_key`; None:
    # not known yet, checking the file only). A key without a `tenant` is its own tenant, labelled `default`
    # (the gateway's key) or by its position (`key2`). Keys of one tenant share its limits: a field two of
    # them state must have one value. With any keys the gateway's own key stays valid (tenant `default`).
    if not keys:
        return {}, {}
    if api_key is not None and api_key != GATEWAY_KEY and GATEWAY_KEY in keys and api_key in keys:
        raise ConfigError(f"{where}: keys.{GATEWAY_KEY}: the gateway's own key is also listed by its value")
    labels: dict[str, str] = {}
    tenants: dict[str, dict[str, Any]] = {}
    sources: dict[tuple[str, str], str] = {}
    for i, (key, entry) in enumerate(keys.items(), start=1):
        real = api_key if key == GATEWAY_KEY and api_key is not None else key
        own = key == GATEWAY_KEY or (api_key is not None and key == api_key)
        label = entry["tenant"] or (GATEWAY_KEY if own else f"key{i}")
        labels[real] = label
        tenant = tenants.setdefault(label, {"label": label, "keys": 0, **{f: None for f in TENANT_FIELDS}})
        tenant["keys"] += 1
        for field in TENANT_FIELDS:
            value = entry["advertise"][field[10:]] if field.startswith("advertise.") else entry[field]
            if value is None:
                continue
            if tenant[field] is not None and tenant[field] != value:
                raise ConfigError(f"{where}: keys.{key}.{field}: tenant {label!r} already has {field} "
                                  f"{tenant[field]} (from keys.{sources[(label, field)]})")
            tenant[field] = value
            sources[(label, field)] = key
    for label, tenant in tenants.items():
        for dim in ("rpm", "tpm"):
            if tenant[f"advertise.{dim}"] is not None and tenant[dim] is None:
                raise ConfigError(f"{where}: keys.{sources[(label, 'advertise.' + dim)]}.advertise.{dim}: tenant "
                                  f"{label!r} has no {dim} limit for it to misstate")
    if api_key is not None and api_key not in labels:
        labels[api_key] = GATEWAY_KEY
        tenant = tenants.setdefault(GATEWAY_KEY, {"label": GATEWAY_KEY, "keys": 0,
                                                  **{f: None for f in TENANT_FIELDS}})
        tenant["keys"] += 1
    return labels, tenants


def _check_limits(where: str, raw: dict[str, Any]) -> None:
    limits = raw["limits"]
    if limits["accounting"] not in ACCOUNTING:
        raise ConfigError(f"{where}: limits.accounting: expected one of {', '.join(ACCOUNTING)}, "
                          f"got {limits['accounting']!r}")
    if limits["slots"] not in SLOT_MODES:
        raise ConfigError(f"{where}: limits.slots: expected one of {', '.join(SLOT_MODES)}, got {limits['slots']!r}")
    raw["keys"] = _check_keys(where, raw["keys"])
    resolve_tenants(where, raw["keys"], None)
    _check_planting(where, "limit_errors", raw["limit_errors"], LIMIT_ERROR_KINDS)


def load_config(path: str | Path | None = None, seed: int | None = None) -> SimConfig:
    """Load the defaults, merge the given file over them, validate, and load the price sheet."""
    defaults = _read_yaml(DEFAULT_CONFIG, "the default config")
    raw = copy.deepcopy(defaults)
    where = str(DEFAULT_CONFIG)
    base_dir = DEFAULTS_DIR
    if path is not None:
        where = str(path)
        user = _read_yaml(Path(path), "the simulator config")
        raw = _merge(where, "", defaults, user, free=False)
        if "prices" in user and isinstance(user["prices"], str):
            base_dir = Path(path).parent
    if seed is not None:
        raw["seed"] = seed
    if not isinstance(raw["seed"], int) or isinstance(raw["seed"], bool):
        raise ConfigError(f"{where}: seed: expected an integer")
    _resolve_models(where, raw)
    _check_planting(where, "faults", raw["faults"], FAULT_KINDS)
    _check_planting(where, "billing_errors", raw["billing_errors"], BILLING_ERROR_KINDS)
    _check_limits(where, raw)
    _check_routes(where, raw["routes"])
    prices_spec = raw["prices"]
    try:
        if isinstance(prices_spec, str):
            prices = load_price_sheet(base_dir / prices_spec)
        else:
            prices = PriceSheet.from_mapping(prices_spec, where=f"{where}: prices")
    except PriceError as exc:
        raise ConfigError(str(exc)) from None
    for name in raw["models"]:
        if name not in prices.models:
            raise ConfigError(f"{where}: models.{name}: no price in the price sheet {prices.source}")
    return SimConfig(raw=raw, prices=prices, source=where)
