"""Scenario files: YAML validated into a Scenario, with one-line errors naming file, key path and reason."""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ttformats.durations import parse_duration
from ttformats.yamlfile import YamlFileError, read_yaml

from . import traces
from .dialects import DEFAULT_MODELS, DIALECTS
from .profile import PROFILE_KEYS, Profile, ProfileError, Secret, headers, load_profile
from .retry import RetryPolicy
from .traces import TRACE_ENDPOINTS, Trace, TraceError, TraceSpec, load_trace, replay_duration, window
from .transport import Timeouts

ENDPOINTS = tuple(DIALECTS)
ARRIVALS = ("closed", "constant", "poisson", "gamma", "onoff")


class ScenarioError(ValueError):
    """A bad scenario: the message is one line naming the file, the key path and the reason."""


@dataclass(slots=True)
class Dist:
    """An integer distribution (at least 1): fixed, uniform, normal or lognormal."""

    kind: str
    a: float
    b: float = 0.0

    def sample(self, rng: random.Random) -> int:
        """Draw one value."""
        if self.kind == "fixed":
            v = self.a
        elif self.kind == "uniform":
            return rng.randint(int(self.a), int(self.b))
        elif self.kind == "normal":
            v = rng.gauss(self.a, self.b)
        else:
            v = rng.lognormvariate(math.log(self.a) - self.b**2 / 2, self.b)
        return max(1, round(v))

    @property
    def mean(self) -> float:
        """The distribution's mean (before rounding and the floor at 1)."""
        return (self.a + self.b) / 2 if self.kind == "uniform" else self.a


@dataclass(slots=True)
class MixEntry:
    """One line of the mix: an endpoint, its weight, models and shares."""

    endpoint: str
    weight: float
    models: list[tuple[str, float]]
    stream: float = 0.0
    json_array: float = 0.0
    dry_run: float = 0.0
    pair: float = 0.0
    tools: float = 0.0
    reasoning: float = 0.0
    prompt_tokens: Dist = field(default_factory=lambda: Dist("uniform", 32, 128))
    output_tokens: Dist = field(default_factory=lambda: Dist("uniform", 16, 64))
    ignore_eos: bool = False
    images_n: list[int] = field(default_factory=lambda: [1])
    image_size: str = "1024x1024"
    image_quality: str = "low"
    inputs: Dist = field(default_factory=lambda: Dist("fixed", 1))
    dims: int | None = None
    headers: dict[str, Secret] | None = None
    repeat: float = 0.0  # share of calls that resend one of this line's recent calls unchanged (a gateway's cache)


@dataclass(slots=True)
class Stage:
    """One load stage: a duration and an open-loop rate or a user count."""

    duration_s: float
    rate: float | None = None
    users: int | None = None
    baseline: bool = False  # straight at the overhead baseline (the upstream simulator), not the gateway


@dataclass(slots=True)
class ArrivalSpec:
    """An open-loop arrival process: its kind, rate and shape."""

    process: str = "closed"
    rate: float = 0.0
    burstiness: float = 1.0              # gamma: shape k (1 = Poisson, < 1 burstier)
    on_s: float = 0.0                    # onoff: length of the on and off periods
    off_s: float = 0.0


@dataclass
class TenantSpec:
    """One tenant of the scenario: its key's environment variable, label, share or own mix and arrivals."""

    label: str
    api_key_env: str
    weight: float = 1.0
    mix: list[MixEntry] | None = None          # None: the scenario's mix
    arrivals: ArrivalSpec | None = None         # None: a weighted share of the scenario's arrivals (or users)
    spend_max: float | None = None
    spend_max_tokens: int | None = None
    spend_max_images: int | None = None


