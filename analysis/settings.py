"""The scenario's `analysis:` and `ledger:` sections, checked; named ledger mappings; the ledger read or fetched."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import yaml

from ttformats.buckets import ACCOUNTING

from .ledger import LEDGER_ALIASES, LEDGER_COLUMNS, load_ledger
from .load import InputError

if TYPE_CHECKING:
    import pandas as pd

MAPPINGS_DIR = Path(__file__).resolve().parent / "ledgers"
DEFAULT_MAPPING = "tt-sim"
MAPPING_KEYS = ("kind", "name", "description", "format", "columns", "charge_type", "charge_if_amount", "amount_scale")
LEDGER_KEYS = ("file", "mapping", "format", "columns", "charge_type", "charge_if_amount", "amount_scale", "headers")
FORMATS = ("auto", "csv", "jsonl", "json")
ANALYSIS_KEYS = ("warmup_s", "settle_s", "slo", "slo_share", "billing", "early_stop", "limits", "isolation")
LIMITS_KEYS = ("accounting", "max_output_default", "tenants")
TENANT_LIMIT_KEYS = ("rpm", "tpm")
ISOLATION_KEYS = ("steady", "burst", "resamples", "confidence", "seed")
EARLY_STOP_KEYS = ("served_share_below", "ttft_p95_growth", "consecutive")
SLO_KEYS = ("ttft_ms", "e2e_ms", "tpot_ms", "itl_ms")
BILLING_FLAGS = ("bill_failed", "bill_dry_runs", "bill_replays")
BILLING_KEYS = (*BILLING_FLAGS, "abs_tolerance", "rel_tolerance")


def _known(m: Any, known: tuple[str, ...], where: str) -> dict[str, Any]:
    if m is None:
        return {}
    if not isinstance(m, dict):
        raise InputError(f"{where}: expected a mapping, got {type(m).__name__}")
    for k in m:
        if k not in known:
            raise InputError(f"{where}.{k}: unknown key (known: {', '.join(known)})")
    return m


def _number(v: Any, where: str, minimum: float = 0.0, maximum: float | None = None) -> None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise InputError(f"{where}: expected a number, got {v!r}")
    if v < minimum or (maximum is not None and v > maximum) or v != v:
        raise InputError(f"{where}: out of range: {v!r}")


def check_analysis(an: Any, where: str = "analysis") -> dict[str, Any]:
    """The scenario's `analysis:` section, or a one-line InputError naming the bad key."""
    an = _known(an, ANALYSIS_KEYS, where)
    if "warmup_s" in an:
        _number(an["warmup_s"], f"{where}.warmup_s")
    if "settle_s" in an:
        _number(an["settle_s"], f"{where}.settle_s")
    if "slo_share" in an:
        _number(an["slo_share"], f"{where}.slo_share", 0.0, 1.0)
    if "early_stop" in an:
        check_early_stop(an["early_stop"], f"{where}.early_stop")
    if "limits" in an:
        check_limits(an["limits"], f"{where}.limits")
    if "isolation" in an:
        check_isolation(an["isolation"], f"{where}.isolation")
    for k, v in _known(an.get("slo"), SLO_KEYS, f"{where}.slo").items():
        if v is not None:
            _number(v, f"{where}.slo.{k}")
    billing = _known(an.get("billing"), BILLING_KEYS, f"{where}.billing")
    for k in BILLING_FLAGS:
        if k in billing and not isinstance(billing[k], bool):
            raise InputError(f"{where}.billing.{k}: expected true or false, got {billing[k]!r}")
    for k in ("abs_tolerance", "rel_tolerance"):
        if k in billing:
            v = billing[k]
            try:
                ok = not isinstance(v, bool) and isinstance(v, int | float | str) and Decimal(str(v)) >= 0
            except InvalidOperation:
                ok = False
            if not ok:
                raise InputError(f"{where}.billing.{k}: expected a non-negative number, got {v!r}")
    return an


def _whole(v: Any, where: str, minimum: int) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise InputError(f"{where}: expected a whole number >= {minimum}, got {v!r}")


def _label(v: Any, where: str) -> None:
    if not isinstance(v, str) or not v:
        raise InputError(f"{where}: expected a tenant label, got {v!r}")


