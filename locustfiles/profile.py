"""Gateway profiles: how a gateway speaks beyond the dialects (ids, waits, auth, paths, idempotency, dry runs).

A profile is YAML: one of the shipped ones in `locustfiles/profiles/` (`tt`, the default; `openai-compatible`;
`litellm`) or a file, with the scenario's `gateway:` section merged over it key by key.
"""

from __future__ import annotations

import email.utils
import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from ttformats.yamlfile import YamlFileError, read_yaml

from .calls import CallSpec, WireRequest
from .dialects import DIALECTS, FAMILIES, FAMILY_NAMES

PROFILES_DIR = Path(__file__).resolve().parent / "profiles"
DEFAULT_PROFILE = "tt"

#: Request-id headers captured whatever the profile says; the profile's own come first for the join id.
COMMON_ID_HEADERS = ("x-tt-request-id", "x-litellm-call-id", "x-request-id", "request-id",
                     "llm_provider-x-tt-request-id", "llm_provider-x-request-id", "llm_provider-request-id",
                     "apim-request-id", "x-ms-request-id", "x-amzn-requestid")
#: Retry waits, in the order they are read: milliseconds first (as the OpenAI SDK does), prefixed copies after.
RETRY_AFTER_HEADERS = ("retry-after-ms", "retry-after", "llm_provider-retry-after-ms", "llm_provider-retry-after",
                       "x-ms-retry-after-ms")
#: Rate-limit headers per dimension, in each dialect's spelling: (limit, remaining, reset), OpenAI's then
#: Anthropic's, each also as a gateway's `llm_provider-` copy.
RATELIMIT_HEADERS = {
    dim: tuple((pre + lim, pre + rem, pre + res) for lim, rem, res in (
        (f"x-ratelimit-limit-{dim}", f"x-ratelimit-remaining-{dim}", f"x-ratelimit-reset-{dim}"),
        (f"anthropic-ratelimit-{dim}-limit", f"anthropic-ratelimit-{dim}-remaining", f"anthropic-ratelimit-{dim}-reset"),
    ) for pre in ("", "llm_provider-"))
    for dim in ("requests", "tokens")
}
#: Every rate-limit header read_ratelimit looks for (an answer with none of them has no limits to read).
RATELIMIT_NAMES = frozenset(name for spellings in RATELIMIT_HEADERS.values() for trio in spellings for name in trio)
#: How error answers are classified when the profile says nothing: a spend budget or credit refusal is final
#: (`quota`), any other 429 is a rate limit that waits as its headers say.
DEFAULT_REFUSALS: list[dict[str, Any]] = [
    {"code": "insufficient_quota", "kind": "quota"},
    {"type": "insufficient_quota", "kind": "quota"},
    {"message": "credit balance", "kind": "quota"},
    {"status": 429, "message": "billing details", "kind": "quota"},
    {"status": 429, "kind": "rate_limit"},
]
REFUSAL_KINDS = ("quota", "rate_limit")
REFUSAL_MATCH_KEYS = ("status", "type", "code", "reason", "message")
#: Which API family each endpoint's auth belongs to, and each family's standard credential header.
FAMILY_OF = FAMILIES
DEFAULT_AUTH = {m.DECLARATION.family: (m.DECLARATION.auth_header, m.DECLARATION.auth_scheme)
                for m in DIALECTS.values()}
PROFILE_KEYS = ("name", "description", "request_id_headers", "original_request_id_headers", "replay_headers",
                "retry_after_headers", "idempotency", "dry_run", "gemini_auth", "auth_errors", "headers", "auth",
                "paths", "refusals")
AUTH_KEYS = ("header", "scheme", "query", "key")
ENDPOINT_KEYS = tuple(DIALECTS)
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


class ProfileError(ValueError):
    """A bad profile or `gateway:` section: one line naming the file, the key and the reason."""