@dataclass
class Scenario:
    """A validated scenario."""

    path: str
    name: str
    description: str
    seed: int
    target: str
    api_key_env: str
    sim_config: Any
    users: int
    spawn_rate: float
    duration_s: float
    stop_timeout_s: float
    arrivals: str
    rate: float
    stages: list[Stage]
    think_min_s: float
    think_max_s: float
    timeouts: Timeouts
    retry: RetryPolicy
    mix: list[MixEntry]
    spend_max: float | None
    spend_max_tokens: int | None
    spend_max_images: int | None
    ca_file: str | None
    insecure: bool
    raw: dict[str, Any]
    profile: Profile = field(default_factory=Profile)
    gateway: dict[str, Any] = field(default_factory=dict)   # the scenario's `gateway:` section
    client_cert: str | None = None
    client_key: str | None = None
    spend_money_off: bool = False        # spend.max: off (a token or image cap only)
    gates: dict[str, Any] = field(default_factory=dict)
    ledger: dict[str, Any] = field(default_factory=dict)
    analysis: dict[str, Any] = field(default_factory=dict)
    burstiness: float = 1.0              # gamma: shape k (1 = Poisson, < 1 burstier)
    on_s: float = 0.0                    # onoff: length of the on and off periods
    off_s: float = 0.0
    trace: TraceSpec | None = None       # trace replay: the settings ...
    trace_data: Trace | None = None      # ... and the trace, read and sorted
    conv_share: float = 0.0              # share of chat-like calls that open a multi-turn conversation
    conv_turns: Dist = field(default_factory=lambda: Dist("uniform", 2, 4))
    conv_think_min_s: float = 0.0
    conv_think_max_s: float = 0.0
    conv_server_state: bool = False      # go on by the last response's id where the dialect can (Responses)
    tenants: list[TenantSpec] = field(default_factory=list)
    sim_port: int | None = None          # the embedded simulator's port (as the gateway's upstream: a fixed one)
    overhead: dict[str, Any] = field(default_factory=dict)   # {marker, baseline, baseline_key_env, baseline_gateway}
    scrape: dict[str, Any] = field(default_factory=dict)     # {every_s, targets: [{name, url, headers}]}
    record_timing: str = "full"          # records.timing: every chunk's time (full) or per-call gap figures (summary)

    @property
    def open_loop(self) -> bool:
        """Whether arrivals come from a rate rather than from users' loops."""
        return self.arrivals != "closed"

    @property
    def all_mix(self) -> list[MixEntry]:
        """The scenario's mix lines and every tenant's own."""
        return [*self.mix, *(m for t in self.tenants if t.mix for m in t.mix)]

    @property
    def total_duration_s(self) -> float:
        """The run's length: the sum of the stages, or the duration."""
        return sum(s.duration_s for s in self.stages) if self.stages else self.duration_s


class _V:
    """Validation helpers bound to one file."""

    def __init__(self, file: str) -> None:
        self.file = file

    def fail(self, path: str, reason: str) -> ScenarioError:
        return ScenarioError(f"{self.file}: {path}: {reason}")

    def mapping(self, path: str, v: Any, allowed: tuple[str, ...]) -> dict[str, Any]:
        if v is None:
            return {}
        if not isinstance(v, dict):
            raise self.fail(path, f"expected a mapping, got {type(v).__name__}")
        for k in v:
            if k not in allowed:
                raise self.fail(f"{path}.{k}" if path else str(k), f"unknown key (known: {', '.join(allowed)})")
        return v

    def num(self, path: str, v: Any, lo: float = 0.0, hi: float | None = None, integer: bool = False,
            positive: bool = False) -> float:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise self.fail(path, f"expected a number, got {v!r}")
        if integer and int(v) != v:
            raise self.fail(path, f"expected a whole number, got {v!r}")
        if v < lo or (positive and v <= 0) or (hi is not None and v > hi):
            bound = f"between {lo:g} and {hi:g}" if hi is not None else ("positive" if positive else f">= {lo:g}")
            raise self.fail(path, f"must be {bound}, got {v!r}")
        return v

    def share(self, path: str, v: Any) -> float:
        return float(self.num(path, v, 0.0, 1.0))

    def text(self, path: str, v: Any) -> str:
        if not isinstance(v, str) or not v:
            raise self.fail(path, f"expected a non-empty string, got {v!r}")
        return v

    def duration(self, path: str, v: Any, positive: bool = True) -> float:
        try:
            return parse_duration(v, positive)
        except ValueError as exc:
            raise self.fail(path, str(exc)) from None

    def dist(self, path: str, v: Any) -> Dist:
        if isinstance(v, int | float) and not isinstance(v, bool):
            return Dist("fixed", self.num(path, v, positive=True))
        d = self.mapping(path, v, ("dist", "value", "min", "max", "mean", "sd"))
        kind = d.get("dist", "uniform" if "min" in d else "fixed")
        if kind == "fixed":
            return Dist("fixed", self.num(f"{path}.value", d.get("value"), positive=True))
        if kind == "uniform":
            lo = self.num(f"{path}.min", d.get("min"), 1, integer=True)
            hi = self.num(f"{path}.max", d.get("max"), 1, integer=True)
            if hi < lo:
                raise self.fail(f"{path}.max", f"must be >= min ({lo:g}), got {hi:g}")
            return Dist("uniform", lo, hi)
        if kind in ("normal", "lognormal"):
            return Dist(kind, self.num(f"{path}.mean", d.get("mean"), positive=True),
                        self.num(f"{path}.sd", d.get("sd", 0), 0))
        raise self.fail(f"{path}.dist", f"unknown distribution {kind!r} (known: fixed, uniform, normal, lognormal)")


MIX_KEYS = ("endpoint", "weight", "models", "stream", "json_array", "dry_run", "pair", "tools", "reasoning", "repeat",
            "prompt_tokens", "output_tokens", "ignore_eos", "images", "inputs", "dims", "headers")