def check_limits(limits: Any, where: str = "analysis.limits") -> dict[str, Any]:
    """`analysis.limits` checked, or a one-line InputError naming the bad key."""
    limits = _known(limits, LIMITS_KEYS, where)
    if "accounting" in limits and limits["accounting"] not in ACCOUNTING:
        raise InputError(f"{where}.accounting: expected one of {', '.join(ACCOUNTING)}, got {limits['accounting']!r}")
    if "max_output_default" in limits:
        _whole(limits["max_output_default"], f"{where}.max_output_default", 1)
    tenants = limits.get("tenants")
    if tenants is not None:
        if not isinstance(tenants, dict):
            raise InputError(f"{where}.tenants: expected a mapping of tenant label: {{rpm, tpm}}")
        for label, lim in tenants.items():
            _label(label, f"{where}.tenants.{label}")
            lim = _known(lim, TENANT_LIMIT_KEYS, f"{where}.tenants.{label}")
            for k, v in lim.items():
                if v is not None:
                    _number(v, f"{where}.tenants.{label}.{k}")
                    if v <= 0:
                        raise InputError(f"{where}.tenants.{label}.{k}: out of range: {v!r}")
    return limits


def check_isolation(iso: Any, where: str = "analysis.isolation") -> dict[str, Any]:
    """`analysis.isolation` checked, or a one-line InputError naming the bad key."""
    iso = _known(iso, ISOLATION_KEYS, where)
    for k in ("steady", "burst"):
        if k not in iso:
            raise InputError(f"{where}.{k}: missing (the tenant label of the {k} tenant)")
        _label(iso[k], f"{where}.{k}")
    if iso["steady"] == iso["burst"]:
        raise InputError(f"{where}.burst: the same tenant as steady ({iso['burst']!r})")
    if "resamples" in iso:
        _whole(iso["resamples"], f"{where}.resamples", 100)
    if "confidence" in iso:
        _number(iso["confidence"], f"{where}.confidence", 0.5, 0.999)
    if "seed" in iso:
        _whole(iso["seed"], f"{where}.seed", 0)
    return iso


def check_early_stop(rule: Any, where: str = "analysis.early_stop") -> None:
    """`analysis.early_stop`: false (off), true (the defaults) or {served_share_below, ttft_p95_growth,
    consecutive}; a one-line InputError naming the bad key."""
    if isinstance(rule, bool):
        return
    if not isinstance(rule, dict):
        raise InputError(f"{where}: expected false or a mapping ({', '.join(EARLY_STOP_KEYS)}), got {rule!r}")
    _known(rule, EARLY_STOP_KEYS, where)
    if rule.get("served_share_below") is not None:
        _number(rule["served_share_below"], f"{where}.served_share_below", 0.0, 1.0)
    if rule.get("ttft_p95_growth") is not None:
        _number(rule["ttft_p95_growth"], f"{where}.ttft_p95_growth", 1.0)
    if rule.get("served_share_below") is None and rule.get("ttft_p95_growth") is None and (
            "served_share_below" in rule and "ttft_p95_growth" in rule):
        raise InputError(f"{where}: served_share_below and ttft_p95_growth are both null: nothing to stop on")
    if "consecutive" in rule:
        c = rule["consecutive"]
        if isinstance(c, bool) or not isinstance(c, int) or c < 1:
            raise InputError(f"{where}.consecutive: expected a whole number >= 1, got {c!r}")


def known_mappings() -> list[str]:
    """The names of the ledger mappings shipped in analysis/ledgers/."""
    names = []
    for p in sorted(MAPPINGS_DIR.glob("*.yaml")):
        try:
            data = yaml.safe_load(p.read_text())
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(data, dict) and data.get("kind") == "ledger-mapping":
            names.append(p.stem)
    return names


def _check_mapping_fields(m: dict[str, Any], where: str) -> None:
    if "format" in m and m["format"] not in FORMATS:
        raise InputError(f"{where}.format: expected one of {', '.join(FORMATS)}, got {m['format']!r}")
    cols = m.get("columns")
    if cols is not None:
        if not isinstance(cols, dict):
            raise InputError(f"{where}.columns: expected a mapping of canonical column: source column")
        for canon, src in cols.items():
            if canon not in LEDGER_COLUMNS and canon not in LEDGER_ALIASES:
                raise InputError(f"{where}.columns.{canon}: unknown column (known: {', '.join(LEDGER_COLUMNS)})")
            if not isinstance(src, str) or not src:
                raise InputError(f"{where}.columns.{canon}: expected a column name, got {src!r}")
    ct = m.get("charge_type")
    if ct is not None and not isinstance(ct, str) and not (isinstance(ct, list) and all(
            isinstance(x, str | int) and not isinstance(x, bool) for x in ct)):
        raise InputError(f"{where}.charge_type: expected a value or a list of values, got {ct!r}")
    if "charge_if_amount" in m and not isinstance(m["charge_if_amount"], bool):
        raise InputError(f"{where}.charge_if_amount: expected true or false, got {m['charge_if_amount']!r}")
    if "amount_scale" in m:
        v = m["amount_scale"]
        try:
            ok = not isinstance(v, bool) and isinstance(v, int | float | str) and Decimal(str(v)) > 0
        except InvalidOperation:
            ok = False
        if not ok:
            raise InputError(f"{where}.amount_scale: expected a positive number, got {v!r}")