class Secret:
    """A value from the scenario: literal, from an environment variable, or printed by a command.

    Values from the environment or a command are secrets: never written anywhere, redacted from errors.
    A command's value is re-read every `refresh_s` seconds (cloud tokens expire; soaks outlast them).
    """

    def __init__(self, literal: str | None = None, env: str | None = None, command: str | None = None,
                 refresh_s: float = 3000.0, where: str = "") -> None:
        self.literal = literal
        self.env = env
        self.command = command
        self.refresh_s = refresh_s
        self.where = where
        self._value: str | None = None
        self._at = 0.0

    @property
    def secret(self) -> bool:
        """Whether the value must never be written down."""
        return self.literal is None

    def describe(self) -> Any:
        """What the scenario said, without the value of a secret."""
        if self.env:
            return {"env": self.env}
        if self.command:
            return {"command": "<command>", "refresh_s": self.refresh_s}
        return self.literal

    def value(self) -> str:
        """The current value (a command is re-run once its value is older than refresh_s)."""
        if self.literal is not None:
            return self.literal
        if self.env is not None:
            v = os.environ.get(self.env)
            if not v:
                raise ProfileError(f"{self.where}: environment variable {self.env} is not set")
            return v
        now = time.monotonic()
        if self._value is None or now - self._at >= self.refresh_s:
            self._value = self._run()
            self._at = now
        return self._value

    def _run(self) -> str:
        assert self.command is not None
        try:
            out = subprocess.run(self.command, shell=True, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError) as exc:
            raise ProfileError(f"{self.where}: the key command failed: {type(exc).__name__}") from None
        value = out.stdout.strip()
        if out.returncode != 0 or not value:
            raise ProfileError(f"{self.where}: the key command failed (exit {out.returncode}, "
                               f"{'no output' if not value else 'output ignored'})")
        return value


@dataclass(slots=True)
class Auth:
    """Where one dialect's key goes: a header (with an optional scheme) or a query parameter."""

    header: str | None = None
    scheme: str | None = None
    query: str | None = None
    key: Secret | None = None  # None: the run's API key (api_key_env)

    def describe(self) -> dict[str, Any]:
        """The auth settings without any key."""
        out: dict[str, Any] = {"header": self.header} if self.header else {"query": self.query}
        if self.scheme:
            out["scheme"] = self.scheme
        if self.key is not None:
            out["key"] = self.key.describe()
        return out