TOP_KEYS = ("name", "description", "seed", "target", "api_key_env", "sim", "users", "spawn_rate", "duration",
            "stop_timeout", "arrivals", "stages", "think_time", "timeouts", "retry", "defaults", "mix", "spend",
            "tls", "gates", "ledger", "analysis", "trace", "conversations", "gateway", "tenants", "overhead",
            "scrape", "records")
OVERHEAD_KEYS = ("marker", "baseline", "baseline_key_env", "baseline_gateway")
SCRAPE_KEYS = ("every_s", "targets")
RECORDS_KEYS = ("timing",)
RECORD_TIMINGS = ("full", "summary")  # what a record keeps of its chunks' times (locustfiles.records.summarise)
SCRAPE_TARGET_KEYS = ("name", "url", "headers")
TENANT_KEYS = ("label", "api_key_env", "weight", "mix", "arrivals", "spend")
PROFILE_SECTION_KEYS = tuple(k for k in PROFILE_KEYS if k != "name")
ARRIVAL_KEYS = ("process", "rate", "burstiness", "on_s", "off_s")
TRACE_KEYS = ("format", "file", "time_scale", "rate_scale", "window", "models", "endpoints", "columns", "time_unit",
              "stream", "ignore_eos")
TRACE_FORMATS = traces.FORMATS
TIME_UNITS = (*traces.TIME_UNITS, "datetime")
COLUMN_KEYS = ("time", "input_tokens", "output_tokens", "model", "endpoint")


def _mix_entry(v: _V, i: int, raw: Any, defaults: dict[str, Any], prefix: str = "") -> MixEntry:
    path = f"{prefix}mix[{i}]"
    d = v.mapping(path, raw, MIX_KEYS)
    endpoint = d.get("endpoint")
    if endpoint not in ENDPOINTS:
        raise v.fail(f"{path}.endpoint", f"unknown endpoint {endpoint!r} (known: {', '.join(ENDPOINTS)})")
    models_raw = d.get("models", [DEFAULT_MODELS[endpoint]])
    if isinstance(models_raw, str):
        models_raw = [models_raw]
    if isinstance(models_raw, list) and models_raw:
        models = [(v.text(f"{path}.models[{j}]", m), 1.0) for j, m in enumerate(models_raw)]
    elif isinstance(models_raw, dict) and models_raw:
        models = [(str(m), float(v.num(f"{path}.models.{m}", w))) for m, w in models_raw.items()]
        if sum(w for _, w in models) <= 0:
            raise v.fail(f"{path}.models", "weights sum to zero")
    else:
        raise v.fail(f"{path}.models", "expected a model name, a list of names or a mapping of names to weights")
    e = MixEntry(endpoint=endpoint, weight=float(v.num(f"{path}.weight", d.get("weight", 1))), models=models)
    for key in ("stream", "json_array", "dry_run", "pair", "tools", "reasoning", "repeat"):
        if key in d:
            setattr(e, key, v.share(f"{path}.{key}", d[key]))
    if e.dry_run + e.pair > 1:
        raise v.fail(f"{path}.pair", "dry_run plus pair exceed 1")
    for key in ("prompt_tokens", "output_tokens"):
        src = d.get(key, defaults.get(key))
        if src is not None:
            setattr(e, key, v.dist(f"{path}.{key}" if key in d else f"defaults.{key}", src))
    ignore = d.get("ignore_eos", defaults.get("ignore_eos", False))
    if not isinstance(ignore, bool):
        raise v.fail(f"{path}.ignore_eos", f"expected true or false, got {ignore!r}")
    e.ignore_eos = ignore
    if "images" in d:
        img = v.mapping(f"{path}.images", d["images"], ("n", "size", "quality"))
        n = img.get("n", 1)
        ns = n if isinstance(n, list) else [n]
        e.images_n = [int(v.num(f"{path}.images.n", x, 1, 10, integer=True)) for x in ns]
        if not e.images_n:
            raise v.fail(f"{path}.images.n", "expected a count or a non-empty list of counts")
        e.image_size = v.text(f"{path}.images.size", img.get("size", e.image_size))
        e.image_quality = v.text(f"{path}.images.quality", img.get("quality", e.image_quality))
    if "inputs" in d:
        e.inputs = v.dist(f"{path}.inputs", d["inputs"])
    if "dims" in d:
        e.dims = int(v.num(f"{path}.dims", d["dims"], 1, integer=True))
    if "headers" in d:
        try:
            e.headers = headers(f"{v.file}: {path}.headers", d["headers"]) or None
        except ProfileError as exc:
            raise ScenarioError(str(exc)) from None
    return e