def load_mapping(ref: str, base: Path | None = None) -> dict[str, Any]:
    """A named mapping (analysis/ledgers/NAME.yaml) or a mapping file (a path ending .yaml/.yml)."""
    if ref.endswith((".yaml", ".yml")) or os.sep in ref or "/" in ref:
        path = Path(ref)
        if not path.is_absolute() and base is not None and not path.exists() and (base / ref).exists():
            path = base / ref
    else:
        path = MAPPINGS_DIR / f"{ref}.yaml"
        if ref not in known_mappings():
            raise InputError(f"ledger mapping {ref!r}: unknown (known: {', '.join(known_mappings())}; "
                             "or a mapping file ending .yaml)")
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise InputError(f"{path}: cannot read the ledger mapping: {exc.strerror}") from None
    except yaml.YAMLError:
        raise InputError(f"{path}: invalid YAML") from None
    m = _known(data, MAPPING_KEYS, str(path))
    _check_mapping_fields(m, str(path))
    return m


def check_ledger(cfg: Any, where: str = "ledger") -> dict[str, Any]:
    """The scenario's `ledger:` section, or a one-line InputError naming the bad key."""
    cfg = _known(cfg, LEDGER_KEYS, where)
    if "file" in cfg and (not isinstance(cfg["file"], str) or not cfg["file"]):
        raise InputError(f"{where}.file: expected a file name or URL, got {cfg['file']!r}")
    if "mapping" in cfg and (not isinstance(cfg["mapping"], str) or not cfg["mapping"]):
        raise InputError(f"{where}.mapping: expected a mapping name or file, got {cfg['mapping']!r}")
    _check_mapping_fields(cfg, where)
    headers = cfg.get("headers")
    if headers is not None:
        if not isinstance(headers, dict):
            raise InputError(f"{where}.headers: expected a mapping of header name: {{env: VARIABLE}}")
        for name, spec in headers.items():
            if not isinstance(spec, dict) or set(spec) != {"env"} or not isinstance(spec["env"], str):
                raise InputError(f"{where}.headers.{name}: expected {{env: VARIABLE}} (a value written here would "
                                 "be kept in the run folder's scenario.yaml)")
    return cfg


@dataclass
class LedgerSettings:
    """Where the ledger comes from and how it reads (everything but secrets is shown in the summary)."""

    source: str | None = None
    explicit: bool = False  # the source came from the command line: a missing file is an error
    mapping: str = DEFAULT_MAPPING
    fmt: str | None = None
    columns: dict[str, str] = field(default_factory=dict)  # explicit: must be in the file
    default_columns: dict[str, str] = field(default_factory=dict)  # the mapping's
    charge_type: Any = "charge"
    charge_if_amount: bool = False
    amount_scale: Decimal = Decimal(1)
    headers: dict[str, str] = field(default_factory=dict)  # secret values: never shown

    def describe(self) -> dict[str, Any]:
        """What the summary keeps: the source (a URL without its query), the mapping, header names only."""
        return {"source": redact_url(self.source) if self.source else None, "mapping": self.mapping,
                "format": self.fmt, "headers": sorted(self.headers)}


def redact_url(src: str) -> str:
    """A URL without user info, query or fragment (they may hold credentials); a path as is."""
    if not src.startswith(("http://", "https://")):
        return src
    parts = urlsplit(src)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _apply(s: LedgerSettings, m: dict[str, Any], explicit: bool) -> None:
    if "format" in m:
        s.fmt = None if m["format"] == "auto" else m["format"]
    if "columns" in m:
        if explicit:
            s.columns = dict(m["columns"] or {})
        else:
            s.default_columns = dict(m["columns"] or {})
    if "charge_type" in m:
        s.charge_type = m["charge_type"]
    if "charge_if_amount" in m:
        s.charge_if_amount = m["charge_if_amount"]
    if "amount_scale" in m:
        s.amount_scale = Decimal(str(m["amount_scale"]))


def _env(var: str, where: str) -> str:
    value = os.environ.get(var)
    if not value:
        raise InputError(f"{where}: environment variable {var} is not set")
    return value


def parse_header(line: str, where: str) -> tuple[str, str]:
    """'Name: value' -> (name, value); the value is never echoed in an error."""
    name, sep, value = line.partition(":")
    if not sep or not name.strip() or any(c.isspace() for c in name.strip()) or not value.strip():
        raise InputError(f"{where}: expected 'Name: value'")
    return name.strip(), value.strip()