@dataclass
class Profile:
    """A resolved gateway profile."""

    name: str = DEFAULT_PROFILE
    description: str = ""
    request_id_headers: tuple[str, ...] = ("x-tt-request-id",)
    original_request_id_headers: tuple[str, ...] = ("x-tt-original-request-id",)
    replay_headers: tuple[str, ...] = ("idempotent-replayed",)
    retry_after_headers: tuple[str, ...] = RETRY_AFTER_HEADERS
    idempotency_header: str = "Idempotency-Key"
    idempotency_honoured: bool | None = True   # None: unknown
    dry_run_header: str = "X-TT-Dry-Run"
    dry_run_supported: bool | None = True      # None: unknown (detected from the answers)
    gemini_auth: str = "header"                # header (x-goog-api-key) | query (?key=)
    auth_errors: list[dict[str, Any]] = field(default_factory=lambda: [{"status": 401}, {"status": 403}])
    headers: dict[str, Secret] = field(default_factory=dict)
    auth: dict[str, Auth] = field(default_factory=dict)   # endpoint or family -> Auth
    paths: dict[str, str] = field(default_factory=dict)   # endpoint -> path template or absolute URL
    refusals: list[dict[str, Any]] = field(default_factory=lambda: [dict(r) for r in DEFAULT_REFUSALS])
    source: str = ""
    id_headers: tuple[str, ...] = ()           # the join order: the profile's own, then the common ones

    def __post_init__(self) -> None:
        self.id_headers = tuple(dict.fromkeys([*self.request_id_headers, *COMMON_ID_HEADERS]))

    # requests ---------------------------------------------------------------------------------
    def auth_for(self, endpoint: str) -> Auth:
        """The auth of an endpoint: its own entry, its family's, `default`, else the dialect's standard header."""
        for k in (endpoint, FAMILY_OF.get(endpoint, ""), "default"):
            if k in self.auth:
                return self.auth[k]
        family = FAMILY_OF.get(endpoint, FAMILY_NAMES[0])
        if family == "gemini" and self.gemini_auth == "query":
            return Auth(query="key")
        header, scheme = DEFAULT_AUTH[family]
        return Auth(header=header, scheme=scheme)

    def secrets(self, api_key: str) -> list[str]:
        """Every secret value a request may carry (for redaction)."""
        out = [api_key] if api_key else []
        for s in [*self.headers.values(), *(a.key for a in self.auth.values() if a.key is not None)]:
            if s.secret:
                try:
                    out.append(s.value())
                except ProfileError:
                    pass
        return list(dict.fromkeys(v for v in out if v and len(v) >= 4))

    def apply(self, wire: WireRequest, spec: CallSpec, api_key: str, extra: dict[str, Secret] | None = None) -> None:
        """Put auth, the path template and extra headers on a request the dialect built."""
        template = self.paths.get(spec.endpoint)
        if template is not None:
            wire.path, wire.base = _template(template, wire.path, spec)
        auth = self.auth_for(spec.endpoint)
        key = auth.key.value() if auth.key is not None else api_key
        if auth.query:
            sep = "&" if "?" in wire.path else "?"
            wire.path = f"{wire.path}{sep}{auth.query}={quote(key, safe='')}"
        elif auth.header:
            wire.headers[auth.header] = f"{auth.scheme} {key}" if auth.scheme else key
        for name, value in self.headers.items():
            wire.headers[name] = value.value()
        if extra:
            for name, value in extra.items():
                wire.headers[name] = value.value()

    # answers ----------------------------------------------------------------------------------
    def is_auth_error(self, status: int | None, error_type: str | None, error_code: str | None,
                      reason: str | None) -> bool:
        """Whether an error answer means the gateway refused the key."""
        if status is None:
            return False
        got = {"status": status, "type": error_type, "code": error_code, "reason": reason}
        for rule in self.auth_errors:
            if all(str(got.get(k)) == str(v) for k, v in rule.items()):
                return True
        return False

    def refusal(self, status: int | None, error_type: str | None, error_code: str | None, reason: str | None,
                message: str | None) -> str | None:
        """How an error answer is classified: `quota` (final), `rate_limit` (waits), or None."""
        if status is None or status < 400:
            return None
        got = {"status": str(status), "type": error_type, "code": error_code, "reason": reason}
        low = (message or "").lower()
        for rule in self.refusals:
            ok = True
            for k, v in rule.items():
                if k == "kind":
                    continue
                if k == "message":
                    ok = str(v).lower() in low
                else:
                    ok = got.get(k) is not None and str(got[k]) == str(v)
                if not ok:
                    break
            if ok:
                return str(rule["kind"])
        return None

    def describe(self) -> dict[str, Any]:
        """The resolved profile as written to the run folder's gateway.json (no secret values)."""
        return {
            "name": self.name, "description": self.description, "source": self.source,
            "request_id_headers": list(self.id_headers),
            "original_request_id_headers": list(self.original_request_id_headers),
            "replay_headers": list(self.replay_headers), "retry_after_headers": list(self.retry_after_headers),
            "idempotency": {"header": self.idempotency_header,
                            "honoured": "unknown" if self.idempotency_honoured is None else self.idempotency_honoured},
            "dry_run": {"header": self.dry_run_header,
                        "supported": "unknown" if self.dry_run_supported is None else self.dry_run_supported},
            "gemini_auth": self.gemini_auth, "auth_errors": self.auth_errors,
            "headers": {k: v.describe() for k, v in self.headers.items()},
            "auth": {k: a.describe() for k, a in self.auth.items()}, "paths": dict(self.paths),
            "refusals": self.refusals,
        }


def _template(template: str, default_path: str, spec: CallSpec) -> tuple[str, str | None]:
    """A path template with {model} and {method} filled in; the dialect's query string is kept."""
    path, _, query = default_path.partition("?")
    method = path.rsplit(":", 1)[1] if spec.endpoint == "gemini" and ":" in path else ""
    filled = template.replace("{model}", quote(spec.model, safe="")).replace("{method}", method)
    base = None
    if filled.startswith(("http://", "https://")):
        parts = urlsplit(filled)
        base = f"{parts.scheme}://{parts.netloc}"
        filled = parts.path + (f"?{parts.query}" if parts.query else "")
    if query:
        filled += ("&" if "?" in filled else "?") + query
    return filled, base