def _arrivals(v: _V, path: str, raw: Any) -> ArrivalSpec:
    arr = v.mapping(path, raw, ARRIVAL_KEYS)
    process = arr.get("process", "closed")
    if process not in ARRIVALS:
        raise v.fail(f"{path}.process", f"unknown arrival process {process!r} (known: {', '.join(ARRIVALS)})")
    out = ArrivalSpec(process=process, rate=float(v.num(f"{path}.rate", arr.get("rate", 0))))
    for key, owner in (("burstiness", "gamma"), ("on_s", "onoff"), ("off_s", "onoff")):
        if key in arr and process != owner:
            raise v.fail(f"{path}.{key}", f"only for process {owner}, not {process}")
        if key not in arr and process == owner:
            raise v.fail(f"{path}.{key}", f"process {owner} needs {key}")
    if "burstiness" in arr:
        out.burstiness = float(v.num(f"{path}.burstiness", arr["burstiness"], positive=True))
    if "on_s" in arr:
        out.on_s = v.duration(f"{path}.on_s", arr["on_s"])
    if "off_s" in arr:
        out.off_s = v.duration(f"{path}.off_s", arr["off_s"])
    return out


def _spend(v: _V, path: str, raw: Any) -> tuple[dict[str, Any], bool]:
    spend = v.mapping(path, raw, ("max", "max_tokens", "max_images"))
    money_off = spend.get("max") in ("off", False)  # a bare `off` is YAML's false
    if money_off:
        if "max_tokens" not in spend and "max_images" not in spend:
            raise v.fail(f"{path}.max", "off needs a token or image cap (max_tokens or max_images)")
        spend = {k: x for k, x in spend.items() if k != "max"}
    out = {
        "max": float(v.num(f"{path}.max", spend["max"], positive=True)) if "max" in spend else None,
        "max_tokens": int(v.num(f"{path}.max_tokens", spend["max_tokens"], 1)) if "max_tokens" in spend else None,
        "max_images": int(v.num(f"{path}.max_images", spend["max_images"], 1)) if "max_images" in spend else None,
    }
    return out, money_off


def _tenants(v: _V, raw: Any, defaults: dict[str, Any], api_key_env: str, closed: bool) -> list[TenantSpec]:
    if raw is None:
        return []
    if not isinstance(raw, list) or not raw:
        raise v.fail("tenants", "expected a non-empty list of {label, api_key_env, weight | mix | arrivals}")
    out: list[TenantSpec] = []
    for i, t in enumerate(raw):
        path = f"tenants[{i}]"
        d = v.mapping(path, t, TENANT_KEYS)
        label = v.text(f"{path}.label", d.get("label"))
        if not re.match(r"^[A-Za-z0-9_.-]{1,64}$", label):
            raise v.fail(f"{path}.label", f"expected letters, digits, '_', '.' or '-' (at most 64), got {label!r}")
        if any(o.label == label for o in out):
            raise v.fail(f"{path}.label", f"{label!r} is already a tenant")
        env = d.get("api_key_env", api_key_env)
        if not isinstance(env, str) or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", env):
            raise v.fail(f"{path}.api_key_env", f"expected an environment variable name, got {env!r}")
        ts = TenantSpec(label=label, api_key_env=env, weight=float(v.num(f"{path}.weight", d.get("weight", 1))))
        if "mix" in d:
            if not isinstance(d["mix"], list) or not d["mix"]:
                raise v.fail(f"{path}.mix", "expected a non-empty list of endpoints")
            ts.mix = [_mix_entry(v, j, m, defaults, prefix=f"{path}.") for j, m in enumerate(d["mix"])]
            if sum(m.weight for m in ts.mix) <= 0:
                raise v.fail(f"{path}.mix", "weights sum to zero")
        if "arrivals" in d:
            ts.arrivals = _arrivals(v, f"{path}.arrivals", d["arrivals"])
            if ts.arrivals.process == "closed" or ts.arrivals.rate <= 0:
                raise v.fail(f"{path}.arrivals", "a tenant's own arrivals need an open-loop process and a positive "
                                                 "rate")
            if closed:
                raise v.fail(f"{path}.arrivals", "a tenant's own arrivals need an open-loop scenario (set the "
                                                 "top-level arrivals.process, or give every tenant its arrivals)")
        spend, money_off = _spend(v, f"{path}.spend", d.get("spend"))
        if money_off:
            spend["max"] = None
        ts.spend_max, ts.spend_max_tokens, ts.spend_max_images = spend["max"], spend["max_tokens"], spend["max_images"]
        out.append(ts)
    shared = [t for t in out if t.arrivals is None]
    if shared and sum(t.weight for t in shared) <= 0:
        raise v.fail("tenants", "the weights of the tenants without their own arrivals sum to zero")
    return out


