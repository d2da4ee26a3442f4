"""`ttbench run`: start the target (the simulator by default), run Locust headless, collect the run folder."""

from __future__ import annotations

import json
import math
import os
import platform
import resource
import signal
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from locustfiles.calls import CallSpec
from locustfiles.dialects import DIALECTS
from locustfiles.profile import Profile, ProfileError
from locustfiles.scenario import Scenario, ScenarioError, gateway_profile, load_scenario
from locustfiles.transport import client_tls_context, error_fields
from ttformats.durations import parse_duration

from .simproc import DEFAULT_API_KEY, SimProcess, SimProcessError

GATEWAY = Path(__file__).resolve().parent.parent / "locustfiles" / "gateway.py"


class RunError(Exception):
    """Bad input or a target that cannot be used: one line, exit code 2."""


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent.parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("ttbench", "locust", "geventhttpclient", "aiohttp"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def _tls_failure(exc: BaseException) -> str | None:
    """What went wrong with TLS, when the cause of a connection error was TLS."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, ssl.SSLCertVerificationError):
            return f"certificate verification failed: {e.verify_message or e.reason}"
        if isinstance(e, ssl.SSLError):
            return f"handshake failed: {e.reason or e}"
        e = e.__cause__ or e.__context__
    text = str(exc)
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return "certificate verification failed"
    return None


def check_target(url: str, key: str, timeout: float = 5.0, insecure: bool = False,
                 ca_file: str | None = None, profile: Profile | None = None, client_cert: str | None = None,
                 client_key: str | None = None) -> None:
    """A clear error within `timeout` seconds when the target does not answer, refuses the key, or
    (for https) presents a certificate that fails verification; TLS settings, auth and paths as the calls use
    them (the gateway profile's)."""
    profile = profile or Profile()
    verify: Any = True
    if url.startswith("https://"):
        try:
            verify = client_tls_context(insecure, ca_file, client_cert=client_cert, client_key=client_key)
        except (OSError, ssl.SSLError) as exc:
            detail = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or type(exc).__name__
            what = f"tls.ca_file: cannot load {ca_file}" if not client_cert else \
                f"tls: cannot load {ca_file or ''} {client_cert}".replace("  ", " ")
            raise RunError(f"{what}: {detail}") from None
    spec = CallSpec(endpoint="models", model="-", name="models list")
    wire = DIALECTS["models"].build(spec)
    try:
        profile.apply(wire, spec, key)
    except ProfileError as exc:
        raise RunError(str(exc)) from None
    try:
        r = httpx.get((wire.base or url.rstrip("/")) + wire.path, headers=wire.headers, timeout=timeout,
                      verify=verify)
    except httpx.HTTPError as exc:
        tls = _tls_failure(exc)
        if tls is not None:
            hint = ("; trust its CA with tls.ca_file in the scenario, or pass --insecure to turn verification off"
                    if "verification" in tls else "")
            raise RunError(f"target {url}: TLS {tls}{hint}") from None
        raise RunError(f"target {url} does not answer: {type(exc).__name__}") from None
    fields, _ = error_fields(r.content) if r.status_code >= 400 else ({}, None)
    if r.status_code in (401, 403) or profile.is_auth_error(r.status_code, fields.get("type"), fields.get("code"),
                                                            fields.get("reason") or fields.get("status")):
        detail = " ".join(fields[k] for k in ("status", "type", "code") if k in fields)
        raise RunError(f"target {url} refused the API key (HTTP {r.status_code}{': ' + detail if detail else ''})")


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text)


def prepare(scenario: Scenario, args: Any) -> tuple[Path, str]:
    """The run folder and run id."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(args.out) if args.out else Path("results") / f"{stamp}-{_slug(scenario.name)}"
    if out.exists() and any(out.iterdir()):
        raise RunError(f"{out}: the run folder exists and is not empty")
    out.mkdir(parents=True, exist_ok=True)
    return out, f"{_slug(scenario.name)}-{stamp}"


def tenant_keys(scenario: Any, sim_config: str | None, env: dict[str, str], own_key: str) -> None:
    """Against the embedded simulator: each tenant whose key variable is unset gets the simulator config's key
    of the same tenant label (`default`: the simulator's own key)."""
    if not scenario.tenants:
        return
    from gatewaysim.config import ConfigError, load_config

    try:
        keys = load_config(sim_config).section("keys") if sim_config else {}
    except ConfigError as exc:
        raise RunError(str(exc)) from None
    by_label = {}
    for k, v in (keys or {}).items():
        if isinstance(v, dict) and v.get("tenant"):
            by_label.setdefault(str(v["tenant"]), own_key if k == "default" else k)
    by_label.setdefault("default", own_key)  # the simulator's own key is tenant `default` unless listed
    for t in scenario.tenants:
        if env.get(t.api_key_env):
            continue
        if t.label not in by_label:
            raise RunError(f"{scenario.path}: tenants: environment variable {t.api_key_env} of tenant {t.label!r} is "
                           f"not set, and the simulator config has no key of tenant {t.label!r} (keys: {{KEY: "
                           f"{{tenant: {t.label}}}}})")
        env[t.api_key_env] = by_label[t.label]


def sim_config_path(scenario: Scenario, out: Path) -> str | None:
    """The scenario's simulator config as a file (an inline mapping is written into the run folder)."""
    cfg = scenario.sim_config
    if isinstance(cfg, dict):
        cfg_path = out / "sim-config.yaml"
        cfg_path.write_text(yaml.safe_dump(cfg))
        return str(cfg_path)
    return cfg


def start_sim(scenario: Scenario, cfg: str | None, key: str, out: Path, env: dict[str, str]) -> SimProcess:
    """Start the embedded simulator (on `sim.port` when set) and tell the Locust process where it is."""
    try:
        sim = SimProcess(config=cfg, seed=scenario.seed, api_key=key, port=scenario.sim_port or 0)
    except SimProcessError as exc:
        where = f" on 127.0.0.1:{scenario.sim_port} (sim.port)" if scenario.sim_port else ""
        raise RunError("; ".join(str(exc).splitlines()) + where) from None
    env["TTBENCH_SIM_URL"] = sim.url
    env["TTBENCH_SIM_KEY"] = key
    (out / "sim-config.resolved.json").write_text(json.dumps(sim.admin("/_sim/config").json()["config"], indent=2))
    return sim


def warm_analysis() -> threading.Thread:
    """Imports the analysis in a background thread at the lowest CPU priority, so the report starts sooner."""

    def _import() -> None:
        try:  # only CPU the load leaves idle: the run's own processes always come first
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        except (OSError, AttributeError):
            pass
        try:
            import analysis.report  # noqa: F401
        except Exception:  # noqa: BLE001 - the report's own import says what is wrong
            pass

    thread = threading.Thread(target=_import, name="ttbench-warm-analysis", daemon=True)
    thread.start()
    return thread


def run(args: Any) -> int:
    """Run a scenario end to end; returns the exit code (0 ok, 1 gates breached, 2 bad input)."""
    try:
        scenario = load_scenario(args.scenario)
    except ScenarioError as exc:
        raise RunError(str(exc)) from None
    target = args.target or scenario.target
    if target != "sim" and not target.startswith(("http://", "https://")):
        raise RunError(f"--target: expected 'sim' or an http(s) URL, got {target!r}")
    for flag, value in (("-u", args.users), ("-r", args.spawn_rate), ("--processes", args.processes)):
        if value is not None and value <= 0:
            raise RunError(f"{flag}: must be positive, got {value}")
    duration = scenario.total_duration_s
    if args.duration:
        try:
            duration = parse_duration(args.duration)
        except ValueError as exc:
            raise RunError(f"-t: {exc}") from None
    try:
        profile = gateway_profile(scenario, args.gateway) if getattr(args, "gateway", None) else scenario.profile
    except ScenarioError as exc:
        raise RunError(str(exc)) from None
    from analysis.load import InputError
    from analysis.settings import check_analysis, check_ledger

    try:  # the analysis reads these only after the load: a typo is caught before it
        check_analysis(scenario.analysis, f"{scenario.path}: analysis")
        check_ledger(scenario.ledger, f"{scenario.path}: ledger")
    except InputError as exc:
        raise RunError(str(exc)) from None
    out, run_id = prepare(scenario, args)
    (out / "gateway.json").write_text(json.dumps(profile.describe(), indent=2))
    started = time.time()
    sim: SimProcess | None = None
    env = dict(os.environ)
    try:
        if target == "sim":
            cfg = sim_config_path(scenario, out)
            key = env.get(scenario.api_key_env) or DEFAULT_API_KEY
            env[scenario.api_key_env] = key
            tenant_keys(scenario, cfg, env, key)
            sim = start_sim(scenario, cfg, key, out, env)
            url = sim.url
            env["TTBENCH_TARGET_IS_SIM"] = "1"
            prices = sim.admin("/_sim/config").json()["prices"]
            (out / "prices.yaml").write_text(yaml.safe_dump(prices, sort_keys=False))
        else:
            url = target
            if scenario.sim_port is not None or scenario.overhead:
                # the gateway's upstream (and the overhead baseline): on a fixed port its config can name
                sim = start_sim(scenario, sim_config_path(scenario, out), env.get("TTBENCH_SIM_KEY") or DEFAULT_API_KEY,
                                out, env)
            key = env.get(scenario.api_key_env)
            for t in scenario.tenants:
                if not env.get(t.api_key_env):
                    raise RunError(f"{scenario.path}: tenants: environment variable {t.api_key_env} of tenant "
                                   f"{t.label!r} is not set")
            key = key or (env[scenario.tenants[0].api_key_env] if scenario.tenants else None)
            if not key:
                raise RunError(f"{scenario.path}: api_key_env: environment variable {scenario.api_key_env} is not set")
            insecure = bool(args.insecure or scenario.insecure)
            check_target(url, key, insecure=insecure, ca_file=scenario.ca_file, profile=profile,
                         client_cert=scenario.client_cert, client_key=scenario.client_key)
            if insecure and url.startswith("https://"):
                print("ttbench: warning: TLS certificate verification is OFF (--insecure): the target is not "
                      "authenticated", file=sys.stderr, flush=True)
            prices_src = Path(args.prices) if args.prices else GATEWAY.parent.parent / "gatewaysim/defaults/prices.yaml"
            try:
                (out / "prices.yaml").write_text(prices_src.read_text())
            except OSError as exc:
                raise RunError(f"{prices_src}: cannot read the price sheet: {exc.strerror}") from None
        resolved = dict(scenario.raw)
        resolved["_resolved"] = {"target": "sim" if target == "sim" else url, "users": args.users or scenario.users,
                                 "duration_s": duration, "processes": args.processes or 1}
        (out / "scenario.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
        users = args.users or scenario.users
        web_port = getattr(args, "web_port", None)
        mode = ["--headless", "--only-summary"] if web_port is None else \
            ["--web-host", args.web_host, "--web-port", str(web_port)]
        cmd = [sys.executable, "-m", "locust", "-f", str(GATEWAY), *mode, "-u", str(users),
               "-r", str(args.spawn_rate or scenario.spawn_rate), "-H", url, "--scenario", str(args.scenario),
               "--ttbench-out", str(out), "--run-id", run_id, "--csv", str(out / "locust"),
               "--html", str(out / "locust.html"), "--prices", str(out / "prices.yaml"),
               "--stop-timeout", str(math.ceil(scenario.stop_timeout_s)), "--ttbench-duration", str(duration),
               "--loglevel", "WARNING"]
        if web_port is not None:
            print(f"ttbench: web UI on http://{args.web_host}:{web_port} (target {'sim' if target == 'sim' else url});"
                  " Ctrl-C ends the session", flush=True)
        if args.insecure:
            cmd.append("--insecure")
        if args.max_spend is not None:
            cmd += ["--max-spend", str(args.max_spend)]
        if args.processes:
            # the master of this machine's worker processes on a free port: runs side by side never collide
            port = _free_port()
            cmd += ["--processes", str(args.processes), "--master-bind-port", str(port), "--master-port", str(port)]
        if getattr(args, "gateway", None):
            cmd += ["--gateway", str(args.gateway)]
        for flag in ("metrics_port", "metrics_host", "metrics_linger"):  # live metrics out
            if getattr(args, flag, None) is not None:
                cmd += ["--" + flag.replace("_", "-"), str(getattr(args, flag))]
        if getattr(args, "otel", False):
            cmd.append("--otel")
        # Own process group: a terminal's Ctrl-C reaches only us, and we ask Locust to stop with SIGTERM
        # (its graceful path); the simulator, in its own group too, stays up until we have its ledger.
        proc = subprocess.Popen(cmd, env=env, start_new_session=True)
        warm = warm_analysis()  # the load takes seconds at least; the analysis's imports take one or two

        def _forward(signum: int, _frame: Any) -> None:
            proc.send_signal(signal.SIGTERM)

        old = {s: signal.signal(s, _forward) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            rc = proc.wait()
        finally:
            for s, h in old.items():
                signal.signal(s, h)
        if rc == 2:
            return 2  # bad input, or a run that could not succeed (one line on stderr said why)
        if sim is not None:
            sim.download("/_sim/ledger", out / "ledger.jsonl")  # streamed: a long run's are big
            sim.download("/_sim/truth", out / "truth.jsonl")
        if rc not in (0, 3):  # ttbench's own stops end with 0, 2 or 3: anything else is Locust failing
            raise RunError(f"Locust exited with code {rc} (its output is above); {out} keeps what was recorded")
    finally:
        if sim is not None:
            sim.stop()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    run_info = {
        "run_id": run_id, "scenario": scenario.name, "scenario_file": str(args.scenario), "seed": scenario.seed,
        "target": "sim" if target == "sim" else url, "start": started, "end": time.time(),
        "host": platform.node(), "platform": platform.platform(), "cpus": os.cpu_count(),
        "versions": _versions(), "git_commit": _git_commit(), "locust_exit_code": rc,
        "users": users, "processes": args.processes or 1, "duration_s": duration,
        "insecure": bool(args.insecure or scenario.insecure),
        "child_cpu_s": {"user": usage.ru_utime, "system": usage.ru_stime},
    }
    (out / "run.json").write_text(json.dumps(run_info, indent=2))
    n = sum(1 for _ in open(out / "records.jsonl")) if (out / "records.jsonl").exists() else 0
    print(f"ttbench: run folder {out} ({n} attempt records)")
    warm.join()
    from analysis.report import analyze

    from .summary import print_summary

    try:
        summary, code = analyze(out)
    except InputError as exc:
        raise RunError(str(exc)) from None
    print_summary(summary, str(out))
    return rc if rc == 3 else code  # 3: stopped mid-run by refusals (the report is written)


def _free_port() -> int:
    """A TCP port on this machine that nothing listens on right now."""
    import socket

    with socket.socket() as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])