# reading answers (pure functions, used by the transport) ---------------------------------------------
def parse_wait(name: str, value: str, now: float | None = None) -> float | None:
    """Seconds to wait from one retry-wait header: milliseconds for `-ms` names, else seconds or an HTTP date."""
    value = value.strip()
    if not value:
        return None
    try:
        v = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when is None:
            return None
        return max(0.0, when.timestamp() - (time.time() if now is None else now))
    if v != v or v in (float("inf"), float("-inf")):
        return None
    return max(0.0, v / 1000.0 if name.endswith("-ms") else v)


def parse_duration(value: str) -> float | None:
    """A Go-style duration (`1s`, `6m0s`, `17ms`, `1h2m`) or plain seconds, in seconds."""
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    parts = _DURATION.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        return None
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(float(n) * scale[u] for n, u in parts)


def parse_reset(value: str, now: float | None = None) -> float | None:
    """A rate-limit reset: a duration (OpenAI) or an RFC 3339 time (Anthropic), as seconds from now."""
    d = parse_duration(value)
    if d is not None:
        return d
    from datetime import datetime

    try:
        when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def error_details(body: Any) -> list[Any] | None:
    """The `error.details` list of a Google-style error body (or of the first element of a JSON array)."""
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(body, list) and body and isinstance(body[0], dict):
        err = body[0].get("error")
    details = err.get("details") if isinstance(err, dict) else None
    return details if isinstance(details, list) else None


def retry_info_delay(body: Any) -> float | None:
    """Gemini's `RetryInfo.retryDelay` (e.g. "30s") from an error body, in seconds."""
    details = error_details(body)
    if details is None:
        return None
    for d in details:
        if isinstance(d, dict) and str(d.get("@type", "")).endswith("RetryInfo"):
            delay = d.get("retryDelay")
            if isinstance(delay, str):
                return parse_duration(delay)
            if isinstance(delay, dict):  # the protobuf JSON form {"seconds": n, "nanos": n}
                try:
                    return float(delay.get("seconds") or 0) + float(delay.get("nanos") or 0) / 1e9
                except (TypeError, ValueError):
                    return None
    return None


def read_ratelimit(get: Any, now: float | None = None) -> dict[str, dict[str, float | int | None]] | None:
    """The rate-limit headers of an answer, normalised: {dimension: {limit, remaining, reset_s}} (None: none).

    Each figure is taken from the first spelling that has it (a gateway may pass the upstream's limit and
    remaining on as they are, and its reset only as an `llm_provider-` copy)."""
    out: dict[str, dict[str, float | int | None]] | None = None
    for dim, spellings in RATELIMIT_HEADERS.items():
        lim = rem = res = None
        for lim_h, rem_h, res_h in spellings:
            lim = lim or get(lim_h)
            rem = rem or get(rem_h)
            res = res or get(res_h)
        if not (lim or rem or res):
            continue
        reset = parse_reset(res, now) if res else None
        out = out or {}
        out[dim] = {"limit": _int_header(lim), "remaining": _int_header(rem),
                    "reset_s": None if reset is None else round(reset, 3)}
    return out


def _int_header(value: str | None) -> int | None:
    if not value:
        return None
    try:
        return int(float(value.strip()))
    except ValueError:
        return None


def ratelimit_wait(ratelimit: dict[str, dict[str, Any]] | None, need: dict[str, float]) -> float | None:
    """Seconds until an exhausted limit holds what a call needs, from limit, remaining and reset alone.

    A bucket refilled continuously from `remaining` to `limit` in `reset_s` refills at (limit - remaining) /
    reset_s; the wait for `need` is (need - remaining) / that rate, and never longer than the reset.
    """
    if not ratelimit:
        return None
    wait = None
    for dim, got in ratelimit.items():
        lim, rem, reset = got.get("limit"), got.get("remaining"), got.get("reset_s")
        want = need.get(dim, 1.0)
        if rem is None or reset is None or rem >= want:
            continue
        if lim is None or lim <= rem or reset <= 0:
            w = float(reset)
        else:
            w = min(float(reset), reset * (want - rem) / (lim - rem))
        wait = w if wait is None else max(wait, w)
    return wait


# loading ---------------------------------------------------------------------------------------------
def shipped() -> list[str]:
    """The names of the shipped profiles."""
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