def gateway_profile(scenario: Scenario, name: str | None = None) -> Profile:
    """The scenario's gateway profile, or the profile `name` (--gateway) with the scenario's `gateway:` over it;
    a profile that says the gateway has no dry run refuses dry-run and pair shares before any load."""
    section = dict(scenario.gateway)
    base = Path(scenario.path).parent
    for key in ("profile",):
        ref = name if name is not None else section.get(key)
        if isinstance(ref, str) and ref.endswith((".yaml", ".yml")) and not Path(ref).is_absolute() \
                and name is None:
            section[key] = str(base / ref)
    try:
        profile = load_profile(name, section, f"{scenario.path}: gateway")
    except ProfileError as exc:
        raise ScenarioError(str(exc)) from None
    if profile.dry_run_supported is False:
        for i, m in enumerate(scenario.all_mix):
            for key in ("dry_run", "pair"):
                if getattr(m, key) > 0:
                    raise ScenarioError(f"{scenario.path}: mix[{i}].{key}: the gateway profile {profile.name!r} "
                                        "says the gateway has no dry run (set it to 0, or use a profile with dry runs)")
    return profile


def parse_scenario(data: Any, file: str, base_dir: Path | None = None) -> Scenario:
    """Validate a parsed scenario mapping."""
    v = _V(file)
    if not isinstance(data, dict):
        raise ScenarioError(f"{file}: expected a mapping at the top level")
    d = v.mapping("", data, TOP_KEYS)
    name = v.text("name", d.get("name", Path(file).stem))
    seed = d.get("seed", 1)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise v.fail("seed", f"expected an integer, got {seed!r}")
    target = d.get("target", "sim")
    if not isinstance(target, str) or not (target == "sim" or re.match(r"^https?://[^\s/]+", target)):
        raise v.fail("target", f"expected 'sim' or an http(s) URL, got {target!r}")
    api_key_env = d.get("api_key_env", "TT_API_KEY")
    if not isinstance(api_key_env, str) or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", api_key_env):
        raise v.fail("api_key_env", f"expected an environment variable name, got {api_key_env!r}")
    sim_sec = v.mapping("sim", d.get("sim"), ("config", "port"))
    sim_cfg = sim_sec.get("config")
    sim_port = int(v.num("sim.port", sim_sec["port"], 1, 65535, integer=True)) if "port" in sim_sec else None
    if isinstance(sim_cfg, str) and base_dir is not None:
        p = (base_dir / sim_cfg).resolve()
        if not p.is_file():
            raise v.fail("sim.config", f"no such file: {sim_cfg}")
        sim_cfg = str(p)
    elif sim_cfg is not None and not isinstance(sim_cfg, dict):
        raise v.fail("sim.config", "expected a path or a mapping")
    users = int(v.num("users", d.get("users", 4), 1, integer=True))
    spawn_rate = float(v.num("spawn_rate", d.get("spawn_rate", users), positive=True))
    duration_s = v.duration("duration", d.get("duration", "30s"))
    stop_timeout_s = v.duration("stop_timeout", d.get("stop_timeout", "30s"), positive=False)
    top = _arrivals(v, "arrivals", d.get("arrivals"))
    process, rate, burstiness, on_s, off_s = top.process, top.rate, top.burstiness, top.on_s, top.off_s
    stages: list[Stage] = []
    raw_stages = d.get("stages") or []
    if not isinstance(raw_stages, list):
        raise v.fail("stages", "expected a list of {duration, rate} or {duration, users}")
    for i, s in enumerate(raw_stages):
        sd = v.mapping(f"stages[{i}]", s, ("duration", "rate", "users", "baseline"))
        st = Stage(duration_s=v.duration(f"stages[{i}].duration", sd.get("duration")))
        if "baseline" in sd:
            if not isinstance(sd["baseline"], bool):
                raise v.fail(f"stages[{i}].baseline", f"expected true or false, got {sd['baseline']!r}")
            st.baseline = sd["baseline"]
        if "rate" in sd:
            st.rate = float(v.num(f"stages[{i}].rate", sd["rate"]))
        if "users" in sd:
            st.users = int(v.num(f"stages[{i}].users", sd["users"], 0, integer=True))
        if st.rate is None and st.users is None:
            raise v.fail(f"stages[{i}]", "needs a rate (open loop) or a users count")
        stages.append(st)
    raw_tenants = d.get("tenants")
    own_arrivals = isinstance(raw_tenants, list) and raw_tenants and all(
        isinstance(t, dict) and t.get("arrivals") is not None for t in raw_tenants)
    if own_arrivals and "arrivals" not in d and not stages:
        process = "tenants"  # every tenant has its own arrival process: the run is open loop
    elif process != "closed" and rate <= 0 and not any(s.rate for s in stages):
        raise v.fail("arrivals.rate", f"an open-loop process ({process}) needs a positive rate")
    think = v.mapping("think_time", d.get("think_time"), ("min_s", "max_s"))
    think_min = float(v.num("think_time.min_s", think.get("min_s", 0)))
    think_max = float(v.num("think_time.max_s", think.get("max_s", think_min)))
    if think_max < think_min:
        raise v.fail("think_time.max_s", f"must be >= min_s ({think_min:g})")
    to = v.mapping("timeouts", d.get("timeouts"), ("connect_s", "first_byte_s", "idle_s", "total_s"))
    timeouts = Timeouts(**{k: float(v.num(f"timeouts.{k}", val, positive=True)) for k, val in to.items()})
    rt = v.mapping("retry", d.get("retry"), ("max_attempts", "base_s", "cap_s", "budget"))
    retry = RetryPolicy()
    if "max_attempts" in rt:
        retry.max_attempts = int(v.num("retry.max_attempts", rt["max_attempts"], 1, integer=True))
    if "base_s" in rt:
        retry.base_s = float(v.num("retry.base_s", rt["base_s"]))
    if "cap_s" in rt:
        retry.cap_s = float(v.num("retry.cap_s", rt["cap_s"]))
    if "budget" in rt:
        retry.budget = int(v.num("retry.budget", rt["budget"], 0, integer=True))
    defaults = v.mapping("defaults", d.get("defaults"), ("prompt_tokens", "output_tokens", "ignore_eos"))
    traced = d.get("trace") is not None
    own_mixes = isinstance(raw_tenants, list) and raw_tenants and all(
        isinstance(t, dict) and t.get("mix") is not None for t in raw_tenants)
    raw_mix = d.get("mix", [] if traced or own_mixes else None)
    if not isinstance(raw_mix, list) or not (raw_mix or traced or own_mixes):
        raise v.fail("mix", "expected a non-empty list of endpoints")
    mix = [_mix_entry(v, i, m, defaults) for i, m in enumerate(raw_mix)]
    if mix and sum(m.weight for m in mix) <= 0:
        raise v.fail("mix", "weights sum to zero")
    trace, trace_data = None, None
    if traced:
        for key, why in (("arrivals", "the trace's timestamps are the arrivals"),
                         ("stages", "the trace's timestamps are the arrivals"),
                         ("duration", "a trace run lasts its window (set trace.window.duration_s)")):
            if key in d:
                raise v.fail(key, f"not with trace: {why}")
        for i, m in enumerate(mix):
            if m.endpoint not in TRACE_ENDPOINTS:
                raise v.fail(f"mix[{i}].endpoint", f"a trace drives text generation ({', '.join(TRACE_ENDPOINTS)}), "
                                                   f"not {m.endpoint}")
        trace, trace_data = _trace(v, d["trace"], base_dir)
        process, rate, stages = "trace", 0.0, []
        duration_s = replay_duration(trace_data, trace)
    conv = v.mapping("conversations", d.get("conversations"), ("share", "turns", "think_time", "server_state"))
    conv_share = v.share("conversations.share", conv.get("share", 0.0))
    server_state = conv.get("server_state", False)
    if not isinstance(server_state, bool):
        raise v.fail("conversations.server_state", f"expected true or false, got {server_state!r}")
    conv_turns = v.dist("conversations.turns", conv.get("turns", {"dist": "uniform", "min": 2, "max": 4}))
    cthink = v.mapping("conversations.think_time", conv.get("think_time"), ("min_s", "max_s"))
    conv_think_min = float(v.num("conversations.think_time.min_s", cthink.get("min_s", 0)))
    conv_think_max = float(v.num("conversations.think_time.max_s", cthink.get("max_s", conv_think_min)))
    if conv_think_max < conv_think_min:
        raise v.fail("conversations.think_time.max_s", f"must be >= min_s ({conv_think_min:g})")
    spend, money_off = _spend(v, "spend", d.get("spend"))
    tenants = _tenants(v, raw_tenants, defaults, api_key_env, closed=process == "closed")
    if traced and tenants and any(t.arrivals is not None or t.mix is not None for t in tenants):
        raise v.fail("tenants", "with a trace, tenants take weighted shares of its arrivals (no own mix or arrivals)")
    tls = v.mapping("tls", d.get("tls"), ("ca_file", "insecure", "client_cert", "client_key"))
    ca_file = tls.get("ca_file")
    if ca_file is not None:
        ca_file = str((base_dir / ca_file) if base_dir else Path(ca_file))
    certs = {}
    for key in ("client_cert", "client_key"):
        if key in tls:
            f = Path(v.text(f"tls.{key}", tls[key]))
            f = f if f.is_absolute() or base_dir is None else base_dir / f
            if not f.is_file():
                raise v.fail(f"tls.{key}", f"no such file: {tls[key]}")
            certs[key] = str(f)
    if "client_key" in certs and "client_cert" not in certs:
        raise v.fail("tls.client_key", "needs tls.client_cert")
    gateway = v.mapping("gateway", d.get("gateway"), ("profile", *PROFILE_SECTION_KEYS))
    insecure = tls.get("insecure", False)
    if not isinstance(insecure, bool):
        raise v.fail("tls.insecure", f"expected true or false, got {insecure!r}")
    scenario = Scenario(
        path=file, name=name, description=str(d.get("description", "")), seed=seed, target=target,
        api_key_env=api_key_env, sim_config=sim_cfg, users=users, spawn_rate=spawn_rate, duration_s=duration_s,
        stop_timeout_s=stop_timeout_s, arrivals=process, rate=rate, stages=stages, think_min_s=think_min,
        think_max_s=think_max, timeouts=timeouts, retry=retry, mix=mix,
        spend_max=spend["max"], spend_max_tokens=spend["max_tokens"], spend_max_images=spend["max_images"],
        ca_file=ca_file, insecure=insecure, raw=data,
        gates=v.mapping("gates", d.get("gates"), tuple(d.get("gates") or {})),
        ledger=v.mapping("ledger", d.get("ledger"), tuple(d.get("ledger") or {})),
        analysis=v.mapping("analysis", d.get("analysis"), tuple(d.get("analysis") or {})),
        burstiness=burstiness, on_s=on_s, off_s=off_s, trace=trace, trace_data=trace_data,
        conv_share=conv_share, conv_turns=conv_turns, conv_think_min_s=conv_think_min, conv_server_state=server_state,
        conv_think_max_s=conv_think_max, gateway=gateway, client_cert=certs.get("client_cert"),
        client_key=certs.get("client_key"), spend_money_off=money_off, tenants=tenants,
    )
    scenario.sim_port = sim_port
    scenario.overhead = _overhead(v, d.get("overhead"), stages)
    scenario.scrape = _scrape(v, d.get("scrape"))
    scenario.record_timing = _record_timing(v, d.get("records"))
    scenario.profile = gateway_profile(scenario)
    return scenario