def resolve(scenario_ledger: dict[str, Any], source: str | None = None, mapping: str | None = None,
            headers: list[str] | None = None, header_envs: list[str] | None = None,
            base: Path | None = None, where: str = "ledger") -> LedgerSettings:
    """Ledger settings from the scenario's `ledger:` and the command line (`--ledger`, `--ledger-mapping`,
    `--ledger-header`, `--ledger-header-env`); a command-line mapping replaces the scenario's reading settings."""
    cfg = check_ledger(scenario_ledger, where)
    s = LedgerSettings(source=source or cfg.get("file"), explicit=source is not None)
    if mapping is not None:
        s.mapping = mapping
        _apply(s, load_mapping(mapping, base), explicit=False)
    else:
        s.mapping = cfg.get("mapping", DEFAULT_MAPPING)
        _apply(s, load_mapping(s.mapping, base), explicit=False)
        _apply(s, cfg, explicit=True)
    for line in headers or []:  # checked even when unused
        parse_header(line, "--ledger-header")
    if not (s.source or "").startswith(("http://", "https://")):
        return s  # headers only go with a URL: no environment variable is needed for a file
    for name, spec in (cfg.get("headers") or {}).items() if source is None else ():  # for the scenario's URL
        s.headers[str(name)] = _env(spec["env"], f"{where}.headers.{name}")
    for line in headers or []:
        name, value = parse_header(line, "--ledger-header")
        s.headers[name] = value
    for spec in header_envs or []:
        if "=" in spec:  # Name=VARIABLE: the variable holds the value
            name, _, var = spec.partition("=")
            if not name.strip() or not var.strip():
                raise InputError("--ledger-header-env: expected VARIABLE or Name=VARIABLE")
            s.headers[name.strip()] = _env(var.strip(), "--ledger-header-env")
        else:  # VARIABLE holds a whole 'Name: value' line
            name, value = parse_header(_env(spec, "--ledger-header-env"), f"--ledger-header-env {spec}")
            s.headers[name] = value
    return s


def fetch(url: str, headers: dict[str, str]) -> tuple[str, str]:
    """(body, content type) of a ledger URL; errors name the URL without its query, never a header's value."""
    import httpx

    shown = redact_url(url)
    try:
        resp = httpx.get(url, headers=headers, timeout=30)
    except httpx.HTTPError as exc:
        raise InputError(f"{shown}: cannot fetch the ledger: {type(exc).__name__}") from None
    if resp.status_code != 200:
        hint = " (check --ledger-header / --ledger-token)" if resp.status_code in (401, 403) else ""
        raise InputError(f"{shown}: cannot fetch the ledger: HTTP {resp.status_code}{hint}")
    return resp.text, resp.headers.get("content-type", "")


def ledger_source(run_dir: Path, s: LedgerSettings,
                  warnings: list[str]) -> tuple[str | None, LedgerSettings, dict[str, Any]]:
    """Where the charges come from (a file path or URL; None: no ledger), the settings to read them with, and
    load_ledger's keyword arguments: the configured file or URL, else the simulator's ledger.jsonl in the run
    folder (read with the tt-sim mapping)."""
    src = s.source
    if src is not None and not src.startswith(("http://", "https://")):
        path = Path(src)
        if not path.is_absolute() and not s.explicit:  # the scenario's `ledger.file`: relative to the run folder
            path = run_dir / src
        if path.exists() or s.explicit:
            src = str(path)
        else:
            warnings.append(f"ledger file {src} not found (yet): billing checked against the run's own "
                            "ledger.jsonl if any; `ttbench report RUN --ledger FILE` once you have it")
            src = None
    if src is None:
        default = run_dir / "ledger.jsonl"
        if not default.exists():
            return None, s, {}
        s = LedgerSettings(source=str(default), headers=s.headers)
        _apply(s, load_mapping(DEFAULT_MAPPING), explicit=False)
        s.fmt = "jsonl"
        src = str(default)
    return src, s, {"default_columns": s.default_columns, "charge_if_amount": s.charge_if_amount,
                    "amount_scale": s.amount_scale}


def ledger_headers(s: LedgerSettings, token: str | None) -> dict[str, str]:
    """The headers a ledger URL is fetched with (the admin token unless a header already carries it)."""
    headers = dict(s.headers)
    if token and not any(h.lower() == "x-admin-token" for h in headers):
        headers["X-Admin-Token"] = token
    return headers


def read_ledger(run_dir: Path, s: LedgerSettings, token: str | None,
                warnings: list[str]) -> tuple[pd.DataFrame | None, LedgerSettings]:
    """The charges and the settings they were read with (see ledger_source)."""
    src, s, kw = ledger_source(run_dir, s, warnings)
    if src is None:
        return None, s
    if src.startswith(("http://", "https://")):
        text, ctype = fetch(src, ledger_headers(s, token))
        fmt = s.fmt or ("csv" if "csv" in ctype else None)
        return load_ledger(redact_url(src), fmt, s.columns, s.charge_type, text=text, **kw), s
    return load_ledger(src, s.fmt, s.columns, s.charge_type, **kw), s