def _read(name_or_file: str, where: str) -> tuple[dict[str, Any], str]:
    path = Path(name_or_file)
    if not name_or_file.endswith((".yaml", ".yml")):
        path = PROFILES_DIR / f"{name_or_file}.yaml"
        if not path.is_file():
            raise ProfileError(f"{where}: unknown gateway profile {name_or_file!r} "
                               f"(shipped: {', '.join(shipped())}; or a YAML file)")
    try:
        data = read_yaml(path, "the gateway profile")
    except YamlFileError as exc:
        raise ProfileError(str(exc)) from None
    if not isinstance(data, dict):
        raise ProfileError(f"{path}: expected a mapping at the top level")
    return data, str(path)


def _strings(where: str, v: Any) -> tuple[str, ...]:
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
        raise ProfileError(f"{where}: expected a list of header names, got {v!r}")
    return tuple(x.lower() for x in v)


def secret(where: str, v: Any) -> Secret:
    """A header or key value: a string, {env: NAME} or {command: CMD, refresh_s: S}."""
    if isinstance(v, str | int | float) and not isinstance(v, bool):
        return Secret(literal=str(v), where=where)
    if isinstance(v, dict):
        unknown = set(v) - {"env", "command", "refresh_s"}
        if unknown:
            raise ProfileError(f"{where}.{sorted(unknown)[0]}: unknown key (known: env, command, refresh_s)")
        if "env" in v and isinstance(v["env"], str) and re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", v["env"]):
            return Secret(env=v["env"], where=where)
        if "command" in v and isinstance(v["command"], str) and v["command"].strip():
            refresh = v.get("refresh_s", 3000)
            if isinstance(refresh, bool) or not isinstance(refresh, int | float) or refresh <= 0:
                raise ProfileError(f"{where}.refresh_s: expected a positive number of seconds, got {refresh!r}")
            return Secret(command=v["command"], refresh_s=float(refresh), where=where)
    raise ProfileError(f"{where}: expected a string, {{env: NAME}} or {{command: CMD}}, got {v!r}")