def _record_timing(v: _V, raw: Any) -> str:
    """records.timing: full (every chunk's time, the default) or summary (per-call gap figures)."""
    timing = v.mapping("records", raw, RECORDS_KEYS).get("timing", "full")
    if timing not in RECORD_TIMINGS:
        raise v.fail("records.timing", f"unknown timing {timing!r} (known: {', '.join(RECORD_TIMINGS)})")
    return timing


def _overhead(v: _V, raw: Any, stages: list[Stage]) -> dict[str, Any]:
    o = v.mapping("overhead", raw, OVERHEAD_KEYS)
    marker = o.get("marker", False)
    if not isinstance(marker, bool):
        raise v.fail("overhead.marker", f"expected true or false, got {marker!r}")
    baseline = o.get("baseline", "sim")
    if not isinstance(baseline, str) or not (baseline == "sim" or re.match(r"^https?://[^\s/]+", baseline)):
        raise v.fail("overhead.baseline", f"expected 'sim' or an http(s) URL, got {baseline!r}")
    key_env = o.get("baseline_key_env")
    if key_env is not None and (not isinstance(key_env, str) or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key_env)):
        raise v.fail("overhead.baseline_key_env", f"expected an environment variable name, got {key_env!r}")
    if baseline != "sim" and key_env is None:
        raise v.fail("overhead.baseline_key_env", "a baseline URL needs its own key's variable (the gateway's key is "
                                                  "never sent to another origin)")
    gw = o.get("baseline_gateway", "tt")
    if not isinstance(gw, str) or not gw:
        raise v.fail("overhead.baseline_gateway", f"expected a gateway profile name or file, got {gw!r}")
    if any(st.baseline for st in stages) and raw is None:
        raise v.fail("stages", "a baseline stage needs an overhead section (overhead: {baseline: sim})")
    return {"marker": marker, "baseline": baseline, "baseline_key_env": key_env, "baseline_gateway": gw} \
        if raw is not None else {}