def headers(where: str, v: Any) -> dict[str, Secret]:
    """Extra request headers: name -> a string, {env: NAME} or {command: CMD}."""
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise ProfileError(f"{where}: expected a mapping of header names to values")
    out = {}
    for name, value in v.items():
        if not isinstance(name, str) or not re.match(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$", name):
            raise ProfileError(f"{where}: not a header name: {name!r}")
        out[name] = secret(f"{where}.{name}", value)
    return out


def _auth(where: str, v: Any) -> Auth:
    if not isinstance(v, dict):
        raise ProfileError(f"{where}: expected a mapping like {{header: x-api-key}} or {{query: key}}")
    unknown = set(v) - set(AUTH_KEYS)
    if unknown:
        raise ProfileError(f"{where}.{sorted(unknown)[0]}: unknown key (known: {', '.join(AUTH_KEYS)})")
    if ("header" in v) == ("query" in v):
        raise ProfileError(f"{where}: give exactly one of header or query")
    a = Auth(header=v.get("header"), scheme=v.get("scheme"), query=v.get("query"))
    for k in ("header", "scheme", "query"):
        val = getattr(a, k)
        if val is not None and (not isinstance(val, str) or not val or " " in val):
            raise ProfileError(f"{where}.{k}: expected a name without spaces, got {val!r}")
    if a.scheme and not a.header:
        raise ProfileError(f"{where}.scheme: only with header")
    if "key" in v:
        a.key = secret(f"{where}.key", v["key"])
    return a


def _tri(where: str, v: Any) -> bool | None:
    if v == "unknown":
        return None
    if not isinstance(v, bool):
        raise ProfileError(f"{where}: expected true, false or unknown, got {v!r}")
    return v


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def build_profile(data: dict[str, Any], where: str, source: str = "") -> Profile:
    """Validate a profile mapping (a profile file, or one with the scenario's `gateway:` section merged in)."""
    unknown = [k for k in data if k not in PROFILE_KEYS]
    if unknown:
        raise ProfileError(f"{where}.{unknown[0]}: unknown key (known: profile, {', '.join(PROFILE_KEYS)})")
    p = Profile(name=str(data.get("name", Path(source).stem or DEFAULT_PROFILE)),
                description=str(data.get("description", "")), source=source)
    for key in ("request_id_headers", "original_request_id_headers", "replay_headers", "retry_after_headers"):
        if key in data:
            setattr(p, key, _strings(f"{where}.{key}", data[key]) if data[key] else ())
    for key, attr_h, attr_b, sub in (("idempotency", "idempotency_header", "idempotency_honoured", "honoured"),
                                     ("dry_run", "dry_run_header", "dry_run_supported", "supported")):
        sect = data.get(key) or {}
        if not isinstance(sect, dict) or set(sect) - {"header", sub}:
            raise ProfileError(f"{where}.{key}: expected {{header: NAME, {sub}: true|false|unknown}}")
        if "header" in sect:
            if not isinstance(sect["header"], str) or not sect["header"]:
                raise ProfileError(f"{where}.{key}.header: expected a header name")
            setattr(p, attr_h, sect["header"])
        if sub in sect:
            setattr(p, attr_b, _tri(f"{where}.{key}.{sub}", sect[sub]))
    ga = data.get("gemini_auth", "header")
    if ga not in ("header", "query"):
        raise ProfileError(f"{where}.gemini_auth: expected header or query, got {ga!r}")
    p.gemini_auth = ga
    rules = data.get("auth_errors", p.auth_errors)
    if not isinstance(rules, list) or not all(isinstance(r, dict) and r and set(r) <= {"status", "type", "code",
                                                                                      "reason"} for r in rules):
        raise ProfileError(f"{where}.auth_errors: expected a list of {{status, type, code, reason}} matchers")
    p.auth_errors = rules
    refusals = data.get("refusals", p.refusals)
    if not isinstance(refusals, list):
        raise ProfileError(f"{where}.refusals: expected a list of {{status, type, code, reason, message, kind}} "
                           "matchers")
    for i, r in enumerate(refusals):
        if not isinstance(r, dict) or r.get("kind") not in REFUSAL_KINDS or not set(r) - {"kind"} or \
                set(r) - {*REFUSAL_MATCH_KEYS, "kind"}:
            raise ProfileError(f"{where}.refusals[{i}]: expected {{kind: quota|rate_limit}} with at least one of "
                               f"{', '.join(REFUSAL_MATCH_KEYS)}, got {r!r}")
    p.refusals = refusals
    p.headers = headers(f"{where}.headers", data.get("headers"))
    auth = data.get("auth") or {}
    if not isinstance(auth, dict):
        raise ProfileError(f"{where}.auth: expected a mapping of endpoint or family to auth")
    for k, v in auth.items():
        if k not in (*ENDPOINT_KEYS, *FAMILY_NAMES, "default"):
            raise ProfileError(f"{where}.auth.{k}: unknown endpoint or family (known: default, "
                               f"{', '.join(FAMILY_NAMES)}, {', '.join(ENDPOINT_KEYS)})")
        p.auth[k] = _auth(f"{where}.auth.{k}", v)
    paths = data.get("paths") or {}
    if not isinstance(paths, dict):
        raise ProfileError(f"{where}.paths: expected a mapping of endpoint to path template")
    for k, v in paths.items():
        if k not in ENDPOINT_KEYS:
            raise ProfileError(f"{where}.paths.{k}: unknown endpoint (known: {', '.join(ENDPOINT_KEYS)})")
        if not isinstance(v, str) or not (v.startswith("/") or re.match(r"^https?://[^/\s]+/", v)):
            raise ProfileError(f"{where}.paths.{k}: expected a path starting with / or an http(s) URL, got {v!r}")
        p.paths[k] = v
    p.__post_init__()
    return p


def load_profile(name: str | None, section: dict[str, Any] | None, where: str) -> Profile:
    """The profile `name` (shipped name or file; else the section's `profile`, else tt) with `section` over it."""
    section = dict(section or {})
    chosen = name or section.pop("profile", None) or DEFAULT_PROFILE
    section.pop("profile", None)
    if not isinstance(chosen, str):
        raise ProfileError(f"{where}.profile: expected a profile name or a YAML file, got {chosen!r}")
    data, source = _read(chosen, f"{where}.profile" if not name else "--gateway")
    return build_profile(_merge(data, section), where, source)