def _scrape(v: _V, raw: Any) -> dict[str, Any]:
    if raw is None:
        return {}
    sc = v.mapping("scrape", raw, SCRAPE_KEYS)
    every = v.duration("scrape.every_s", sc.get("every_s", 5))
    targets = sc.get("targets")
    if not isinstance(targets, list) or not targets:
        raise v.fail("scrape.targets", "expected a non-empty list of {name, url}")
    out = []
    for i, t in enumerate(targets):
        path = f"scrape.targets[{i}]"
        td = v.mapping(path, t, SCRAPE_TARGET_KEYS)
        url = td.get("url")
        if not isinstance(url, str) or not (url == "sim" or re.match(r"^https?://[^\s/]+", url)):
            raise v.fail(f"{path}.url", f"expected 'sim' (the embedded simulator's /metrics) or an http(s) URL, "
                                        f"got {url!r}")
        name = v.text(f"{path}.name", td.get("name", "sim" if url == "sim" else f"target{i + 1}"))
        if any(o["name"] == name for o in out):
            raise v.fail(f"{path}.name", f"{name!r} is already a scrape target")
        try:
            hdrs = headers(f"{v.file}: {path}.headers", td.get("headers"))
        except ProfileError as exc:
            raise ScenarioError(str(exc)) from None
        out.append({"name": name, "url": url, "headers": hdrs})
    return {"every_s": every, "targets": out}


def _trace(v: _V, raw: Any, base_dir: Path | None) -> tuple[TraceSpec, Trace]:
    """The `trace:` section, validated, and the trace it names, read."""
    t = v.mapping("trace", raw, TRACE_KEYS)
    fmt = t.get("format")
    if fmt not in TRACE_FORMATS:
        raise v.fail("trace.format", f"unknown trace format {fmt!r} (known: {', '.join(TRACE_FORMATS)})")
    file = v.text("trace.file", t.get("file"))
    path = (base_dir / file) if base_dir is not None else Path(file)
    if not path.is_file():
        raise v.fail("trace.file", f"no such file: {file}")
    spec = TraceSpec(format=fmt, file=str(path))
    for key in ("time_scale", "rate_scale"):
        if key in t:
            setattr(spec, key, float(v.num(f"trace.{key}", t[key], positive=True)))
    w = v.mapping("trace.window", t.get("window"), ("start_s", "duration_s"))
    if "start_s" in w:
        spec.start_s = v.duration("trace.window.start_s", w["start_s"], positive=False)
    if "duration_s" in w:
        spec.duration_s = v.duration("trace.window.duration_s", w["duration_s"])
    models = v.mapping("trace.models", t.get("models"), tuple(t.get("models") or {}))
    spec.models = {str(k): v.text(f"trace.models.{k}", m) for k, m in models.items()}
    eps = v.mapping("trace.endpoints", t.get("endpoints"), tuple(t.get("endpoints") or {}))
    if eps and all(isinstance(x, str) for x in eps.values()):
        for k, e in eps.items():
            if e not in TRACE_ENDPOINTS:
                raise v.fail(f"trace.endpoints.{k}", f"unknown endpoint {e!r} for a trace "
                                                     f"(known: {', '.join(TRACE_ENDPOINTS)})")
        spec.endpoint_by_model = {str(k): e for k, e in eps.items()}
    elif eps:
        for k, x in eps.items():
            if k not in TRACE_ENDPOINTS:
                raise v.fail(f"trace.endpoints.{k}", f"unknown endpoint for a trace (known: {', '.join(TRACE_ENDPOINTS)}; "
                                                     "or map models to endpoints: {gpt-4o: chat})")
            spec.endpoint_weights[k] = float(v.num(f"trace.endpoints.{k}", x))
        if sum(spec.endpoint_weights.values()) <= 0:
            raise v.fail("trace.endpoints", "weights sum to zero")
    if fmt == "generic":
        cols = v.mapping("trace.columns", t.get("columns"), COLUMN_KEYS)
        for key in ("time", "input_tokens", "output_tokens"):
            if key not in cols:
                raise v.fail(f"trace.columns.{key}", "format generic needs the column's name")
        spec.columns = {k: v.text(f"trace.columns.{k}", c) for k, c in cols.items()}
        unit = t.get("time_unit", "s")
        if unit not in TIME_UNITS:
            raise v.fail("trace.time_unit", f"unknown unit {unit!r} (known: {', '.join(TIME_UNITS)})")
        spec.time_unit = unit
    else:
        for key in ("columns", "time_unit"):
            if key in t:
                raise v.fail(f"trace.{key}", f"only for format generic (format {fmt} has fixed columns)")
    if "stream" in t:
        spec.stream = v.share("trace.stream", t["stream"])
    ignore = t.get("ignore_eos", True)
    if not isinstance(ignore, bool):
        raise v.fail("trace.ignore_eos", f"expected true or false, got {ignore!r}")
    spec.ignore_eos = ignore
    try:
        data = load_trace(spec)
    except TraceError as exc:
        raise v.fail("trace.file", str(exc)) from None
    names = data.model_names()
    for k in spec.models:
        if k not in names and data.complete:  # (a file read only as far as the window needs may name it later)
            has = f"it has: {', '.join(sorted(names))}" if names else "it names no models"
            raise v.fail(f"trace.models.{k}", f"the trace has no model {k!r} ({has})")
    end = data.times[-1]
    if spec.start_s > end:
        raise v.fail("trace.window.start_s", f"after the trace's last row (at {end:g} s)")
    lo, hi = window(data, spec.start_s, spec.duration_s)
    if hi <= lo:
        raise v.fail("trace.window", "no rows in the window")
    return spec, data


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file."""
    p = Path(path)
    try:
        data = read_yaml(p, "the scenario")
    except YamlFileError as exc:
        raise ScenarioError(str(exc)) from None
    return parse_scenario(data, str(p), p.parent)
